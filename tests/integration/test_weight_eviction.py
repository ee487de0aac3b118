"""A worker memory budget (`worker_memory_budget_mb`, docs/serving.md, Memory budget): four MLPs of
2 MiB of weights each served by one CPU worker whose budget holds two of them. Requests round robin
over all four get ONNX Runtime's outputs; the worker evicts idle weights and pages them back in
(counted in the metrics and logged as JSON events); a model whose weights alone exceed the budget
fails to load `out_of_memory` while the node serves the others. The same with worker processes.
On the CPU nothing physically moves (the weights are host memory: docs/serving.md says why), but
every decision runs, and a batch whose weights were not paged in would be refused."""

import os

import numpy as np
import pytest

from conftest import Server, make_mlp, metric_value, reference, wait_until, write

MODELS = ["a", "b", "c", "d"]
DIN, DH, DOUT = 512, 1024, 8  # 2.03 MiB of float32 weights a model
BUDGET_MB = 5  # the replicas' own memory (a few hundred KiB) and two models' weights


def build(root):
    models = os.path.join(root, "models")
    for i, name in enumerate(MODELS):
        make_mlp(os.path.join(models, name, "1", "model.onnx"), seed=20 + i, din=DIN, dh=DH, dout=DOUT)
        write(os.path.join(models, name, "config.yaml"), "max_batch_size: 4\n")
    # 8 MiB of weights: more than the whole budget.
    make_mlp(os.path.join(models, "huge", "1", "model.onnx"), seed=30, din=4 * DIN, dh=DH, dout=DOUT)
    write(os.path.join(models, "huge", "config.yaml"), "max_batch_size: 4\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml,
          "cpu_workers: 1\n"
          "gpus: none\n"
          "compute_threads: 1\n"
          "warmup_runs: 1\n"
          "readiness: any\n"  # "huge" fails to load; the others serve
          f"worker_memory_budget_mb: {BUDGET_MB}\n"
          "log_level: info\n")
    return models, node_yaml


def serve_round_robin(server, models, rounds=3):
    client = server.client()
    try:
        rng = np.random.default_rng(5)
        for r in range(rounds):
            for name in MODELS:
                x = rng.standard_normal((1 + r % 3, DIN)).astype(np.float32)
                got = client.infer(name, {"x": x}, wait=60)["y"]
                want = reference(models, name, 1, {"x": x})["y"]
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3, err_msg=f"{name}, round {r}")
    finally:
        client.close()


def totals(text, family):
    return sum(metric_value(text, family, model=name, version="1") for name in MODELS)


@pytest.fixture(params=["off", "on"], ids=["in_process", "worker_processes"])
def node(request, tmp_path):
    models, node_yaml = build(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"),
               extra_args=("--worker-processes", request.param))
    yield s, models, request.param == "on"
    assert s.terminate() == 0


def test_models_beyond_the_budget_are_served_by_evicting_and_paging_in_weights(node):
    server, models, processes = node
    assert server.ready is True, server.reason  # readiness: any
    serve_round_robin(server, models)

    records = server.log_records(strict=True)
    evicted = [r for r in records if r.get("msg") == "weights evicted"]
    paged = [r for r in records if r.get("msg") == "weights paged in"]
    assert evicted and paged, "round robin over four models with room for two moves weights"
    for r in evicted + paged:
        assert r["model"] in MODELS, r  # "huge" never got in
        assert r["budget_bytes"] == BUDGET_MB << 20, r
        assert r["reason"], r
    for r in paged:  # room was made first
        assert 0 < r["resident_bytes"] <= r["budget_bytes"], r
        assert r["duration_ms"] >= 0 and r["bytes"] > 2 << 20, r

    # "huge" alone is more than the budget: its load failed, typed, and named the budget.
    failed = [r for r in records if r.get("msg") == "model load failed" and r.get("model") == "huge"]
    assert failed and failed[0]["code"] == "out_of_memory", failed
    assert "budget" in failed[0]["error"], failed[0]

    if processes:
        return  # a worker process has no metrics registry: its moves are log lines only
    text = server.metrics()
    assert totals(text, "troupe_weight_page_ins_total") == len(paged)
    assert totals(text, "troupe_weight_evictions_total") == len(
        [r for r in evicted if r["model"] in MODELS])
    assert totals(text, "troupe_weight_page_in_seconds_count") == len(paged)
    assert metric_value(text, "troupe_worker_memory_budget_bytes", worker="0") == BUDGET_MB << 20
    resident = metric_value(text, "troupe_worker_resident_bytes", worker="0")
    assert 0 < resident <= BUDGET_MB << 20
