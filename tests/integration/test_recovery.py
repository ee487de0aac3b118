"""Worker recovery on a real node (issue 12): one CPU worker, so a request whose worker dies has no
other replica to go to and is retried on the restarted worker once model_manager has reloaded its
replica. A closed loop of requests runs over a raw ZeroMQ DEALER (the Python client would drop a
second reply to one id unseen) while crash and device faults fire one after another; every
request id must be answered exactly once, and every faulted request must succeed on its retry."""

import os
import time

import numpy as np
import pytest
import zmq

from conftest import Server, make_mlp, metric_value, wait_until, write
from troupe_client import troupe_pb2 as pb

LANES = 6           # requests kept in flight
REQUESTS = 400      # in all
FAULT_EVERY = 40    # a fault request every this many requests, one outstanding at a time
FAULTS = ["crash_once", "device_once", "crash_once", "device_once", "crash_once"]


@pytest.fixture
def one_worker_node(tmp_path):
    models = str(tmp_path / "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=21)
    write(os.path.join(models, "mlp", "config.yaml"),
          "max_batch_size: 8\n"
          "dynamic_batching:\n"
          "  max_queue_delay_microseconds: 200\n")
    node_yaml = str(tmp_path / "node.yaml")
    write(node_yaml, "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\n"
                     "fault_injection: true\ndrain_timeout_ms: 20000\nlog_level: info\n")
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    assert s.ready, s.reason
    yield s
    assert s.terminate() == 0, open(str(tmp_path / "serve.log")).read()[-3000:]


def envelope(rid, fault=None):
    m = pb.ClientMessage()
    m.id = rid
    m.infer.id = rid
    m.infer.model = "mlp"
    d = m.infer.inputs.add(name="x", dtype=pb.FLOAT)
    d.shape.extend((1, 16))
    if fault:
        m.infer.parameters["troupe.fault"] = fault
    return m.SerializeToString()


def health_envelope(rid):
    m = pb.ClientMessage()
    m.id = rid
    m.health.SetInParent()
    return m.SerializeToString()


def test_closed_loop_under_faults_answers_every_request_once(one_worker_node):
    server = one_worker_node
    x = np.random.default_rng(5).standard_normal((1, 16)).astype(np.float32).tobytes()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    replies = {}        # id -> list of (code name, message)
    faulted = {}        # id -> fault
    sent = 0
    in_flight = set()
    fault_outstanding = None
    faults_left = list(FAULTS)
    paused = 0          # lanes waiting for the model to be ready again (it refused them UNAVAILABLE)
    health_pending = False
    health_due = 0.0    # the next readiness poll, while lanes wait (a poll every 20 ms, not a spin)
    health_seq = 0

    def send_next():
        nonlocal sent, fault_outstanding
        rid = f"r{sent}"
        fault = None
        if faults_left and fault_outstanding is None and sent % FAULT_EVERY == FAULT_EVERY // 2:
            fault = faults_left.pop(0)
            faulted[rid] = fault
            fault_outstanding = rid
        sock.send_multipart([envelope(rid, fault), x])
        in_flight.add(rid)
        sent += 1

    try:
        for _ in range(LANES):
            send_next()
        stuck_at = time.monotonic() + 60  # no reply for 60 s: the node is stuck
        while in_flight or paused:
            now = time.monotonic()
            if paused and not health_pending and now >= health_due:
                health_seq += 1
                sock.send_multipart([health_envelope(f"h{health_seq}")])
                health_pending = True
            wait_ms = 20 if paused and not health_pending else 1000
            if not sock.poll(wait_ms):
                assert time.monotonic() < stuck_at, f"no reply within 60 s; waiting for {sorted(in_flight)[:10]}"
                continue
            stuck_at = time.monotonic() + 60
            reply = pb.ServerMessage.FromString(sock.recv_multipart()[0])
            if reply.id.startswith("h"):
                health_pending = False
                health_due = time.monotonic() + 0.02
                if reply.health.ready:
                    while paused and sent < REQUESTS:
                        paused -= 1
                        send_next()
                    paused = 0
                continue
            code = pb.ErrorCode.Name(reply.error.code) if reply.HasField("error") else "OK"
            replies.setdefault(reply.id, []).append((code, reply.error.message))
            if reply.id not in in_flight:
                continue  # a second reply: reported below
            in_flight.discard(reply.id)
            if reply.id == fault_outstanding:
                fault_outstanding = None
            if sent >= REQUESTS:
                continue
            if code == "UNAVAILABLE":
                paused += 1  # the worker is down: wait for readiness rather than spin
            else:
                send_next()
        # Anything still on its way (a duplicate) is in the socket before the answer to this last
        # request, which the node handles after every other one.
        sock.send_multipart([envelope("last"), x])
        while True:
            assert sock.poll(60000), "no reply to the last request"
            reply = pb.ServerMessage.FromString(sock.recv_multipart()[0])
            if reply.id == "last":
                break
            if not reply.id.startswith("h"):
                replies.setdefault(reply.id, []).append(("late", reply.error.message))
    finally:
        sock.close(0)

    assert sent == REQUESTS
    assert not faults_left, "every fault fired"
    twice = {rid: r for rid, r in replies.items() if len(r) != 1}
    assert not twice, f"answered more than once: {twice}"
    assert set(replies) == {f"r{i}" for i in range(REQUESTS)}, "every request answered"
    for rid, fault in faulted.items():
        assert replies[rid][0][0] == "OK", f"{rid} ({fault}) was not retried on the restarted worker: {replies[rid]}"
    outcomes = {}
    for rid, [(code, message)] in replies.items():
        outcomes[code] = outcomes.get(code, 0) + 1
        assert code in ("OK", "UNAVAILABLE"), (rid, code, message)
        if code == "UNAVAILABLE":
            assert "no healthy replica" in message, (rid, message)
    print(f"outcomes: {outcomes}")

    # One restart per fault, each visible in the log with its attempt and its (doubling) delay.
    assert wait_until(lambda: metric_value(server.metrics(), "troupe_worker_restarts_total") == len(FAULTS))
    failed = [r for r in server.log_records() if r.get("msg") == "worker failed"]
    assert [r["attempt"] for r in failed] == list(range(1, len(FAULTS) + 1)), failed
    assert [r["delay_ms"] for r in failed] == [100 * 2 ** i for i in range(len(FAULTS))], failed
    assert all(r["worker"] == 0 and r["level"] == "warning" for r in failed), failed
    assert any("device error" in r["reason"] for r in failed), failed
    assert metric_value(server.metrics(), "troupe_worker_restart_backoff_seconds", worker="0") == \
        pytest.approx(0.1 * 2 ** (len(FAULTS) - 1))
    with server.client() as c:
        assert wait_until(lambda: c.health()["ready"])
