#!/usr/bin/env bash
# Configures and builds troupe into ./build (Release, ccache; the CUDA backend where a GPU is present).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# The CUDA backend is built where a GPU is present (TROUPE_CUDA=on|off overrides). Without a GPU its
# tests could only skip, and compiling the CUDA kernels would take a large part of CI's time budget.
cuda=${TROUPE_CUDA:-auto}
if [ "$cuda" = auto ]; then
  cuda=off
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU && cuda=on
fi
enable_cuda=OFF
[ "$cuda" = on ] && enable_cuda=ON
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PWD/.venv/bin/python" \
  -DTROUPE_ENABLE_CUDA=$enable_cuda ${TROUPE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$jobs"
