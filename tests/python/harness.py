"""What the Python tests share: finding and running the `troupe` CLI, ONNX Runtime as the reference,
the error measure, the session's random seed and which backends this machine can run.

Only the CLI contract is used:
  troupe run MODEL --inputs IN.npz --outputs OUT.npz [--backend B] [--precision P] ...
  exit 0 with every graph output in OUT.npz; exit 2 with `error: <code>: <message>` on a model or
  input error; 1 on an internal error.
"""
import glob
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zlib

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS_DIR = os.path.join(REPO_ROOT, "tests", "models")
sys.path.insert(0, MODELS_DIR)

ERROR_LINE = re.compile(r"^error: [a-z_]+: .+", re.MULTILINE)

DEFAULT_SEED = 20251206
_seed = None

# Error figures worth reading even when everything passes, printed at the end of the session:
# (test id, output name, value).
REPORTED_ERRORS = []


def test_seed():
    """The session's seed: fixed (DEFAULT_SEED, the C++ tests' too: tests/test_seed.hpp) so that a
    run passes or fails the same way every time; TROUPE_TEST_SEED=N replays another seed,
    TROUPE_TEST_SEED=random draws a fresh one."""
    global _seed
    if _seed is None:
        env = os.environ.get("TROUPE_TEST_SEED", "").strip()
        if env == "random":
            _seed = random.SystemRandom().randrange(1, 2**31)
        else:
            _seed = int(env) if env else DEFAULT_SEED
    return _seed


def rng_for(*parts):
    """A Generator that depends on the session seed and on what it is for (a case, a model)."""
    key = "/".join(str(p) for p in parts).encode()
    return np.random.default_rng([test_seed(), zlib.crc32(key)])


def troupe_bin():
    """TROUPE_BIN (set by ctest), else the newest build*/troupe of the checkout, else None."""
    env = os.environ.get("TROUPE_BIN")
    if env:
        return env
    found = [p for p in glob.glob(os.path.join(REPO_ROOT, "build*", "troupe")) if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def require_troupe():
    """The troupe binary for a test: skips where none is known, fails where TROUPE_BIN is unusable."""
    import pytest
    b = troupe_bin()
    if not b:
        pytest.skip("no troupe binary: build the `troupe` target or set TROUPE_BIN")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"troupe binary {b} is not an executable file (TROUPE_BIN={os.environ.get('TROUPE_BIN')})")
    return b


def available_backends():
    """["cpu"] plus "cuda" when `nvidia-smi -L` lists a GPU; TROUPE_TEST_BACKENDS=cpu,cuda overrides."""
    env = os.environ.get("TROUPE_TEST_BACKENDS", "").strip()
    if env:
        return [b.strip() for b in env.split(",") if b.strip()]
    backends = ["cpu"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if re.search(r"^GPU \d+", out, re.MULTILINE):
            backends.append("cuda")
    return backends


class troupe_result:
    def __init__(self, returncode, stdout, stderr, outputs):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.outputs = outputs  # {name: ndarray}, empty unless returncode == 0

    @property
    def text(self):
        return (self.stdout + "\n" + self.stderr).strip()

    def error_line(self):
        m = ERROR_LINE.search(self.text)
        return m.group(0) if m else None

    def describe(self):
        if self.returncode < 0:
            return f"troupe killed by signal {-self.returncode}: {self.text[-2000:]}"
        return f"troupe exit {self.returncode}: {self.text[-2000:]}"


def run_troupe(model_path, feeds, backend="cpu", precision="fp32", extra_args=(), timeout_s=600, binary=None):
    """Runs `troupe run` on feeds ({name: ndarray}); returns a troupe_result."""
    binary = binary or troupe_bin()
    with tempfile.TemporaryDirectory(prefix="troupe-run-") as tmp:
        in_path = os.path.join(tmp, "in.npz")
        out_path = os.path.join(tmp, "out.npz")
        np.savez(in_path, **feeds)
        cmd = [binary, "run", model_path, "--inputs", in_path, "--outputs", out_path,
               "--backend", backend, "--precision", precision, *extra_args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            return troupe_result(124, e.stdout or "", f"timed out after {timeout_s} s: {' '.join(cmd)}", {})
        outputs = {}
        if p.returncode == 0:
            if not os.path.exists(out_path):
                return troupe_result(1, p.stdout, p.stderr + "\n(exit 0 but no output file)", {})
            with np.load(out_path, allow_pickle=False) as z:
                outputs = {k: z[k] for k in z.files}
        return troupe_result(p.returncode, p.stdout, p.stderr, outputs)


def ort_session(model, optimize=False, threads=0):
    """An ONNX Runtime CPU session; graph optimisations off unless asked, so it is the plain reference."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def ort_run(model, feeds):
    """{output name: ndarray}; model is a path or serialized bytes."""
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def rel_l2(actual, expected):
    """||actual - expected||_2 / ||expected||_2 in float64 (absolute where expected is all zero).
    Positions that are NaN in both count as equal; a NaN or inf in one only makes the error inf."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
    ok = ~(both_nan | same_inf)
    a, e = a[ok], e[ok]
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
        return float("inf")
    diff = float(np.linalg.norm(a - e))
    ref = float(np.linalg.norm(e))
    return diff / ref if ref > 0 else diff


def compare(name, actual, expected, tol):
    """None when `actual` matches `expected` (shape, dtype; exact for ints/bools, rel L2 <= tol for
    floats), else a one-line reason. Returns (reason, error value)."""
    if actual is None:
        return f"{name}: missing from troupe's outputs", float("inf")
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return f"{name}: shape {actual.shape}, expected {expected.shape}", float("inf")
    if actual.dtype != expected.dtype:
        return f"{name}: dtype {actual.dtype}, expected {expected.dtype}", float("inf")
    if expected.dtype.kind in "iub":
        bad = int(np.count_nonzero(actual != expected))
        if bad:
            idx = np.argwhere(actual != expected)[0]
            return (f"{name}: {bad}/{expected.size} elements differ, first at {tuple(idx)}: "
                    f"{actual[tuple(idx)]} vs {expected[tuple(idx)]}"), float(bad)
        return None, 0.0
    err = rel_l2(actual, expected)
    if not err <= tol:
        return f"{name}: relative L2 error {err:.3g} > {tol:g}", err
    return None, err
