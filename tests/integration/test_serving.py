"""`troupe serve` as a process, driven by the Python client, raw ZeroMQ and `troupe bench`/`infer`:
outputs match ONNX Runtime, bad input gets typed errors while the node keeps serving, overload gets
OVERLOADED, timeouts hold while the model is busy, a crashed worker is replaced, /metrics moves, and
SIGTERM drains without losing a request."""

import json
import os
import subprocess
import time

import numpy as np
import onnxruntime as ort
import pytest
import zmq

from conftest import Server, build_repository, metric_value, reference, troupe_bin, wait_until
from troupe_client import TroupeError, troupe_pb2 as pb


# ---- correctness -------------------------------------------------------------------------------


def test_health_and_metadata(client):
    h = client.health()
    assert h["live"] and h["ready"] and not h["draining"]
    states = {(m["model"], m["version"]): m["state"] for m in h["models"]}
    assert states[("mlp", 2)] == "READY" and states[("mlp", 1)] == "READY"
    md = client.metadata("mlp")
    assert md["version"] == 2 and md["versions"] == [1, 2]
    assert md["max_batch_size"] == 8
    assert md["inputs"] == [{"name": "x", "dtype": np.float32, "shape": [-1, 16]}]
    fixed = client.metadata("fixed")
    assert fixed["max_batch_size"] == 0 and fixed["inputs"][0]["shape"] == [1, 16]


def test_outputs_match_onnxruntime_under_concurrency(client, repository):
    _, models, _ = repository
    rng = np.random.default_rng(10)
    jobs = []
    for i in range(96):
        rows = int(rng.integers(1, 5))
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        version = [0, 1, 2][i % 3]
        jobs.append((x, version, client.submit("mlp", {"x": x}, version=version)))
    batch_sizes = []
    for x, version, f in jobs:
        r = f.result(60)
        assert r.version == (version or 2)
        ref = reference(models, "mlp", r.version, {"x": x})["y"]
        np.testing.assert_allclose(r.outputs["y"], ref, rtol=1e-4, atol=1e-4)
        assert r.outputs["y"].shape == (x.shape[0], 8)
        batch_sizes.append(r.batch_size)
        assert r.timings["total_us"] >= r.timings["queue_us"]
    assert max(batch_sizes) > 1, "concurrent requests were batched"


def test_fixed_shape_and_multi_input_models(client, repository):
    _, models, _ = repository
    x = np.random.default_rng(2).standard_normal((1, 16)).astype(np.float32)
    np.testing.assert_allclose(client.infer("fixed", {"x": x}, wait=30)["y"],
                               reference(models, "fixed", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    a = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    b = np.arange(12, dtype=np.int64).reshape(3, 4)
    out = client.infer("multi", {"b": b, "a": a}, wait=30)  # inputs in another order than the model's
    np.testing.assert_allclose(out["s"], a + b, rtol=1e-6)
    np.testing.assert_allclose(out["p"], a * 2, rtol=1e-6)
    only_p = client.infer("multi", {"a": a, "b": b}, outputs=["p"], wait=30)
    assert list(only_p) == ["p"]


# ---- bad input ---------------------------------------------------------------------------------


def raw_exchange(endpoint, frames, timeout_ms=10000):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), "no reply: the node must answer every message"
        reply = sock.recv_multipart()
        return pb.ServerMessage.FromString(reply[0]), reply[1:]
    finally:
        sock.close(0)


def infer_envelope(model="mlp", inputs=(("x", pb.FLOAT, (1, 16)),), version=0, priority=0, outputs=(), rid="bad"):
    m = pb.ClientMessage()
    m.infer.model = model
    m.infer.id = rid
    m.infer.version = version
    m.infer.priority = priority
    m.infer.outputs.extend(outputs)
    for name, dt, shape in inputs:
        d = m.infer.inputs.add(name=name, dtype=dt)
        d.shape.extend(shape)
    return m.SerializeToString()


X = np.zeros((1, 16), np.float32).tobytes()

BAD_MESSAGES = {
    "garbage envelope": ([b"\xff\xfe not protobuf \x00\x01"], "INVALID_ARGUMENT", ""),
    "empty envelope": ([pb.ClientMessage().SerializeToString()], "INVALID_ARGUMENT", "no request"),
    "unknown model": ([infer_envelope(model="nope"), X], "NOT_FOUND", "nope"),
    "unknown version": ([infer_envelope(version=9), X], "NOT_FOUND", "version 9"),
    "missing frame": ([infer_envelope()], "INVALID_ARGUMENT", "frames"),
    "extra frame": ([infer_envelope(), X, X], "INVALID_ARGUMENT", "frames"),
    "wrong dtype": ([infer_envelope(inputs=(("x", pb.INT32, (1, 16)),)), X], "INVALID_ARGUMENT", "int32"),
    "wrong shape": ([infer_envelope(inputs=(("x", pb.FLOAT, (1, 15)),)), X[:60]], "INVALID_ARGUMENT", "shape"),
    "wrong byte count": ([infer_envelope(), X[:60]], "INVALID_ARGUMENT", "bytes"),
    "batch too large": ([infer_envelope(inputs=(("x", pb.FLOAT, (9, 16)),)), X * 9], "INVALID_ARGUMENT",
                        "batch dim"),
    "unknown input": ([infer_envelope(inputs=(("z", pb.FLOAT, (1, 16)),)), X], "INVALID_ARGUMENT", "no input 'z'"),
    "duplicate input": ([infer_envelope(model="multi", inputs=(("a", pb.FLOAT, (1, 4)), ("a", pb.FLOAT, (1, 4)))),
                         X[:16], X[:16]], "INVALID_ARGUMENT", "twice"),
    "negative dim": ([infer_envelope(inputs=(("x", pb.FLOAT, (-1, 16)),)), X], "INVALID_ARGUMENT", "negative"),
    "overflowing dims": ([infer_envelope(inputs=(("x", pb.FLOAT, (1, 2 ** 62, 2 ** 62)),)), X], "INVALID_ARGUMENT",
                         ""),
    "unknown output": ([infer_envelope(outputs=("nope",)), X], "INVALID_ARGUMENT", "no output"),
    "priority too high": ([infer_envelope(priority=5), X], "INVALID_ARGUMENT", "priority"),
    # Frames under max_message_bytes (1 MiB here) adding up past it (a frame over it would drop
    # the connection: test_abuse.py).
    "oversize message": ([infer_envelope(), b"\0" * (768 << 10), b"\0" * (768 << 10)], "INVALID_ARGUMENT",
                         "max_message_bytes"),
    "unknown dtype": ([infer_envelope(inputs=(("x", 8, (1, 16)),)), X], "INVALID_ARGUMENT", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_MESSAGES))
def test_bad_messages_get_typed_errors(server, client, case):
    frames, code, fragment = BAD_MESSAGES[case]
    reply, tensors = raw_exchange(server.endpoint, frames)
    assert reply.HasField("error"), f"{case}: expected an error reply, got {reply}"
    assert pb.ErrorCode.Name(reply.error.code) == code, f"{case}: {reply.error.message}"
    assert fragment in reply.error.message, f"{case}: {reply.error.message}"
    assert tensors == []
    if case != "garbage envelope":
        assert reply.id in ("bad", "")
    # The node keeps serving.
    y = client.infer("mlp", {"x": np.ones((1, 16), np.float32)}, wait=30)["y"]
    assert y.shape == (1, 8)


def test_logs_are_json_lines_with_one_line_per_model_load(server):
    records = server.log_records(strict=True)
    loads = [r for r in records if r.get("msg") == "model loaded"]
    # Every version of the repository, once per worker (cpu_workers: 2, instance_count 1).
    for model, version in [("mlp", 1), ("mlp", 2), ("fixed", 1), ("multi", 1), ("slow", 1)]:
        mine = [r for r in loads if r["model"] == model and r["version"] == version]
        assert len(mine) == 2, (model, version, mine)
        for r in mine:
            assert r["level"] == "info" and r["code"] == "ok", r
            assert isinstance(r["duration_ms"], (int, float)) and r["duration_ms"] >= 0, r
            assert isinstance(r["worker"], int), r


def test_protobuf_log_output_is_json_and_rate_limited(server, client):
    """Envelopes whose string fields are not UTF-8 make protobuf log an error each; a client
    sending many must not fill the log with them, nor with plain text."""
    before = sum(1 for r in server.log_records() if r.get("logger") == "protobuf")
    bad = infer_envelope(model="zzz").replace(b"zzz", b"\xff\xfe\xfd")
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    sent = 300
    start = time.monotonic()
    try:
        for _ in range(sent):
            sock.send_multipart([bad, X])
        for _ in range(sent):
            assert sock.poll(10000), "no reply: the node must answer every message"
            reply = pb.ServerMessage.FromString(sock.recv_multipart()[0])
            assert reply.HasField("error")
    finally:
        sock.close(0)
    elapsed = time.monotonic() - start
    records = server.log_records(strict=True)
    lines = [r for r in records if r.get("logger") == "protobuf"][before:]
    print(f"protobuf lines: {len(lines)} for {sent} envelopes in {elapsed:.2f} s; first: {lines[:1]}")
    assert lines, "protobuf logged nothing: the test no longer provokes it"
    assert len(lines) <= 10 + 10 * (elapsed + 1), (len(lines), elapsed)
    assert all(r["level"] in ("warning", "error") and "source_file" in r for r in lines)
    # The node keeps serving.
    assert client.infer("mlp", {"x": np.ones((1, 16), np.float32)}, wait=30)["y"].shape == (1, 8)


def test_req_socket_with_delimiter_works(server):
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    m = pb.ClientMessage(id="req-1")
    m.health.SetInParent()
    sock.send(m.SerializeToString())
    assert sock.poll(10000)
    reply = pb.ServerMessage.FromString(sock.recv())
    sock.close(0)
    assert reply.id == "req-1" and reply.health.live


# ---- load, time, failure -----------------------------------------------------------------------


def test_overload_answers_overloaded_and_every_request_gets_a_reply(client):
    x = np.ones((1, 16), np.float32)
    futures = [client.submit("slow", {"x": x}, parameters={"troupe.sleep_ms": 20}) for _ in range(60)]
    codes = []
    for f in futures:
        try:
            f.result(120)
            codes.append("OK")
        except TroupeError as e:
            codes.append(e.code_name)
    assert set(codes) <= {"OK", "OVERLOADED"}, codes
    assert codes.count("OVERLOADED") > 0
    assert codes.count("OK") >= 4


def test_timeout_is_enforced_while_the_model_is_busy(client):
    x = np.ones((1, 16), np.float32)
    busy = [client.submit("deep", {"x": x}, parameters={"troupe.sleep_ms": 300}) for _ in range(2)]
    time.sleep(0.05)
    start = time.time()
    late = client.submit("deep", {"x": x}, timeout_ms=50)
    with pytest.raises(TroupeError) as e:
        late.result(60)
    elapsed = time.time() - start
    assert e.value.code_name == "DEADLINE_EXCEEDED"
    assert elapsed < 0.25, f"answered after {elapsed:.3f} s: the deadline must not wait for the busy model"
    # A request whose own run outlasts its deadline is answered at the deadline too.
    start = time.time()
    with pytest.raises(TroupeError) as e:
        client.infer("deep", {"x": x}, timeout_ms=100, parameters={"troupe.sleep_ms": 1000}, wait=60)
    assert e.value.code_name == "DEADLINE_EXCEEDED"
    for f in busy:
        f.result(60)


def test_priority_one_overtakes_a_queue_of_priority_two(client):
    x = np.ones((1, 16), np.float32)
    # 2 workers x 2 batches each: four 200 ms requests occupy every slot; then 8 requests at
    # priority 2 and one at priority 1 queue. The freed slots take the priority-1 request in the
    # first wave of four; in arrival order it would only run in the third.
    blockers = [client.submit("prio", {"x": x}, priority=2, parameters={"troupe.sleep_ms": 200}) for _ in range(4)]
    time.sleep(0.05)
    finished = []

    def track(name):
        return lambda f: finished.append(name)

    lows = []
    for i in range(8):
        f = client.submit("prio", {"x": x}, priority=2, parameters={"troupe.sleep_ms": 30})
        f.add_done_callback(track(f"low{i}"))
        lows.append(f)
    high = client.submit("prio", {"x": x}, priority=1, parameters={"troupe.sleep_ms": 30})
    high.add_done_callback(track("high"))
    for f in blockers + lows + [high]:
        f.result(60)
    assert finished.index("high") <= 3, finished


def reloads_of(server, model, version):
    """Replicas of model/version that a replacement worker has loaded so far (model_manager logs
    each one once the batcher is told about it)."""
    return sum(1 for r in server.log_records()
               if r.get("msg") == "model reloaded" and r.get("model") == model and r.get("version") == version)


def test_crashed_worker_is_replaced_and_the_request_retried(server, client):
    before = metric_value(server.metrics(), "troupe_worker_restarts_total")
    reloaded = reloads_of(server, "mlp", 2)
    x = np.ones((2, 16), np.float32)
    # The worker that runs this request dies holding it; the batcher retries it once on the other
    # worker, where it succeeds (crash_once).
    r = client.submit("mlp", {"x": x}, parameters={"troupe.fault": "crash_once"}).result(60)
    assert r.outputs["y"].shape == (2, 8)
    assert wait_until(lambda: metric_value(server.metrics(), "troupe_worker_restarts_total") >= before + 1)
    # Health is ready as soon as one replica serves; the next step needs both: a request whose
    # first worker dies is retried only while another replica is alive. So wait until the
    # replacement worker holds mlp/2 again.
    assert wait_until(lambda: reloads_of(server, "mlp", 2) >= reloaded + 1, timeout=60), \
        "the replacement worker did not reload mlp version 2"
    assert client.health()["ready"], client.health()
    # A request that kills every worker it meets gets a typed error after its retry.
    with pytest.raises(TroupeError) as e:
        client.infer("mlp", {"x": x}, parameters={"troupe.fault": "crash"}, wait=60)
    assert e.value.code_name == "UNAVAILABLE" and "retry" in e.value.message, e.value.message
    # Both workers died: wait for both replacements to hold mlp/2 before the tests that follow.
    assert wait_until(lambda: reloads_of(server, "mlp", 2) >= reloaded + 3, timeout=60), \
        "the replacement workers did not reload mlp version 2"
    assert wait_until(lambda: client.health()["ready"], timeout=60), client.health()
    assert client.infer("mlp", {"x": x}, wait=60)["y"].shape == (2, 8)


def test_metrics_counters_move(server, client):
    text = server.metrics()
    ok_before = metric_value(text, "troupe_requests_total", model="mlp", version="2", outcome="ok")
    batches_before = metric_value(text, "troupe_batch_size_count", model="mlp", version="2")
    nf_before = metric_value(text, "troupe_unrouted_requests_total", outcome="not_found")
    x = np.ones((1, 16), np.float32)
    for f in [client.submit("mlp", {"x": x}) for _ in range(10)]:
        f.result(60)
    with pytest.raises(TroupeError):
        client.infer("no_such_model", {"x": x}, wait=30)
    text = server.metrics()
    assert metric_value(text, "troupe_requests_total", model="mlp", version="2", outcome="ok") == ok_before + 10
    assert metric_value(text, "troupe_batch_size_count", model="mlp", version="2") > batches_before
    # An unknown model has no version to count it under: it is counted without a model label.
    assert metric_value(text, "troupe_unrouted_requests_total", outcome="not_found") == nf_before + 1
    # No placeholder series with empty labels (they made TroupeModelNotReady fire on a healthy node).
    assert 'model=""' not in text and 'version=""' not in text
    for name in ["troupe_request_latency_seconds_bucket", "troupe_queue_latency_seconds_count",
                 "troupe_compute_latency_seconds_count", "troupe_queue_length", "troupe_inflight_requests",
                 "troupe_pool_bytes", "troupe_model_ready"]:
        assert name in text, name
    assert metric_value(text, "troupe_model_ready", model="mlp", version="2") == 1
    assert "troupe_gpu_" not in text or os.path.exists("/dev/nvidiactl"), "GPU metrics without a GPU"


# ---- command line ------------------------------------------------------------------------------


def test_infer_cli_matches_onnxruntime(server, repository, tmp_path):
    _, models, _ = repository
    x = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    out = subprocess.run([troupe_bin(), "infer", "mlp", "--inputs", str(tmp_path / "in.npz"), "--outputs",
                          str(tmp_path / "out.npz"), "--server", server.endpoint, "--version", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    y = np.load(tmp_path / "out.npz")["y"]
    np.testing.assert_allclose(y, reference(models, "mlp", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    bad = subprocess.run([troupe_bin(), "infer", "nope", "--inputs", str(tmp_path / "in.npz"), "--server",
                          server.endpoint], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not_found" in bad.stderr


@pytest.mark.parametrize("mode", [["--concurrency", "8", "--connections", "3"],
                                  ["--concurrency", "2", "--connections", "8"], ["--rate", "300"]])
def test_bench_cli(server, tmp_path, mode):
    out_json = tmp_path / "bench.json"
    r = subprocess.run([troupe_bin(), "bench", "mlp", "--server", server.endpoint, *mode, "--duration", "1.5",
                        "--warmup", "0.3", "--json", str(out_json)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok/s" in r.stderr, "progress line"
    j = json.loads(out_json.read_text())
    assert j["ok"] > 0 and j["errors"] == 0 and j["lost"] == 0
    assert j["throughput_rps"] > 0
    lat = j["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert j["mode"] == ("closed_loop" if mode[0] == "--concurrency" else "open_loop_poisson")
    if mode[0] == "--rate":
        assert abs(j["throughput_rps"] - 300) < 120
    else:
        # never more connections than requests in flight: each keeps at least one
        assert j["connections"] == min(int(mode[1]), int(mode[3]))
    # what the replies report of the server (mlp: max_batch_size 8)
    srv = j["server_reported"]
    assert 1 <= srv["batch_rows_mean"] <= 8
    assert 0 < srv["total_ms_mean"] <= lat["max"] and srv["queue_ms_mean"] <= srv["total_ms_mean"]
    assert "server: batch_rows_mean=" in r.stdout


# ---- shutdown ----------------------------------------------------------------------------------


def test_sigterm_drains_without_losing_a_request(tmp_path):
    models, node_yaml = build_repository(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    c = s.client()
    try:
        x = np.ones((1, 16), np.float32)
        futures = [c.submit("deep", {"x": x}, parameters={"troupe.sleep_ms": 25}) for _ in range(16)]

        def received():  # requests the node has read: in flight or already answered
            text = s.metrics()
            return (metric_value(text, "troupe_inflight_requests")
                    + metric_value(text, "troupe_requests_total", model="deep", version="1", outcome="ok"))
        # Every request has reached the node before SIGTERM (a fixed sleep did not hold on a busy
        # machine: requests still unread in the socket when the drained node exits get no reply).
        assert wait_until(lambda: received() >= 16, timeout=30, interval=0.005), received()
        assert s.proc.poll() is None
        s.proc.send_signal(15)
        results = [f.result(60) for f in futures]  # raises if any was lost, refused or cancelled
        assert all(r.outputs["y"].shape == (1, 8) for r in results)
        assert s.terminate() == 0
    finally:
        c.close()
        s.terminate()
    log = open(tmp_path / "serve.log").read()
    assert "draining" in log and '"stopped"' in log
    for line in log.splitlines():
        json.loads(line)  # every log line is JSON
