#!/usr/bin/env python3
"""Fails with a clear message when a Python package the tests need is missing."""
import importlib
import sys

NEEDED = {"numpy": "numpy", "onnx": "onnx", "onnxruntime": "onnxruntime", "pytest": "pytest"}

missing = []
for module, package in NEEDED.items():
    try:
        importlib.import_module(module)
    except ImportError as e:
        missing.append(f"{package} ({e})")
if missing:
    print(f"troupe's Python tests need packages missing from {sys.executable}:", file=sys.stderr)
    for m in missing:
        print(f"  {m}", file=sys.stderr)
    print("install them with: scripts/install-deps.sh (into ./.venv), or "
          f"{sys.executable} -m pip install onnx onnxruntime numpy pytest", file=sys.stderr)
    sys.exit(1)
import numpy, onnx, onnxruntime  # noqa: E401,E402
print(f"python {sys.version.split()[0]}: numpy {numpy.__version__}, onnx {onnx.__version__}, "
      f"onnxruntime {onnxruntime.__version__}")
