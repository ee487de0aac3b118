"""A model served with `input_normalization` in its config.yaml: clients send uint8 pixels, the node
normalises them inside the graph. The metadata shows uint8, the outputs match ONNX Runtime on the
normalised float input, a float32 request gets the usual typed dtype error, and a config that does
not fit the model fails that model's load (named) while the node serves the others."""

import os

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import Server, _save, write
from troupe_client import TroupeError

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
NORMALIZATION = ("input_normalization:\n"
                 "  input: image\n"
                 "  dtype: uint8\n"
                 "  mean: [123.675, 116.28, 103.53]\n"
                 "  std: [58.395, 57.12, 57.375]\n"
                 "  channel_axis: 1\n")


def make_convnet(path):
    """image [N, 3, 16, 16] -> Conv(3x3, pad 1) + bias -> Relu -> Conv(1x1) -> GlobalAveragePool
    -> Flatten -> logits [N, 8]. The padding makes border outputs depend on normalising first."""
    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((8, 8, 1, 1)) * 0.4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "W1", "B1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["logits"], axis=1)]
    g = helper.make_graph(nodes, "convnet",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 8])],
                          [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "B1"),
                           numpy_helper.from_array(w2, "W2")])
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("normalization"))
    models = os.path.join(root, "models")
    make_convnet(os.path.join(models, "convnet", "1", "model.onnx"))
    write(os.path.join(models, "convnet", "config.yaml"),
          "max_batch_size: 4\n"
          "dynamic_batching: {max_queue_delay_microseconds: 200}\n" + NORMALIZATION)
    # The same model with two channels' statistics: its load fails, named; the node still serves.
    make_convnet(os.path.join(models, "mismatch", "1", "model.onnx"))
    write(os.path.join(models, "mismatch", "config.yaml"),
          "max_batch_size: 4\n"
          "input_normalization: {dtype: uint8, mean: [1, 2], std: [3, 4]}\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\nlog_level: info\n")
    server = Server(models, node_yaml, os.path.join(root, "serve.log"))
    client = server.client()
    yield models, client
    client.close()
    assert server.terminate() == 0, open(os.path.join(root, "serve.log")).read()[-3000:]


def reference(models, pixels):
    sess = ort.InferenceSession(os.path.join(models, "convnet", "1", "model.onnx"),
                                providers=["CPUExecutionProvider"])
    normalised = ((pixels.astype(np.float64) - MEAN[None, :, None, None]) / STD[None, :, None, None])
    return sess.run(None, {"image": normalised.astype(np.float32)})[0]


def test_metadata_shows_the_client_dtype(served):
    _, client = served
    md = client.metadata("convnet")
    assert md["inputs"] == [{"name": "image", "dtype": np.uint8, "shape": [-1, 3, 16, 16]}]
    assert md["outputs"][0]["dtype"] == np.float32


def test_uint8_requests_match_onnxruntime_on_normalised_floats(served):
    models, client = served
    rng = np.random.default_rng(3)
    futures = []
    for rows in (1, 3, 2, 4):
        pixels = rng.integers(0, 256, (rows, 3, 16, 16), dtype=np.uint8)
        futures.append((pixels, client.submit("convnet", {"image": pixels})))
    for pixels, f in futures:
        got = f.result(60).outputs["logits"]
        want = reference(models, pixels)
        assert got.shape == want.shape
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel <= 1e-5, rel


def test_float32_and_wrong_shapes_get_typed_errors(served):
    _, client = served
    normalised = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(TroupeError) as e:
        client.infer("convnet", {"image": normalised}, wait=30)
    assert e.value.code_name == "INVALID_ARGUMENT"
    assert "uint8" in e.value.message and "float32" in e.value.message, e.value.message
    with pytest.raises(TroupeError) as e:
        client.infer("convnet", {"image": np.zeros((1, 1, 16, 16), np.uint8)}, wait=30)
    assert e.value.code_name == "INVALID_ARGUMENT"
    # The node still serves after the refusals.
    assert client.infer("convnet", {"image": np.full((1, 3, 16, 16), 128, np.uint8)}, wait=30)["logits"].shape == (1, 8)


def test_a_config_that_does_not_fit_the_model_fails_its_load(served):
    _, client = served
    h = client.health()
    states = {m["model"]: m for m in h["models"]}
    assert states["convnet"]["state"] == "READY"
    assert states["mismatch"]["state"] == "FAILED"
    assert "3 channels" in states["mismatch"]["error"], states["mismatch"]
