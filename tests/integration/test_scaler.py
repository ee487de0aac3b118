"""The scaler on a live node (CPU): a load step from 10% to 300% of one replica's capacity and back,
on a model whose service time is an injected delay (troupe.sleep_ms, fault_injection: true), so that
replicas on separate CPU workers add capacity even on a 2-core machine (a sleeping worker holds no
core). Replicas rise (troupe_replicas), the p99 of the requests comes back within the SLO once
they have, replicas fall after the load drops, every request is answered, and the decisions are
logged and counted. A second model scales to zero when idle and a request brings it back.

Waits are on the node's metrics with generous deadlines, not fixed sleeps; the load itself is a
fixed rate for as long as the test needs it.
"""
import os
import threading
import time

import numpy as np
import pytest

from conftest import Server, make_mlp, metric_value, wait_until, write

SLEEP_MS = 20          # one request's service time: a replica serves 50 requests a second
CAPACITY_RPS = 1000 / SLEEP_MS
SLO_MS = 250
LOW_RPS = 0.1 * CAPACITY_RPS    # 10% of one replica
HIGH_RPS = 3.0 * CAPACITY_RPS   # 300% of one replica: four replicas at 75%


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("scaler"))
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "sleepy", "1", "model.onnx"), seed=11)
    write(os.path.join(models, "sleepy", "config.yaml"),
          "max_batch_size: 1\n"
          "dynamic_batching: {default_queue_policy: {max_queue_size: 4096}}\n"
          f"scaling: {{min_replicas: 1, max_replicas: 4, slo_p99_ms: {SLO_MS},\n"
          "          upscale_delay_s: 1, downscale_delay_s: 3}\n")
    make_mlp(os.path.join(models, "napper", "1", "model.onnx"), seed=12)
    write(os.path.join(models, "napper", "config.yaml"),
          "max_batch_size: 1\n"
          "scaling: {min_replicas: 0, max_replicas: 1, slo_p99_ms: 1000, scale_to_zero_after_s: 1}\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml,
          "cpu_workers: 4\n"       # one replica per worker runs at a time: four can sleep at once
          "gpus: none\n"
          "compute_threads: 1\n"
          "warmup_runs: 1\n"
          "fault_injection: true\n"
          "scaler_interval_ms: 500\n"
          "log_level: info\n"
          f"worker_processes: {os.environ.get('TROUPE_TEST_WORKER_PROCESSES', 'off')}\n")
    s = Server(models, node_yaml, os.path.join(root, "serve.log"))
    assert s.ready, s.reason
    yield s
    assert s.terminate() == 0


def replicas(node, model="sleepy"):
    return metric_value(node.metrics(), "troupe_replicas", model=model, version="1")


class OpenLoop:
    """Requests at a fixed rate (changeable) from a thread, each one's latency recorded when its
    reply comes: (send time, latency s or None, error or None)."""

    def __init__(self, client, model):
        self.client, self.model = client, model
        self.rate = 0.0
        self.sent = 0
        self.records = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.x = {"x": np.ones((1, 16), np.float32)}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            if self.rate <= 0:
                time.sleep(0.01)
                next_at = time.monotonic()
                continue
            now = time.monotonic()
            if now < next_at:
                time.sleep(min(next_at - now, 0.01))
                continue
            next_at += 1.0 / self.rate
            sent = time.monotonic()
            self.sent += 1
            fut = self.client.submit(self.model, self.x, parameters={"troupe.sleep_ms": SLEEP_MS},
                                     timeout=60)
            fut.add_done_callback(lambda f, sent=sent: self._done(f, sent))

    def _done(self, f, sent):
        latency = time.monotonic() - sent
        with self.lock:
            e = f.exception()
            self.records.append((sent, None if e else latency, e))

    def since(self, t):
        with self.lock:
            return [r for r in self.records if r[0] >= t]

    def close(self):
        self.stop.set()
        self.thread.join()


def p99_ms(records):
    lat = sorted(r[1] for r in records if r[1] is not None)
    assert lat, "no answered request in the window"
    return 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]


def test_replicas_follow_a_load_step_and_the_p99_returns_within_the_slo(node):
    client = node.client()
    load = OpenLoop(client, "sleepy")
    try:
        assert replicas(node) == 1
        load.rate = LOW_RPS
        low_start = time.monotonic()
        # The low phase: the batcher measures the injected service time; one replica is plenty.
        assert wait_until(lambda: len(load.since(low_start)) >= 15, timeout=30)
        assert replicas(node) == 1, "10% of one replica needs no more"

        load.rate = HIGH_RPS
        high_start = time.monotonic()
        assert wait_until(lambda: replicas(node) >= 3, timeout=30, interval=0.2), \
            f"replicas stayed at {replicas(node)} under 300% of one replica's load"
        rose_after = time.monotonic() - high_start
        # Once the backlog of the step has drained, requests meet the SLO again.
        assert wait_until(lambda: metric_value(node.metrics(), "troupe_queue_length",
                                               model="sleepy", version="1") < 5,
                          timeout=30, interval=0.2), "the backlog did not drain"
        window_start = time.monotonic()
        assert wait_until(lambda: len([r for r in load.since(window_start) if r[1] is not None]) >= 300,
                          timeout=30, interval=0.2)
        window = load.since(window_start)
        steady_p99 = p99_ms(window)
        assert steady_p99 <= SLO_MS, f"p99 {steady_p99:.0f} ms over {len(window)} requests"
        high_replicas = replicas(node)
        high_nodes = metric_value(node.metrics(), "troupe_scaler_desired_nodes")
        # 150 req/s at 50 a replica and 80% planned utilisation: 3.75 busy replicas of 4 workers.
        assert 0.5 < high_nodes <= 1.2, high_nodes

        load.rate = LOW_RPS
        assert wait_until(lambda: replicas(node) <= 1, timeout=40, interval=0.2), \
            f"replicas stayed at {replicas(node)} after the load dropped"
    finally:
        load.close()
    # Every request answered, none with an error (the queue is large, no deadline was set).
    assert wait_until(lambda: len(load.records) == load.sent, timeout=60)
    errors = [r[2] for r in load.records if r[2] is not None]
    assert not errors, errors[:3]
    text = node.metrics()
    assert metric_value(text, "troupe_scaler_decisions_total", model="sleepy", action="up") >= 1
    assert metric_value(text, "troupe_scaler_decisions_total", model="sleepy", action="down",
                        reason="low_load") >= 1
    assert metric_value(text, "troupe_scaler_desired_nodes") < 0.5, "the low load needs no node more"
    events = [r for r in node.log_records() if r.get("msg") == "scaling decision" and r.get("model") == "sleepy"]
    ups = [e for e in events if e["action"] == "up"]
    downs = [e for e in events if e["action"] == "down"]
    assert ups and downs, events
    for e in events:
        assert {"version", "from", "to", "reason"} <= set(e), e
    print(f"replicas rose to 3+ in {rose_after:.1f} s, {high_replicas:.0f} at the high load, "
          f"steady p99 {steady_p99:.0f} ms; decisions: "
          + ", ".join(f"{e['from']}->{e['to']} {e['reason']}" for e in events))
    client.close()


def test_an_idle_model_scales_to_zero_and_a_request_brings_it_back(node):
    assert wait_until(lambda: replicas(node, "napper") == 0, timeout=20, interval=0.2), \
        "an idle model with min_replicas 0 goes to zero"
    with node.client() as c:
        y = c.infer("napper", {"x": np.ones((1, 16), np.float32)}, timeout=30)["y"]
    assert y.shape == (1, 8)
    assert replicas(node, "napper") == 1
    text = node.metrics()
    assert metric_value(text, "troupe_scaler_decisions_total", model="napper", action="to_zero",
                        reason="idle") >= 1
    assert metric_value(text, "troupe_scaler_decisions_total", model="napper", action="from_zero",
                        reason="arrival") >= 1
    assert metric_value(text, "troupe_model_ready", model="napper", version="1") == 1
