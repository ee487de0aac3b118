"""Integration fixtures: a model repository built with onnx.helper, and `troupe serve` started as a
process on loopback (TROUPE_BIN, else build*/troupe). The Python client comes from clients/python."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))

from troupe_client import Client  # noqa: E402


def troupe_bin():
    b = os.environ.get("TROUPE_BIN")
    if b:
        return b
    for d in sorted(os.listdir(REPO)):
        p = os.path.join(REPO, d, "troupe")
        if d.startswith("build") and os.access(p, os.X_OK):
            return p
    pytest.skip("no troupe binary (set TROUPE_BIN)")


def _save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.ir_version = 8
    onnx.save(model, path)


def make_mlp(path, seed, din=16, dh=32, dout=8, batch="N"):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((din, dh)).astype(np.float32)
    b1 = rng.standard_normal(dh).astype(np.float32)
    w2 = rng.standard_normal((dh, dout)).astype(np.float32)
    b2 = rng.standard_normal(dout).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["y0"]),
             helper.make_node("Add", ["y0", "b2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, din])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dout])],
                          [numpy_helper.from_array(a, n) for a, n in [(w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2")]])
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_multi(path):
    """Two inputs of two dtypes, two outputs: s = a + float(b), p = a * 2."""
    nodes = [helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["a", "bf"], ["s"]),
             helper.make_node("Add", ["a", "a"], ["p"])]
    g = helper.make_graph(nodes, "multi",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 4])],
                          [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])])
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def reference(models, name, version, feeds):
    """ONNX Runtime's outputs of models/<name>/<version>/model.onnx for `feeds`, by output name."""
    import onnxruntime as ort
    sess = ort.InferenceSession(os.path.join(models, name, str(version), "model.onnx"),
                                providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def build_repository(root):
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=1)
    make_mlp(os.path.join(models, "mlp", "2", "model.onnx"), seed=2)
    write(os.path.join(models, "mlp", "config.yaml"),
          "max_batch_size: 8\n"
          "dynamic_batching:\n"
          "  max_queue_delay_microseconds: 500\n"
          "  preferred_batch_size: [8]\n"
          "version_policy:\n"
          "  all: {}\n")
    make_mlp(os.path.join(models, "fixed", "1", "model.onnx"), seed=3, batch=1)
    make_multi(os.path.join(models, "multi", "1", "model.onnx"))
    # "slow": the same MLP; requests ask the worker to take longer (troupe.sleep_ms, fault
    # injection), so queueing tests do not depend on kernel speed. A small queue for overload.
    make_mlp(os.path.join(models, "slow", "1", "model.onnx"), seed=4)
    write(os.path.join(models, "slow", "config.yaml"),
          "max_batch_size: 1\n"
          "dynamic_batching:\n"
          "  priority_levels: 2\n"
          "  default_queue_policy: {max_queue_size: 4}\n")
    make_mlp(os.path.join(models, "prio", "1", "model.onnx"), seed=6)
    write(os.path.join(models, "prio", "config.yaml"),
          "max_batch_size: 1\n"
          "dynamic_batching:\n"
          "  priority_levels: 2\n"
          "  default_queue_policy: {max_queue_size: 16}\n")
    make_mlp(os.path.join(models, "deep", "1", "model.onnx"), seed=5)
    write(os.path.join(models, "deep", "config.yaml"), "max_batch_size: 1\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml,
          "cpu_workers: 2\n"
          "gpus: none\n"  # outputs are compared with ONNX Runtime at 1e-4: the CPU path (fp32)
          "compute_threads: 1\n"
          "warmup_runs: 1\n"
          "max_message_bytes: 1048576\n"
          "fault_injection: true\n"
          "drain_timeout_ms: 20000\n"
          "log_level: info\n"
          # TROUPE_TEST_WORKER_PROCESSES=on runs the whole suite with worker processes.
          f"worker_processes: {os.environ.get('TROUPE_TEST_WORKER_PROCESSES', 'off')}\n")
    return models, node_yaml


def _ephemeral_floor():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_port_rng = random.Random(os.getpid())


def free_port():
    """A port free now, below the kernel's ephemeral range: a port the kernel handed out for
    binding port 0 may be taken, before the node binds it, by any outgoing connection (the
    clusters' workers make many), which gets its local port from that range."""
    floor = _ephemeral_floor()
    low = max(1024, floor - 12000)
    for _ in range(200):
        port = _port_rng.randrange(low, floor)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:  # a machine whose low ports are all taken: the old way
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `troupe serve` process on loopback. The node prints `listening` once its listeners are
    bound, then `ready` or `loaded` (not ready: a model failed, under strict readiness) once its
    repository has loaded (docs/serving.md, Readiness). By default the constructor waits for the
    second line; wait_for="listening" returns while the node is still loading (wait_loaded then)."""

    def __init__(self, models, node_yaml, log_path, wait_for="loaded", extra_args=()):
        # Explicit free ports: the defaults (8000 HTTP, 8001 gRPC, 8002 metrics) would collide
        # between nodes.
        self.metrics_port = free_port()
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log = open(log_path, "w")
        self.returncode = None
        self.ready = None   # after the load: True (`ready`) or False (`loaded`, with self.reason)
        self.reason = ""
        self.proc = subprocess.Popen(
            [troupe_bin(), "serve", "--models", models, "--listen", "tcp://127.0.0.1:*",
             "--metrics-port", str(self.metrics_port), "--grpc-port", str(self.grpc_port),
             "--http-port", str(self.http_port), "--config", node_yaml, *extra_args],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        listening = self._read_event(timeout=120)
        assert listening["event"] == "listening", listening
        self.endpoint = listening["endpoint"]
        # 0 when the binary was built without gRPC (the KServe gRPC tests then skip).
        self.grpc_url = f"127.0.0.1:{listening['grpc_port']}" if listening.get("grpc_port") else None
        assert listening["http_port"] == self.http_port, listening
        self.http_url = f"127.0.0.1:{self.http_port}"  # tritonclient.http's url form
        if wait_for != "listening":
            self.wait_loaded()

    def wait_loaded(self, timeout=120):
        """Waits for the line the node prints once the load has finished; returns it."""
        event = self._read_event(timeout)
        assert event["event"] in ("ready", "loaded"), event
        self.ready = event["event"] == "ready"
        self.reason = event.get("reason", "")
        return event

    def _read_event(self, timeout):
        line = self._read_line(timeout)
        if not line:
            self.proc.kill()
            raise RuntimeError("troupe serve printed no event line; log: " + open(self.log.name).read()[-4000:])
        return json.loads(line)

    def _read_line(self, timeout):
        out = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return out[0].strip() if out and out[0] else None

    def client(self):
        return Client(self.endpoint)

    def log_records(self, strict=False):
        """Every JSON log line written so far, parsed (the node logs to self.log). strict: every
        complete line must be JSON (only a last line still being written may not be)."""
        out = []
        with open(self.log.name) as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                # a line still being written (the last one) may not parse yet
                assert not strict or i == len(lines) - 1, f"not a JSON log line: {line!r}"
        return out

    def log_messages(self):
        """The `msg` of every JSON log line written so far."""
        return [r.get("msg", "") for r in self.log_records()]

    def metrics(self):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def terminate(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self.log.close()
        return self.returncode


@pytest.fixture(scope="session")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    models, node_yaml = build_repository(str(root))
    return str(root), models, node_yaml


@pytest.fixture(scope="session")
def server(repository):
    root, models, node_yaml = repository
    s = Server(models, node_yaml, os.path.join(root, "serve.log"))
    assert s.ready, "every model of the test repository loads: " + s.reason
    yield s
    code = s.terminate()
    assert code == 0, "troupe serve did not exit 0 on SIGTERM: " + open(os.path.join(root, "serve.log")).read()[-3000:]


@pytest.fixture(scope="session")
def client(server):
    c = server.client()
    yield c
    c.close()


def metric_value(text, name, **labels):
    """The value of one sample of the Prometheus text format, or 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        have = {}
        if "{" in head:
            for part in head[head.index("{") + 1:-1].split(","):
                if "=" in part:
                    k, v = part.split("=", 1)
                    have[k] = v.strip('"')
        if all(have.get(k) == str(v) for k, v in labels.items()):
            return float(value)
    return 0.0


def wait_until(predicate, timeout=20, interval=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
