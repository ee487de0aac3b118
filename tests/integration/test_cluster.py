"""Control and worker nodes on loopback (docs/cluster.md): `troupe serve --role control` serves
through worker processes of worker nodes (`troupe serve --role worker --join`) that join it over
tcp://, with tensors as frames and model files sent by content hash. Results equal a single node's
(ONNX Runtime's); a worker killed under a closed-loop load costs no request (each answered exactly
once, right), is declared gone within the heartbeat timeout, restarted by its node and placed again;
a whole worker node lost leaves the others serving; a worker node restarted under the same name takes
its place again."""

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import Server, free_port, make_mlp, metric_value, reference, troupe_bin, write
from troupe_client import Client, TroupeError

HEARTBEAT_TIMEOUT_MS = 1500


def build(root):
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=61)
    write(os.path.join(models, "mlp", "config.yaml"), "max_batch_size: 4\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\n"
          "node_heartbeat_interval_ms: 250\n"
          f"node_heartbeat_timeout_ms: {HEARTBEAT_TIMEOUT_MS}\n")
    return models, node_yaml


def wait_for(cond, timeout, what):
    """Polls `cond` (a node's metrics, its log) until it holds, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cond(), what


def replicas_of(node):
    return metric_value(node.metrics(), "troupe_replicas", model="mlp", version="1") or 0


def wait_replicas(node, n, timeout=60):
    wait_for(lambda: replicas_of(node) == n, timeout, f"{replicas_of(node)} replicas, not {n}")


class WorkerNode:
    """A `troupe serve --role worker` process; it prints `joining` once its processes start."""

    def __init__(self, root, node_yaml, name, join, join_flag="--join"):
        self.name = name
        self.cache = os.path.join(root, f"cache-{name}")
        self.log = open(os.path.join(root, f"{name}.log"), "a")
        self.proc = subprocess.Popen(
            [troupe_bin(), "serve", "--role", "worker", join_flag, join, "--config", node_yaml,
             "--node-name", name, "--model-cache-dir", self.cache],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert '"event":"joining"' in line, line + open(self.log.name).read()[-3000:]

    def worker_pids(self):
        """The node's worker processes (its children)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def terminate(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


class Cluster:
    def __init__(self, tmp_path, workers=2):
        self.root = str(tmp_path)
        self.models, self.node_yaml = build(self.root)
        self.join = f"tcp://127.0.0.1:{free_port()}"
        self.control = Server(self.models, self.node_yaml, os.path.join(self.root, "control.log"),
                              extra_args=("--role", "control", "--workers-listen", self.join))
        assert not self.control.ready, "no worker has joined yet: not ready"
        self.workers = [WorkerNode(self.root, self.node_yaml, f"w{i}", self.join) for i in range(workers)]

    def wait_replicas(self, n, timeout=60):
        wait_replicas(self.control, n, timeout)

    def log_records(self, msg):
        return [r for r in self.control.log_records() if r.get("msg") == msg]

    def stop(self):
        for w in self.workers:
            if w.proc.poll() is None:
                assert w.terminate() == 0
        assert self.control.terminate() == 0


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


def check(models, client, rng, rows):
    x = rng.standard_normal((rows, 16)).astype(np.float32)
    np.testing.assert_allclose(client.infer("mlp", {"x": x})["y"],
                               reference(models, "mlp", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)


def closed_loop(models, client, count, seed, events, in_flight=8):
    """`count` one-row requests, `in_flight` at a time; events[i]() after request i is sent; then
    every reply checked: one answer each (a future resolves once), right."""
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(count)]
    futures = []
    for i, x in enumerate(inputs):
        futures.append(client.submit("mlp", {"x": x}))
        if i >= in_flight:
            futures[i - in_flight].result()
        if i in events:
            events[i]()
    for i, f in enumerate(futures):
        np.testing.assert_allclose(f.result().outputs["y"], reference(models, "mlp", 1, {"x": inputs[i]})["y"],
                                   rtol=1e-4, atol=1e-4, err_msg=f"request {i}")


def test_remote_workers_serve_like_a_single_node(cluster, tmp_path):
    cluster.wait_replicas(2)  # one per worker process (instance_count 1 on each)
    rng = np.random.default_rng(1)
    with Client(cluster.control.endpoint, timeout=30) as client:
        for rows in (1, 3, 4, 2):
            check(cluster.models, client, rng, rows)
        # The replicas made on the workers follow the model's config.yaml (its text travels with
        # each load): the signature the node serves says so.
        assert client.metadata("mlp")["max_batch_size"] == 4
    # The same requests through a single node give the same answers (both equal ONNX Runtime's
    # within float tolerance; here exactly, the same kernels on the same host).
    single = Server(cluster.models, cluster.node_yaml, str(tmp_path / "single.log"))
    try:
        x = rng.standard_normal((4, 16)).astype(np.float32)
        with Client(cluster.control.endpoint) as a, Client(single.endpoint) as b:
            np.testing.assert_array_equal(a.infer("mlp", {"x": x})["y"], b.infer("mlp", {"x": x})["y"])
    finally:
        assert single.terminate() == 0
    # The model file went to each worker node's cache, named by its SHA-256.
    for w in cluster.workers:
        cached = [f for f in os.listdir(w.cache) if f.endswith(".onnx")]
        assert len(cached) == 1 and len(cached[0]) == 64 + 5, cached
    assert len(cluster.log_records("model file sent to a remote worker")) == 2
    # Each worker advertised its device's memory (the host's, for a CPU worker) when it joined.
    joined = cluster.log_records("remote worker joined")
    assert joined and all(0 < r["memory_free_bytes"] <= r["memory_total_bytes"] for r in joined), joined


def test_a_killed_worker_process_costs_no_request_and_is_placed_again(cluster):
    cluster.wait_replicas(2)
    victim = cluster.workers[0]
    [pid] = victim.worker_pids()
    killed_at = {}

    def kill():
        killed_at["t"] = time.monotonic()
        os.kill(pid, signal.SIGKILL)

    with Client(cluster.control.endpoint, timeout=60) as client:
        closed_loop(cluster.models, client, 600, 7, {150: kill})
    # Its node starts a fresh process, which joins in the same place and gets the replica back.
    cluster.wait_replicas(2)
    gone = cluster.log_records("remote worker gone")
    assert gone, "the control node saw the worker go"
    assert any(r.get("node") == "w0" for r in cluster.log_records("remote worker placed again"))
    assert victim.worker_pids() and victim.worker_pids() != [pid]
    with Client(cluster.control.endpoint, timeout=30) as client:
        check(cluster.models, client, np.random.default_rng(2), 4)


def test_a_lost_worker_node_is_declared_dead_within_the_timeout(cluster):
    """SIGKILL of the worker node: its worker process dies with it (parent-death signal), no bye is
    sent, and only the missed heartbeats tell the control node."""
    cluster.wait_replicas(2)
    victim = cluster.workers[1]
    stop = threading.Event()
    answered, failed = [], []

    def load():
        with Client(cluster.control.endpoint, timeout=60) as client:
            rng = np.random.default_rng(3)
            while not stop.is_set():
                x = rng.standard_normal((2, 16)).astype(np.float32)
                try:
                    y = client.infer("mlp", {"x": x})["y"]
                    np.testing.assert_allclose(y, reference(cluster.models, "mlp", 1, {"x": x})["y"],
                                               rtol=1e-4, atol=1e-4)
                    answered.append(1)
                except TroupeError as e:
                    failed.append(str(e))

    t = threading.Thread(target=load)
    t.start()
    wait_for(lambda: len(answered) >= 50, 30, "the load is served")
    killed_at = time.monotonic()
    victim.proc.kill()
    victim.proc.wait()
    # Declared gone within the timeout (plus a heartbeat interval and scheduling slack).
    wait_for(lambda: any(r.get("node") == "w1" for r in cluster.log_records("remote worker gone")), 20,
             "the killed worker node declared gone")
    noticed_after_s = time.monotonic() - killed_at
    assert noticed_after_s < HEARTBEAT_TIMEOUT_MS / 1000 + 1.5, noticed_after_s
    cluster.wait_replicas(1)
    before = len(answered)
    wait_for(lambda: len(answered) >= before + 50 or failed, 30, "the other worker node serves on")
    stop.set()
    t.join(60)
    assert not failed, failed[:3]
    print(f"worker node declared dead {noticed_after_s:.2f} s after SIGKILL")


def test_a_worker_node_restarted_under_its_name_takes_its_place_again(cluster):
    cluster.wait_replicas(2)
    old = cluster.workers[0]
    assert old.terminate() == 0  # SIGTERM: its process says bye, the control node forgets it at once
    cluster.wait_replicas(1, timeout=10)
    assert any("left" in r.get("reason", "") for r in cluster.log_records("remote worker gone"))
    cluster.workers[0] = WorkerNode(cluster.root, cluster.node_yaml, "w0", cluster.join)
    cluster.wait_replicas(2)
    assert any(r.get("node") == "w0" for r in cluster.log_records("remote worker placed again"))
    # The restarted node found the model file in its cache: nothing more was sent.
    assert len(cluster.log_records("model file sent to a remote worker")) == 2
    with Client(cluster.control.endpoint, timeout=30) as client:
        check(cluster.models, client, np.random.default_rng(5), 3)


def test_a_control_node_without_workers_answers_unavailable(tmp_path):
    models, node_yaml = build(str(tmp_path))
    join = f"tcp://127.0.0.1:{free_port()}"
    control = Server(models, node_yaml, str(tmp_path / "control.log"),
                     extra_args=("--role", "control", "--workers-listen", join))
    try:
        assert not control.ready
        with Client(control.endpoint, timeout=10) as client:
            with pytest.raises(TroupeError) as e:
                client.infer("mlp", {"x": np.ones((1, 16), np.float32)})
            assert e.value.code_name == "UNAVAILABLE", e.value
    finally:
        assert control.terminate() == 0


def test_a_worker_node_needs_a_tcp_control_endpoint(tmp_path):
    _, node_yaml = build(str(tmp_path))
    for flags in ([], ["--join", "ipc:///tmp/x"], ["--join-dns", "control"], ["--join-dns", "control:x"]):
        out = subprocess.run([troupe_bin(), "serve", "--role", "worker", "--config", node_yaml, *flags],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert "--join" in out.stderr, out.stderr


def test_a_worker_node_finds_its_control_nodes_by_dns_name(tmp_path):
    """--join-dns NAME:PORT (a Kubernetes headless Service): every IPv4 address of the name is a
    control node; here localhost, 127.0.0.1."""
    root = str(tmp_path)
    models, node_yaml = build(root)
    port = free_port()
    control = Server(models, node_yaml, os.path.join(root, "control.log"),
                     extra_args=("--role", "control", "--workers-listen", f"tcp://127.0.0.1:{port}"))
    worker = WorkerNode(root, node_yaml, "dns", f"localhost:{port}", join_flag="--join-dns")
    try:
        wait_replicas(control, 1)
        with Client(control.endpoint, timeout=30) as client:
            check(models, client, np.random.default_rng(12), 2)
    finally:
        assert worker.terminate() == 0
        assert control.terminate() == 0


def keygen(root, name):
    subprocess.run([troupe_bin(), "keygen", os.path.join(root, name)], check=True, capture_output=True)
    return os.path.join(root, name + ".key"), os.path.join(root, name + ".pub")


def test_curve_lets_in_only_authorized_workers(tmp_path):
    """CURVE between the nodes: the worker whose key the control node lists joins and serves; one
    with another key is refused in ZeroMQ's handshake and never joins."""
    root = str(tmp_path)
    models, node_yaml = build(root)
    base = open(node_yaml).read()
    control_key, control_pub = keygen(root, "control")
    good_key, good_pub = keygen(root, "good")
    bad_key, _ = keygen(root, "bad")
    authorized = os.path.join(root, "workers.keys")
    write(authorized, "# the workers allowed in\n" + open(good_pub).read().strip() + " good-worker\n")
    write(os.path.join(root, "control.yaml"),
          base + f"curve_secret_key_file: {control_key}\ncurve_authorized_keys_file: {authorized}\n")
    for name, key in (("good", good_key), ("bad", bad_key)):
        write(os.path.join(root, f"{name}.yaml"),
              base + f"curve_secret_key_file: {key}\ncurve_server_key_file: {control_pub}\n")
    join = f"tcp://127.0.0.1:{free_port()}"
    control = Server(models, os.path.join(root, "control.yaml"), os.path.join(root, "control.log"),
                     extra_args=("--role", "control", "--workers-listen", join))
    workers = []
    try:
        workers.append(WorkerNode(root, os.path.join(root, "good.yaml"), "good", join))
        wait_replicas(control, 1)
        with Client(control.endpoint, timeout=30) as client:
            check(models, client, np.random.default_rng(8), 2)
        workers.append(WorkerNode(root, os.path.join(root, "bad.yaml"), "bad", join))
        wait_for(lambda: any(r.get("msg") == "worker refused: its CURVE key is not authorized"
                             for r in control.log_records()), 30, "the unknown key was refused")
        joined = [r.get("node") for r in control.log_records() if r.get("msg") == "remote worker joined"]
        assert joined == ["good"], joined
        assert metric_value(control.metrics(), "troupe_replicas", model="mlp", version="1") == 1
    finally:
        for w in workers:
            assert w.terminate() == 0
        assert control.terminate() == 0


def test_two_control_nodes_see_every_worker_and_clients_fail_over(tmp_path):
    """Two control nodes, three worker nodes joined to both: each control node places replicas on
    every worker; a control node killed under a closed loop costs no request (the client sends what
    waited on it to the other)."""
    root = str(tmp_path)
    models, node_yaml = build(root)
    joins = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    controls = [Server(models, node_yaml, os.path.join(root, f"control{i}.log"),
                       extra_args=("--role", "control", "--workers-listen", joins[i])) for i in range(2)]
    workers = [WorkerNode(root, node_yaml, f"w{i}", ",".join(joins)) for i in range(3)]
    killed = []
    try:
        for c in controls:
            wait_replicas(c, 3)

        def kill_first():
            controls[0].proc.kill()
            killed.append(True)

        with Client([c.endpoint for c in controls], timeout=60) as client:
            closed_loop(models, client, 500, 9, {150: kill_first})
            assert client.failovers > 0 or metric_value(
                controls[1].metrics(), "troupe_requests_total", model="mlp", version="1", outcome="ok") > 0
        assert metric_value(controls[1].metrics(), "troupe_requests_total", model="mlp", version="1",
                            outcome="ok") > 0, "the second control node took the load"
    finally:
        for w in workers:
            assert w.terminate() == 0
        controls[0].terminate()
        assert controls[1].terminate() == 0


class Partition:
    """A network namespace of the test's own, joined to this one by a veth pair: a worker node
    runs inside it; taking the link down cuts it off (no RST, no FIN: only silence)."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.ns = f"troupe-part-{tag}"
        self.host_if, self.ns_if = f"trh{tag}", f"trn{tag}"
        self.host_ip, self.ns_ip = "10.213.77.1", "10.213.77.2"
        cmds = [["ip", "netns", "add", self.ns],
                ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if],
                ["ip", "link", "set", self.ns_if, "netns", self.ns],
                ["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if],
                ["ip", "link", "set", self.host_if, "up"],
                ["ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if],
                ["ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up"],
                ["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"]]
        for c in cmds:
            out = subprocess.run(c, capture_output=True, text=True)
            if out.returncode != 0:
                self.close()
                raise OSError(" ".join(c) + ": " + out.stderr.strip())

    def link(self, up):
        subprocess.run(["ip", "link", "set", self.host_if, "up" if up else "down"], check=True)

    def close(self):
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def test_a_partitioned_worker_is_declared_dead_and_rejoins_when_the_link_heals(tmp_path):
    """A worker node in a network namespace of its own loses its link under a closed-loop load:
    the control node declares it dead within the timeout and the other worker node serves on;
    when the link comes back, its old connection is told to go (nothing late from it is taken),
    its process restarts and joins again. Every request is answered exactly once, right."""
    try:
        part = Partition()
    except (OSError, FileNotFoundError) as e:
        pytest.skip(f"network namespaces cannot be made here ({e}): the partition test needs root "
                    "and iproute2")
    root = str(tmp_path)
    models, node_yaml = build(root)
    join = f"tcp://{part.host_ip}:{free_port()}"
    control = Server(models, node_yaml, os.path.join(root, "control.log"),
                     extra_args=("--role", "control", "--workers-listen", join))
    inside = outside = None
    try:
        outside = WorkerNode(root, node_yaml, "outside", join)
        log = open(os.path.join(root, "inside.log"), "a")
        inside = subprocess.Popen(["ip", "netns", "exec", part.ns, troupe_bin(), "serve", "--role", "worker",
                                   "--join", join, "--config", node_yaml, "--node-name", "inside",
                                   "--model-cache-dir", os.path.join(root, "cache-inside")],
                                  stdout=subprocess.PIPE, stderr=log, text=True)
        assert '"event":"joining"' in inside.stdout.readline()

        def records(msg, node):
            return [r for r in control.log_records() if r.get("msg") == msg and r.get("node") == node]

        wait_replicas(control, 2)
        cut = {}

        def partition():
            cut["at"] = time.monotonic()
            part.link(False)

        def heal():
            wait_for(lambda: records("remote worker gone", "inside"), 20, "the cut-off worker declared dead")
            cut["noticed_s"] = time.monotonic() - cut["at"]
            part.link(True)

        with Client(control.endpoint, timeout=60) as client:
            closed_loop(models, client, 700, 21, {150: partition, 400: heal})
        assert cut["noticed_s"] < HEARTBEAT_TIMEOUT_MS / 1000 + 1.5, cut
        wait_for(lambda: records("remote worker placed again", "inside"), 60, "the worker rejoined")
        wait_replicas(control, 2)
        served = metric_value(control.metrics(), "troupe_requests_total", model="mlp", version="1", outcome="ok")
        assert served == 700, f"{served} answers for 700 requests: none twice, none lost"
        print(f"partitioned worker declared dead {cut['noticed_s']:.2f} s after the cut")
    finally:
        if inside is not None:
            inside.send_signal(signal.SIGTERM)
            try:
                inside.wait(30)
            except subprocess.TimeoutExpired:
                inside.kill()
        if outside is not None:
            outside.terminate()
        control.terminate()
        part.close()


def test_models_load_and_unload_at_run_time_on_the_workers(tmp_path):
    """Triton's repository API on a control node (explicit mode): a model loaded at run time gets
    replicas on the joined workers (its file sent to them), serves, and unloads from them."""
    httpclient = pytest.importorskip("tritonclient.http")
    root = str(tmp_path)
    models, node_yaml = build(root)
    make_mlp(os.path.join(models, "later", "1", "model.onnx"), seed=62)
    join = f"tcp://127.0.0.1:{free_port()}"
    control = Server(models, node_yaml, os.path.join(root, "control.log"),
                     extra_args=("--role", "control", "--workers-listen", join,
                                 "--model-control-mode", "explicit", "--load-model", "mlp"))
    worker = WorkerNode(root, node_yaml, "w0", join)
    try:
        wait_replicas(control, 1)
        h = httpclient.InferenceServerClient(control.http_url)
        h.load_model("later")
        assert h.is_model_ready("later")
        x = np.random.default_rng(13).standard_normal((3, 16)).astype(np.float32)
        with Client(control.endpoint, timeout=30) as client:
            np.testing.assert_allclose(client.infer("later", {"x": x})["y"],
                                       reference(models, "later", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
        assert len([f for f in os.listdir(worker.cache) if f.endswith(".onnx")]) == 2
        h.unload_model("later")
        wait_for(lambda: not h.is_model_ready("later"), 30, "unloaded")
        wait_for(lambda: metric_value(control.metrics(), "troupe_replicas", model="later", version="1") == 0,
                 30, "its replica left the worker")
    finally:
        assert worker.terminate() == 0
        assert control.terminate() == 0


def test_workers_join_a_control_node_that_restarts(cluster):
    """A control node killed and started again on the same endpoint: its workers' connections
    reconnect, are told to start afresh (a bye), and join the new control node."""
    cluster.wait_replicas(2)
    cluster.control.proc.kill()
    cluster.control.terminate()
    cluster.control = Server(cluster.models, cluster.node_yaml, os.path.join(cluster.root, "control-2.log"),
                             extra_args=("--role", "control", "--workers-listen", cluster.join))
    cluster.wait_replicas(2)
    with Client(cluster.control.endpoint, timeout=30) as client:
        check(cluster.models, client, np.random.default_rng(14), 3)


def test_a_model_with_external_data_reaches_the_workers_with_its_data_files(tmp_path):
    """A model whose weights are ONNX external data (data/weights.bin beside model.onnx): the
    worker receives the version folder's files by content hash, lays them out beside the model in
    its cache and serves it like a single node. A data file that is a symbolic link out of the
    model's folder is not sent (a single node refuses to read it too): that model fails to load."""
    onnx = pytest.importorskip("onnx")
    root = str(tmp_path)
    models, node_yaml = build(root)
    folder = os.path.join(models, "external", "1")
    make_mlp(os.path.join(folder, "model.onnx"), seed=63)
    model = onnx.load(os.path.join(folder, "model.onnx"))
    os.makedirs(os.path.join(folder, "data"))
    onnx.save(model, os.path.join(folder, "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="data/weights.bin", size_threshold=0)
    escape = os.path.join(models, "escape", "1")
    make_mlp(os.path.join(escape, "model.onnx"), seed=64)
    onnx.save(onnx.load(os.path.join(escape, "model.onnx")), os.path.join(escape, "model.onnx"),
              save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    os.rename(os.path.join(escape, "weights.bin"), os.path.join(root, "secret.bin"))
    os.symlink(os.path.join(root, "secret.bin"), os.path.join(escape, "weights.bin"))
    join = f"tcp://127.0.0.1:{free_port()}"
    control = Server(models, node_yaml, os.path.join(root, "control.log"),
                     extra_args=("--role", "control", "--workers-listen", join))
    worker = WorkerNode(root, node_yaml, "w0", join)
    try:
        wait_for(lambda: metric_value(control.metrics(), "troupe_replicas", model="external", version="1") == 1,
                 60, "the external-data model's replica on the worker")
        x = np.random.default_rng(14).standard_normal((3, 16)).astype(np.float32)
        with Client(control.endpoint, timeout=30) as client:
            np.testing.assert_allclose(client.infer("external", {"x": x})["y"],
                                       reference(models, "external", 1, {"x": x})["y"], rtol=1e-4, atol=1e-4)
            # The version waits for a worker that can load it, and says why this one could not.
            def refusal():
                with pytest.raises(TroupeError) as refused:
                    client.infer("escape", {"x": x})
                return str(refused.value)
            wait_for(lambda: "invalid_model" in refusal(), 30, "the worker's load error: " + refusal())
        laid_out = os.path.join(worker.cache, "models")
        folders = os.listdir(laid_out)
        assert len(folders) == 1, folders  # the external model's; escape's was never complete
        with open(os.path.join(laid_out, folders[0], "data", "weights.bin"), "rb") as a, \
                open(os.path.join(folder, "data", "weights.bin"), "rb") as b:
            assert a.read() == b.read()
        # The secret's bytes never left the control node.
        with open(os.path.join(root, "secret.bin"), "rb") as f:
            secret = f.read()
        for name in os.listdir(worker.cache):
            path = os.path.join(worker.cache, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    assert f.read() != secret, name
    finally:
        assert worker.terminate() == 0
        assert control.terminate() == 0


def test_large_requests_are_striped_over_the_workers_connections_with_curve(tmp_path):
    """Runs of 256 KiB or more cross in slices, one per connection of the worker (its first and
    its data lanes, node_link_connections 4), put together by the worker in whatever order they
    come: a model with wide rows (160 KB each) answers like ONNX Runtime for every batch size,
    with CURVE on (each lane passes the same handshake), and each worker process runs a thread per
    data lane."""
    root = str(tmp_path)
    models, node_yaml = build(root)
    wide = 40000  # float32: 160,000 bytes a row; 2 rows and more are striped
    make_mlp(os.path.join(models, "wide", "1", "model.onnx"), seed=65, din=wide, dh=4, dout=3)
    write(os.path.join(models, "wide", "config.yaml"), "max_batch_size: 8\n")
    base = open(node_yaml).read() + "node_link_connections: 4\n"
    control_key, control_pub = keygen(root, "control")
    worker_key, worker_pub = keygen(root, "worker")
    authorized = os.path.join(root, "workers.keys")
    write(authorized, open(worker_pub).read().strip() + " worker\n")
    write(os.path.join(root, "control.yaml"),
          base + f"curve_secret_key_file: {control_key}\ncurve_authorized_keys_file: {authorized}\n")
    write(os.path.join(root, "worker.yaml"),
          base + f"curve_secret_key_file: {worker_key}\ncurve_server_key_file: {control_pub}\n")
    join = f"tcp://127.0.0.1:{free_port()}"
    control = Server(models, os.path.join(root, "control.yaml"), os.path.join(root, "control.log"),
                     extra_args=("--role", "control", "--workers-listen", join))
    worker = WorkerNode(root, os.path.join(root, "worker.yaml"), "w0", join)
    try:
        wait_for(lambda: metric_value(control.metrics(), "troupe_replicas", model="wide", version="1") == 1,
                 60, "the wide model's replica on the worker")
        rng = np.random.default_rng(15)
        with Client(control.endpoint, timeout=30) as client:
            for rows in (1, 2, 5, 8, 3):
                x = rng.standard_normal((rows, wide)).astype(np.float32)
                np.testing.assert_allclose(client.infer("wide", {"x": x})["y"],
                                           reference(models, "wide", 1, {"x": x})["y"], rtol=1e-3, atol=1e-3,
                                           err_msg=f"{rows} rows")
            # Several at once: slices of different runs interleave on the connections.
            inputs = [rng.standard_normal((4, wide)).astype(np.float32) for _ in range(12)]
            futures = [client.submit("wide", {"x": x}) for x in inputs]
            for x, f in zip(inputs, futures):
                np.testing.assert_allclose(f.result().outputs["y"], reference(models, "wide", 1, {"x": x})["y"],
                                           rtol=1e-3, atol=1e-3)
        names = []
        for pid in worker.worker_pids():
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    names.append(f.read().strip())
        assert sum(n.startswith("data-lane-") for n in names) == 3 * len(worker.worker_pids()), names
    finally:
        assert worker.terminate() == 0
        assert control.terminate() == 0
