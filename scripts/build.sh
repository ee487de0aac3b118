#!/usr/bin/env bash
# Configures and builds troupe into ./build (Release, ccache, CUDA parts where nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$PWD/.venv/bin/python" \
  ${TROUPE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$jobs"
