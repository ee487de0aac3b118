"""`troupe serve --worker-processes on`: every worker runs in a process of its own (`troupe worker`,
a child of the node; docs/worker-processes.md). Outputs match ONNX Runtime through the ZeroMQ and
KServe HTTP doors; a worker process that crashes holding a batch, or is killed with SIGKILL under a
closed loop of requests, costs no request (each answered exactly once, counted by id) and its
models are ready again on a fresh process; node shutdown, graceful or SIGKILL, leaves no worker
process behind. Every wait is for an event, with a deadline."""

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest
import zmq

from conftest import Server, build_repository, metric_value, reference, wait_until
from troupe_client import troupe_pb2 as pb


def worker_pids(server):
    """{worker index: pid} of the worker processes started so far (the latest per index)."""
    pids = {}
    for r in server.log_records():
        if r.get("msg") == "worker process started":
            pids[r["worker"]] = r["pid"]
    return pids


def endpoint_directory(server):
    for r in server.log_records():
        msg = r.get("msg", "")
        if msg.startswith("worker processes on"):
            return msg.rsplit(" ", 1)[-1]
    return None


def gone(pid):
    """The process no longer runs: it does not exist, or it is a zombie waiting for its new
    parent (a node killed with SIGKILL cannot reap its children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def reloads_of(server, model, version):
    return sum(1 for r in server.log_records()
               if r.get("msg") == "model reloaded" and r.get("model") == model and r.get("version") == version)


def start(tmp_path, name="serve.log", node_extra=""):
    models, node_yaml = build_repository(str(tmp_path))
    with open(node_yaml, "a") as f:
        f.write(node_extra)
    s = Server(models, node_yaml, str(tmp_path / name), extra_args=("--worker-processes", "on"))
    assert s.ready, s.reason
    assert wait_until(lambda: len(worker_pids(s)) == 2), "two worker processes (cpu_workers: 2)"
    return s, models


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    s, models = start(tmp_path_factory.mktemp("wproc"))
    yield s, models
    assert s.terminate() == 0, open(s.log.name).read()[-3000:]


def test_workers_are_child_processes_serving_outputs_equal_to_onnxruntime(node):
    server, models = node
    pids = worker_pids(server)
    for pid in pids.values():
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        assert ppid == server.proc.pid, "a worker process is a child of the node"
        with open(f"/proc/{pid}/cmdline") as f:
            assert f.read().split("\0")[1] == "worker"
    c = server.client()
    try:
        rng = np.random.default_rng(3)
        jobs = []
        for i in range(64):
            x = rng.standard_normal((int(rng.integers(1, 5)), 16)).astype(np.float32)
            version = [1, 2][i % 2]
            jobs.append((x, version, c.submit("mlp", {"x": x}, version=version)))
        batch_sizes = []
        for x, version, f in jobs:
            r = f.result(60)
            ref = reference(models, "mlp", version, {"x": x})["y"]
            np.testing.assert_allclose(r.outputs["y"], ref, rtol=1e-4, atol=1e-4)
            batch_sizes.append(r.batch_size)
        assert max(batch_sizes) > 1, "requests were batched in the worker processes"
        x = rng.standard_normal((1, 16)).astype(np.float32)
        np.testing.assert_allclose(c.infer("fixed", {"x": x}, wait=30)["y"],
                                   reference(models, "fixed", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
        a = rng.standard_normal((3, 4)).astype(np.float32)
        b = rng.integers(-5, 5, (3, 4)).astype(np.int64)
        out = c.infer("multi", {"a": a, "b": b}, wait=30)
        ref = reference(models, "multi", 1, {"a": a, "b": b})
        np.testing.assert_allclose(out["s"], ref["s"], rtol=1e-6)
        np.testing.assert_allclose(out["p"], ref["p"], rtol=1e-6)
    finally:
        c.close()


def test_kserve_http_serves_through_worker_processes(node):
    httpclient = pytest.importorskip("tritonclient.http")
    server, models = node
    triton = httpclient.InferenceServerClient(server.http_url)
    try:
        assert triton.is_server_ready() and triton.is_model_ready("mlp")
        x = np.random.default_rng(4).standard_normal((2, 16)).astype(np.float32)
        i = httpclient.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=True)
        r = triton.infer("mlp", [i], model_version="1")
        np.testing.assert_allclose(r.as_numpy("y"), reference(models, "mlp", 1, {"x": x})["y"],
                                   rtol=1e-4, atol=1e-4)
    finally:
        triton.close()


def test_a_worker_process_that_crashes_holding_a_batch_is_replaced(node):
    server, _ = node
    c = server.client()
    try:
        before = metric_value(server.metrics(), "troupe_worker_restarts_total")
        reloaded = reloads_of(server, "mlp", 2)
        pids = worker_pids(server)
        x = np.ones((2, 16), np.float32)
        # The process that runs this request dies (SIGKILL, as hard as a crash in a kernel); the
        # batcher retries it on the other process, where it succeeds (crash_once).
        r = c.submit("mlp", {"x": x}, version=2, parameters={"troupe.fault": "crash_once"}).result(60)
        assert r.outputs["y"].shape == (2, 8)
        assert wait_until(lambda: metric_value(server.metrics(), "troupe_worker_restarts_total") >= before + 1)
        assert wait_until(lambda: reloads_of(server, "mlp", 2) >= reloaded + 1, timeout=60)
        now = worker_pids(server)
        replaced = [w for w in pids if now[w] != pids[w]]
        assert len(replaced) == 1, (pids, now)
        assert wait_until(lambda: gone(pids[replaced[0]])), "the crashed process was reaped"
        assert any(r.get("msg") == "worker process failed" and "signal 9" in r.get("reason", "")
                   for r in server.log_records())
        assert c.infer("mlp", {"x": x}, version=2, wait=60)["y"].shape == (2, 8)
    finally:
        c.close()


def infer_message(request_id, x):
    m = pb.ClientMessage()
    m.infer.model = "mlp"
    m.infer.version = 2
    m.infer.id = request_id
    d = m.infer.inputs.add()
    d.name = "x"
    d.dtype = pb.FLOAT
    d.shape.extend(x.shape)
    return [m.SerializeToString(), x.tobytes()]


def test_kill_9_under_a_closed_loop_answers_every_request_exactly_once(node):
    server, models = node
    x = np.random.default_rng(5).standard_normal((1, 16)).astype(np.float32)
    expected = reference(models, "mlp", 2, {"x": x})["y"]
    reloaded = reloads_of(server, "mlp", 2)
    victim_index, victim = sorted(worker_pids(server).items())[0]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    replies = {}  # id -> replies seen
    errors = []
    sent = 0
    in_flight = 16  # the closed loop: a new request for every reply

    def send_one():
        nonlocal sent
        sent += 1
        sock.send_multipart(infer_message(f"r{sent}", x))

    def receive(deadline):
        if not sock.poll(max(0, int((deadline - time.time()) * 1000))):
            return False
        frames = sock.recv_multipart()
        reply = pb.ServerMessage.FromString(frames[0])
        replies[reply.id] = replies.get(reply.id, 0) + 1
        if reply.HasField("error"):
            errors.append((reply.error.code, reply.error.message))
        else:
            y = np.frombuffer(frames[1], np.float32).reshape(1, 8)
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
        return True

    def ready_again():
        pids = worker_pids(server)
        return pids.get(victim_index) not in (None, victim) and reloads_of(server, "mlp", 2) > reloaded

    try:
        for _ in range(in_flight):
            send_one()
        killed_at = None
        recovered_at = None
        deadline = time.time() + 120
        while time.time() < deadline:
            assert receive(deadline), f"no reply within the deadline ({len(replies)} of {sent})"
            total = sum(replies.values())
            if killed_at is None and total >= 200:
                os.kill(victim, signal.SIGKILL)  # in the middle of the loop
                killed_at = total
            if killed_at is not None and recovered_at is None and ready_again():
                recovered_at = total
            if recovered_at is not None and total >= recovered_at + 200:
                break  # served for a while on the fresh process too
            send_one()
        assert recovered_at is not None, "the killed worker process was not replaced in time"
        # Every request sent gets its reply; none twice.
        end = time.time() + 60
        while sum(replies.values()) < sent and time.time() < end:
            receive(end)
        assert sorted(replies) == sorted(f"r{i}" for i in range(1, sent + 1)), "every request answered"
        assert all(n == 1 for n in replies.values()), {k: n for k, n in replies.items() if n != 1}
        # The other process was alive throughout: the batches the killed one held were retried there.
        assert not errors, errors[:5]
    finally:
        sock.close(0)
    assert gone(victim)
    c = server.client()
    try:
        h = c.health()
        assert h["ready"], h
        assert c.infer("mlp", {"x": x}, version=2, wait=30)["y"].shape == (1, 8)
    finally:
        c.close()


def test_a_hung_worker_process_is_found_by_its_missed_heartbeats_and_replaced(tmp_path):
    s, models = start(tmp_path, node_extra="worker_heartbeat_interval_ms: 100\n"
                                           "worker_heartbeat_timeout_ms: 1000\n")
    c = s.client()
    try:
        victim_index, victim = sorted(worker_pids(s).items())[0]
        reloaded = reloads_of(s, "mlp", 2)
        os.kill(victim, signal.SIGSTOP)  # alive, silent: as a process stuck in the driver
        assert wait_until(lambda: worker_pids(s)[victim_index] != victim, timeout=30), \
            "the silent process was not replaced"
        assert any(r.get("msg") == "worker process failed" and "heartbeat" in r.get("reason", "")
                   for r in s.log_records())
        assert wait_until(lambda: gone(victim)), "the silent process was killed and reaped"
        assert wait_until(lambda: reloads_of(s, "mlp", 2) > reloaded, timeout=60)
        x = np.ones((1, 16), np.float32)
        for f in [c.submit("mlp", {"x": x}, version=2) for _ in range(20)]:
            np.testing.assert_allclose(f.result(60).outputs["y"],
                                       reference(models, "mlp", 2, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    finally:
        c.close()
        assert s.terminate() == 0


def test_graceful_shutdown_leaves_no_worker_process(tmp_path):
    s, _ = start(tmp_path)
    pids = list(worker_pids(s).values())
    directory = endpoint_directory(s)
    assert directory and os.path.isdir(directory)
    assert s.terminate() == 0
    assert all(gone(p) for p in pids), pids
    assert not os.path.exists(directory), "the endpoint directory went with the node"
    for line in open(tmp_path / "serve.log").read().splitlines():
        json.loads(line)  # the workers' log lines are JSON lines on the node's stderr too


def test_a_node_killed_with_sigkill_takes_its_worker_processes_along(tmp_path):
    s, _ = start(tmp_path)
    pids = list(worker_pids(s).values())
    directory = endpoint_directory(s)
    s.proc.kill()
    s.proc.wait(30)
    s.log.close()
    assert wait_until(lambda: all(gone(p) for p in pids), timeout=30), \
        "worker processes outlived their node (parent-death signal)"
    shutil.rmtree(directory, ignore_errors=True)  # a node killed with SIGKILL cannot remove it
