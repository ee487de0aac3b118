"""Model files the node must not trust, against a real `troupe serve` (docs/serving.md, Model
repository): a FIFO named model.onnx (it would block a reader for ever), external data reached
through a symbolic link that leaves the model's folder, and a dynamic-shape model fed more shapes
than its compiled-shape cache holds. The broken models fail their loads with the reason, the others
load and serve, and SIGTERM stops the node promptly."""

import os
import signal
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from conftest import Server, make_mlp, metric_value, write

NODE_YAML = ("cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\nlog_level: info\n"
             "load_timeout_s: 30\n")


def make_wide(path):
    """y = relu(x + x) on x[N, W]: the width W is dynamic, so every new width compiles a plan."""
    nodes = [helper.make_node("Add", ["x", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "W"])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)


def make_escaping(root, models):
    """An MLP whose weights are external data in weights.bin, a symlink to a file outside the
    model's folder (the same bytes: only where they live is wrong)."""
    folder = os.path.join(models, "escape", "1")
    make_mlp(os.path.join(folder, "model.onnx"), seed=42)
    model = onnx.load(os.path.join(folder, "model.onnx"))
    onnx.save(model, os.path.join(folder, "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    outside = os.path.join(root, "outside")
    os.makedirs(outside)
    os.rename(os.path.join(folder, "weights.bin"), os.path.join(outside, "secret.bin"))
    os.symlink(os.path.join(outside, "secret.bin"), os.path.join(folder, "weights.bin"))


def untrusted_repository(root):
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=41)
    os.makedirs(os.path.join(models, "fifo", "1"))
    os.mkfifo(os.path.join(models, "fifo", "1", "model.onnx"))
    make_escaping(root, models)
    make_wide(os.path.join(models, "wide", "1", "model.onnx"))
    write(os.path.join(models, "wide", "config.yaml"), "max_batch_size: 4\nshape_cache: {max_plans: 2}\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, NODE_YAML)
    return models, node_yaml


def test_untrusted_model_files_fail_alone_and_the_node_serves_and_stops(tmp_path):
    models, node_yaml = untrusted_repository(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    c = s.client()
    try:
        assert s.ready is False, "strict readiness: two models failed"
        assert "'fifo'" in s.reason and "FIFO, not a regular file" in s.reason, s.reason
        assert "'escape'" in s.reason and "outside the model folder" in s.reason, s.reason

        states = {m["model"]: m for m in c.health()["models"]}
        assert states["mlp"]["state"] == "READY" and states["wide"]["state"] == "READY", states
        assert states["fifo"]["state"] == "FAILED", states["fifo"]
        assert "model.onnx' is a FIFO" in states["fifo"]["error"], states["fifo"]
        assert states["escape"]["state"] == "FAILED", states["escape"]
        assert "external data location 'weights.bin' resolves to" in states["escape"]["error"], states["escape"]
        assert "secret.bin" in states["escape"]["error"], states["escape"]

        assert c.infer("mlp", {"x": np.ones((2, 16), np.float32)}, wait=30)["y"].shape == (2, 8)

        # Six widths through a cache of two plans: every request is answered right; the cache
        # evicted the four oldest plans.
        for width in range(3, 9):
            x = np.linspace(-1, 1, width, dtype=np.float32).reshape(1, width)
            y = c.infer("wide", {"x": x}, wait=30)["y"]
            np.testing.assert_array_equal(y, np.maximum(x + x, 0))
        text = s.metrics()
        assert metric_value(text, "troupe_shape_cache_evictions_total", model="wide", version="1") == 4, \
            [line for line in text.splitlines() if "shape_cache" in line]
        assert metric_value(text, "troupe_shape_cache_evictions_total", model="mlp", version="1") == 0
    finally:
        c.close()
    s.proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert s.proc.wait(timeout=60) == 0, open(tmp_path / "serve.log").read()[-3000:]
    assert time.monotonic() - start < 20, "SIGTERM stopped the node promptly"
    s.terminate()
