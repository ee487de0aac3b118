"""deploy/kubernetes/autoscaling: the node count from troupe_scaler_desired_nodes, through KEDA's
Prometheus scaler (keda/) or an HPA on an external metric served by prometheus-adapter (hpa/).
Both render (tests/deploy/kustomize_lite.py); the HPA, and the HPA behaviour KEDA is given, are
valid against Kubernetes' own schema (kubernetes-validate, strict); the ScaledObject has the fields
KEDA's CRD defines (no schema of it ships offline: the fields are checked by name); both point at
the Deployment the overlays create; every PromQL query parses (promtool) and uses only metrics
troupe exports (a real scrape of serving/metrics.cpp's registry).
"""
import os
import shutil
import subprocess
import tempfile

import kubernetes_validate
import pytest
import yaml

import kustomize_lite
import metrics_catalog

K8S = os.path.join(metrics_catalog.REPO, "deploy", "kubernetes")
AUTOSCALING = os.path.join(K8S, "autoscaling")
KUBERNETES_VERSION = "1.30.0"  # as test_kubernetes.py
METRIC = "troupe_scaler_desired_nodes"
# ScaledObject spec fields of KEDA 2.x (keda.sh/v1alpha1); anything else is a typo KEDA rejects.
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced", "fallback",
                      "triggers"}
TRIGGER_FIELDS = {"type", "name", "metadata", "metricType", "useCachedMetrics", "authenticationRef"}
PROMETHEUS_TRIGGER_METADATA = {"serverAddress", "query", "threshold", "activationThreshold",
                               "namespace", "customHeaders", "ignoreNullValues", "unsafeSsl",
                               "queryParameters", "authModes", "timeout"}


@pytest.fixture(scope="module")
def known():
    return metrics_catalog.catalog(metrics_catalog.scrape())


def deployment():
    docs = kustomize_lite.render(os.path.join(K8S, "overlays", "cpu"))
    [d] = [d for d in docs if d["kind"] == "Deployment"]
    return d


def one(directory, kind):
    docs = kustomize_lite.render(os.path.join(AUTOSCALING, directory))
    assert [d["kind"] for d in docs] == [kind], f"{directory}: one {kind} and nothing else"
    return docs[0]


def validate(doc):
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")


def check_promql(exprs):
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/install-deps.sh installs Debian's prometheus package"
    rules = {"groups": [{"name": "autoscaling", "rules": [
        {"record": f"autoscaling:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rules.yml")
        with open(path, "w") as f:
            yaml.safe_dump(rules, f)
        r = subprocess.run([exe, "check", "rules", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def targets_the_deployment(ref):
    d = deployment()
    assert ref["name"] == d["metadata"]["name"]
    assert ref.get("kind", "Deployment") == d["kind"]
    assert ref.get("apiVersion", "apps/v1") == d["apiVersion"]


def test_the_hpa_is_valid_and_scales_the_deployment_on_the_scalers_metric(known):
    hpa = one("hpa", "HorizontalPodAutoscaler")
    validate(hpa)
    spec = hpa["spec"]
    targets_the_deployment(spec["scaleTargetRef"])
    assert spec["minReplicas"] >= 1, "a node always serves: models scale to zero inside it"
    [m] = spec["metrics"]
    assert m["type"] == "External" and m["external"]["metric"]["name"] == METRIC
    assert METRIC in known, "troupe exports the metric the HPA asks for"
    # AverageValue 1: ceil(sum over the nodes) pods.
    assert m["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


def test_prometheus_adapter_serves_the_metric_the_hpa_asks_for(known):
    with open(os.path.join(AUTOSCALING, "hpa", "prometheus-adapter-values.yaml")) as f:
        values = yaml.safe_load(f)
    [rule] = values["rules"]["external"]
    assert rule["name"]["as"] == METRIC
    assert rule["seriesQuery"] == METRIC
    assert rule["resources"] == {"namespaced": False}
    # The adapter fills in the series and the HPA's label matchers (none: not namespaced).
    query = rule["metricsQuery"].replace("<<.Series>>", rule["seriesQuery"]).replace(
        "<<.LabelMatchers>>", "")
    check_promql([query])
    assert metrics_catalog.unknown_references(query, known) == ([], [])
    assert query.startswith("sum("), "the nodes' figures are summed"


def test_the_scaled_object_has_kedas_fields_and_a_query_troupe_answers(known):
    so = one("keda", "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    targets_the_deployment(spec["scaleTargetRef"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert set(trigger) <= TRIGGER_FIELDS, set(trigger) - TRIGGER_FIELDS
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert set(meta) <= PROMETHEUS_TRIGGER_METADATA, set(meta) - PROMETHEUS_TRIGGER_METADATA
    assert all(isinstance(v, str) for v in meta.values()), "KEDA's metadata values are strings"
    assert {"serverAddress", "query", "threshold"} <= set(meta)
    assert float(meta["threshold"]) == 1.0
    check_promql([meta["query"]])
    metrics, labels = metrics_catalog.unknown_references(meta["query"], known)
    assert (metrics, labels) == ([], []), f"unknown metrics {metrics}, labels {labels}"
    assert METRIC in metrics_catalog.references(meta["query"])[0]
    # The HPA behaviour KEDA passes on is what an HPA accepts.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = one("hpa", "HorizontalPodAutoscaler")
    hpa["spec"]["behavior"] = behavior
    validate(hpa)


def test_keda_and_the_hpa_agree():
    so = one("keda", "ScaledObject")["spec"]
    hpa = one("hpa", "HorizontalPodAutoscaler")["spec"]
    assert so["minReplicaCount"] == hpa["minReplicas"]
    assert so["maxReplicaCount"] == hpa["maxReplicas"]
    assert so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
