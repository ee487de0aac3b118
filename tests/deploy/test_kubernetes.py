"""deploy/kubernetes: every overlay renders (tests/deploy/kustomize_lite.py, compared with a real
kustomize where one is installed), every resource is valid against Kubernetes' own schema for a
pinned version (kubernetes-validate, strict: unknown fields are errors; its schemas ship in the
wheel, so this runs offline), and the pieces fit together: probes on the v2 health endpoints of the
HTTP port, a Service for all four doors, volumes and config that exist, GPUs only where a node runs
models on them. The cluster overlay (control nodes and GPU worker nodes, docs/cluster.md) also: the
workers find the control nodes through a headless Service on 5600, flags and node.yaml agree,
disruption budgets cover both roles, CURVE keys are where each role's node.yaml reads them, and the
shipped keys are placeholders.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kustomize_lite  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(REPO, "deploy", "kubernetes")
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on
OVERLAYS = sorted(os.listdir(os.path.join(K8S, "overlays")))
PORTS = {"zmq": 5555, "http": 8000, "grpc": 8001, "metrics": 8002}
WORKERS_PORT = 5600  # a control node's --workers-listen default
KINDS = {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"}
CLUSTER_KINDS = KINDS | {"StatefulSet", "Secret", "PodDisruptionBudget"}
# The image of the Deployment's node: a control node runs no model, so the CPU image serves it.
IMAGES = {"cpu": "troupe:cpu", "gpu": "troupe:gpu", "cluster": "troupe:cpu"}
Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def rendered(overlay):
    return kustomize_lite.render(os.path.join(K8S, "overlays", overlay))


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs, kind="Deployment"):
    return one(docs, kind)["spec"]["template"]["spec"]["containers"][0]


def known_node_keys():
    """Every key deploy/node.yaml describes, set or shown commented out (`# key: example`)."""
    with open(os.path.join(REPO, "deploy", "node.yaml")) as f:
        text = f.read()
    return set(yaml.safe_load(text)) | set(re.findall(r"^# ([a-z_]+):", text, re.M)) | {"models"}


def node_yaml(docs, pod):
    """The node.yaml a pod template mounts at /etc/troupe (the images' --config)."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    [mount] = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/troupe"]
    config_map = one(docs, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    return yaml.safe_load(config_map["data"]["node.yaml"])


def flag(args, name):
    assert args.count(name) == 1, f"{name} in {args}"
    return args[args.index(name) + 1]


def test_overlays_exist():
    assert OVERLAYS == ["cluster", "cpu", "gpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_is_valid_for_pinned_kubernetes(overlay):
    docs = rendered(overlay)
    assert {d["kind"] for d in docs} == (CLUSTER_KINDS if overlay == "cluster" else KINDS)
    for d in docs:
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{overlay}: {d['kind']} {d['metadata']['name']}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_v2_health_on_the_http_port(overlay):
    c = container(rendered(overlay))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == (PORTS | {"workers": WORKERS_PORT} if overlay == "cluster" else PORTS)
    expected = {"startupProbe": "/v2/health/live", "livenessProbe": "/v2/health/live",
                "readinessProbe": "/v2/health/ready"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        port = ports.get(get["port"], get["port"])
        assert port == 8000, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_exposes_every_door(overlay):
    docs = rendered(overlay)
    svc = one(docs, "Service", "troupe")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == PORTS
    # The headless Service Prometheus finds the nodes through (deploy/prometheus/prometheus.yml).
    nodes = one(docs, "Service", "troupe-nodes")
    assert nodes["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in nodes["spec"]["ports"]}["metrics"] == PORTS["metrics"]
    with open(os.path.join(REPO, "deploy", "prometheus", "prometheus.yml")) as f:
        scrape = {j["job_name"]: j for j in yaml.safe_load(f)["scrape_configs"]}
    dns = scrape["troupe-kubernetes"]["dns_sd_configs"][0]
    assert dns["names"][0].startswith("troupe-nodes.") and dns["port"] == PORTS["metrics"]
    c = container(docs)
    names = {p["name"] for p in c["ports"]}
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for s in (svc, nodes):
        assert all(p["targetPort"] in names for p in s["spec"]["ports"])
        assert s["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volumes_and_config_exist_and_agree(overlay):
    docs = rendered(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert set(mounts) <= set(volumes)
    one(docs, "PersistentVolumeClaim", volumes["models"]["persistentVolumeClaim"]["claimName"])
    config_map = one(docs, "ConfigMap", volumes["config"]["configMap"]["name"])
    # The images' entrypoint reads /etc/troupe/node.yaml.
    assert mounts["config"] == "/etc/troupe" and "node.yaml" in config_map["data"]
    node = yaml.safe_load(config_map["data"]["node.yaml"])
    # Every key is one troupe knows (deploy/node.yaml lists them all; unknown keys fail the node).
    known = known_node_keys()
    assert set(node) <= known, set(node) - known
    # Where `serve --models` reads is where the claim is mounted.
    args = container(docs)["args"]
    assert args[args.index("--models") + 1] == mounts["models"] == node["models"]
    assert node["metrics_port"] == PORTS["metrics"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(PORTS["metrics"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpus_only_where_models_run_on_them(overlay):
    docs = rendered(overlay)
    c = container(docs)
    res = c["resources"]
    assert c["image"] == IMAGES[overlay]
    if overlay == "gpu":
        assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 1
    else:
        # The CPU node, or the cluster's control nodes: they run no model.
        assert "nvidia.com/gpu" not in json.dumps(res)
    if overlay == "cluster":
        worker = container(docs, "StatefulSet")
        res = worker["resources"]
        assert worker["image"] == "troupe:gpu"
        assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 1


# ---- the cluster overlay: control nodes and worker nodes (docs/cluster.md) ----

def pod_labels(docs, kind):
    return one(docs, kind)["spec"]["template"]["metadata"]["labels"]


def selects(selector, labels):
    return selector.items() <= labels.items()


def test_cluster_control_nodes_drain_within_their_grace_period():
    docs = rendered("cluster")
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    c = container(docs)
    node = node_yaml(docs, pod)
    assert deployment["spec"]["replicas"] == 2
    assert flag(c["args"], "--role") == node["role"] == "control"
    assert node["workers_listen"] == f"tcp://*:{WORKERS_PORT}"
    # SIGTERM comes after preStop; the drain (drain_timeout_ms) must end before the SIGKILL.
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + node["drain_timeout_ms"] / 1000 + 5 <= pod["spec"]["terminationGracePeriodSeconds"]
    # Two control nodes on two machines mount the repository at once.
    assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    # Clients (and Prometheus) reach control nodes only: a worker has no door.
    worker = pod_labels(docs, "StatefulSet")
    for name in ("troupe", "troupe-nodes"):
        selector = one(docs, "Service", name)["spec"]["selector"]
        assert selects(selector, pod["metadata"]["labels"]) and not selects(selector, worker), name


def test_cluster_workers_find_control_nodes_through_a_headless_service():
    docs = rendered("cluster")
    svc = one(docs, "Service", "troupe-control-workers")
    assert svc["spec"]["clusterIP"] == "None"
    # A control node is not ready until workers join, and still needs them while it drains.
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(WORKERS_PORT, "workers")]
    assert {p["name"]: p["containerPort"] for p in container(docs)["ports"]}["workers"] == WORKERS_PORT
    assert selects(svc["spec"]["selector"], pod_labels(docs, "Deployment"))
    assert not selects(svc["spec"]["selector"], pod_labels(docs, "StatefulSet"))
    # The workers resolve that Service's name, on that port.
    args = container(docs, "StatefulSet")["args"]
    name, port = flag(args, "--join-dns").rsplit(":", 1)
    assert name.split(".")[0] == svc["metadata"]["name"] and int(port) == WORKERS_PORT


def test_cluster_worker_nodes():
    docs = rendered("cluster")
    stateful_set = one(docs, "StatefulSet")
    pod = stateful_set["spec"]["template"]
    c = container(docs, "StatefulSet")
    node = node_yaml(docs, pod)
    assert set(node) <= known_node_keys(), set(node) - known_node_keys()
    # The flags and node.yaml say the same (the flags would win).
    assert flag(c["args"], "--role") == node["role"] == "worker"
    assert flag(c["args"], "--join-dns") == node["join_dns"]
    assert "join" not in node and "models" not in node
    # The node's name is the pod's: stable across restarts for a StatefulSet's pods.
    assert flag(c["args"], "--node-name") == "$(POD_NAME)"
    [env] = [e for e in c["env"] if e["name"] == "POD_NAME"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    one(docs, "Service", stateful_set["spec"]["serviceName"])
    # The model cache is a volume of the pod (the image's user has no home directory).
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[node["model_cache_dir"]]]
    # No door, so no probe and no port; SIGTERM at once (the bye), and room for the node to stop
    # its processes (cluster/worker_node.hpp: killed 5 s after SIGTERM).
    assert not {"ports", "readinessProbe", "livenessProbe", "startupProbe", "lifecycle"} & set(c)
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 10
    gpu_taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert gpu_taint in pod["spec"]["tolerations"]


def test_cluster_disruption_budgets_cover_both_roles():
    docs = rendered("cluster")
    control = one(docs, "PodDisruptionBudget", "troupe-control")["spec"]
    worker = one(docs, "PodDisruptionBudget", "troupe-worker")["spec"]
    assert control["minAvailable"] == 1 and "maxUnavailable" not in control
    assert worker["maxUnavailable"] == 1 and "minAvailable" not in worker
    assert selects(control["selector"]["matchLabels"], pod_labels(docs, "Deployment"))
    assert not selects(control["selector"]["matchLabels"], pod_labels(docs, "StatefulSet"))
    assert selects(worker["selector"]["matchLabels"], pod_labels(docs, "StatefulSet"))
    assert not selects(worker["selector"]["matchLabels"], pod_labels(docs, "Deployment"))


# What each role's node.yaml must name (cluster/curve_keys.hpp), and the file each must not hold.
CURVE = {"Deployment": ({"curve_secret_key_file", "curve_authorized_keys_file"}, "worker.key"),
         "StatefulSet": ({"curve_secret_key_file", "curve_server_key_file"}, "control.key")}


def curve_files(docs, kind):
    """node.yaml's curve_* keys of the pod of `kind`, each as (Secret, key in it)."""
    pod = one(docs, kind)["spec"]["template"]
    node = node_yaml(docs, pod)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    files = {}
    for key in (k for k in node if k.startswith("curve_")):
        directory, file = os.path.split(node[key])
        [mount] = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == directory]
        assert mount.get("readOnly") is True, key
        files[key] = (one(docs, "Secret", volumes[mount["name"]]["secret"]["secretName"]), file)
    return files


@pytest.mark.parametrize("kind", sorted(CURVE))
def test_cluster_curve_keys_are_where_each_role_reads_them(kind):
    docs = rendered("cluster")
    files = curve_files(docs, kind)
    needed, foreign = CURVE[kind]
    assert set(files) == needed
    for key, (secret, file) in files.items():
        assert file in secret["data"], key
        # A worker pod holds no control node's secret key, and the other way round.
        assert foreign not in secret["data"]


def looks_like_a_key(text):
    return any(len(w) == 40 and set(w) <= set(Z85) for w in text.split())


def test_cluster_ships_placeholders_not_keys():
    # Real keys never enter the repository: what it ships holds no key (nodes deployed with it stop
    # at start, "does not hold a CURVE key") and each file says how to make real ones.
    for secret in (d for d in rendered("cluster") if d["kind"] == "Secret"):
        for name, value in secret["data"].items():
            text = base64.b64decode(value).decode()
            assert not looks_like_a_key(text), f"{secret['metadata']['name']}/{name}"
            assert "troupe keygen" in text or "PLACEHOLDER" in text


def own_overlay(tmp_path, keys):
    """The overlay kustomization.yaml tells users to write beside their keys (outside the repo)."""
    for name, text in keys.items():
        (tmp_path / name).write_text(text + "\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [" + os.path.relpath(os.path.join(K8S, "overlays", "cluster"), tmp_path) + "]\n"
        "generatorOptions: {disableNameSuffixHash: true}\n"
        "secretGenerator:\n"
        "  - {name: troupe-control-curve, behavior: replace, files: [control.key, authorized_keys]}\n"
        "  - {name: troupe-worker-curve, behavior: replace, files: [worker.key, control.pub]}\n")
    return str(tmp_path)


def test_cluster_own_overlay_replaces_the_placeholders(tmp_path):
    zmq = pytest.importorskip("zmq")
    control_pub, control_key = (k.decode() for k in zmq.curve_keypair())
    worker_pub, worker_key = (k.decode() for k in zmq.curve_keypair())
    keys = {"control.key": control_key, "authorized_keys": worker_pub + " troupe-worker",
            "worker.key": worker_key, "control.pub": control_pub}
    directory = own_overlay(tmp_path, keys)
    docs = kustomize_lite.render(directory)
    for kind in CURVE:
        for key, (secret, file) in curve_files(docs, kind).items():
            assert base64.b64decode(secret["data"][file]).decode() == keys[file] + "\n", key
    # Nothing else changes.
    others = lambda ds: [d for d in ds if d["kind"] != "Secret"]  # noqa: E731
    assert others(docs) == others(rendered("cluster"))
    cmd = real_kustomize()
    if cmd is not None:
        assert normalised(run_kustomize(cmd, directory)) == normalised(docs)


def real_kustomize():
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True)
        if r.returncode == 0 and json.loads(r.stdout).get("kustomizeVersion", "").startswith("v5"):
            return ["kubectl", "kustomize"]
    return None


def run_kustomize(cmd, directory):
    out = subprocess.run(cmd + [directory], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def normalised(docs):
    """Sorted by kind and name; Secrets' base64 without the line breaks kustomize puts in."""
    def one_doc(d):
        if d["kind"] == "Secret":
            d = dict(d, data={k: "".join(v.split()) for k, v in d["data"].items()})
        return d
    return sorted(map(one_doc, docs), key=lambda d: (d["kind"], d["metadata"]["name"]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_agrees_with_kustomize_where_installed(overlay):
    cmd = real_kustomize()
    if cmd is None:
        print("no kustomize 5 here (Debian 12 has none): kustomize_lite's output not compared")
        return
    theirs = run_kustomize(cmd, os.path.join(K8S, "overlays", overlay))
    assert normalised(rendered(overlay)) == normalised(theirs)
