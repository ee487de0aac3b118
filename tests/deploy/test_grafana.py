"""deploy/grafana/troupe-dashboard.json: every query parses as PromQL (each one, with Grafana's
variables filled in, becomes a recording rule that `promtool check rules` must accept), uses only
metrics and labels troupe exports (a real scrape of serving/metrics.cpp's registry), and the
dashboard covers what operators need to see.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

import metrics_catalog

DASHBOARD = os.path.join(metrics_catalog.REPO, "deploy", "grafana", "troupe-dashboard.json")
# Grafana's interval variables become a duration; other variables only occur inside label
# matchers' strings, where any text parses.
GRAFANA_INTERVALS = {"__rate_interval", "__interval", "__range"}


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(d):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def queries(d):
    """(where, PromQL) of every panel target and every query variable."""
    for p in panels(d):
        for t in p.get("targets", []):
            yield f"panel {p['id']} '{p['title']}' {t['refId']}", t["expr"]


def label_values_queries(d):
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", q)
            assert m, f"variable {v['name']}: only label_values(selector, label) is checked: {q}"
            yield v["name"], m.group(1), m.group(2)


def filled(expr):
    return re.sub(r"\$\{?(\w+)\}?", lambda m: "5m" if m.group(1) in GRAFANA_INTERVALS else "x", expr)


def test_dashboard_is_well_formed():
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    names = {v["name"] for v in d["templating"]["list"]}
    assert "datasource" in names
    for p in panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        # Every variable a query uses is defined.
        for t in p["targets"]:
            for var in re.findall(r"\$\{?(\w+)\}?", t["expr"]):
                assert var in names | GRAFANA_INTERVALS, f"{p['title']}: undefined ${var}"


def test_every_query_parses():
    exprs = list(queries(dashboard()))
    exprs += [(f"variable {n}", f"count({sel})") for n, sel, _ in label_values_queries(dashboard())]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": filled(e)} for i, (_, e) in enumerate(exprs)]}]}
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/install-deps.sh installs Debian's prometheus package"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard_rules.yml")
        with open(path, "w") as f:
            yaml.safe_dump(rules, f)
        r = subprocess.run([exe, "check", "rules", path], capture_output=True, text=True)
    where = "\n".join(f"dashboard:query_{i} = {w}" for i, (w, _) in enumerate(exprs))
    assert r.returncode == 0, r.stdout + r.stderr + "\n" + where


@pytest.fixture(scope="module")
def known():
    return metrics_catalog.catalog(metrics_catalog.scrape())


def test_every_query_uses_exported_metrics_and_labels(known):
    problems = []
    for where, expr in queries(dashboard()):
        metrics, labels = metrics_catalog.unknown_references(expr, known)
        if metrics or labels:
            problems.append(f"{where}: unknown metrics {metrics}, labels {labels}: {expr}")
    for name, selector, label in label_values_queries(dashboard()):
        metrics, labels = metrics_catalog.unknown_references(f"count by ({label}) ({selector})", known)
        if metrics or labels:
            problems.append(f"variable {name}: unknown metrics {metrics}, labels {labels}")
    assert not problems, "\n".join(problems)


def test_dashboard_covers_what_operators_need():
    exprs = [e for _, e in queries(dashboard())]
    used = set().union(*(metrics_catalog.references(e)[0] for e in exprs))
    needed = {
        "request rate and outcomes": {"troupe_requests_total"},
        "latency quantiles": {"troupe_request_latency_seconds_bucket"},
        "queue time": {"troupe_queue_latency_seconds_bucket"},
        "batch size": {"troupe_batch_size_sum", "troupe_batch_size_count"},
        "in-flight": {"troupe_inflight_requests"},
        "GPU utilisation": {"troupe_gpu_utilization_ratio"},
        "GPU memory": {"troupe_gpu_memory_used_bytes"},
        "worker restarts": {"troupe_worker_restarts_total"},
    }
    for topic, metrics in needed.items():
        assert metrics <= used, f"no panel shows {topic} ({metrics - used})"
    assert any("outcome" in e and "troupe_requests_total" in e for e in exprs), "outcomes not shown"
    assert any(e.startswith("histogram_quantile(0.99") and "request_latency" in e for e in exprs)
