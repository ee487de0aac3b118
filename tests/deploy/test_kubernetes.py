"""deploy/kubernetes: every overlay renders (tests/deploy/kustomize_lite.py, compared with a real
kustomize where one is installed), every resource is valid against Kubernetes' own schema for a
pinned version (kubernetes-validate, strict: unknown fields are errors; its schemas ship in the
wheel, so this runs offline), and the pieces fit together: probes on the v2 health endpoints of the
HTTP port, a Service for all four doors, volumes and config that exist, GPUs only in the GPU overlay.
"""
import json
import os
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


def rendered(overlay):
    return kustomize_lite.render(os.path.join(K8S, "overlays", overlay))


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_overlays_exist():
    assert OVERLAYS == ["cpu", "gpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_is_valid_for_pinned_kubernetes(overlay):
    docs = rendered(overlay)
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"}
    for d in docs:
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{overlay}: {d['kind']} {d['metadata']['name']}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_v2_health_on_the_http_port(overlay):
    c = container(rendered(overlay))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == PORTS
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
    with open(os.path.join(REPO, "deploy", "node.yaml")) as f:
        known = set(yaml.safe_load(f)) | {"models"}
    assert set(node) <= known, set(node) - known
    # Where `serve --models` reads is where the claim is mounted.
    args = container(docs)["args"]
    assert args[args.index("--models") + 1] == mounts["models"] == node["models"]
    assert node["metrics_port"] == PORTS["metrics"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(PORTS["metrics"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpus_only_in_the_gpu_overlay(overlay):
    c = container(rendered(overlay))
    res = c["resources"]
    assert c["image"] == f"troupe:{overlay}"
    if overlay == "gpu":
        assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 1
    else:
        assert "nvidia.com/gpu" not in json.dumps(res)


def real_kustomize():
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True)
        if r.returncode == 0 and json.loads(r.stdout).get("kustomizeVersion", "").startswith("v5"):
            return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_agrees_with_kustomize_where_installed(overlay):
    cmd = real_kustomize()
    if cmd is None:
        print("no kustomize 5 here (Debian 12 has none): kustomize_lite's output not compared")
        return
    out = subprocess.run(cmd + [os.path.join(K8S, "overlays", overlay)], capture_output=True,
                         text=True, check=True).stdout
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=key)
    assert sorted(rendered(overlay), key=key) == theirs
