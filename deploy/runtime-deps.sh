#!/usr/bin/env bash
# What a built troupe binary needs at run time, taken from the binary itself (ldd), so that the
# images' runtime stages never keep a hand-written list that falls behind the build's libraries.
#
#   deploy/runtime-deps.sh packages BINARY     Debian packages that own its shared libraries, one a
#                                              line (for apt-get install on debian:12-slim)
#   deploy/runtime-deps.sh copy BINARY DIR     copies its shared libraries into DIR, except those a
#                                              newer glibc/GCC base and the CUDA base image provide
#                                              (for a runtime stage that is not Debian 12)
#
# Fails when a library is not found (ldd's "not found"): a runtime stage must not be missing one.
set -euo pipefail
mode=${1:-}
binary=${2:-}
[ -n "$mode" ] && [ -x "$binary" ] || {
  echo "usage: deploy/runtime-deps.sh packages|copy BINARY [DIR]" >&2
  exit 2
}

libs=$(ldd "$binary")
if grep -q "not found" <<<"$libs"; then
  echo "runtime-deps: $binary has unresolved libraries:" >&2
  grep "not found" <<<"$libs" >&2
  exit 1
fi
# Resolved paths only (not linux-vdso, which has none).
paths=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs" | sort -u)

case "$mode" in
  packages)
    for p in $paths; do
      # dpkg knows the path it installed, which may differ from ldd's by /usr merge.
      real=$(readlink -f "$p")
      dpkg -S "$p" 2>/dev/null || dpkg -S "$real" 2>/dev/null || dpkg -S "${p#/usr}" 2>/dev/null ||
        { echo "runtime-deps: no Debian package owns $p" >&2; exit 1; }
    done | cut -d: -f1 | sort -u
    ;;
  copy)
    dir=${3:?copy needs a destination DIR}
    mkdir -p "$dir"
    for p in $paths; do
      case "$(basename "$p")" in
        # glibc, the dynamic loader and GCC's runtime: the newer base's own are compatible (a
        # binary built against an older glibc/libstdc++ runs on a newer one, not the other way).
        ld-linux*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*) continue ;;
        libstdc++.so.*|libgcc_s.so.*) continue ;;
        # CUDA and cuDNN: the CUDA base image's, of the same major version; the driver's libcuda
        # comes from the host through the NVIDIA container toolkit.
        libcuda.so.*|libcudart.so.*|libcublas*.so.*|libcudnn*.so.*|libnvrtc*.so.*|libnvJitLink*.so.*) continue ;;
        libnvidia-*|libcufft*|libcurand*|libcusparse*|libcusolver*|libnpp*) continue ;;
      esac
      # Copy under the soname ldd resolved, following the symlink to the real file.
      cp -L "$p" "$dir/$(basename "$p")"
    done
    ;;
  *)
    echo "runtime-deps: unknown mode $mode (packages or copy)" >&2
    exit 2
    ;;
esac
