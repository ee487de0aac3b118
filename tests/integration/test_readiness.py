"""Health that tells the truth, against a real `troupe serve` (docs/serving.md, Readiness): a
repository with broken models (an op the CPU backend has no kernel for, a corrupt model.onnx) is
not ready under strict readiness (`troupe infer --health` exits non-zero and names them) and ready
under `readiness: any`; the node is live and not ready while it loads, and SIGTERM then stops it at
once; and it is not ready while it drains."""

import os
import signal
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper

from conftest import Server, _save, build_repository, make_mlp, metric_value, troupe_bin, wait_until, write
from troupe_client import TroupeError

NODE_YAML = "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\nlog_level: info\n"
EINSUM_ERROR = "op 'Einsum' (node 'einsum_0') has no kernel on the cpu backend"


def make_einsum(path):
    """y[b] = sum_i x[b, i]. Dynamic batch: no plan is compiled at load, so only the load-time
    check of every node against the backend's kernels keeps it from loading as READY."""
    node = helper.make_node("Einsum", ["x"], ["y"], name="einsum_0", equation="bi->b")
    g = helper.make_graph([node], "einsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])])
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def broken_repository(root, node_extra=""):
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=21)
    make_einsum(os.path.join(models, "einsum", "1", "model.onnx"))
    write(os.path.join(models, "corrupt", "1", "model.onnx"), "this is not an ONNX model")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, NODE_YAML + node_extra)
    return models, node_yaml


def health_cli(endpoint):
    return subprocess.run([troupe_bin(), "infer", "--health", "--server", endpoint, "--wait", "30"],
                          capture_output=True, text=True, timeout=60)


def test_strict_readiness_is_not_ready_with_a_broken_model_and_says_why(tmp_path):
    models, node_yaml = broken_repository(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    c = s.client()
    try:
        assert s.ready is False, "the node printed `ready` with failed models"
        assert EINSUM_ERROR in s.reason and "model 'corrupt' version 1 failed to load" in s.reason, s.reason

        h = c.health()
        assert h["live"] and not h["ready"] and not h["draining"], h
        assert EINSUM_ERROR in h["reason"] and "'corrupt'" in h["reason"], h["reason"]
        states = {m["model"]: m for m in h["models"]}
        assert states["mlp"]["state"] == "READY"
        assert states["einsum"]["state"] == "FAILED", "never READY-then-fail"
        assert EINSUM_ERROR in states["einsum"]["error"], states["einsum"]
        assert states["corrupt"]["state"] == "FAILED"

        out = health_cli(s.endpoint)
        assert out.returncode == 2, out
        assert "ready: no" in out.stdout, out.stdout
        assert "reason: " in out.stdout and EINSUM_ERROR in out.stdout, out.stdout
        assert "einsum/1: FAILED (unsupported: " in out.stdout, out.stdout
        assert "corrupt/1: FAILED (" in out.stdout, out.stdout
        assert "mlp/1: READY" in out.stdout, out.stdout
        assert "not ready" in out.stderr, out.stderr

        # The models that loaded are served all the same; the broken one is refused, named.
        assert c.infer("mlp", {"x": np.ones((2, 16), np.float32)}, wait=30)["y"].shape == (2, 8)
        with pytest.raises(TroupeError) as e:
            c.infer("einsum", {"x": np.ones((1, 4), np.float32)}, wait=30)
        assert e.value.code_name == "UNAVAILABLE" and EINSUM_ERROR in e.value.message, e.value.message
    finally:
        c.close()
        assert s.terminate() == 0, open(tmp_path / "serve.log").read()[-3000:]


def test_any_readiness_is_ready_with_one_model_loaded(tmp_path):
    models, node_yaml = broken_repository(str(tmp_path), "readiness: any\n")
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    c = s.client()
    try:
        assert s.ready, s.reason
        h = c.health()
        assert h["live"] and h["ready"] and h["reason"] == "", h
        assert {m["model"]: m["state"] for m in h["models"]}["einsum"] == "FAILED"
        out = health_cli(s.endpoint)
        assert out.returncode == 0, out
        assert "ready: yes" in out.stdout and "einsum/1: FAILED" in out.stdout, out.stdout
    finally:
        c.close()
        assert s.terminate() == 0, open(tmp_path / "serve.log").read()[-3000:]


def test_live_not_ready_while_loading_and_sigterm_stops_the_load(tmp_path):
    root = str(tmp_path)
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=22)
    node_yaml = os.path.join(root, "node.yaml")
    # The load starts 10 minutes after the listeners are up: the node is loading for the whole test.
    write(node_yaml, NODE_YAML + "load_delay_ms: 600000\n")
    s = Server(models, node_yaml, str(tmp_path / "serve.log"), wait_for="listening")
    c = s.client()
    try:
        h = c.health()
        assert h["live"] and not h["ready"] and not h["draining"], h
        assert h["reason"] == "loading" and h["models"] == [], h
        with pytest.raises(TroupeError) as e:
            c.infer("mlp", {"x": np.ones((1, 16), np.float32)}, wait=30)
        assert e.value.code_name == "UNAVAILABLE" and "loading" in e.value.message, e.value.message
        out = health_cli(s.endpoint)
        assert out.returncode == 2 and "live: yes" in out.stdout and "reason: loading" in out.stdout, out

        s.proc.send_signal(signal.SIGTERM)
        # Far sooner than the load would start: the node does not wait for it.
        assert s.proc.wait(timeout=60) == 0
        assert s.proc.stdout.read() == "", "neither `ready` nor `loaded` after a signal during loading"
    finally:
        c.close()
        s.terminate()
    log = open(tmp_path / "serve.log").read()
    assert "while loading the model repository" in log and '"stopped"' in log, log[-3000:]


def test_not_ready_while_draining(tmp_path):
    models, node_yaml = build_repository(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    c = s.client()
    probe = s.client()
    try:
        assert s.ready, s.reason
        # One request in flight for 8 s (fault injection's troupe.sleep_ms): the drain waits for it.
        slow = c.submit("slow", {"x": np.ones((1, 16), np.float32)}, parameters={"troupe.sleep_ms": 8000})
        assert wait_until(lambda: metric_value(s.metrics(), "troupe_inflight_requests") >= 1, timeout=30)
        s.proc.send_signal(signal.SIGTERM)
        seen = {}

        def draining():
            seen.update(probe.health(wait=10))
            return seen["draining"]

        assert wait_until(draining, timeout=30), seen
        assert seen["live"] and not seen["ready"] and seen["reason"] == "draining", seen
        with pytest.raises(TroupeError) as e:
            probe.infer("mlp", {"x": np.ones((1, 16), np.float32)}, wait=10)
        assert e.value.code_name == "UNAVAILABLE" and "draining" in e.value.message, e.value.message
        assert slow.result(60).outputs["y"].shape == (1, 8), "the request in flight finishes"
        assert s.proc.wait(timeout=60) == 0
    finally:
        c.close()
        probe.close()
        s.terminate()
