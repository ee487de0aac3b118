"""deploy/prometheus judged by promtool: the shipped config is valid and loads the shipped rules, the
alert unit tests pass and cover every alert both ways (fires on a failure, silent when healthy), a
healthy node's real series (a scrape of serving/metrics.cpp's registry) fire no alert, and every
metric and label the rules use is one troupe exports.
"""
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml

import metrics_catalog

PROM = os.path.join(metrics_catalog.REPO, "deploy", "prometheus")


def promtool(*args):
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/install-deps.sh installs Debian's prometheus package"
    return subprocess.run([exe, *args], capture_output=True, text=True)


def alert_rules():
    with open(os.path.join(PROM, "alerts.yml")) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]


def test_config_is_valid_and_loads_the_shipped_rules():
    r = promtool("check", "config", os.path.join(PROM, "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(PROM, "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    assert config["rule_files"] == ["alerts.yml"]
    # promtool resolved and checked the rule file itself, not just the name.
    assert "Checking " in r.stdout and "alerts.yml" in r.stdout and "rules found" in r.stdout, r.stdout


def test_config_scrapes_port_8002():
    with open(os.path.join(PROM, "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["troupe"]["static_configs"][0]["targets"] == ["localhost:8002"]
    assert jobs["troupe-kubernetes"]["dns_sd_configs"][0]["port"] == 8002


def test_alert_unit_tests_pass():
    r = promtool("test", "rules", os.path.join(PROM, "alerts_test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_tested_firing_and_silent():
    with open(os.path.join(PROM, "alerts_test.yml")) as f:
        tests = yaml.safe_load(f)["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{rule['alert']}: no case where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']}: no case where it is silent"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_rules_use_only_exported_metrics_and_labels(rule):
    known = metrics_catalog.catalog(metrics_catalog.scrape())
    missing_metrics, missing_labels = metrics_catalog.unknown_references(rule["expr"], known)
    assert not missing_metrics, f"{rule['alert']} uses metrics troupe does not export: {missing_metrics}"
    assert not missing_labels, f"{rule['alert']} uses labels troupe does not export: {missing_labels}"


def test_healthy_node_fires_no_alert():
    """A node with a ready model version, served requests and no failures, as its registry exports
    it (placeholder series with empty labels once fired TroupeModelNotReady here), held for 30
    minutes with counters moving at a steady, successful rate."""
    text = metrics_catalog.scrape()
    input_series = [{"series": 'up{job="troupe",instance="node:8002"}', "values": "1x30"}]
    for selector, value in metrics_catalog.series(text):
        name = selector.split("{")[0]
        labels = selector[len(name) + 1:-1] if "{" in selector else ""
        labels = ",".join(x for x in [labels, 'job="troupe"', 'instance="node:8002"'] if x)
        v = float(value)
        # ok answers and latency observations keep coming; every other counter stays flat.
        moving = ('outcome="ok"' in labels and name == "troupe_requests_total") or \
            (name.endswith(("_bucket", "_count")) and v > 0)
        values = f"{v:g}+{v:g}x30" if moving else f"{v:g}x30"
        input_series.append({"series": f"{name}{{{labels}}}", "values": values})
    assert any(s["series"].startswith("troupe_model_ready{") for s in input_series)
    test = {
        "rule_files": [os.path.join(PROM, "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series,
            "alert_rule_test": [{"eval_time": t, "alertname": r["alert"], "exp_alerts": []}
                                for r in alert_rules() for t in ("5m", "29m")],
        }],
    }
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "healthy_test.yml")
        with open(path, "w") as f:
            yaml.safe_dump(test, f)
        r = promtool("test", "rules", path)
    assert r.returncode == 0, r.stdout + r.stderr
