"""`troupe serve --metrics-port` from whichever build the tests run (TROUPE_BIN): the node starts,
/metrics answers Prometheus scrapes and refuses bad requests without going down, and SIGTERM still
exits 0. Regression: a `troupe` linked with the CUDA backend (libcublasLt: 92 KiB of static TLS)
could not start prometheus-cpp's civetweb server (100 KiB thread stacks) and exited with "null
context when constructing CivetServer"; this test fails on such a build."""

import os
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import Server, make_mlp, metric_value, troupe_bin, write


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("metrics"))
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=11)
    write(os.path.join(models, "mlp", "config.yaml"), "max_batch_size: 4\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, "cpu_workers: 1\ncompute_threads: 1\nwarmup_runs: 1\nlog_level: info\n")
    server = Server(models, node_yaml, os.path.join(root, "serve.log"))
    yield server
    code = server.terminate()
    assert code == 0, open(os.path.join(root, "serve.log")).read()[-3000:]


def links_cuda(binary):
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "libcublasLt" in out


def raw_request(port, data, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def test_scrape_while_serving(metrics_server):
    print("troupe binary links the CUDA backend:", links_cuda(troupe_bin()))
    client = metrics_server.client()
    try:
        x = np.ones((2, 16), np.float32)
        assert client.infer("mlp", {"x": x}, wait=60)["y"].shape == (2, 8)
    finally:
        client.close()
    text = metrics_server.metrics()
    assert metric_value(text, "troupe_requests_total", model="mlp", version="1", outcome="ok") == 1
    assert metric_value(text, "troupe_model_ready", model="mlp", version="1") == 1
    assert "troupe_pool_bytes{" in text and "troupe_staging_bytes{" in text
    # Each worker reports the device it runs on; a GPU host serves `mlp` on its GPU workers.
    assert 'device="cpu"' in text or 'device="cuda:0"' in text
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_server.metrics_port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_bad_requests_get_http_errors_and_the_node_keeps_serving(metrics_server):
    port = metrics_server.metrics_port
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert e.value.code == 404
    assert raw_request(port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw_request(port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    try:  # an oversized head: 431, or a reset when the server closes with bytes still unread
        assert raw_request(port, b"A" * 20000).startswith(b"HTTP/1.1 431")
    except ConnectionResetError:
        pass
    assert metrics_server.proc.poll() is None, "troupe serve is still running"
    assert "troupe_model_ready" in metrics_server.metrics()
