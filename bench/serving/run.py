#!/usr/bin/env python3
"""troupe's serving benchmark: a tiny model's end-to-end request rate through `troupe serve` vs a
bare ZeroMQ DEALER/ROUTER echo answering with replies of the same sizes, both driven by the same
closed-loop client (serving_bench load) on the same machine. Runs alternate between the two
servers (both stay up; an idle one sleeps in poll) so that background load hits both alike; the
median of --repeats runs is reported. Also records latency percentiles from `troupe bench` in open
loop. Writes bench/results/serving.md and serving.json.

    ninja -C build troupe serving_bench
    python3 bench/serving/run.py --build-dir build
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def tiny_mlp(path, din=16, dh=32, dout=8):
    rng = np.random.default_rng(0)
    arrays = {"W1": rng.standard_normal((din, dh)), "b1": rng.standard_normal(dh),
              "W2": rng.standard_normal((dh, dout)), "b2": rng.standard_normal(dout)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["y0"]),
             helper.make_node("Add", ["y0", "b2"], ["y"])]
    g = helper.make_graph(nodes, "tiny_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", din])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dout])],
                          [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(m, path)


def start(cmd, log):
    """Starts `cmd`; returns it with its first JSON line, or for `troupe serve` the line that
    follows the load (`listening` comes first, then `ready` or `loaded`)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    while True:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd[0]} did not start")
        event = json.loads(line)
        if event.get("event") != "listening":
            return p, event


def load(bench_bin, endpoint, concurrency, duration, width, model="tiny"):
    out = subprocess.run([bench_bin, "load", "--server", endpoint, "--model", model, "--concurrency", str(concurrency),
                          "--duration", str(duration), "--warmup", "0.5", "--width", str(width)],
                         capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stdout + out.stderr)
    return json.loads(out.stdout)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--out-dir", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", default="1,16,64,256")
    ap.add_argument("--latency-rate", type=float, default=5000, help="open-loop rate for the latency figures")
    ap.add_argument("--node-defaults", action="store_true",
                    help="run the node with its default config instead of the tuned one below")
    ap.add_argument("--node-extra", default="", help="node.yaml lines added to --node-defaults' config")
    args = ap.parse_args()
    troupe = os.path.join(args.build_dir, "troupe")
    bench_bin = os.path.join(args.build_dir, "serving_bench")
    for b in (troupe, bench_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"missing {b}: ninja -C {args.build_dir} troupe serving_bench")
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        # The same model twice: with the default batching (max_batch_size 8 for a model with a dynamic
        # batch dim) and with max_batch_size 64, which under load amortises each batch's hops over
        # more requests.
        tiny_mlp(os.path.join(tmp, "models", "tiny", "1", "model.onnx"))
        tiny_mlp(os.path.join(tmp, "models", "tiny64", "1", "model.onnx"))
        with open(os.path.join(tmp, "models", "tiny64", "config.yaml"), "w") as f:
            f.write("max_batch_size: 64\n")
        node_yaml = os.path.join(tmp, "node.yaml")
        # One CAF thread and one compute thread: on a 2-core machine the client needs the other core,
        # and a tiny model gains nothing from a second OpenMP thread (it would only spin). The worker
        # runs on the CAF thread (detached_workers: false): a run of a few microseconds does not
        # justify a thread hand-off per batch.
        with open(node_yaml, "w") as f:
            if args.node_defaults:
                f.write("metrics_port: 0\nhttp_port: 0\nlog_level: warn\n" + args.node_extra.replace(";", "\n") + "\n")
            else:
                f.write("compute_threads: 1\nactor_threads: 1\ndetached_workers: false\nmetrics_port: 0\nhttp_port: 0\n"
                        "log_level: warn\n")
        log = open(os.path.join(tmp, "serve.log"), "w")
        load_before = os.getloadavg()
        srv, srv_ready = start([troupe, "serve", "--models", os.path.join(tmp, "models"), "--listen",
                                "tcp://127.0.0.1:*", "--grpc-port", "0", "--config", node_yaml], log)
        echo, echo_ready = start([bench_bin, "echo", "--listen", "tcp://127.0.0.1:*", "--model", "tiny", "--rows", "1",
                                  "--outputs", "8"], log)
        servers = (("troupe", srv_ready["endpoint"], "tiny"), ("troupe64", srv_ready["endpoint"], "tiny64"),
                   ("echo", echo_ready["endpoint"], "tiny"))
        runs = {name: {c: [] for c in concurrencies} for name, _, _ in servers}
        sizes = {}
        try:
            for r in range(args.repeats):
                for c in concurrencies:
                    for name, ep, model in servers:
                        res = load(bench_bin, ep, c, args.duration, 16, model)
                        runs[name][c].append(res["rps"])
                        sizes[name] = (res["reply_envelope_bytes"], res["reply_tensor_bytes"])
                        print(f"[{r + 1}/{args.repeats}] {name:8s} concurrency {c:4d}: {res['rps']:10.0f} req/s",
                              flush=True)
            latency_json = os.path.join(tmp, "latency.json")
            subprocess.run([troupe, "bench", "tiny", "--server", srv_ready["endpoint"], "--rate",
                            str(args.latency_rate), "--duration", str(max(args.duration, 3)), "--warmup", "1",
                            "--json", latency_json, "--quiet"], check=True, capture_output=True, timeout=120)
            latency = json.load(open(latency_json))
        finally:
            echo.kill()
            srv.send_signal(signal.SIGTERM)
            srv.wait(60)
        load_after = os.getloadavg()

    rows = []
    for c in concurrencies:
        t = statistics.median(runs["troupe"][c])
        t64 = statistics.median(runs["troupe64"][c])
        e = statistics.median(runs["echo"][c])
        rows.append({"concurrency": c, "troupe_rps": t, "troupe_mbs64_rps": t64, "echo_rps": e,
                     "ratio": t / e if e else 0, "ratio_mbs64": t64 / e if e else 0,
                     "troupe_runs": runs["troupe"][c], "troupe_mbs64_runs": runs["troupe64"][c],
                     "echo_runs": runs["echo"][c]})
    result = {
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "loadavg_before": load_before,
                    "loadavg_after": load_after},
        "model": "tiny MLP 16-32-8, float32 [1,16] -> [1,8]",
        "reply_frame_bytes": {k: {"envelope": v[0], "tensor": v[1]} for k, v in sizes.items()},
        "duration_s": args.duration, "repeats": args.repeats, "rows": rows, "latency_open_loop": latency,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "serving.json"), "w") as f:
        json.dump(result, f, indent=2)
    lat = latency["latency_ms"]
    md = [
        "# Serving: end-to-end request rate vs a bare ZeroMQ echo",
        "",
        f"Machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu']}); load average before "
        f"{load_before[0]:.2f}, after {load_after[0]:.2f} (other work on the machine shows up here).",
        "",
        "Model: a tiny MLP (16 -> 32 -> 8, float32), one row per request. Client: `serving_bench load`, one",
        "DEALER connection, closed loop with N requests in flight, the same for both servers. Baseline:",
        "`serving_bench echo`, a ROUTER that answers each request at once with frames of the same sizes",
        f"(reply envelope {sizes['echo'][0]} B + tensor {sizes['echo'][1]} B; troupe's: "
        f"{sizes['troupe'][0]} B + {sizes['troupe'][1]} B). Node: "
        + ("its default config (`--node-defaults`);" if args.node_defaults else
           "`compute_threads: 1`, `actor_threads: 1`, `detached_workers: false` (the worker runs on the "
           "CAF thread: no hand-off per batch);"),
        "the model served with the default batching (max_batch_size 8, no queue delay) and, as `tiny64`,",
        f"with `max_batch_size: 64`. Median of {args.repeats} runs of {args.duration:g} s, runs alternating.",
        "",
        "| in flight | troupe req/s (mbs 8) | troupe req/s (mbs 64) | echo req/s | troupe / echo (mbs 8) | (mbs 64) |",
        "|----------:|---------------------:|----------------------:|-----------:|----------------------:|---------:|",
    ]
    for r in rows:
        md.append(f"| {r['concurrency']} | {r['troupe_rps']:,.0f} | {r['troupe_mbs64_rps']:,.0f} | {r['echo_rps']:,.0f} "
                  f"| {100 * r['ratio']:.0f}% | {100 * r['ratio_mbs64']:.0f}% |")
    md += [
        "",
        f"Latency through troupe, open loop (`troupe bench --rate {args.latency_rate:g}`, Poisson arrivals): "
        f"p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms, p99 {lat['p99']:.3f} ms, p99.9 {lat['p99.9']:.3f} ms; "
        f"{latency['throughput_rps']:.0f} req/s served, {latency['errors']} errors.",
        "",
        "Reproduce: `ninja -C build troupe serving_bench && python3 bench/serving/run.py --build-dir build`.",
        "Raw numbers: serving.json.",
        "",
    ]
    with open(os.path.join(args.out_dir, "serving.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
