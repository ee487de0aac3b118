"""tests/models/fill_weights.py on the stand-ins: deterministic, role-aware, calibrated, and a no-op
for models without external data. Needs no troupe binary."""
import os
import zlib

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import harness
import model_inputs
import standins
from fill_weights import calibrate, classify, external_tensors, fill_model, fill_values


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("exported"))
    return d, standins.write_all(d)


def _load_filled(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_same_bytes_every_time(exported, tmp_path):
    src_dir, entries = exported
    for name in standins.BUILDERS:
        src = os.path.join(src_dir, f"{name}.onnx")
        a = fill_model(src, str(tmp_path / "a"), calibration_entry=entries[name])
        b = fill_model(src, str(tmp_path / "b"), calibration_entry=entries[name])
        with open(a.replace(".onnx", ".weights"), "rb") as fa, open(b.replace(".onnx", ".weights"), "rb") as fb:
            assert fa.read() == fb.read(), name
        with open(a, "rb") as fa, open(src, "rb") as fs:
            assert fa.read() == fs.read(), f"{name}: the graph must be copied unchanged"


def test_values_follow_roles_and_name_seeds(exported):
    src_dir, _ = exported
    model = onnx.load(os.path.join(src_dir, "small_cnn.onnx"), load_external_data=False)
    roles = classify(model)
    assert roles["stem.conv.weight"] == ("weight", 27)
    assert roles["fc.weight"] == ("weight", 32)  # Gemm transB=1: fan-in is dims[1]
    assert roles["stem.bn.running_var"][0] == "scale"
    assert roles["stem.bn.running_mean"][0] == "shift"
    assert roles["fc.bias"][0] == "shift"
    values = fill_values(model)
    assert 0.5 <= values["stem.bn.running_var"].min() and values["stem.bn.running_var"].max() <= 1.5
    assert np.abs(values["fc.bias"]).max() <= 0.1
    w = values["layer2.0.a.conv.weight"]  # 32x16x3x3, fan-in 144
    assert abs(float(w.std()) - 1 / 12) < 0.01
    # seeded by the CRC32 of the name alone
    rng = np.random.default_rng(zlib.crc32(b"fc.bias"))
    np.testing.assert_array_equal(values["fc.bias"], rng.uniform(-0.1, 0.1, size=(10,)).astype(np.float32))

    text = onnx.load(os.path.join(src_dir, "tiny_transformer.onnx"), load_external_data=False)
    roles = classify(text)
    assert roles["embeddings.word_embeddings.weight"][0] == "embedding"
    assert roles["encoder.layer.0.attention.self.query.weight_t"] == ("weight", 32)
    emb = fill_values(text)["embeddings.word_embeddings.weight"]
    assert abs(float(emb.std()) - 0.02) < 0.003


@pytest.mark.parametrize("name", list(standins.BUILDERS))
def test_calibration_brings_layers_to_unit_rms(exported, name):
    src_dir, entries = exported
    model = onnx.load(os.path.join(src_dir, f"{name}.onnx"), load_external_data=False)
    values = fill_values(model)
    # start far off: every weight 30x too small, as a deep net's product of gains would be
    for t, _, _, _ in external_tensors(model):
        if classify(model)[t.name][0] == "weight":
            values[t.name] = values[t.name] / 30
    feeds = model_inputs.make_inputs(entries[name], 1, 16, np.random.default_rng(0))
    rms = calibrate(model, values, feeds)
    assert rms and all(0.8 <= r <= 1.25 for r in rms.values()), rms


def test_filled_model_runs_in_onnxruntime(exported, tmp_path):
    src_dir, entries = exported
    path = fill_model(os.path.join(src_dir, "tiny_transformer.onnx"), str(tmp_path),
                      calibration_entry=entries["tiny_transformer"])
    feeds = model_inputs.make_inputs(entries["tiny_transformer"], 2, 9, harness.rng_for("fill", "ort"))
    out = harness.ort_run(path, feeds)["output"]
    assert out.shape == (2, 9, 32) and np.all(np.isfinite(out))
    assert 0.5 < float(np.sqrt(np.mean(out.astype(np.float64) ** 2))) < 2.0  # LayerNorm output, O(1)


def test_inline_model_is_copied_unchanged(tmp_path):
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])], [w])
    src = tmp_path / "src" / "inline.onnx"
    src.parent.mkdir()
    onnx.save(helper.make_model(g), str(src))
    dst = fill_model(str(src), str(tmp_path / "dst"))
    assert open(dst, "rb").read() == src.read_bytes()
    assert os.listdir(tmp_path / "dst") == ["inline.onnx"]
    np.testing.assert_array_equal(_load_filled(dst)["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
