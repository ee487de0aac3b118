"""Run-time model control of a real `troupe serve` through the KServe repository extension, judged
by tritonclient (HTTP and gRPC): control modes (explicit with --load-model, none, poll), load,
unload, index, a load with a configuration override, a version rollout under a closed loop of
requests with zero errors and every request answered once, a failed reload that leaves the loaded
version serving."""

import json
import os
import shutil
import threading

import numpy as np
import pytest

from conftest import Server, build_repository, make_mlp, reference, wait_until, write

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


def infer_mlp(c, module, model, rows=2, version=""):
    x = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16) / 100
    i = module.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    r = c.infer(model, [i], model_version=version)
    return x, r


def index_of(c):
    """{(name, version): state} from the HTTP index (version "" for a model without versions)."""
    return {(e["name"], e.get("version", "")): e.get("state", "") for e in c.get_model_repository_index()}


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("explicit"))
    models, node_yaml = build_repository(root)
    s = Server(models, node_yaml, os.path.join(root, "serve.log"),
               extra_args=["--model-control-mode", "explicit", "--load-model", "mlp"])
    assert s.ready, s.reason
    yield s, models
    assert s.terminate() == 0


def test_explicit_mode_loads_only_the_named_models_and_lists_the_rest(explicit):
    s, models = explicit
    h = httpclient.InferenceServerClient(s.http_url)
    idx = index_of(h)
    assert idx[("mlp", "2")] == "READY" and idx[("mlp", "1")] == "READY"
    assert idx[("multi", "")] == "" and idx[("slow", "")] == "", idx
    assert not h.is_model_ready("multi")
    with pytest.raises(InferenceServerException) as e:
        infer_mlp(h, httpclient, "slow")
    assert "no model 'slow'" in e.value.message()


def test_load_infer_unload_over_http_and_grpc(explicit):
    s, models = explicit
    h = httpclient.InferenceServerClient(s.http_url)
    g = grpcclient.InferenceServerClient(s.grpc_url)
    h.load_model("deep")
    assert h.is_model_ready("deep")
    x, r = infer_mlp(h, httpclient, "deep", rows=1)
    np.testing.assert_allclose(r.as_numpy("y"), reference(models, "deep", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    assert {(m.name, m.version, m.state) for m in g.get_model_repository_index().models} >= {("deep", "1", "READY")}
    g.unload_model("deep")
    assert index_of(h)[("deep", "")] == "UNAVAILABLE"
    for c, module in [(h, httpclient), (g, grpcclient)]:
        with pytest.raises(InferenceServerException) as e:
            infer_mlp(c, module, "deep", rows=1)
        assert "unloaded" in e.value.message(), e.value.message()
    assert h.is_server_ready(), "an unloaded model is not a problem of the node"
    with pytest.raises(InferenceServerException) as e:
        g.unload_model("deep")
    assert "not loaded" in e.value.message()
    g.load_model("deep")  # and back
    x, r = infer_mlp(g, grpcclient, "deep", rows=1)
    np.testing.assert_allclose(r.as_numpy("y"), reference(models, "deep", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)


def test_load_errors_are_typed(explicit):
    s, _ = explicit
    h = httpclient.InferenceServerClient(s.http_url)
    with pytest.raises(InferenceServerException) as e:
        h.load_model("nope")
    assert "no model 'nope'" in e.value.message()
    assert ("nope", "") not in index_of(h), "a model that is not in the repository leaves no trace"
    with pytest.raises(InferenceServerException) as e:
        h.load_model("fixed", config=json.dumps({"max_batch_sise": 4}))
    assert "max_batch_sise" in e.value.message()
    assert h.is_server_ready(), "a refused load does not change what the node serves"


def test_load_with_a_configuration_override(explicit):
    s, _ = explicit
    g = grpcclient.InferenceServerClient(s.grpc_url)
    g.load_model("prio", config=json.dumps({"max_batch_size": 2}))
    assert g.get_model_config("prio", as_json=True)["config"]["max_batch_size"] == 2
    g.load_model("prio", config=json.dumps({"max_batch_size": 4}))  # a reload with another one
    assert g.get_model_config("prio", as_json=True)["config"]["max_batch_size"] == 4
    x, r = infer_mlp(g, grpcclient, "prio", rows=4)
    assert r.as_numpy("y").shape == (4, 8)


def test_version_rollout_under_load_loses_nothing(tmp_path):
    """v1 serves a closed loop; v2 appears and is loaded; the switch happens with every request
    answered once, none with an error; then v1 is unloaded (drained first)."""
    models, node_yaml = build_repository(str(tmp_path))
    make_mlp(os.path.join(models, "roll", "1", "model.onnx"), seed=11)
    write(os.path.join(models, "roll", "config.yaml"), "max_batch_size: 8\n")
    s = Server(models, node_yaml, str(tmp_path / "serve.log"),
               extra_args=["--model-control-mode", "explicit", "--load-model", "roll"])
    try:
        g = grpcclient.InferenceServerClient(s.grpc_url)
        stop = threading.Event()
        answers, errors, lock = {}, [], threading.Lock()

        def loop(t):
            c = grpcclient.InferenceServerClient(s.grpc_url)
            k = 0
            while not stop.is_set():
                rid = f"{t}-{k}"
                k += 1
                try:
                    _, r = None, c.infer("roll", [make_input()], request_id=rid)
                    with lock:
                        assert rid not in answers, "answered twice"
                        answers[rid] = r.get_response().model_version
                except InferenceServerException as e:
                    with lock:
                        errors.append(e.message())

        def make_input():
            i = grpcclient.InferInput("x", [1, 16], "FP32")
            i.set_data_from_numpy(np.ones((1, 16), np.float32))
            return i

        threads = [threading.Thread(target=loop, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(answers) > 50)
        make_mlp(os.path.join(models, "roll", "2", "model.onnx"), seed=12)
        g.load_model("roll")
        assert wait_until(lambda: list(answers.values())[-1:] == ["2"])
        n = len(answers)
        assert wait_until(lambda: len(answers) > n + 50)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:5]
        versions = list(answers.values())
        assert versions.count("1") > 0 and versions.count("2") > 0
        idx = {(m.name, m.version): m.state for m in g.get_model_repository_index().models}
        assert wait_until(lambda: ("roll", "1") not in
                          {(m.name, m.version) for m in g.get_model_repository_index().models}), idx
        assert idx[("roll", "2")] == "READY"
        assert "model version unloaded" in s.log_messages()
    finally:
        assert s.terminate() == 0


def test_a_failed_reload_leaves_the_loaded_version_serving(tmp_path):
    models, node_yaml = build_repository(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"),
               extra_args=["--model-control-mode", "explicit", "--load-model", "deep"])
    try:
        h = httpclient.InferenceServerClient(s.http_url)
        write(os.path.join(models, "deep", "2", "model.onnx"), "this is not an onnx model")
        with pytest.raises(InferenceServerException) as e:
            h.load_model("deep")
        assert "keep serving" in e.value.message() and "deep/2" in e.value.message()
        x, r = infer_mlp(h, httpclient, "deep", rows=1)
        assert r.get_response()["model_version"] == "1"
        np.testing.assert_allclose(r.as_numpy("y"), reference(models, "deep", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
        assert index_of(h)[("deep", "1")] == "READY"
    finally:
        assert s.terminate() == 0


def test_mode_none_refuses_load_and_unload(server):
    h = httpclient.InferenceServerClient(server.http_url)
    for call in (lambda: h.load_model("mlp"), lambda: h.unload_model("mlp")):
        with pytest.raises(InferenceServerException) as e:
            call()
        assert "model control mode is none" in e.value.message()
    assert index_of(h)[("mlp", "2")] == "READY", "the index is served in every mode"


def test_poll_mode_follows_the_repository_folder(tmp_path):
    models, node_yaml = build_repository(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"),
               extra_args=["--model-control-mode", "poll", "--repository-poll-secs", "1"])
    try:
        h = httpclient.InferenceServerClient(s.http_url)
        make_mlp(os.path.join(models, "late", "1", "model.onnx"), seed=21)
        assert wait_until(lambda: h.is_model_ready("late"), timeout=30)
        x, r = infer_mlp(h, httpclient, "late")
        np.testing.assert_allclose(r.as_numpy("y"), reference(models, "late", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
        shutil.rmtree(os.path.join(models, "late"))
        assert wait_until(lambda: index_of(h).get(("late", "")) == "UNAVAILABLE", timeout=30)
        with pytest.raises(InferenceServerException) as e:
            h.load_model("late")
        assert "poll" in e.value.message()
    finally:
        assert s.terminate() == 0


# ---- the management socket and `troupe models` ---------------------------------------------------


def models_cli(*args, timeout=120):
    from conftest import troupe_bin
    import subprocess
    return subprocess.run([troupe_bin(), "models", *args], capture_output=True, text=True, timeout=timeout)


def test_troupe_models_over_the_management_socket(tmp_path):
    from conftest import free_port
    models, node_yaml = build_repository(str(tmp_path))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    s = Server(models, node_yaml, str(tmp_path / "serve.log"),
               extra_args=["--model-control-mode", "explicit", "--management-listen", endpoint])
    try:
        r = models_cli("list", "--server", endpoint)
        assert r.returncode == 0, r.stderr
        assert "deep" in r.stdout and "(not loaded)" in r.stdout
        r = models_cli("load", "deep", "--server", endpoint)
        assert r.returncode == 0 and "loaded deep" in r.stdout, r.stderr
        r = models_cli("list", "--ready", "--server", endpoint)
        lines = [l.split() for l in r.stdout.splitlines()[1:]]
        assert lines == [["deep", "1", "READY"]], r.stdout
        h = httpclient.InferenceServerClient(s.http_url)
        infer_mlp(h, httpclient, "deep", rows=1)
        cfg = tmp_path / "override.yaml"
        cfg.write_text("max_batch_size: 1\ndynamic_batching: {max_queue_delay_microseconds: 50}\n")
        assert models_cli("load", "deep", "--config", str(cfg), "--server", endpoint).returncode == 0
        r = models_cli("unload", "deep", "--server", endpoint)
        assert r.returncode == 0 and "unloaded deep" in r.stdout, r.stderr
        r = models_cli("unload", "deep", "--server", endpoint)
        assert r.returncode == 2 and "not_found" in r.stderr and "not loaded" in r.stderr
        r = models_cli("load", "nope", "--server", endpoint)
        assert r.returncode == 2 and "no model 'nope'" in r.stderr
    finally:
        assert s.terminate() == 0


def test_management_socket_beyond_loopback_needs_a_private_token(tmp_path):
    from conftest import free_port, troupe_bin
    import subprocess
    models, node_yaml = build_repository(str(tmp_path))
    port = free_port()
    wide = f"tcp://0.0.0.0:{port}"
    common = [troupe_bin(), "serve", "--models", models, "--listen", "tcp://127.0.0.1:*", "--metrics-port", "0",
              "--grpc-port", "0", "--http-port", "0", "--model-control-mode", "explicit"]
    r = subprocess.run(common + ["--management-listen", wide], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "management_token_file" in r.stderr, r.stderr
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    os.chmod(token, 0o644)
    cfg = tmp_path / "node_token.yaml"
    cfg.write_text(open(node_yaml).read() + f"management_token_file: {token}\n")
    r = subprocess.run(common + ["--config", str(cfg), "--management-listen", wide], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "chmod 600" in r.stderr, r.stderr
    os.chmod(token, 0o600)
    s = Server(models, str(cfg), str(tmp_path / "serve.log"),
               extra_args=["--model-control-mode", "explicit", "--management-listen", wide])
    try:
        local = f"tcp://127.0.0.1:{port}"
        r = models_cli("list", "--server", local)
        assert r.returncode == 2 and "token" in r.stderr, r.stderr
        wrong = tmp_path / "wrong"
        wrong.write_text("not-it")
        os.chmod(wrong, 0o600)
        r = models_cli("load", "deep", "--server", local, "--token-file", str(wrong))
        assert r.returncode == 2 and "token" in r.stderr, r.stderr
        assert "deep" not in [l.split()[0] for l in
                              models_cli("list", "--ready", "--server", local, "--token-file", str(token)
                                         ).stdout.splitlines()[1:]]
        r = models_cli("load", "deep", "--server", local, "--token-file", str(token))
        assert r.returncode == 0, r.stderr
        # The HTTP and gRPC repository endpoints ask for the same token (index stays open).
        h = httpclient.InferenceServerClient(s.http_url)
        g = grpcclient.InferenceServerClient(s.grpc_url)
        assert ("deep", "1") in index_of(h)
        with pytest.raises(InferenceServerException) as e:
            h.unload_model("deep")
        assert "401" in str(e.value) and "token" in e.value.message()
        with pytest.raises(InferenceServerException) as e:
            g.unload_model("deep", headers={"authorization": "Bearer not-it"})
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        g.unload_model("deep", headers={"authorization": "Bearer s3cret-token"})
        h.load_model("deep", headers={"Authorization": "Bearer s3cret-token"})
        assert h.is_model_ready("deep")
    finally:
        assert s.terminate() == 0


def test_traffic_weights_stickiness_rollback_and_promote(tmp_path):
    """Run-time traffic of `mlp` (versions 1 and 2): weights 90/10 observed over 2,000 requests,
    a routing key always lands on the same version, rollback takes a version's traffic away,
    promote gives all of it to one version and unloads the other."""
    from collections import Counter
    from conftest import free_port
    models, node_yaml = build_repository(str(tmp_path))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    s = Server(models, node_yaml, str(tmp_path / "serve.log"),
               extra_args=["--model-control-mode", "explicit", "--load-model", "mlp",
                           "--management-listen", endpoint])
    try:
        g = grpcclient.InferenceServerClient(s.grpc_url)
        x = grpcclient.InferInput("x", [1, 16], "FP32")
        x.set_data_from_numpy(np.ones((1, 16), np.float32))

        def versions(n, **kw):
            return Counter(g.infer("mlp", [x], **kw).get_response().model_version for _ in range(n))

        assert versions(20) == Counter({"2": 20}), "no weights: the newest version"
        r = models_cli("traffic", "mlp", "--weights", "1=90,2=10", "--server", endpoint)
        assert r.returncode == 0 and "1=90,2=10" in r.stdout and "set at run time" in r.stdout, r.stderr
        seen = versions(2000)
        assert 0.07 <= seen["2"] / 2000 <= 0.13, seen  # 10% +- 3 points (round robin: exact here)
        sticky = {g.infer("mlp", [x], parameters={"routing_key": f"user-{u}"}).get_response().model_version
                  for u in range(40)}
        assert sticky == {"1", "2"}, "40 keys spread over both versions"
        for u in range(10):
            got = versions(15, parameters={"routing_key": f"user-{u}"})
            assert len(got) == 1, f"user-{u} moved between versions: {got}"
        r = models_cli("rollback", "mlp", "2", "--server", endpoint)
        assert r.returncode == 0 and "rolled back" in r.stdout, r.stdout + r.stderr
        assert versions(50) == Counter({"1": 50})
        r = models_cli("rollback", "mlp", "1", "--server", endpoint)
        assert r.returncode == 2 and "no ready version with traffic" in r.stderr, r.stderr
        r = models_cli("traffic", "mlp", "--server", endpoint)
        assert "1=90,2=0" in r.stdout and "rolled back" in r.stdout, r.stdout
        r = models_cli("traffic", "mlp", "--weights", "7=1", "--server", endpoint)
        assert r.returncode == 2 and "no ready version 7" in r.stderr
        r = models_cli("promote", "mlp", "2", "--server", endpoint)
        assert r.returncode == 0 and "promoted" in r.stdout, r.stderr
        assert versions(20) == Counter({"2": 20})
        assert wait_until(lambda: [(m.name, m.version) for m in g.get_model_repository_index().models
                                   if m.name == "mlp"] == [("mlp", "2")])
        r = models_cli("traffic", "mlp", "--clear", "--server", endpoint)
        assert r.returncode == 0 and "config.yaml" in r.stdout
    finally:
        assert s.terminate() == 0


def test_a_bad_canary_is_rolled_back_automatically(tmp_path):
    """`canary` v1 and v2 share traffic 50/50; v2 fails every batch (fault injection); with
    rollback: {max_error_ratio: 2, window_s: 1} the node sets v2's weight to 0, logs and counts it,
    and `troupe models traffic` says why."""
    from conftest import free_port, metric_value
    models, node_yaml = build_repository(str(tmp_path))
    make_mlp(os.path.join(models, "canary", "1", "model.onnx"), seed=31)
    make_mlp(os.path.join(models, "canary", "2", "model.onnx"), seed=32)
    write(os.path.join(models, "canary", "config.yaml"),
          "max_batch_size: 8\n"
          "version_policy: {all: {}}\n"
          "traffic: {weights: {1: 50, 2: 50}}\n"
          "rollback: {max_error_ratio: 2, window_s: 1, min_requests: 10}\n"
          "fault_injection: {error_ratio: 1.0, versions: [2]}\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    s = Server(models, node_yaml, str(tmp_path / "serve.log"), extra_args=["--management-listen", endpoint])
    try:
        h = httpclient.InferenceServerClient(s.http_url)
        stop = threading.Event()
        outcomes = []

        def load():
            c = grpcclient.InferenceServerClient(s.grpc_url)  # its own client: one per thread
            while not stop.is_set():
                try:
                    _, r = infer_mlp(c, grpcclient, "canary", rows=1)
                    outcomes.append(r.get_response().model_version)
                except InferenceServerException as e:
                    outcomes.append("error: " + e.message())

        t = threading.Thread(target=load)
        t.start()
        try:
            assert wait_until(lambda: metric_value(s.metrics(), "troupe_rollbacks_total",
                                                   model="canary", version="2") == 1, timeout=60)
        finally:
            stop.set()
            t.join()
        assert any(o.startswith("error") and "configured to fail" in o for o in outcomes), outcomes[:5]
        after = [infer_mlp(h, httpclient, "canary", rows=1)[1].get_response()["model_version"] for _ in range(30)]
        assert after == ["1"] * 30
        r = models_cli("traffic", "canary", "--server", endpoint)
        assert "1=50,2=0" in r.stdout and "rolled back automatically" in r.stdout and "error rate" in r.stdout, r.stdout
        assert "traffic rolled back" in s.log_messages()
    finally:
        assert s.terminate() == 0


def test_node_label_rules_route_by_the_nodes_region(tmp_path):
    """`traffic.match: [{node_label: region, value: eu, version: 1}]`: a node labelled region eu
    serves version 1 to requests that name none; a node in another region the newest (2)."""
    seen = {}
    for region in ("eu", "us"):
        root = tmp_path / region
        models, node_yaml = build_repository(str(root))
        write(os.path.join(models, "mlp", "config.yaml"),
              "max_batch_size: 8\n"
              "version_policy: {all: {}}\n"
              "traffic: {match: [{node_label: region, value: eu, version: 1}]}\n")
        with open(node_yaml, "a") as f:
            f.write(f"labels: {{region: {region}, zone: a}}\n")
        s = Server(models, node_yaml, str(root / "serve.log"))
        try:
            h = httpclient.InferenceServerClient(s.http_url)
            seen[region] = {infer_mlp(h, httpclient, "mlp")[1].get_response()["model_version"] for _ in range(10)}
            assert infer_mlp(h, httpclient, "mlp", version="2")[1].get_response()["model_version"] == "2"
        finally:
            assert s.terminate() == 0
    assert seen == {"eu": {"1"}, "us": {"2"}}, seen
