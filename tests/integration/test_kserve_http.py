"""The KServe v2 HTTP/REST door of a real `troupe serve`, judged by tritonclient.http (the
ecosystem's client): health, server and model metadata, Triton's model config, inference with JSON
and binary tensors (outputs equal to ONNX Runtime's and to the ZeroMQ door's: one serving path),
system shared memory, typed errors, compression, many requests in flight, /metrics, and readiness
while draining."""

import gzip
import json
import os
import signal
import threading
import urllib.error
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest

from conftest import Server, make_mlp, metric_value, reference, wait_until, write

httpclient = pytest.importorskip("tritonclient.http")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def triton(server):
    c = httpclient.InferenceServerClient(server.http_url)
    yield c
    c.close()


def http(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one raw request."""
    req = urllib.request.Request(f"http://{server.http_url}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def x_input(x, binary=True, name="x"):
    i = httpclient.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    return i


# ---- health and metadata -----------------------------------------------------------------------


def test_health_and_server_metadata(server, triton):
    assert triton.is_server_live() and triton.is_server_ready()
    status, headers, body = http(server, "GET", "/v2/health/ready")
    assert status == 200 and json.loads(body) == {"live": True, "ready": True}
    assert headers["Content-Type"] == "application/json"
    md = triton.get_server_metadata()
    assert md["name"] == "troupe" and md["version"]
    assert {"binary_tensor_data", "system_shared_memory"} <= set(md["extensions"])
    assert "model_repository" in md["extensions"] and "cuda_shared_memory" not in md["extensions"]
    assert http(server, "GET", "/v2/health/live")[0] == 200
    assert http(server, "POST", "/v2/health/live")[0] == 405
    assert http(server, "GET", "/v2/nothing/here")[0] == 404


def test_model_metadata_and_config(triton):
    md = triton.get_model_metadata("mlp")
    assert md["name"] == "mlp" and md["versions"] == ["1", "2"]
    assert md["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]
    assert md["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 8]}]
    assert triton.get_model_metadata("mlp", "1")["name"] == "mlp"
    cfg = triton.get_model_config("mlp")
    assert cfg["max_batch_size"] == 8
    assert cfg["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [16]}]
    assert cfg["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [8]}]
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert cfg["instance_group"][0]["count"] >= 1
    fixed = triton.get_model_config("fixed")
    assert fixed["max_batch_size"] == 0 and fixed["input"][0]["dims"] == [1, 16]
    multi = triton.get_model_metadata("multi")
    assert [i["datatype"] for i in multi["inputs"]] == ["FP32", "INT64"]
    for bad in (lambda: triton.get_model_metadata("nope"), lambda: triton.get_model_config("mlp", "9")):
        with pytest.raises(InferenceServerException) as e:
            bad()
        assert e.value.status() == "400"


def test_model_ready(server, triton):
    assert triton.is_model_ready("mlp") and triton.is_model_ready("mlp", "1")
    assert not triton.is_model_ready("nope") and not triton.is_model_ready("mlp", "7")
    status, _, body = http(server, "GET", "/v2/models/mlp/versions/2/ready")
    assert status == 200 and json.loads(body)["ready"] is True


# ---- inference ---------------------------------------------------------------------------------


def test_binary_and_json_tensors_match_onnxruntime_and_the_zmq_door(triton, client, repository):
    _, models, _ = repository
    rng = np.random.default_rng(21)
    for version in (1, 2):
        for rows in (1, 3):
            x = rng.standard_normal((rows, 16)).astype(np.float32)
            ref = reference(models, "mlp", version, {"x": x})["y"]
            zmq_y = client.infer("mlp", {"x": x}, version=version, wait=60)["y"]
            binary = triton.infer("mlp", [x_input(x)], model_version=str(version), request_id="r1")
            assert binary.get_response()["id"] == "r1"
            assert binary.get_response()["model_version"] == str(version)
            assert "binary_data_size" in binary.get_output("y")["parameters"]
            as_json = triton.infer("mlp", [x_input(x, binary=False)], model_version=str(version),
                                   outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
            assert "data" in as_json.get_output("y")
            for y in (binary.as_numpy("y"), as_json.as_numpy("y")):
                assert y.shape == (rows, 8) and y.dtype == np.float32
                np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(y, zmq_y, rtol=1e-5, atol=1e-5)
    # No version: the newest (the traffic policy's choice), as over ZeroMQ.
    assert triton.infer("mlp", [x_input(x)]).get_response()["model_version"] == "2"


def test_two_dtypes_requested_outputs_and_mixed_encodings(triton):
    a = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    b = np.arange(12, dtype=np.int64).reshape(3, 4)
    ia = httpclient.InferInput("a", [3, 4], "FP32")
    ia.set_data_from_numpy(a, binary_data=False)
    ib = httpclient.InferInput("b", [3, 4], "INT64")
    ib.set_data_from_numpy(b)  # one JSON input, one binary: both in one request
    r = triton.infer("multi", [ib, ia], outputs=[httpclient.InferRequestedOutput("p", binary_data=False),
                                                 httpclient.InferRequestedOutput("s", binary_data=True)])
    np.testing.assert_allclose(r.as_numpy("s"), a + b, rtol=1e-6)
    np.testing.assert_allclose(r.as_numpy("p"), a * 2, rtol=1e-6)
    only_p = triton.infer("multi", [ia, ib], outputs=[httpclient.InferRequestedOutput("p")])
    assert [o["name"] for o in only_p.get_response()["outputs"]] == ["p"]


def test_raw_json_with_nested_data(server, repository):
    _, models, _ = repository
    x = np.random.default_rng(8).standard_normal((2, 16)).astype(np.float32)
    body = {"id": "nested-1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16],
                                          "data": x.tolist()}]}
    status, headers, raw = http(server, "POST", "/v2/models/mlp/versions/1/infer", json.dumps(body).encode(),
                                {"Content-Type": "application/json"})
    assert status == 200, raw
    assert headers.get("Inference-Header-Content-Length") is None, "all-JSON reply"
    reply = json.loads(raw)
    assert reply["id"] == "nested-1" and reply["model_name"] == "mlp" and reply["model_version"] == "1"
    (out,) = reply["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [2, 8]
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(2, 8),
                               reference(models, "mlp", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)


def test_compressed_requests_and_replies(server, triton):
    x = np.random.default_rng(9).standard_normal((4, 16)).astype(np.float32)
    plain = triton.infer("mlp", [x_input(x)], model_version="1").as_numpy("y")
    for algo in ("gzip", "deflate"):
        r = triton.infer("mlp", [x_input(x)], model_version="1", request_compression_algorithm=algo,
                         response_compression_algorithm=algo)
        np.testing.assert_array_equal(r.as_numpy("y"), plain)
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]})
    status, headers, raw = http(server, "POST", "/v2/models/mlp/infer", gzip.compress(body.encode()),
                                {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw))["outputs"][0]["shape"] == [1, 8]
    status, _, raw = http(server, "POST", "/v2/models/mlp/infer", b"not gzip", {"Content-Encoding": "gzip"})
    assert status == 400 and "compressed" in json.loads(raw)["error"]
    status, _, raw = http(server, "POST", "/v2/models/mlp/infer", body.encode(), {"Content-Encoding": "br"})
    assert status == 400 and "br" in json.loads(raw)["error"]


def test_parameters_reach_the_job(triton):
    x = np.ones((1, 16), np.float32)
    # Triton's "timeout" parameter (microseconds) with the fault-injection sleep: the deadline wins.
    with pytest.raises(InferenceServerException) as e:
        triton.infer("deep", [x_input(x)], timeout=100_000, parameters={"troupe.sleep_ms": 1000})
    assert e.value.status() == "504" and "deadline" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        triton.infer("prio", [x_input(x)], priority=5)
    assert e.value.status() == "400" and "priority" in e.value.message()
    assert triton.infer("prio", [x_input(x)], priority=1).as_numpy("y").shape == (1, 8)


# ---- system shared memory ------------------------------------------------------------------------


def test_system_shared_memory_inputs_and_outputs(triton, client):
    x = np.random.default_rng(12).standard_normal((3, 16)).astype(np.float32)
    key = f"/troupe_http_{os.getpid()}"
    in_bytes, out_bytes = x.nbytes, 3 * 8 * 4
    region = shm.create_shared_memory_region("troupe_io", key, 64 + in_bytes + out_bytes)
    try:
        shm.set_shared_memory_region(region, [x], offset=64)
        triton.register_system_shared_memory("troupe_io", key, 64 + in_bytes + out_bytes)
        status = triton.get_system_shared_memory_status()
        assert [(s["name"], s["key"]) for s in status] == [("troupe_io", key)]
        assert triton.get_system_shared_memory_status("troupe_io")[0]["byte_size"] == 64 + in_bytes + out_bytes
        i = httpclient.InferInput("x", [3, 16], "FP32")
        i.set_shared_memory("troupe_io", in_bytes, offset=64)
        o = httpclient.InferRequestedOutput("y")
        o.set_shared_memory("troupe_io", out_bytes, offset=64 + in_bytes)
        r = triton.infer("mlp", [i], outputs=[o], model_version="1")
        out = r.get_output("y")
        assert "data" not in out and out["parameters"]["shared_memory_region"] == "troupe_io"
        y = shm.get_contents_as_numpy(region, np.float32, [3, 8], offset=64 + in_bytes)
        np.testing.assert_allclose(y, client.infer("mlp", {"x": x}, version=1, wait=60)["y"], rtol=1e-5, atol=1e-5)
        # An output range too small for the output, a region nobody registered.
        small = httpclient.InferRequestedOutput("y")
        small.set_shared_memory("troupe_io", out_bytes - 4, offset=64 + in_bytes)
        with pytest.raises(InferenceServerException) as e:
            triton.infer("mlp", [i], outputs=[small])
        assert e.value.status() == "400" and "shared-memory" in e.value.message()
        ghost = httpclient.InferInput("x", [3, 16], "FP32")
        ghost.set_shared_memory("ghost", in_bytes)
        with pytest.raises(InferenceServerException) as e:
            triton.infer("mlp", [ghost])
        assert e.value.status() == "400" and "ghost" in e.value.message()
        with pytest.raises(InferenceServerException) as e:
            triton.register_system_shared_memory("troupe_io", key, 16)
        assert "already registered" in e.value.message()
    finally:
        triton.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(region)
    assert triton.get_system_shared_memory_status() == []
    with pytest.raises(InferenceServerException) as e:
        triton.register_system_shared_memory("r", "/troupe_no_such_key", 16)
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException) as e:
        triton.get_cuda_shared_memory_status()
    assert e.value.status() == "400" and "not supported" in e.value.message()


# ---- errors --------------------------------------------------------------------------------------


def test_typed_errors(server, triton):
    x = np.ones((2, 16), np.float32)
    cases = [
        (lambda: triton.infer("nope", [x_input(x)]), "no model 'nope'"),
        (lambda: triton.infer("mlp", [x_input(x)], model_version="9"), "no version 9"),
        (lambda: triton.infer("mlp", [x_input(np.ones((2, 15), np.float32))]), "'x'"),
        (lambda: triton.infer("mlp", [x_input(np.ones((9, 16), np.float32))]), "'x'"),
    ]
    i64 = httpclient.InferInput("x", [2, 16], "FP64")
    i64.set_data_from_numpy(np.ones((2, 16), np.float64))
    cases.append((lambda: triton.infer("mlp", [i64]), "'x'"))
    cases.append((lambda: triton.infer("mlp", [x_input(x, name="z")]), "'z'"))
    for call, text in cases:
        with pytest.raises(InferenceServerException) as e:
            call()
        assert e.value.status() == "400", e.value
        assert text in e.value.message(), e.value.message()
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16],
                                     "parameters": {"binary_data_size": 128}}]}).encode()
    raw_cases = [
        (b"{not json", {}),
        (b'{"inputs": 3}', {}),
        (header + b"\0" * 100, {"Inference-Header-Content-Length": str(len(header))}),  # truncated
        (header + b"\0" * 128, {"Inference-Header-Content-Length": "banana"}),
        (header + b"\0" * 128, {"Inference-Header-Content-Length": str(len(header) + 1000)}),
    ]
    for body, headers in raw_cases:
        status, _, raw = http(server, "POST", "/v2/models/mlp/infer", body, headers)
        assert status == 400, (body[:40], raw)
        assert json.loads(raw)["error"]
    assert http(server, "GET", "/v2/models/mlp/infer")[0] == 405
    assert http(server, "POST", "/v2/models/mlp/versions/x1/infer", b"{}")[0] == 400


def test_a_body_over_max_message_bytes_is_413(server, triton):
    # conftest's node.yaml: max_message_bytes 1 MiB. The client sends everything before reading.
    big = np.ones((8, 40000), np.float32)  # 1.28 MB
    i = httpclient.InferInput("x", list(big.shape), "FP32")
    i.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as e:
        triton.infer("mlp", [i])
    assert e.value.status() == "413" and "1048576" in e.value.message()
    small = np.ones((1, 16), np.float32)
    big_gzip = gzip.compress(json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                                     "data": [0] * 16}], "pad": " " * 2_000_000}).encode())
    status, _, raw = http(server, "POST", "/v2/models/mlp/infer", big_gzip, {"Content-Encoding": "gzip"})
    assert status == 413, "a small compressed body that inflates past the limit"
    assert triton.infer("mlp", [x_input(small)]).as_numpy("y").shape == (1, 8), "still serving"


# ---- concurrency, metrics --------------------------------------------------------------------------


def test_many_requests_in_flight(server, repository):
    _, models, _ = repository
    rng = np.random.default_rng(33)
    refs = {v: ort.InferenceSession(os.path.join(models, "mlp", str(v), "model.onnx"),
                                    providers=["CPUExecutionProvider"]) for v in (1, 2)}
    c = httpclient.InferenceServerClient(server.http_url, concurrency=16)
    try:
        jobs = []
        for k in range(320):
            rows = int(rng.integers(1, 5))
            x = rng.standard_normal((rows, 16)).astype(np.float32)
            version = 1 + k % 2
            jobs.append((x, version, c.async_infer("mlp", [x_input(x)], model_version=str(version),
                                                   request_id=str(k))))
        for k, (x, version, job) in enumerate(jobs):
            r = job.get_result(timeout=120)
            assert r.get_response()["id"] == str(k)
            np.testing.assert_allclose(r.as_numpy("y"), refs[version].run(None, {"x": x})[0],
                                       rtol=1e-4, atol=1e-4)
    finally:
        c.close()


def test_metrics_scrape_counts_http_requests(server, triton):
    before = metric_value(server.metrics(), "troupe_requests_total", model="fixed", version="1", outcome="ok")
    x = np.ones((1, 16), np.float32)
    for _ in range(3):
        triton.infer("fixed", [x_input(x)])
    text = server.metrics()
    assert metric_value(text, "troupe_requests_total", model="fixed", version="1", outcome="ok") == before + 3
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # Triton's statistics extension reads the same counters (perf_analyzer takes differences).
    stats = triton.get_inference_statistics("fixed", "1")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("fixed", "1")]
    assert stats[0]["inference_stats"]["success"]["count"] >= 3
    assert stats[0]["execution_count"] >= 1 and stats[0]["inference_count"] >= 3
    assert {"queue", "compute_infer", "compute_input", "compute_output"} <= set(stats[0]["inference_stats"])
    assert len(triton.get_inference_statistics("mlp")["model_stats"]) == 2


# ---- draining --------------------------------------------------------------------------------------


def test_readiness_turns_503_while_draining_and_the_request_in_flight_completes(tmp_path):
    models = str(tmp_path / "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=11)
    write(os.path.join(models, "mlp", "config.yaml"), "max_batch_size: 4\n")
    node_yaml = str(tmp_path / "node.yaml")
    write(node_yaml, "cpu_workers: 1\ncompute_threads: 1\nwarmup_runs: 1\nfault_injection: true\n"
                     "drain_timeout_ms: 20000\nlog_level: info\n")
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    try:
        c = httpclient.InferenceServerClient(s.http_url)
        x = np.ones((1, 16), np.float32)
        result = {}

        def slow():
            try:
                result["y"] = c.infer("mlp", [x_input(x)], parameters={"troupe.sleep_ms": 1500}).as_numpy("y")
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = e

        batches = lambda: metric_value(s.metrics(), "troupe_batch_size_count", model="mlp", version="1")
        before = batches()
        t = threading.Thread(target=slow)
        t.start()
        assert wait_until(lambda: batches() > before, timeout=20), "the slow request reached a worker"
        s.proc.send_signal(signal.SIGTERM)

        def not_ready():
            try:
                status, _, body = http(s, "GET", "/v2/health/ready")
            except OSError:
                return False
            return status == 503 and json.loads(body)["reason"] == "draining"

        assert wait_until(not_ready, timeout=20), "readiness must turn 503 while the node drains"
        t.join(60)
        assert "error" not in result, result.get("error")
        assert result["y"].shape == (1, 8)
        c.close()
    finally:
        assert s.terminate() == 0, open(tmp_path / "serve.log").read()[-3000:]


def test_mutated_bodies_never_crash_the_node(server, triton):
    """Deterministic fuzzing: bytes of valid JSON and binary requests flipped, cut and repeated;
    every answer is 200 or a 4xx with a JSON error, and the node keeps serving."""
    rng = np.random.default_rng(77)
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    json_body = json.dumps({"id": "f", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16],
                                                   "data": x.tolist()}]}).encode()
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    for k in range(300):
        body = bytearray(json_body if k % 2 else header + x.tobytes())
        for _ in range(int(rng.integers(1, 6))):
            op = rng.integers(0, 3)
            at = int(rng.integers(0, len(body)))
            if op == 0:
                body[at] = int(rng.integers(0, 256))
            elif op == 1:
                del body[at:at + int(rng.integers(1, 40))]
            else:
                body[at:at] = body[at:at + int(rng.integers(1, 40))]
        headers = {} if k % 2 else {"Inference-Header-Content-Length": str(len(header) + int(rng.integers(-3, 4)))}
        status, _, raw = http(server, "POST", "/v2/models/mlp/infer", bytes(body), headers)
        assert status == 200 or 400 <= status < 500, (k, status, raw[:200])
        if status != 200:
            assert json.loads(raw)["error"]
    assert triton.is_server_ready()
    assert triton.infer("mlp", [x_input(x)]).as_numpy("y").shape == (2, 8)
