"""Whole models: troupe (CPU backend) against ONNX Runtime with graph optimisations off.

Models: the stand-ins of tests/models/standins.py (always) and every model of
tests/models/manifest.json whose graph is on disk. Each gets deterministic weights from
fill_weights.py (once per session), fresh random inputs per run (see the seed in the header) at
batch 1 and 2, and every output must be within relative L2 error 1e-3 of ORT's.
Also: a corrupt model or a bad input must give an `error: <code>: ...` line and exit code 2.
"""
import json
import os

import numpy as np
import pytest

import harness
import model_inputs
import standins
from fill_weights import fill_model

TOLERANCE = 1e-3
SEQUENCE_BY_BATCH = {1: 24, 2: 16}  # text models: two sequence lengths, neither a power of two
MANIFEST = os.path.join(harness.MODELS_DIR, "manifest.json")


def _manifest():
    if not os.path.exists(MANIFEST):
        return {}
    with open(MANIFEST) as f:
        return json.load(f)


def _model_params():
    params = []
    models = [(n, "standin") for n in standins.BUILDERS] + [(n, "manifest") for n in sorted(_manifest())]
    for name, source in models:
        for batch in (1, 2):
            params.append(pytest.param(name, source, batch, id=f"{name}-b{batch}"))
    return params


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("standins")
    return str(d), standins.write_all(str(d))


@pytest.fixture(scope="session")
def filled_models(tmp_path_factory):
    """name -> path of a copy with weights; filled on first use, shared by both batch sizes."""
    cache = {}
    root = tmp_path_factory.mktemp("filled")

    def get(name, src, entry):
        if name not in cache:
            cache[name] = fill_model(src, os.path.join(str(root), name), calibration_entry=entry)
        return cache[name]
    return get


@pytest.fixture(scope="session")
def binary():
    return harness.require_troupe()


@pytest.mark.parametrize("name,source,batch", _model_params())
def test_model_matches_onnxruntime(name, source, batch, standin_dir, filled_models, binary, request):
    if source == "standin":
        src_dir, entries = standin_dir
        entry = entries[name]
        src = os.path.join(src_dir, f"{name}.onnx")
    else:
        entry = _manifest()[name]
        src = os.path.join(harness.MODELS_DIR, f"{name}.onnx")
        if not os.path.exists(src):
            pytest.skip(f"{name}.onnx is not on disk (tests/models/manifest.json lists it)")
    model = filled_models(name, src, entry)
    seq = SEQUENCE_BY_BATCH[batch]
    feeds = model_inputs.make_inputs(entry, batch, seq, harness.rng_for("model", name, batch))

    expected = harness.ort_run(model, feeds)
    got = harness.run_troupe(model, feeds, backend="cpu", binary=binary)
    assert got.returncode == 0, f"{name} batch {batch}: {got.describe()} (seed {harness.test_seed()})"

    failures = []
    for out_name, ref in expected.items():
        reason, err = harness.compare(out_name, got.outputs.get(out_name), ref, TOLERANCE)
        harness.REPORTED_ERRORS.append((request.node.name, out_name, err))
        print(f"{name} batch {batch} {out_name}: relative L2 error {err:.3e}")
        if reason:
            failures.append(reason)
    assert not failures, f"{name} batch {batch} (seed {harness.test_seed()}): " + "; ".join(failures)


# ---- errors are reported, never crash -------------------------------------------------------------

def _assert_clean_error(result, what):
    assert result.returncode >= 0, f"{what}: {result.describe()}"
    assert result.returncode == 2, f"{what}: expected exit 2, got {result.describe()}"
    assert result.error_line(), f"{what}: no `error: <code>: <message>` line in: {result.text[-2000:]}"


def _cnn(standin_dir, filled_models):
    src_dir, entries = standin_dir
    return filled_models("small_cnn", os.path.join(src_dir, "small_cnn.onnx"), entries["small_cnn"])


def _cnn_input(batch=1):
    return {"input": np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_corrupt_model_is_an_error(kind, standin_dir, filled_models, binary, tmp_path):
    good = _cnn(standin_dir, filled_models)
    with open(good, "rb") as f:
        data = f.read()
    bad = tmp_path / "bad.onnx"
    if kind == "garbage":
        bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"")
    _assert_clean_error(harness.run_troupe(str(bad), _cnn_input(), binary=binary), f"{kind} model")


def test_missing_model_file_is_an_error(binary, tmp_path):
    r = harness.run_troupe(str(tmp_path / "nope.onnx"), _cnn_input(), binary=binary)
    _assert_clean_error(r, "missing model file")


def test_missing_external_data_is_an_error(standin_dir, binary):
    src_dir, _ = standin_dir  # the stand-ins as exported: graph only, no weights file
    r = harness.run_troupe(os.path.join(src_dir, "small_cnn.onnx"), _cnn_input(), binary=binary)
    _assert_clean_error(r, "model whose external data file is absent")


def test_missing_input_is_an_error(standin_dir, filled_models, binary):
    r = harness.run_troupe(_cnn(standin_dir, filled_models), {"not_the_input": np.zeros(3, np.float32)},
                           binary=binary)
    _assert_clean_error(r, "missing input")


@pytest.mark.parametrize("kind", ["dtype", "rank", "fixed_dim"])
def test_bad_input_is_an_error(kind, standin_dir, filled_models, binary):
    x = _cnn_input()["input"]
    bad = {"dtype": x.astype(np.int64), "rank": x[0], "fixed_dim": np.zeros((1, 4, 32, 32), np.float32)}[kind]
    r = harness.run_troupe(_cnn(standin_dir, filled_models), {"input": bad}, binary=binary)
    _assert_clean_error(r, f"input with wrong {kind}")


def test_text_model_rejects_out_of_range_token(standin_dir, filled_models, binary):
    """A token id past the embedding table is invalid data: an error, not a read out of bounds."""
    src_dir, entries = standin_dir
    model = filled_models("tiny_transformer", os.path.join(src_dir, "tiny_transformer.onnx"),
                          entries["tiny_transformer"])
    feeds = model_inputs.make_inputs(entries["tiny_transformer"], 1, 8, np.random.default_rng(2))
    feeds["input_ids"][0, 3] = 10**6
    r = harness.run_troupe(model, feeds, binary=binary)
    _assert_clean_error(r, "token id out of range")


# ---- --slice-rows: the batch as slices through one plan compiled for the slice --------------------

def test_slice_rows_matches_onnxruntime(standin_dir, filled_models, binary):
    model = _cnn(standin_dir, filled_models)
    feeds = {"input": np.random.default_rng(3).standard_normal((6, 3, 32, 32)).astype(np.float32)}
    expected = harness.ort_run(model, feeds)
    for timing in ("end-to-end", "device"):
        got = harness.run_troupe(model, feeds, binary=binary,
                                 extra_args=["--slice-rows", "2", "--timing", timing, "--repeat", "2"])
        assert got.returncode == 0, got.describe()
        assert "slices: 3 of 2 rows per run" in got.text, got.text[-2000:]
        for out_name, ref in expected.items():
            reason, err = harness.compare(out_name, got.outputs.get(out_name), ref, TOLERANCE)
            assert not reason, f"--slice-rows 2 --timing {timing}: {reason}"


def test_slice_rows_that_do_not_divide_the_batch_are_an_error(standin_dir, filled_models, binary):
    r = harness.run_troupe(_cnn(standin_dir, filled_models), _cnn_input(batch=5), binary=binary,
                           extra_args=["--slice-rows", "2"])
    _assert_clean_error(r, "--slice-rows 2 of a batch of 5")
    assert "does not divide" in r.error_line(), r.error_line()
