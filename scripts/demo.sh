#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the main job on the bundled
# demo model (SqueezeNet 1.1's graph; its weights are generated deterministically, since the repo
# keeps graphs without weights), printing the top outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
demo=build/demo
mkdir -p "$demo"
.venv/bin/python tests/models/fill_weights.py tests/models/squeezenet1_1.onnx "$demo" >/dev/null
.venv/bin/python - "$demo/input.npz" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(7)
img = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
np.savez(sys.argv[1], input=img)
PY
build/troupe run "$demo/squeezenet1_1.onnx" --inputs "$demo/input.npz" --outputs "$demo/output.npz" --repeat 10
