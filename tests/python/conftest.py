"""pytest configuration of tests/python (see harness.py for what the tests share)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_missing = []
for _mod in ("numpy", "onnx", "onnxruntime"):
    try:
        __import__(_mod)
    except ImportError:
        _missing.append(_mod)
if _missing:
    raise SystemExit(
        "troupe's Python tests need " + ", ".join(_missing) + " (from PyPI): "
        "python3 -m pip install onnx onnxruntime numpy pytest")

import harness  # noqa: E402


def pytest_report_header(config):
    return [f"troupe test seed: {harness.test_seed()} (replay with TROUPE_TEST_SEED={harness.test_seed()})",
            f"troupe binary: {harness.troupe_bin() or 'not found (set TROUPE_BIN)'}",
            f"backends: {', '.join(harness.available_backends())}"]


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if harness.REPORTED_ERRORS:
        tr.section("relative L2 errors (troupe vs ONNX Runtime)")
        for test_id, output, err in harness.REPORTED_ERRORS:
            tr.write_line(f"{test_id:<48} {output:<24} {err:.3e}")
    tr.write_line(f"troupe test seed: {harness.test_seed()} (replay with TROUPE_TEST_SEED={harness.test_seed()})")
