"""`troupe faults` against a real `troupe serve` (docs/faults.md): a node with fault_injection, a
rule from node.yaml's `faults:` and a management socket that needs a token; inject, list (table
and --json), remove and clear through the CLI, the typed errors it exits 2 with, the warning the
node logs at start; a node without fault injection refusing the operations; and a node.yaml with
`faults:` but without `fault_injection: true` that does not start.

The rules are `delay`s on frontend_router: nothing here depends on a fault site acting on them.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from conftest import Server, build_repository, free_port, metric_value, troupe_bin, wait_until, write


def faults_cli(*args, timeout=60):
    return subprocess.run([troupe_bin(), "faults", *args], capture_output=True, text=True, timeout=timeout)


def node_yaml_with(node_yaml, path, fault_injection, extra):
    """node.yaml of the test repository with fault_injection set and `extra` appended."""
    text = open(node_yaml).read().replace("fault_injection: true\n", f"fault_injection: {fault_injection}\n")
    write(path, text + extra)
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("faults"))
    models, node_yaml = build_repository(root)
    token = os.path.join(root, "token")
    write(token, "fault-token\n")
    os.chmod(token, 0o600)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = node_yaml_with(node_yaml, os.path.join(root, "node_faults.yaml"), "true",
                         f"management_listen: {endpoint}\n"
                         f"management_token_file: {token}\n"
                         "faults:\n"
                         "  - {kind: delay, target: frontend_router, delay_ms: 1, times: 3}\n")
    s = Server(models, cfg, os.path.join(root, "serve.log"))
    assert s.ready, s.reason
    yield s, ["--server", endpoint, "--token-file", token]
    assert s.terminate() == 0


def listed(common):
    r = faults_cli("list", "--json", *common)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_node_warns_at_start_that_fault_injection_is_on(node):
    s, _ = node
    warnings = [r for r in s.log_records() if r.get("msg", "").startswith("FAULT INJECTION IS ON")]
    assert len(warnings) == 1, s.log_messages()
    w = warnings[0]
    assert "tests only" in w["msg"].lower(), w
    assert w["fault_rules"] == 1, w
    assert w["management"].startswith("tcp://127.0.0.1:"), w
    assert w["level"].startswith("warn"), w


def test_inject_list_remove_clear(node):
    _, common = node
    # The rule from node.yaml is the plan's first.
    rules = listed(common)
    assert len(rules) == 1, rules
    assert rules[0]["id"] == 1 and rules[0]["kind"] == "delay" and rules[0]["target"] == "frontend_router"
    assert rules[0]["delay_ms"] == 1 and rules[0]["times"] == 3, rules

    r = faults_cli("inject", "--kind", "delay", "--target", "frontend_router", "--delay-ms", "25",
                   "--times", "0", "--probability", "0.5", "--seed", "9", *common)
    assert r.returncode == 0, r.stderr
    added = int(r.stdout.strip())  # the id alone on stdout
    assert added == 2
    r = faults_cli("inject", "--kind", "hang", "--target", "worker:1", *common)
    assert r.returncode == 0, r.stderr
    hang = int(r.stdout.strip())
    assert hang == 3

    rules = {x["id"]: x for x in listed(common)}
    assert sorted(rules) == [1, 2, 3]
    assert rules[2] == {"id": 2, "kind": "delay", "target": "frontend_router", "times": 0, "probability": 0.5,
                        "seed": 9, "delay_ms": 25, "allocations": 1, "chances": 0, "fired": 0, "spent": False}
    assert rules[3]["kind"] == "hang" and rules[3]["times"] == 1 and rules[3]["probability"] == 1, rules[3]
    table = faults_cli("list", *common)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "KIND", "TARGET"], table.stdout
    assert [l.split()[:3] for l in lines[1:]] == [["1", "delay", "frontend_router"],
                                                  ["2", "delay", "frontend_router"],
                                                  ["3", "hang", "worker:1"]], table.stdout

    r = faults_cli("remove", str(added), *common)
    assert r.returncode == 0 and f"removed fault rule {added}" in r.stdout, r.stderr
    r = faults_cli("remove", str(added), *common)
    assert r.returncode == 2 and "not_found" in r.stderr and f"no fault rule {added}" in r.stderr, r.stderr
    assert sorted(x["id"] for x in listed(common)) == [1, 3]

    r = faults_cli("clear", *common)
    assert r.returncode == 0 and "cleared 2 fault rules" in r.stdout, r.stdout + r.stderr
    assert listed(common) == []
    r = faults_cli("inject", "--kind", "drop", "--target", "batcher_worker:0", *common)
    assert r.returncode == 0 and int(r.stdout) == 4, "ids are never reused"
    assert faults_cli("clear", *common).returncode == 0


def test_errors_are_typed(node):
    s, common = node
    r = faults_cli("inject", "--kind", "delay", "--target", "frontend_router", "--delay-ms", "5",
                   "--probability", "2", *common)
    assert r.returncode == 2, r.stdout
    assert "invalid_argument: inject_fault.probability: must be in (0, 1]" in r.stderr, r.stderr
    r = faults_cli("inject", "--kind", "drop", "--target", "worker:0", *common)
    assert r.returncode == 2 and "inject_fault.target" in r.stderr and "hop" in r.stderr, r.stderr
    r = faults_cli("inject", "--kind", "delay", "--target", "frontend_router", *common)
    assert r.returncode == 2 and "inject_fault.delay_ms" in r.stderr, r.stderr
    r = faults_cli("inject", "--kind", "meltdown", "--target", "worker", *common)
    assert r.returncode == 2 and "unknown fault kind 'meltdown'" in r.stderr, r.stderr
    # The management token, as for `troupe models`.
    server = common[:2]
    r = faults_cli("list", *server)
    assert r.returncode == 2 and "token is missing or wrong" in r.stderr, r.stderr
    r = faults_cli("inject", "--kind", "hang", "--target", "worker", *server)
    assert r.returncode == 2 and "token" in r.stderr, r.stderr
    assert listed(common) == [], "nothing refused was added"
    assert s.proc.poll() is None, "the node serves on"


def test_a_firing_is_logged_and_counted(node):
    """Once the frontend_router site asks the plan (issue 12's fault sites), a delay rule there fires
    for a request: the firing shows in list, in troupe_faults_fired_total and in the log."""
    s, common = node
    assert faults_cli("clear", *common).returncode == 0  # this rule alone: it is the one that fires
    r = faults_cli("inject", "--kind", "delay", "--target", "frontend_router", "--delay-ms", "1",
                   "--times", "1", *common)
    assert r.returncode == 0, r.stderr
    rule = int(r.stdout)
    try:
        with s.client() as c:
            c.infer("mlp", {"x": np.zeros((1, 16), np.float32)}, wait=30)
        fired = {x["id"]: x for x in listed(common)}[rule]["fired"]
        if fired == 0:
            pytest.skip("the frontend_router fault site is not wired in this build")
        assert fired == 1
        assert metric_value(s.metrics(), "troupe_faults_fired_total", kind="delay", site="frontend_router") >= 1
        assert wait_until(lambda: any(x.get("msg") == "fault fired" and x.get("rule") == rule
                                      and x.get("site") == "frontend_router" for x in s.log_records()))
    finally:
        faults_cli("clear", *common)


def test_a_node_without_fault_injection_refuses_the_operations(tmp_path):
    models, node_yaml = build_repository(str(tmp_path))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = node_yaml_with(node_yaml, str(tmp_path / "node_off.yaml"), "false", "")
    s = Server(models, cfg, str(tmp_path / "serve.log"), extra_args=["--management-listen", endpoint])
    try:
        for args in (["list"], ["inject", "--kind", "hang", "--target", "worker"], ["remove", "1"], ["clear"]):
            r = faults_cli(*args, "--server", endpoint)
            assert r.returncode == 2, (args, r.stdout)
            assert "unsupported: fault injection is off" in r.stderr and "fault_injection: true" in r.stderr, r.stderr
        assert not any(m.startswith("FAULT INJECTION IS ON") for m in s.log_messages())
    finally:
        assert s.terminate() == 0


def test_faults_without_fault_injection_do_not_start(tmp_path):
    models, node_yaml = build_repository(str(tmp_path))
    cfg = node_yaml_with(node_yaml, str(tmp_path / "node_bad.yaml"), "false",
                         "faults:\n  - {kind: delay, target: frontend_router, delay_ms: 5}\n")
    r = subprocess.run([troupe_bin(), "serve", "--models", models, "--listen", "tcp://127.0.0.1:*",
                        "--metrics-port", "0", "--grpc-port", "0", "--http-port", "0", "--config", cfg],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "faults: fault rules given while fault injection is off" in r.stderr, r.stderr
    assert "fault_injection: true" in r.stderr, r.stderr
    assert '"event":"listening"' not in r.stdout, "refused before binding anything"
    # A rule that does not hold together names itself, also with fault injection on.
    bad = node_yaml_with(node_yaml, str(tmp_path / "node_bad_rule.yaml"), "true",
                         "faults:\n  - {kind: delay, target: frontend_router, delay_ms: 5}\n"
                         "  - {kind: hang, target: worker, probability: 0}\n")
    r = subprocess.run([troupe_bin(), "serve", "--models", models, "--listen", "tcp://127.0.0.1:*",
                        "--metrics-port", "0", "--grpc-port", "0", "--http-port", "0", "--config", bad],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "faults[1].probability: must be in (0, 1]" in r.stderr, r.stderr
