"""The KServe v2 gRPC door (inference.GRPCInferenceService) of a real `troupe serve`, judged by
tritonclient.grpc: health, metadata and configuration, inference equal to the ZeroMQ path and to
ONNX Runtime (raw and typed contents), system shared memory for inputs and outputs, typed errors,
hundreds of requests in flight, and the bidirectional stream."""

import os
import queue
import socket
import subprocess

import grpc
import numpy as np
import onnxruntime as ort
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from conftest import reference  # noqa: E402


@pytest.fixture(scope="module")
def grpc_url(server):
    if not server.grpc_url:
        pytest.skip("troupe was built without gRPC")
    return server.grpc_url


@pytest.fixture(scope="module")
def kclient(grpc_url):
    c = grpcclient.InferenceServerClient(grpc_url)
    yield c
    c.close()


def infer_input(name, array):
    dtypes = {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64", np.int32: "INT32"}
    i = grpcclient.InferInput(name, list(array.shape), dtypes[array.dtype.type])
    i.set_data_from_numpy(array)
    return i


# ---- health, metadata, configuration -----------------------------------------------------------


def test_live_ready_and_model_ready(kclient):
    assert kclient.is_server_live()
    assert kclient.is_server_ready()
    assert kclient.is_model_ready("mlp")
    assert kclient.is_model_ready("mlp", "1")
    assert not kclient.is_model_ready("mlp", "7")
    assert not kclient.is_model_ready("nope")


def test_server_and_model_metadata(kclient):
    md = kclient.get_server_metadata(as_json=True)
    assert md["name"] == "troupe"
    assert "system_shared_memory" in md["extensions"] and "model_configuration" in md["extensions"]
    assert "statistics" in md["extensions"]
    mlp = kclient.get_model_metadata("mlp", as_json=True)
    assert mlp["name"] == "mlp" and mlp["versions"] == ["1", "2"]
    assert mlp["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert mlp["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "8"]}]
    multi = kclient.get_model_metadata("multi", "1")
    assert [(t.name, t.datatype) for t in multi.inputs] == [("a", "FP32"), ("b", "INT64")]
    with pytest.raises(InferenceServerException) as e:
        kclient.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "no model 'nope'" in e.value.message()


def test_model_config_is_what_perf_analyzer_reads(kclient):
    c = kclient.get_model_config("mlp").config
    assert c.name == "mlp" and c.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in c.input] == [("x", grpcclient.model_config_pb2.TYPE_FP32, [16])]
    assert [(o.name, list(o.dims)) for o in c.output] == [("y", [8])]
    assert list(c.dynamic_batching.preferred_batch_size) == [8]
    assert c.dynamic_batching.max_queue_delay_microseconds == 500
    assert c.instance_group[0].count >= 1
    assert c.version_policy.HasField("all")
    fixed = kclient.get_model_config("fixed").config
    assert fixed.max_batch_size == 0 and list(fixed.input[0].dims) == [1, 16]
    assert not fixed.HasField("dynamic_batching")


# ---- inference ---------------------------------------------------------------------------------


def test_infer_equals_zeromq_path_and_onnxruntime(kclient, client, repository):
    _, models, _ = repository
    x = np.random.default_rng(21).standard_normal((3, 16)).astype(np.float32)
    for version in ["", "1", "2"]:
        r = kclient.infer("mlp", [infer_input("x", x)], model_version=version, request_id="r-" + version)
        assert r.get_response().id == "r-" + version
        assert r.get_response().model_version == (version or "2")
        y = r.as_numpy("y")
        assert y.shape == (3, 8) and y.dtype == np.float32
        zmq_y = client.infer("mlp", {"x": x}, version=int(version or 0), wait=30)["y"]
        np.testing.assert_allclose(y, zmq_y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y, reference(models, "mlp", version or 2, {"x": x})["y"], rtol=1e-4, atol=1e-4)


def test_infer_two_dtypes_and_requested_outputs(kclient):
    a = np.random.default_rng(22).standard_normal((2, 4)).astype(np.float32)
    b = np.arange(8, dtype=np.int64).reshape(2, 4)
    r = kclient.infer("multi", [infer_input("b", b), infer_input("a", a)])
    np.testing.assert_allclose(r.as_numpy("s"), a + b, rtol=1e-6)
    np.testing.assert_allclose(r.as_numpy("p"), a * 2, rtol=1e-6)
    only = kclient.infer("multi", [infer_input("a", a), infer_input("b", b)],
                         outputs=[grpcclient.InferRequestedOutput("p")])
    assert [o.name for o in only.get_response().outputs] == ["p"]
    np.testing.assert_allclose(only.as_numpy("p"), a * 2, rtol=1e-6)


def test_typed_contents_are_accepted(grpc_url):
    a = np.random.default_rng(23).standard_normal((2, 4)).astype(np.float32)
    b = np.arange(8, dtype=np.int64).reshape(2, 4)
    req = service_pb2.ModelInferRequest(model_name="multi")
    ta = req.inputs.add(name="a", datatype="FP32", shape=[2, 4])
    ta.contents.fp32_contents.extend(a.ravel().tolist())
    tb = req.inputs.add(name="b", datatype="INT64", shape=[2, 4])
    tb.contents.int64_contents.extend(b.ravel().tolist())
    with grpc.insecure_channel(grpc_url) as ch:
        resp = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
        outputs = {o.name: np.frombuffer(raw, np.float32).reshape(list(o.shape))
                   for o, raw in zip(resp.outputs, resp.raw_output_contents)}
        np.testing.assert_allclose(outputs["s"], a + b, rtol=1e-6)
        # Typed values in the wrong field are refused, naming the field they belong in.
        bad = service_pb2.ModelInferRequest(model_name="multi")
        bad.CopyFrom(req)
        bad.inputs[1].contents.Clear()
        bad.inputs[1].contents.fp32_contents.extend([0.0] * 8)
        with pytest.raises(grpc.RpcError) as e:
            service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(bad, timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "int64_contents" in e.value.details()


def test_system_shared_memory_inputs_and_outputs(kclient, repository):
    _, models, _ = repository
    x = np.random.default_rng(24).standard_normal((4, 16)).astype(np.float32)
    in_bytes, out_bytes = x.nbytes, 4 * 8 * 4
    tag = f"troupe_grpc_{os.getpid()}"
    kclient.unregister_system_shared_memory()
    h_in = shm.create_shared_memory_region("in", f"/{tag}_in", in_bytes)
    h_out = shm.create_shared_memory_region("out", f"/{tag}_out", out_bytes)
    try:
        shm.set_shared_memory_region(h_in, [x])
        kclient.register_system_shared_memory("in", f"/{tag}_in", in_bytes)
        kclient.register_system_shared_memory("out", f"/{tag}_out", out_bytes)
        status = kclient.get_system_shared_memory_status(as_json=True)
        assert {r["name"] for r in status["regions"].values()} == {"in", "out"}
        i = grpcclient.InferInput("x", [4, 16], "FP32")
        i.set_shared_memory("in", in_bytes)
        o = grpcclient.InferRequestedOutput("y")
        o.set_shared_memory("out", out_bytes)
        r = kclient.infer("mlp", [i], outputs=[o])
        out = r.get_output("y")
        # As Triton answers (and tritonclient's C++ reader, perf_analyzer's, needs): the output
        # is listed with its region, and its raw_output_contents entry is there and empty.
        resp = r.get_response()
        assert list(out.shape) == [4, 8] and list(resp.raw_output_contents) == [b""]
        assert out.parameters["shared_memory_region"].string_param == "out"
        assert out.parameters["shared_memory_byte_size"].int64_param == out_bytes
        y = shm.get_contents_as_numpy(h_out, np.float32, [4, 8])
        np.testing.assert_allclose(y, reference(models, "mlp", 2, {"x": x})["y"], rtol=1e-4, atol=1e-4)
        # A byte size that does not match the tensor is refused.
        bad = grpcclient.InferInput("x", [4, 16], "FP32")
        bad.set_shared_memory("in", in_bytes - 4)
        with pytest.raises(InferenceServerException) as e:
            kclient.infer("mlp", [bad])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "shared_memory_byte_size" in e.value.message()
    finally:
        kclient.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(h_in)
        shm.destroy_shared_memory_region(h_out)
    assert kclient.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}


@pytest.mark.parametrize("case", ["unknown model", "wrong shape", "wrong dtype", "missing input"])
def test_bad_requests_get_invalid_argument(kclient, case):
    x = np.ones((1, 16), np.float32)
    model, inputs, needle = "mlp", [infer_input("x", x)], ""
    if case == "unknown model":
        model, needle = "nope", "no model 'nope'"
    elif case == "wrong shape":
        inputs, needle = [infer_input("x", np.ones((1, 15), np.float32))], "'x'"
    elif case == "wrong dtype":
        inputs, needle = [infer_input("x", np.ones((1, 16), np.float64))], "'x'"
    else:
        model, inputs, needle = "multi", [infer_input("a", np.ones((1, 4), np.float32))], "inputs"
    with pytest.raises(InferenceServerException) as e:
        kclient.infer(model, inputs)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
    assert needle in e.value.message(), e.value.message()
    assert kclient.infer("mlp", [infer_input("x", x)]).as_numpy("y").shape == (1, 8)  # still serving


def test_unserved_rpcs_answer_unimplemented(kclient):
    with pytest.raises(InferenceServerException) as e:
        kclient.get_cuda_shared_memory_status()
    assert e.value.status() == "StatusCode.UNIMPLEMENTED" and "CUDA shared memory" in e.value.message()


def test_timeout_and_parameters_reach_the_job(kclient):
    x = np.ones((1, 16), np.float32)
    # troupe.sleep_ms (fault injection, on in the test node) keeps the worker busy past the
    # request's own timeout (microseconds, Triton's unit): the deadline holds.
    with pytest.raises(InferenceServerException) as e:
        kclient.infer("deep", [infer_input("x", x)], timeout=100_000, parameters={"troupe.sleep_ms": 1000})
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    with pytest.raises(InferenceServerException) as e:
        kclient.infer("prio", [infer_input("x", x)], priority=3)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "priority" in e.value.message()
    assert kclient.infer("prio", [infer_input("x", x)], priority=1).as_numpy("y").shape == (1, 8)


def test_hundreds_of_async_requests_all_correct(kclient, repository):
    _, models, _ = repository
    rng = np.random.default_rng(25)
    sess = ort.InferenceSession(os.path.join(models, "mlp", "2", "model.onnx"), providers=["CPUExecutionProvider"])
    count = 300
    inputs = [rng.standard_normal((int(rng.integers(1, 5)), 16)).astype(np.float32) for _ in range(count)]
    done = queue.Queue()
    for k, x in enumerate(inputs):
        kclient.async_infer("mlp", [infer_input("x", x)], partial_callback(done, k), request_id=str(k))
    results = [done.get(timeout=120) for _ in range(count)]
    errors = [err for _, _, err in results if err is not None]
    assert not errors, errors[:3]
    assert sorted(k for k, _, _ in results) == list(range(count))
    for k, r, _ in results:
        assert r.get_response().id == str(k)
        np.testing.assert_allclose(r.as_numpy("y"), sess.run(None, {"x": inputs[k]})[0], rtol=1e-4, atol=1e-4)


def partial_callback(q, k):
    return lambda result, error: q.put((k, result, error))


def test_troupe_bench_drives_the_grpc_door(kclient, grpc_url, tmp_path):
    """`troupe bench --server grpc://...`: the closed loop over KServe gRPC; every request it counts
    went through the gRPC door (the door's statistics grew by at least as many)."""
    from conftest import troupe_bin
    import json
    before = kclient.get_inference_statistics("mlp", "2").model_stats[0].inference_stats.success.count
    out_json = tmp_path / "bench.json"
    r = subprocess.run([troupe_bin(), "bench", "mlp", "--version", "2", "--server", f"grpc://{grpc_url}",
                        "--concurrency", "8", "--connections", "2", "--duration", "1", "--warmup", "0.2",
                        "--json", str(out_json)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    j = json.loads(out_json.read_text())
    assert j["ok"] > 0 and j["errors"] == 0 and j["lost"] == 0 and j["connections"] == 2
    assert "server_reported" not in j, "KServe replies carry no server timings"
    after = kclient.get_inference_statistics("mlp", "2").model_stats[0].inference_stats.success.count
    assert after - before >= j["ok"] + 1  # + the probe; warm-up requests count on the node only
    bad = subprocess.run([troupe_bin(), "bench", "nope", "--server", f"grpc://{grpc_url}", "-c", "1",
                          "--duration", "1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not_found" in bad.stderr and "nope" in bad.stderr, bad.stderr


def test_stream_answers_every_request_and_reports_errors_in_band(grpc_url, repository):
    _, models, _ = repository
    sess = ort.InferenceSession(os.path.join(models, "mlp", "2", "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(26)
    c = grpcclient.InferenceServerClient(grpc_url)
    done = queue.Queue()
    c.start_stream(callback=lambda result, error: done.put((result, error)))
    try:
        inputs = {}
        for k in range(64):
            x = rng.standard_normal((int(rng.integers(1, 4)), 16)).astype(np.float32)
            inputs[str(k)] = x
            c.async_stream_infer("mlp", [infer_input("x", x)], request_id=str(k))
        c.async_stream_infer("nope", [infer_input("x", x)], request_id="bad")
        results = [done.get(timeout=120) for _ in range(65)]
    finally:
        c.stop_stream()
        c.close()
    errors = [e for r, e in results if e is not None]
    assert len(errors) == 1 and "no model 'nope'" in errors[0].message()
    answered = {r.get_response().id: r for r, e in results if e is None}
    assert sorted(answered, key=int) == [str(k) for k in range(64)]
    for k, r in answered.items():
        np.testing.assert_allclose(r.as_numpy("y"), sess.run(None, {"x": inputs[k]})[0], rtol=1e-4, atol=1e-4)


def test_calls_the_client_abandons_leave_the_node_serving(grpc_url, kclient):
    x = np.ones((1, 16), np.float32)
    # The client gives up (its gRPC deadline) while the worker still runs the request.
    with pytest.raises(InferenceServerException) as e:
        kclient.infer("deep", [infer_input("x", x)], client_timeout=0.05, parameters={"troupe.sleep_ms": 300})
    assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    # A stream cancelled with requests in flight.
    c = grpcclient.InferenceServerClient(grpc_url)
    c.start_stream(callback=lambda result, error: None)
    for k in range(8):
        c.async_stream_infer("deep", [infer_input("x", x)], request_id=str(k), parameters={"troupe.sleep_ms": 50})
    c.stop_stream(cancel_requests=True)
    c.close()
    assert kclient.infer("deep", [infer_input("x", x)]).as_numpy("y").shape == (1, 8)
    assert kclient.is_server_ready()


# ---- limits -----------------------------------------------------------------------------------


def test_messages_beyond_grpcs_own_4_mib_default(tmp_path):
    from conftest import Server, _save, write
    from onnx import TensorProto, helper
    width = 1 << 20  # one row: 4 MiB of FP32
    g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])])
    models = str(tmp_path / "models")
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(models, "big", "1", "model.onnx"))
    write(os.path.join(models, "big", "config.yaml"), "max_batch_size: 2\n")
    node_yaml = str(tmp_path / "node.yaml")
    write(node_yaml, "cpu_workers: 1\ngpus: none\nwarmup_runs: 1\nmax_message_bytes: 20971520\n")
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    try:
        if not s.grpc_url:
            pytest.skip("troupe was built without gRPC")
        c = grpcclient.InferenceServerClient(s.grpc_url)
        x = np.random.default_rng(27).standard_normal((2, width)).astype(np.float32)  # 8 MiB each way
        np.testing.assert_array_equal(c.infer("big", [infer_input("x", x)]).as_numpy("y"), x + x)
        c.close()
    finally:
        s.terminate()


def test_grpc_port_in_use_is_an_error(repository, grpc_url):
    from conftest import troupe_bin
    _, models, node_yaml = repository
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        r = subprocess.run([troupe_bin(), "serve", "--models", models, "--listen", "tcp://127.0.0.1:*",
                            "--metrics-port", "0", "--grpc-port", str(port), "--config", node_yaml],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "cannot listen" in r.stderr, r.stderr[-2000:]


# ---- shutdown ----------------------------------------------------------------------------------


def sigterm_with_deep_requests_in_flight(server, c, count, sleep_ms):
    """Sends `count` requests to 'deep' that each keep a worker busy `sleep_ms`, waits until all
    have reached the node (2 workers, each lent at most 2 batches of one request: the rest wait in
    the batcher's queue), sends SIGTERM and returns every (index, result, error)."""
    from conftest import metric_value, wait_until
    x = np.ones((1, 16), np.float32)
    done = queue.Queue()
    for k in range(count):
        c.async_infer("deep", [infer_input("x", x)], partial_callback(done, k),
                      parameters={"troupe.sleep_ms": sleep_ms})
    assert wait_until(lambda: metric_value(server.metrics(), "troupe_queue_length", model="deep") >= count - 4,
                      timeout=60)
    server.proc.send_signal(15)
    return [done.get(timeout=120) for _ in range(count)]


def test_sigterm_drains_grpc_requests_and_closes_open_streams(tmp_path):
    from conftest import Server, build_repository
    models, node_yaml = build_repository(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    if not s.grpc_url:
        s.terminate()
        pytest.skip("troupe was built without gRPC")
    c = grpcclient.InferenceServerClient(s.grpc_url)
    streamed = queue.Queue()
    try:
        # A stream the client leaves open: the node must not wait for it beyond its grace period.
        c.start_stream(callback=lambda result, error: streamed.put((result, error)))
        x = np.ones((1, 16), np.float32)
        c.async_stream_infer("mlp", [infer_input("x", x)], request_id="s0")
        result, error = streamed.get(timeout=60)
        assert error is None and result.get_response().id == "s0"
        results = sigterm_with_deep_requests_in_flight(s, c, count=16, sleep_ms=200)
        assert [e for _, _, e in results if e is not None] == [], "a request in flight was lost"
        assert all(r.as_numpy("y").shape == (1, 8) for _, r, _ in results)
        assert s.terminate(timeout=60) == 0
    finally:
        c.close()
        s.terminate()
    log = open(tmp_path / "serve.log").read()
    assert "draining" in log and '"stopped"' in log


def test_model_statistics(kclient):
    """Triton's statistics extension from the exact per-version sums (as the HTTP door's /stats)."""
    x = np.ones((2, 16), np.float32)
    before = kclient.get_inference_statistics("mlp", "2").model_stats[0]
    for _ in range(3):
        kclient.infer("mlp", [infer_input("x", x)], model_version="2")
    s = kclient.get_inference_statistics("mlp", "2").model_stats[0]
    assert (s.name, s.version) == ("mlp", "2")
    assert s.inference_stats.success.count == before.inference_stats.success.count + 3
    assert s.inference_stats.success.ns > before.inference_stats.success.ns
    assert s.inference_count >= before.inference_count + 6 and s.execution_count > before.execution_count
    assert s.last_inference > 0
    everything = kclient.get_inference_statistics()
    assert {(m.name, m.version) for m in everything.model_stats} >= {("mlp", "1"), ("mlp", "2")}
    with pytest.raises(InferenceServerException) as e:
        kclient.get_inference_statistics("nope")
    assert "nope" in str(e.value)


def test_drain_timeout_cancels_grpc_requests_still_running(tmp_path):
    """SIGTERM with a drain timeout shorter than the requests in flight: each call gets CANCELLED
    (answered once the workers have let go of its inputs, which the gRPC request message holds),
    none hangs, and the node exits 0."""
    from conftest import Server, build_repository
    models, node_yaml = build_repository(str(tmp_path))
    with open(node_yaml) as f:
        text = f.read().replace("drain_timeout_ms: 20000", "drain_timeout_ms: 100")
    with open(node_yaml, "w") as f:
        f.write(text)
    s = Server(models, node_yaml, str(tmp_path / "serve.log"))
    if not s.grpc_url:
        s.terminate()
        pytest.skip("troupe was built without gRPC")
    c = grpcclient.InferenceServerClient(s.grpc_url)
    try:
        results = sigterm_with_deep_requests_in_flight(s, c, count=6, sleep_ms=1500)
        errors = [e for _, _, e in results if e is not None]
        assert len(errors) == 6, results
        assert all("cancelled" in e.message() for e in errors), [e.message() for e in errors]
        assert s.terminate(timeout=60) == 0
    finally:
        c.close()
        s.terminate()
