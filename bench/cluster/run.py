"""Aggregate throughput of a control node with 1, 2 and 4 worker nodes behind it (issue 13's CPU
bench; docs/cluster.md): on loopback, a model whose service time is an injected fixed delay
(troupe.sleep_ms with fault_injection on, max_batch_size 1: one request a batch), so that the
machine's cores are not the limit and each worker process adds one batch at a time of capacity.
Target: >= 90% of linear scaling (n workers: n x the throughput of one). A single node with one
CPU worker runs the same load first, for the cost of the hop between nodes.

    python3 bench/cluster/run.py --troupe build/troupe --out bench/results

Writes OUT/cluster.json and prints the markdown table of bench/results/cluster.md.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from conftest import make_mlp, metric_value, write  # noqa: E402
from troupe_client import Client  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_event(proc, timeout=120):
    out = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not out or not out[0]:
        raise RuntimeError("no event line from " + " ".join(proc.args[:4]))
    return json.loads(out[0])


class Node:
    def __init__(self, troupe, args, log):
        self.metrics_port = free_port()
        self.log = open(log, "w")
        self.proc = subprocess.Popen([troupe, "serve", *args], stdout=subprocess.PIPE, stderr=self.log, text=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def serving_node(troupe, models, node_yaml, work, name, role_args):
    port = free_port()
    n = Node(troupe, ["--models", models, "--config", node_yaml, "--listen", f"tcp://127.0.0.1:{port}",
                      "--http-port", "0", "--grpc-port", "0", "--metrics-port", str(free_port()), *role_args],
             os.path.join(work, f"{name}.log"))
    ev = read_event(n.proc)
    n.endpoint = ev["endpoint"]
    n.metrics_port = ev["metrics_port"]
    read_event(n.proc)  # ready or loaded
    return n


def metrics(node):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def closed_loop(endpoint, in_flight, duration_s, warmup_s, sleep_ms, seed=0):
    """`in_flight` one-row requests kept in flight; throughput and latency over `duration_s`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 16)).astype(np.float32)
    params = {"troupe.sleep_ms": sleep_ms}
    latencies, errors = [], 0
    with Client(endpoint, timeout=60) as client:
        start = time.monotonic()
        measure_from = start + warmup_s
        end = measure_from + duration_s
        pending = [(time.monotonic(), client.submit("mlp", {"x": x}, parameters=params)) for _ in range(in_flight)]
        done = 0
        while pending:
            sent, fut = pending.pop(0)
            try:
                fut.result()
                now = time.monotonic()
                if sent >= measure_from and now <= end:
                    latencies.append(now - sent)
                    done += 1
            except Exception:  # noqa: BLE001 - counted
                errors += 1
            if time.monotonic() < end:
                pending.append((time.monotonic(), client.submit("mlp", {"x": x}, parameters=params)))
    lat = np.array(latencies) * 1e3
    return {"requests_per_s": done / duration_s, "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None, "errors": errors, "requests": done}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", default=os.path.join(REPO, "build", "troupe"))
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--sleep-ms", type=int, default=20, help="injected service time per batch")
    ap.add_argument("--in-flight-per-worker", type=int, default=4)
    ap.add_argument("--duration-s", type=float, default=8)
    ap.add_argument("--warmup-s", type=float, default=1.5)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="troupe-cluster-bench-")
    models = os.path.join(work, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=5)
    write(os.path.join(models, "mlp", "config.yaml"), "max_batch_size: 1\n")
    node_yaml = os.path.join(work, "node.yaml")
    write(node_yaml, "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\nfault_injection: true\n")
    rows = []

    single = serving_node(a.troupe, models, node_yaml, work, "single", [])
    try:
        r = closed_loop(single.endpoint, a.in_flight_per_worker, a.duration_s, a.warmup_s, a.sleep_ms)
    finally:
        single.stop()
    rows.append({"setup": "single node, 1 CPU worker", "workers": 1, **r})
    print(f"single node: {r['requests_per_s']:.1f} req/s p99 {r['p99_ms']:.1f} ms", flush=True)

    for n in [int(v) for v in a.workers.split(",")]:
        join = f"tcp://127.0.0.1:{free_port()}"
        control = serving_node(a.troupe, models, node_yaml, work, f"control-{n}",
                               ["--role", "control", "--workers-listen", join])
        workers = []
        try:
            for i in range(n):
                w = Node(a.troupe, ["--role", "worker", "--join", join, "--config", node_yaml,
                                    "--node-name", f"w{i}", "--model-cache-dir", os.path.join(work, "cache")],
                         os.path.join(work, f"worker-{n}-{i}.log"))
                read_event(w.proc)
                workers.append(w)
            deadline = time.monotonic() + 60
            while metric_value(metrics(control), "troupe_replicas", model="mlp", version="1") != n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{n} replicas did not load")
                time.sleep(0.05)
            r = closed_loop(control.endpoint, a.in_flight_per_worker * n, a.duration_s, a.warmup_s, a.sleep_ms)
        finally:
            for w in workers:
                w.stop()
            control.stop()
        rows.append({"setup": f"control node + {n} worker node(s), 1 CPU worker each", "workers": n, **r})
        print(f"{n} worker(s): {r['requests_per_s']:.1f} req/s p99 {r['p99_ms']:.1f} ms", flush=True)

    one = next(r for r in rows if r["workers"] == 1 and r["setup"].startswith("control"))
    for r in rows:
        r["linear_scaling"] = r["requests_per_s"] / (r["workers"] * one["requests_per_s"])
    result = {"bench": "cluster_cpu", "date": datetime.date.today().isoformat(),
              "machine": f"{platform.node()} ({os.cpu_count()} cores)", "sleep_ms": a.sleep_ms,
              "in_flight_per_worker": a.in_flight_per_worker, "duration_s": a.duration_s, "rows": rows}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "cluster.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("\n| setup | workers | in flight | req/s | p50 ms | p99 ms | errors | of linear |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {r['workers']} | {a.in_flight_per_worker * r['workers']} | "
              f"{r['requests_per_s']:,.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
              f"{100 * r['linear_scaling']:.1f}% |")


if __name__ == "__main__":
    main()
