#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, creates the bundled demo model
# repository (demo/models: SqueezeNet 1.1 with deterministically generated weights, since the repo
# keeps graphs without weights, and a tiny MLP), starts `troupe serve` on it in the background
# (the node uses the GPU where one is present, else the CPU), sends it sample jobs with
# `troupe infer` (printing SqueezeNet's top-5 classes), runs a short `troupe bench`, and stops the
# node with SIGTERM, checking that it drains and exits 0. The node never outlives the script.
#
# TROUPE_BUILD_DIR=DIR uses an existing build there (only the troupe target is brought up to date)
# instead of scripts/build.sh's ./build.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ -n "${TROUPE_BUILD_DIR:-}" ]; then
  build=$TROUPE_BUILD_DIR
  cmake --build "$build" --target troupe
else
  build=build
  scripts/build.sh
fi
troupe="$build/troupe"
python=.venv/bin/python

work=$(mktemp -d "${TMPDIR:-/tmp}/troupe-demo.XXXXXX")
server_pid=""
stop_server() {
  # SIGTERM first (drain), SIGKILL if it has not gone after 20 s.
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
on_exit() {
  local rc=$?
  if [ -n "$server_pid" ]; then
    stop_server
    if [ "$rc" -ne 0 ] && [ -s "$work/serve.log" ]; then
      echo "troupe demo: the node's log (last lines):" >&2
      tail -n 20 "$work/serve.log" >&2
    fi
  fi
  rm -rf "$work"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== demo model repository (demo/models)"
"$python" demo/make_repository.py demo/models "$work"
for m in demo/models/*/; do
  echo "  $(basename "$m"): $(ls "$m"1 | tr '\n' ' ')"
done

echo "== troupe serve --models demo/models --config demo/node.yaml"
"$troupe" serve --models demo/models --config demo/node.yaml --listen 'tcp://127.0.0.1:*' \
  >"$work/ready.json" 2>"$work/serve.log" &
server_pid=$!
# The node prints {"event":"listening",...} once its listeners are up, then {"event":"ready",...}
# (or {"event":"loaded","ready":false,...} when a model failed) once its models have loaded.
endpoint=""
for _ in $(seq 3000); do
  endpoint=$(sed -n 's/.*"event":"\(ready\|loaded\)".*"endpoint":"\([^"]*\)".*/\2/p' "$work/ready.json")
  [ -n "$endpoint" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    wait "$server_pid" || true
    server_pid=""
    echo "troupe demo: the node exited before it was ready:" >&2
    tail -n 20 "$work/serve.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -n "$endpoint" ] || { echo "troupe demo: the node was not ready after 300 s" >&2; exit 1; }
if grep -q '"event":"loaded"' "$work/ready.json"; then
  echo "troupe demo: the node loaded its models but is not ready:" >&2
  "$troupe" infer --health --server "$endpoint" >&2 || true
  exit 1
fi
echo "  ready on $endpoint"
"$troupe" infer --health --server "$endpoint" | sed 's/^/  /'

echo "== troupe infer squeezenet: three synthetic photos sent at once (they share a batch: see"
echo "   max_queue_delay in demo/models/squeezenet/config.yaml). The weights are synthetic too, so"
echo "   the classes mean nothing, but they are deterministic."
pids=()
for k in 1 2 3; do
  "$troupe" infer squeezenet --inputs "$work/image$k.npz" --outputs "$work/out$k.npz" \
    --server "$endpoint" --id "photo-$k" >"$work/infer$k.txt" 2>&1 &
  pids+=($!)
done
for k in 1 2 3; do
  if ! wait "${pids[$((k - 1))]}"; then
    cat "$work/infer$k.txt" >&2
    exit 1
  fi
  sed -n "s/^served/  image$k: served/p" "$work/infer$k.txt"
  "$python" demo/print_top5.py "$work/out$k.npz" "image$k"
done

echo "== troupe infer mlp (one request of 4 rows)"
"$troupe" infer mlp --inputs "$work/mlp.npz" --outputs "$work/mlp_out.npz" --server "$endpoint" |
  sed 's/^/  /'

echo "== troupe bench mlp --concurrency 64 --duration 3 (closed loop on one connection)"
"$troupe" bench mlp --server "$endpoint" --concurrency 64 --duration 3 --warmup 1 --quiet |
  sed 's/^/  /'

echo "== SIGTERM: the node drains and exits"
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=""
if [ "$rc" -ne 0 ]; then
  echo "troupe demo: the node exited with status $rc after SIGTERM" >&2
  tail -n 20 "$work/serve.log" >&2
  exit 1
fi
echo "  exited 0"
