"""Batches in slices (`batch_slice_rows`, docs/serving.md, Memory budget): a model whose buckets
above 2 rows run as slices of 2 through one plan, served by `troupe serve` in-process and by a
worker process (whose staging the node fills: the slices then run over shared memory). Requests
of every row count up to max_batch_size, alone and many in flight (so that the batcher fills
buckets), get ONNX Runtime's outputs."""

import os

import numpy as np
import pytest

from conftest import Server, make_mlp, reference, write


def build(root):
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "sliced", "1", "model.onnx"), seed=41, din=24, dh=40, dout=6)
    write(os.path.join(models, "sliced", "config.yaml"),
          "max_batch_size: 8\nbatch_slice_rows: 2\n"
          "dynamic_batching: {max_queue_delay_microseconds: 2000}\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\n")
    return models, node_yaml


@pytest.fixture(params=["off", "on"], ids=["in_process", "worker_processes"])
def node(request, tmp_path):
    models, node_yaml = build(str(tmp_path))
    s = Server(models, node_yaml, str(tmp_path / "serve.log"),
               extra_args=("--worker-processes", request.param))
    yield s, models
    assert s.terminate() == 0


def test_sliced_buckets_give_the_reference_outputs(node):
    server, models = node
    assert server.ready is True, server.reason
    client = server.client()
    try:
        rng = np.random.default_rng(9)
        for rows in range(1, 9):
            x = rng.standard_normal((rows, 24)).astype(np.float32)
            got = client.infer("sliced", {"x": x}, wait=60)["y"]
            np.testing.assert_allclose(got, reference(models, "sliced", 1, {"x": x})["y"],
                                       rtol=1e-4, atol=1e-4, err_msg=f"{rows} rows")
        # Many single-row requests in flight: batched together into sliced buckets.
        xs = [rng.standard_normal((1, 24)).astype(np.float32) for _ in range(32)]
        futures = [client.submit("sliced", {"x": x}, timeout=60) for x in xs]
        for f, x in zip(futures, xs):
            got = f.result().outputs["y"]
            np.testing.assert_allclose(got, reference(models, "sliced", 1, {"x": x})["y"],
                                       rtol=1e-4, atol=1e-4)
    finally:
        client.close()
