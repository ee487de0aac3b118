"""The Python client over several endpoints (troupe_client.Client, docs/protocol.md, Clients): two
nodes serve the same model; the client sends to the first and, when that node is killed under a
closed loop, sends what waited on it again to the second: every request gets exactly one answer,
right. A first endpoint where nothing listens is passed over from the start."""

import os
import signal

import numpy as np

from conftest import Server, free_port, make_mlp, metric_value, reference, write
from troupe_client import Client


def build(root):
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=51)
    write(os.path.join(models, "mlp", "config.yaml"), "max_batch_size: 4\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\n")
    return models, node_yaml


def served(server):
    return metric_value(server.metrics(), "troupe_requests_total", model="mlp", version="1", outcome="ok")


def test_a_killed_node_fails_over_to_the_next_endpoint(tmp_path):
    models, node_yaml = build(str(tmp_path))
    first = Server(models, node_yaml, str(tmp_path / "first.log"))
    second = Server(models, node_yaml, str(tmp_path / "second.log"))
    try:
        client = Client([first.endpoint, second.endpoint], timeout=60)
        rng = np.random.default_rng(3)
        inputs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(400)]
        want = [reference(models, "mlp", 1, {"x": x})["y"] for x in inputs]
        futures, done_before_kill = [], None
        # A closed loop of 8 in flight; the first node is killed (SIGKILL: no drain, replies in
        # flight lost) once 100 requests are answered.
        for i, x in enumerate(inputs):
            futures.append(client.submit("mlp", {"x": x}))
            if i >= 8:
                futures[i - 8].result()
            if i == 108:
                done_before_kill = served(first)
                first.proc.send_signal(signal.SIGKILL)
        for i, f in enumerate(futures):
            np.testing.assert_allclose(f.result().outputs["y"], want[i], rtol=1e-4, atol=1e-4,
                                       err_msg=f"request {i}")
        assert done_before_kill >= 100, "the first endpoint is preferred while it is up"
        assert served(second) >= 400 - 109, "the rest went to the second node"
        print(f"requests sent again after the kill: {client.failovers}")
        client.close()
    finally:
        first.terminate()
        assert second.terminate() == 0


def test_an_endpoint_where_nothing_listens_is_passed_over(tmp_path):
    models, node_yaml = build(str(tmp_path))
    server = Server(models, node_yaml, str(tmp_path / "serve.log"))
    try:
        nobody = f"tcp://127.0.0.1:{free_port()}"
        with Client(f"{nobody},{server.endpoint}", timeout=30) as client:
            x = np.ones((2, 16), np.float32)
            np.testing.assert_allclose(client.infer("mlp", {"x": x})["y"],
                                       reference(models, "mlp", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
            assert client.failovers == 0, "nothing was sent to the endpoint that never connected"
    finally:
        assert server.terminate() == 0


def test_troupe_bench_over_two_nodes_survives_the_loss_of_one(tmp_path):
    """The C++ client (troupe bench, troupe infer) takes the same comma-separated endpoints."""
    import json
    import subprocess
    import time

    from conftest import troupe_bin

    models, node_yaml = build(str(tmp_path))
    first = Server(models, node_yaml, str(tmp_path / "first.log"))
    second = Server(models, node_yaml, str(tmp_path / "second.log"))
    out_json = tmp_path / "bench.json"
    try:
        bench = subprocess.Popen([troupe_bin(), "bench", "mlp", "--server", f"{first.endpoint},{second.endpoint}",
                                  "--concurrency", "8", "--connections", "2", "--duration", "3", "--warmup", "0.2",
                                  "--json", str(out_json), "--quiet"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The event: the first node has served a good share of the load (polled on its counter).
        deadline = time.monotonic() + 30
        while served(first) < 200 and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.02)
        assert served(first) >= 200, "the first endpoint is preferred while it is up"
        first.proc.send_signal(signal.SIGKILL)
        out, err = bench.communicate(timeout=120)
        assert bench.returncode == 0, err
        j = json.loads(out_json.read_text())
        assert j["errors"] == 0 and j["lost"] == 0, j
        assert j["failovers"] > 0, j  # the requests in flight on the killed node
        assert served(second) > 0, "the rest went to the second node"
        # One node alone behind the same flag: troupe infer answers from the second node too.
        x = tmp_path / "x.npz"
        np.savez(x, x=np.ones((1, 16), np.float32))
        r = subprocess.run([troupe_bin(), "infer", "mlp", "--inputs", str(x), "--server",
                            f"{first.endpoint},{second.endpoint}"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        first.terminate()
        assert second.terminate() == 0


def test_a_node_that_stops_answering_with_its_connection_open_is_passed_over(tmp_path):
    """SIGSTOP keeps the node's sockets open: only the client's heartbeats see it is gone."""
    models, node_yaml = build(str(tmp_path))
    first = Server(models, node_yaml, str(tmp_path / "first.log"))
    second = Server(models, node_yaml, str(tmp_path / "second.log"))
    try:
        client = Client([first.endpoint, second.endpoint], timeout=60, heartbeat=0.1, heartbeat_timeout=0.5)
        rng = np.random.default_rng(4)
        inputs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(300)]
        futures = []
        for i, x in enumerate(inputs):
            futures.append(client.submit("mlp", {"x": x}))
            if i >= 8:
                futures[i - 8].result()  # within heartbeat_timeout plus a request: never 60 s
            if i == 100:
                first.proc.send_signal(signal.SIGSTOP)
            if i == 250:
                first.proc.send_signal(signal.SIGCONT)  # its late replies are dropped
        for i, f in enumerate(futures):
            np.testing.assert_allclose(f.result().outputs["y"],
                                       reference(models, "mlp", 1, {"x": inputs[i]})["y"],
                                       rtol=1e-4, atol=1e-4, err_msg=f"request {i}")
        assert client.failovers > 0, "the requests the stopped node held were sent again"
        assert served(second) > 0
        client.close()
    finally:
        first.proc.send_signal(signal.SIGCONT)
        assert first.terminate() == 0
        assert second.terminate() == 0


def test_troupe_bench_passes_over_a_stopped_node(tmp_path):
    """The C++ client's heartbeats (1 s, passed over after 3 s of silence), as the Python one's."""
    import json
    import subprocess
    import time

    from conftest import troupe_bin

    models, node_yaml = build(str(tmp_path))
    first = Server(models, node_yaml, str(tmp_path / "first.log"))
    second = Server(models, node_yaml, str(tmp_path / "second.log"))
    out_json = tmp_path / "bench.json"
    try:
        bench = subprocess.Popen([troupe_bin(), "bench", "mlp", "--server", f"{first.endpoint},{second.endpoint}",
                                  "--concurrency", "4", "--connections", "1", "--duration", "6", "--warmup", "0.2",
                                  "--json", str(out_json), "--quiet"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while served(first) < 200 and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.02)
        assert served(first) >= 200
        first.proc.send_signal(signal.SIGSTOP)
        before = served(second)
        out, err = bench.communicate(timeout=120)
        assert bench.returncode == 0, err
        j = json.loads(out_json.read_text())
        assert j["errors"] == 0 and j["lost"] == 0, j
        assert served(second) > before, "after the heartbeat timeout the second node served the rest"
    finally:
        first.proc.send_signal(signal.SIGCONT)
        assert first.terminate() == 0
        assert second.terminate() == 0
