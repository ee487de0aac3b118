#!/usr/bin/env bash
# The README's second command: installs what is missing, builds, and runs every test (ctest). GPU
# tests skip with a message where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 900
