#!/usr/bin/env bash
# Checks that the README's two commands work on a fresh Debian 12 machine: makes a clean bookworm
# root with mmdebstrap (minbase: what a bare debian:12 image holds), from the Debian mirrors this
# machine's apt already uses, with this machine's CA certificates and pip configuration (so that it
# reaches the same registries), copies a clean clone of the current commit into it, and runs
# scripts/demo.sh, then scripts/test.sh there as root, timing each. The root is removed afterwards,
# also on failure or interruption. Too slow for CI (a full build from nothing on this machine's
# cores); its last result is recorded in docs/fresh-machine.md.
#
#   scripts/check-fresh.sh            the whole check; exit 0 only when both commands succeed
#   scripts/check-fresh.sh --probe    only the root and its network: apt-get update, and pip
#                                     downloading one package from PyPI inside it
#   env: TROUPE_FRESH_DIR   where the root is made (default /var/tmp; it needs ~10 GB)
#        TROUPE_FRESH_LOGS  where the commands' logs go (default ./out/check-fresh)
#        TROUPE_FRESH_KEEP=1 keeps the root (unmounted) for a look after a failure
#
# Needs root (mmdebstrap's root mode, chroot, mounts); installs mmdebstrap if it is missing. Commits
# only: uncommitted changes are not in the clone, and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

probe=0
case "${1:-}" in
  --probe) probe=1 ;;
  "") ;;
  *) echo "usage: scripts/check-fresh.sh [--probe]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "check-fresh: needs root (mmdebstrap, chroot, mount)" >&2; exit 2; }

commit=$(git rev-parse HEAD)
short=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "check-fresh: note: uncommitted changes are not checked (the root gets a clone of $short)"
fi
logs=${TROUPE_FRESH_LOGS:-$repo/out/check-fresh}
mkdir -p "$logs"
root=$(mktemp -d "${TROUPE_FRESH_DIR:-/var/tmp}/troupe-fresh.XXXXXX")

mounts=(proc sys dev/shm dev/pts dev)   # unmounted in this order
unmount_all() {
  local m
  for m in "${mounts[@]}"; do
    mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$?
  unmount_all
  # Never delete through a mount that is still there (/dev would be the host's).
  if findmnt -rn -o TARGET | grep -q "^$root/"; then
    echo "check-fresh: mounts remain under $root; not removing it" >&2
  elif [ "${TROUPE_FRESH_KEEP:-0}" = 1 ]; then
    echo "check-fresh: kept the root at $root"
  else
    rm -rf --one-file-system "$root"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v mmdebstrap >/dev/null; then
  echo "check-fresh: installing mmdebstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

# The Debian sources of this machine's apt: the bookworm entries signed by Debian's own keyring
# (third-party repositories would need keys the fresh root has not got).
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] || continue
  grep -q bookworm "$f" || continue
  if grep -qi "signed-by" "$f" && ! grep -qi "signed-by.*debian-archive-keyring" "$f"; then
    continue
  fi
  sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || { echo "check-fresh: no Debian bookworm source in /etc/apt" >&2; exit 1; }
# apt settings that decide how the mirror is reached (proxy, certificates, snapshot dates).
aptopts=()
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && grep -q "Acquire::" "$f" && aptopts+=("--aptopt=$f")
done

now() { date +%s; }
t0=$(now)
echo "== mmdebstrap bookworm (minbase) into $root from ${sources[*]}"
mmdebstrap --quiet --variant=minbase --mode=root "${aptopts[@]}" bookworm "$root" "${sources[@]}"
t_root=$(( $(now) - t0 ))

# This machine's trust and registry settings: CA certificates (the bundle, and the local CAs so
# that they survive the update-ca-certificates of a later ca-certificates install), pip's
# configuration files, DNS.
mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
cp -a /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
[ -f /etc/pip.conf ] && cp -a /etc/pip.conf "$root/etc/pip.conf"
if [ -d "$HOME/.config/pip" ]; then
  mkdir -p "$root/root/.config"
  cp -a "$HOME/.config/pip" "$root/root/.config/pip"
fi
[ -f "$HOME/.pip/pip.conf" ] && mkdir -p "$root/root/.pip" && cp -a "$HOME/.pip/pip.conf" "$root/root/.pip/"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
cp -a /etc/hosts "$root/etc/hosts"

# The environment inside: a login-like minimum plus pip's and the proxies' variables.
envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
      TERM=dumb DEBIAN_FRONTEND=noninteractive)
while IFS='=' read -r name value; do
  case "$name" in
    PIP_*|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY)
      # A path of this machine's that the root has not got (a local wheel folder) stays outside.
      if [[ "$value" == /* && ! -e "$root$value" ]]; then
        echo "check-fresh: not passing $name=$value (no such path in the root)"
      else
        envs+=("$name=$value")
      fi ;;
  esac
done < <(env)

mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
# The root's own shared memory (the node's workers use it), not the host's.
mount -t tmpfs -o mode=1777,size=4g shm "$root/dev/shm"
in_root() { chroot "$root" /usr/bin/env -i "${envs[@]}" /bin/bash -c "$1"; }

if [ "$probe" = 1 ]; then
  echo "== probe: apt-get update, then pip download from PyPI"
  in_root "apt-get update -q && apt-get install -y -q --no-install-recommends python3-pip >/dev/null &&
           python3 -m pip download -q --no-deps -d /tmp/probe numpy && ls /tmp/probe &&
           touch /dev/shm/probe && rm /dev/shm/probe"
  echo "check-fresh --probe: ok (root in ${t_root} s, apt and PyPI reached)"
  exit 0
fi

echo "== clean clone of $short"
git clone -q --no-checkout "$(git rev-parse --path-format=absolute --git-common-dir)" "$root/root/troupe"
git -C "$root/root/troupe" checkout -q --detach "$commit"

# run NAME COMMAND: runs it in the root's clone, log in $logs/NAME.log; sets t_NAME and rc_NAME.
run() {
  local name=$1 start rc=0
  echo "== $2 (log: $logs/$name.log)"
  start=$(now)
  in_root "cd /root/troupe && $2" >"$logs/$name.log" 2>&1 || rc=$?
  printf -v "t_$name" %d $(( $(now) - start ))
  printf -v "rc_$name" %d "$rc"
  tail -n 15 "$logs/$name.log"
}
run demo scripts/demo.sh
t_test=0 rc_test=skipped
[ "$rc_demo" = 0 ] && run test scripts/test.sh

status=ok
{ [ "$rc_demo" = 0 ] && [ "$rc_test" = 0 ]; } || status=FAILED
echo "check-fresh: $status on $(date -u +%Y-%m-%d) at $short ($(nproc) cores): root ${t_root} s," \
     "scripts/demo.sh ${t_demo} s (exit $rc_demo), scripts/test.sh ${t_test} s (exit $rc_test)" |
  tee "$logs/summary.txt"
[ "$status" = ok ]
