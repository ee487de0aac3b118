#!/usr/bin/env python3
"""The KServe v2 doors against troupe's own ZeroMQ path, on one node, in one invocation.

ResNet-50 (fp16 on the GPU, uint8 pixels normalised on the device) served by one `troupe serve`
with all its doors open; driven by
  - `troupe bench` over ZeroMQ (closed loop, several connections), and
  - NVIDIA's perf_analyzer (the ecosystem's own load generator, from its PyPI wheel) over gRPC,
    over HTTP with binary tensors, and over gRPC with inputs and outputs in system shared memory,
each at the same concurrency levels. Per path: throughput and latency percentiles at each level,
the operating point (best throughput with p99 <= --p99-limit-ms), and batch-1 p50 (one request at
a time) against the executor alone (`troupe run`, host timing, the node stopped).

Writes OUT/serving-kserve.json and OUT/serving-kserve.md. Targets (the KServe issue): gRPC >= 80%
of the ZeroMQ path's throughput; shared memory >= the ZeroMQ path, with batch-1 overhead over the
executor <= 100 us.

    python3 bench/serving/kserve_gpu.py --troupe build-gpu/troupe --perf-analyzer perf_analyzer
    python3 bench/serving/kserve_gpu.py --cpu --model-path tiny-cnn --quick   # a check of the script
"""

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_run  # noqa: E402  (the repository, node, `troupe bench` and executor helpers)
from gpu_run import bench_error, log  # noqa: E402

REPO = gpu_run.REPO


class kserve_node(gpu_run.node):
    """`troupe serve` with its ZeroMQ, HTTP, gRPC and metrics ports on loopback."""

    def __init__(self, troupe, models, node_yaml, log_path, start_timeout_s):
        self.http_port = gpu_run.free_port()
        self.grpc_port = gpu_run.free_port()
        super().__init__(troupe, models, node_yaml, log_path, start_timeout_s,
                         extra_args=["--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)])

    def wait_http_ready(self, timeout_s):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise bench_error("the HTTP door never answered ready:\n" + self.log_tail())


def perf_point(args, srv, name, mode, concurrency, out_bytes, tmp):
    """One perf_analyzer measurement at `concurrency` requests in flight; latencies in ms."""
    csv_path = os.path.join(tmp, f"pa_{mode}_{concurrency}.csv")
    protocol = "http" if mode == "http" else "grpc"
    port = srv.http_port if protocol == "http" else srv.grpc_port
    cmd = [args.perf_analyzer, "-m", name, "-u", f"127.0.0.1:{port}", "-i", protocol,
           "--concurrency-range", f"{concurrency}:{concurrency}", "--async",
           # Three windows, whatever their spread: a bounded time per point (the sweep's points are
           # compared, not certified stable one by one).
           "--measurement-interval", str(args.measurement_ms), "--stability-percentage", "1000",
           "--max-trials", "3", "--input-data", "random", "-f", csv_path]
    if mode == "shm":
        cmd += ["--shared-memory", "system", "--output-shared-memory-size", str(out_bytes)]
    cmd += args.pa_extra.split()
    timeout = 30 + 6 * args.measurement_ms / 1000
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        if args.pa_logs:
            with open(os.path.join(args.out, f"pa_{mode}_{concurrency}.log"), "w") as f:
                f.write(out)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise bench_error(f"{' '.join(cmd)}: no result within {timeout:.0f} s:\n{out[-3000:]}"
                          f"\nnode log:\n{srv.log_tail()}")
    if p.returncode != 0 or not os.path.exists(csv_path):
        raise bench_error(f"{' '.join(cmd)} failed ({p.returncode}):\n{out[-3000:]}"
                          f"\nnode log:\n{srv.log_tail()}")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise bench_error(f"{' '.join(cmd)}: empty CSV\n{out[-2000:]}")
    r = rows[0]

    def us(*names):  # perf_analyzer's CSV columns vary across versions: the first present one
        for n in names:
            if r.get(n) not in (None, ""):
                return float(r[n]) / 1000.0
        return None

    return {"concurrency": concurrency, "throughput_rps": float(r["Inferences/Second"]),
            "p50_ms": us("p50 latency"), "p90_ms": us("p90 latency"), "p99_ms": us("p99 latency"),
            "mean_ms": us("Avg latency", "Avg Latency"), "errors": 0, "lost": 0,
            "server_queue_ms": us("Server Queue"), "server_compute_ms": us("Server Compute Infer"),
            "csv": r}


def operating_point(sweep, limit_ms):
    within = [p for p in sweep if p["p99_ms"] <= limit_ms and not p["errors"] and not p["lost"]]
    return max(within, key=lambda p: p["throughput_rps"]) if within else None


def markdown(r):
    t = r["targets"]
    lines = [f"### KServe doors vs ZeroMQ — {r['model']['name']} {r['model']['precision']}, "
             f"{r['requests']['dtype']} requests of {r['requests']['bytes']:,} bytes "
             f"({r['machine']['date']}, {r['machine'].get('gpu', r['machine'].get('cpu', ''))})", "",
             f"Load: `zeromq` and `grpc-bench` by `troupe bench` (closed loop, up to {r['args']['connections']} "
             f"connections, over ZeroMQ and over KServe gRPC); `grpc`, `http` (binary tensors) and `shm` "
             f"(gRPC + system shared memory) by perf_analyzer {r['perf_analyzer_version']} on the same host; "
             "one request = one image.", "",
             "| path | in flight | req/s | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |"]
    for path in r["paths"]:
        op = r["operating_points"].get(path)
        for p in r["sweeps"][path]:
            mark = " **op**" if op and p["concurrency"] == op["concurrency"] else ""
            lines.append(f"| {path} | {p['concurrency']}{mark} | {p['throughput_rps']:,.0f} | "
                         f"{p['p50_ms']:.2f} | {p['p99_ms']:.2f} |")
    lines += ["", f"Operating points (best throughput with p99 <= {t['p99_ms']} ms) and batch 1 (one request "
                  "at a time; overhead = p50 minus the executor's batch-1 host time "
                  f"{r['executor_batch1_host_ms']:.3f} ms):", "",
              "| path | req/s at p99 <= limit | vs ZeroMQ | batch-1 p50 ms | batch-1 overhead us |",
              "| --- | ---: | ---: | ---: | ---: |"]
    zmq_op = r["operating_points"].get("zeromq")
    for path in r["paths"]:
        op = r["operating_points"].get(path)
        b1 = r["batch1"].get(path)
        ratio = f"{op['throughput_rps'] / zmq_op['throughput_rps']:.2f}" if op and zmq_op else "-"
        lines.append(f"| {path} | {op['throughput_rps']:,.0f} | {ratio} | " if op else f"| {path} | - | - | ")
        lines[-1] += (f"{b1['p50_ms']:.3f} | {b1['overhead_us']:.0f} |" if b1 else "- | - |")
    v = r["verdicts"]
    lines += ["", "Targets: " + "; ".join(f"{k}: {v[k]}" for k in v)]
    if r["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in r["notes"]]
    lines += ["", f"Reproduce: `{r['command']}`. Raw figures: serving-kserve.json.", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--troupe", default=os.path.join(REPO, "build-gpu", "troupe"))
    ap.add_argument("--perf-analyzer", default=shutil.which("perf_analyzer") or "perf_analyzer")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/troupe-out"))
    ap.add_argument("--model-path", default=os.path.join(REPO, "tests", "models", "resnet50.onnx"))
    ap.add_argument("--cpu", action="store_true", help="CPU backend (a check of the script)")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--preferred", default="1,2,4,8,16,32,64,128")
    ap.add_argument("--queue-delay-us", type=int, default=0)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--actor-threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,16,64,128")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--duration", type=float, default=4.0, help="ZeroMQ: seconds per point")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--measurement-ms", type=int, default=2500, help="perf_analyzer measurement interval")
    ap.add_argument("--exec-images", type=int, default=2000)
    ap.add_argument("--p99-limit-ms", type=float, default=15.0)
    ap.add_argument("--paths", default="zeromq,grpc-bench,grpc,http,shm",
                    help="zeromq and grpc-bench: troupe bench; grpc, http, shm: perf_analyzer")
    ap.add_argument("--start-timeout-s", type=float, default=300)
    ap.add_argument("--pa-extra", default="", help="more perf_analyzer arguments (e.g. -v)")
    ap.add_argument("--pa-logs", action="store_true", help="keep each perf_analyzer output in OUT")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    # gpu_run's repository and executor helpers read these.
    args.input_dtype, args.compute_threads = "uint8", 1 if args.cpu else 0
    if args.cpu:
        args.precision = "fp32"
    if args.quick:
        args.duration, args.warmup, args.measurement_ms, args.exec_images = 1.0, 0.3, 1000, 200
        args.concurrency = "1,8"
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="troupe-kserve-")
    notes = []
    try:
        result = run(args, tmp, notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(args.out, "serving-kserve.json"), "w") as f:
        json.dump(result, f, indent=2)
    md = markdown(result)
    with open(os.path.join(args.out, "serving-kserve.md"), "w") as f:
        f.write(md)
    print(md)


def run(args, tmp, notes):
    if args.model_path == "tiny-cnn":
        os.makedirs(os.path.join(tmp, "src"))
        src = os.path.join(tmp, "src", "model.onnx")
        gpu_run.tiny_cnn(src, 32)
        name = "tiny_cnn"
    else:
        log(f"filling weights of {args.model_path}")
        src, _ = gpu_run.fill_into(args.model_path, os.path.join(tmp, "src"))
        name = os.path.splitext(os.path.basename(args.model_path))[0]
    input_name, chw = gpu_run.image_input(src)
    root = os.path.join(tmp, "repo")
    model_file, config_text = gpu_run.write_repository(root, name, src, args, "uint8")
    node_yaml = os.path.join(tmp, "node.yaml")
    with open(node_yaml, "w") as f:
        f.write(f"gpus: {'none' if args.cpu else 'all'}\ncpu_workers: 1\nactor_threads: {args.actor_threads}\n"
                f"compute_threads: {args.compute_threads}\nmax_inflight: 8192\nwarmup_runs: 2\nlog_level: warn\n")
    paths = [p for p in args.paths.split(",") if p]
    pa_version = "-"
    if any(p not in ("zeromq", "grpc-bench") for p in paths):
        try:
            v = subprocess.run([args.perf_analyzer, "--version"], capture_output=True, text=True, timeout=30)
            text = (v.stdout + v.stderr).strip()
            pa_version = text.splitlines()[-1] if text else "(no --version output)"
        except (OSError, subprocess.TimeoutExpired) as e:
            notes.append(f"perf_analyzer not runnable here ({e}): only the ZeroMQ path was measured")
            paths = ["zeromq"]

    log("starting troupe serve")
    srv = kserve_node(args.troupe, os.path.join(root, "models"), node_yaml, os.path.join(tmp, "serve.log"),
                      args.start_timeout_s)
    sweeps, batch1 = {}, {}
    try:
        srv.check_ready(name)
        srv.wait_http_ready(60)
        rng = np.random.default_rng(7)
        one = gpu_run.request_array("uint8", [1] + chw, rng)
        inputs = os.path.join(tmp, "request.npz")
        np.savez(inputs, **{input_name: one})
        out_bytes = 4 * 1000 if "resnet" in name else 4096  # fp32 logits of one image, with room
        levels = [int(x) for x in args.concurrency.split(",") if x]
        for path in paths:
            sweeps[path] = []
            for c in levels:
                if path == "zeromq":
                    p = gpu_run.bench_point(args, srv, name, inputs, c, min(c, args.connections), args.duration, tmp)
                elif path == "grpc-bench":
                    p = gpu_run.bench_point(args, srv, name, inputs, c, min(c, args.connections), args.duration,
                                            tmp, server=f"grpc://127.0.0.1:{srv.grpc_port}")
                else:
                    try:
                        p = perf_point(args, srv, name, path, c, out_bytes, tmp)
                    except bench_error as e:  # recorded, and the sweep goes on
                        notes.append(f"{path} at {c} in flight: no result: {str(e)[:600]}")
                        log(f"{path:7s} {c:4d} in flight: no result")
                        continue
                sweeps[path].append(p)
                log(f"{path:7s} {c:4d} in flight: {p['throughput_rps']:9.0f} req/s  p50 {p['p50_ms']:7.3f}  "
                    f"p99 {p['p99_ms']:7.2f} ms  errors {p['errors']}")
                if p["errors"] or p["lost"]:
                    notes.append(f"{path} at {c}: {p['errors']} errors, {p['lost']} lost")
            b1 = next((p for p in sweeps[path] if p["concurrency"] == 1), None)
            if b1:
                batch1[path] = {"p50_ms": b1["p50_ms"], "p99_ms": b1["p99_ms"]}
        node_log = srv.log_tail(4000)
    finally:
        srv.stop()
    if '"level":"error"' in node_log:
        notes.append("the node logged errors: " + node_log[-600:])

    exec_flags = ["--backend", "cpu", "--threads", "1"] if args.cpu else \
        ["--backend", "cuda", "--precision", args.precision]
    exec_flags += ["--normalize-input", f"dtype=uint8 mean={','.join(map(str, gpu_run.MEAN))} "
                                        f"std={','.join(map(str, gpu_run.STD))} input={input_name}"]
    e1 = gpu_run.executor(args, model_file, exec_flags, input_name, chw, "uint8", 1, "end-to-end", tmp)
    for b in batch1.values():
        b["overhead_us"] = 1000 * (b["p50_ms"] - e1["median_ms"])
    ops = {p: operating_point(s, args.p99_limit_ms) for p, s in sweeps.items()}
    verdicts = {}
    z = ops.get("zeromq")
    for path, driver in (("grpc", "perf_analyzer"), ("grpc-bench", "troupe bench")):
        if z and ops.get(path):
            ratio = ops[path]["throughput_rps"] / z["throughput_rps"]
            verdicts[f"gRPC >= 80% of ZeroMQ ({driver})"] = f"{ratio:.2f} ({'met' if ratio >= 0.8 else 'NOT met'})"
    if z and ops.get("shm"):
        ratio = ops["shm"]["throughput_rps"] / z["throughput_rps"]
        verdicts["shared memory >= ZeroMQ"] = f"{ratio:.2f} ({'met' if ratio >= 1.0 else 'NOT met'})"
    if "shm" in batch1:
        o = batch1["shm"]["overhead_us"]
        verdicts["shared-memory batch-1 overhead <= 100 us"] = f"{o:.0f} us ({'met' if o <= 100 else 'NOT met'})"
    return {"machine": gpu_run.machine(args.cpu), "model": {"name": name, "precision": args.precision},
            "requests": {"dtype": "uint8", "shape": [1] + chw, "bytes": int(np.prod(chw))},
            "config_yaml": config_text, "perf_analyzer_version": pa_version,
            "args": {k: getattr(args, k) for k in ("concurrency", "connections", "duration", "measurement_ms",
                                                   "max_batch", "preferred", "queue_delay_us", "instances")},
            "targets": {"p99_ms": args.p99_limit_ms, "grpc_ratio": 0.8, "shm_ratio": 1.0, "shm_batch1_overhead_us": 100},
            "paths": list(sweeps), "sweeps": sweeps, "operating_points": ops, "batch1": batch1,
            "executor_batch1_host_ms": e1["median_ms"], "verdicts": verdicts, "notes": notes,
            "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, gpu_run.on_sigterm)
    try:
        main()
    except bench_error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
