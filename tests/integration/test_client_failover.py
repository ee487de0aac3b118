"""Clients over several endpoints (troupe_client.Client; `troupe infer` and `troupe bench` with
`--server a,b`; docs/serving.md): two nodes serve the same model; a client sends to the first and,
when that node is killed, or stopped with its connection open (found by the heartbeats), sends
what waited on it again to the second: every request gets exactly one answer, right. A first
endpoint where nothing listens is passed over from the start."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import Server, free_port, make_mlp, metric_value, reference, troupe_bin, write
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


class TwoNodes:
    def __init__(self, tmp_path):
        self.models, node_yaml = build(str(tmp_path))
        self.first = Server(self.models, node_yaml, str(tmp_path / "first.log"))
        self.second = Server(self.models, node_yaml, str(tmp_path / "second.log"))
        self.endpoints = [self.first.endpoint, self.second.endpoint]
        self.first_killed = False

    def lose_first(self, how):
        """SIGKILL (connection dropped, replies in flight lost) or SIGSTOP (connection kept)."""
        self.first_killed = how == signal.SIGKILL
        self.first.proc.send_signal(how)


@pytest.fixture
def nodes(tmp_path):
    n = TwoNodes(tmp_path)
    yield n
    n.first.proc.send_signal(signal.SIGCONT)  # a stopped node drains and exits
    first_code = n.first.terminate()
    assert n.second.terminate() == 0
    if not n.first_killed:
        assert first_code == 0


def closed_loop(nodes, client, count, seed, events):
    """`count` requests of one row, 8 in flight, `events[i]()` run after request i is sent;
    then every reply checked against ONNX Runtime."""
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(count)]
    futures = []
    for i, x in enumerate(inputs):
        futures.append(client.submit("mlp", {"x": x}))
        if i >= 8:
            futures[i - 8].result()
        if i in events:
            events[i]()
    for i, f in enumerate(futures):
        np.testing.assert_allclose(f.result().outputs["y"],
                                   reference(nodes.models, "mlp", 1, {"x": inputs[i]})["y"],
                                   rtol=1e-4, atol=1e-4, err_msg=f"request {i}")


def test_a_killed_node_fails_over_to_the_next_endpoint(nodes):
    client = Client(nodes.endpoints, timeout=60)
    seen = {}

    def kill():  # once 100 requests are answered
        seen["before_kill"] = served(nodes.first)
        nodes.lose_first(signal.SIGKILL)
    closed_loop(nodes, client, 400, 3, {108: kill})
    assert seen["before_kill"] >= 100, "the first endpoint is preferred while it is up"
    assert served(nodes.second) >= 400 - 109, "the rest went to the second node"
    print(f"requests sent again after the kill: {client.failovers}")
    client.close()


def test_a_node_that_stops_answering_with_its_connection_open_is_passed_over(nodes):
    """SIGSTOP keeps the node's sockets open: only the client's heartbeats see it is gone."""
    client = Client(nodes.endpoints, timeout=60, heartbeat=0.1, heartbeat_timeout=0.5)
    # Each wait for a reply is within heartbeat_timeout plus a request: never 60 s. The stopped
    # node's late replies, once it goes on, are dropped.
    closed_loop(nodes, client, 300, 4, {100: lambda: nodes.lose_first(signal.SIGSTOP),
                                        250: lambda: nodes.first.proc.send_signal(signal.SIGCONT)})
    assert client.failovers > 0, "the requests the stopped node held were sent again"
    assert served(nodes.second) > 0
    client.close()


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


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_troupe_bench_over_two_nodes_survives_the_loss_of_one(nodes, tmp_path, how):
    """The C++ client (troupe bench, troupe infer) takes the same comma-separated endpoints; a
    stopped node is passed over by its heartbeats (1 s, then 3 s of silence)."""
    out_json = tmp_path / "bench.json"
    bench = subprocess.Popen([troupe_bin(), "bench", "mlp", "--server", ",".join(nodes.endpoints),
                              "--concurrency", "8", "--connections", "2", "--duration", "6", "--warmup", "0.2",
                              "--json", str(out_json), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The event: the first node has served a good share of the load (polled on its counter).
    deadline = time.monotonic() + 30
    while served(nodes.first) < 200 and time.monotonic() < deadline and bench.poll() is None:
        time.sleep(0.02)
    assert served(nodes.first) >= 200, "the first endpoint is preferred while it is up"
    before = served(nodes.second)
    nodes.lose_first(how)
    _, err = bench.communicate(timeout=120)
    assert bench.returncode == 0, err
    j = json.loads(out_json.read_text())
    assert j["errors"] == 0 and j["lost"] == 0, j
    assert j["failovers"] > 0, j  # the requests in flight on the lost node
    assert served(nodes.second) > before, "the rest went to the second node"
    if how == signal.SIGKILL:
        # One node alone behind the same flag: troupe infer answers from the second node too.
        x = tmp_path / "x.npz"
        np.savez(x, x=np.ones((1, 16), np.float32))
        r = subprocess.run([troupe_bin(), "infer", "mlp", "--inputs", str(x), "--server",
                            ",".join(nodes.endpoints)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
