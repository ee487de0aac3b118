#!/usr/bin/env python3
"""troupe's serving bench on a GPU host: ResNet-50 end to end through `troupe serve` against the
executor alone (`troupe run`) on the same model, precision and batch.

Drives the node with `troupe bench` only (no pyzmq needed). In one invocation:
  1. a model repository in a temp dir: the model (weights filled by tests/models/fill_weights.py)
     as model.onnx, config.yaml with the precision, dynamic batching, instance count and, for
     uint8 requests, the `input_normalization` block (the node takes uint8 [N,3,H,W] pixels and
     normalises on the device);
  2. `troupe serve`, then a sweep of `troupe bench` closed-loop concurrency, the requests in
     flight spread over several connections (--connections): throughput, p50/p99, the mean batch
     (per batch from /metrics, and per request from the replies); the best throughput whose p99
     stays within --p99-limit-ms is the operating point;
  3. batch 1: one request at a time (concurrency 1, one connection), the e2e p50;
  4. the node stopped, `troupe run` on the same model file and inputs of the same type at the
     operating point's mean batch (rounded) and at batch 1, host timing (--timing end-to-end:
     input copy in, run, output copy out: the "executor" of the ratios) and device timing (the
     plan's steps alone on inputs already on the device: stricter);
  5. OUT/serving-gpu.json and OUT/serving-gpu.md (serving-cpu.* with --cpu) with the figures
     and the ratios against the targets: throughput >= 90% of the executor's at the same batch,
     batch-1 e2e p50 minus the executor's batch-1 latency <= 150 us.

--input-dtype: uint8 (the config block; falls back to uint8-graph when the node refuses the
block), uint8-graph (the same normalisation written into the ONNX graph: Cast, Sub, Mul in
front of the model, no config block needed), fp16 (a float16 input, cast inside), fp32 (the model
as it is). --cpu with --model-path tiny-cnn runs the whole flow on the CPU backend in seconds: a
check of this script, not a measurement.

    python3 bench/serving/gpu_run.py --troupe build-gpu/troupe --out /tmp/troupe-out
    python3 bench/serving/gpu_run.py --cpu --troupe build/troupe --model-path tiny-cnn --quick
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


class bench_error(Exception):
    pass


# ---- models ------------------------------------------------------------------------------------

def tiny_cnn(path, size):
    """A small image classifier (Conv-Relu-Conv-Relu-GlobalAveragePool-Flatten-Gemm), input
    "input" [N,3,size,size] float32: the --cpu check's stand-in for ResNet-50."""
    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((16, 3, 3, 3)) * 0.2, "b1": rng.standard_normal(16) * 0.1,
         "w2": rng.standard_normal((32, 16, 3, 3)) * 0.1, "b2": rng.standard_normal(32) * 0.1,
         "fc": rng.standard_normal((10, 32)) * 0.2, "fcb": rng.standard_normal(10) * 0.1}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "tiny_cnn",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(a.astype(np.float32), n) for n, a in w.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)


def fill_into(src, dst_dir):
    """Copies `src` with its weights filled (tests/models/fill_weights.py) into dst_dir as
    model.onnx; calibrated with ONNX Runtime where it is installed (the figures do not depend on
    the weights' values, only the outputs' sanity does)."""
    sys.path.insert(0, os.path.join(REPO, "tests", "models"))
    import fill_weights  # noqa: E402
    calibrate = importlib.util.find_spec("onnxruntime") is not None  # fill_weights calibrates with it
    os.makedirs(dst_dir, exist_ok=True)
    filled = fill_weights.fill_model(src, dst_dir, calibrate_weights=calibrate)
    target = os.path.join(dst_dir, "model.onnx")
    if os.path.abspath(filled) != os.path.abspath(target):
        os.replace(filled, target)  # external data paths are relative to the folder, not the name
    return target, calibrate


def image_input(model_path):
    """(name, [C, H, W]) of the model's single float image input [N, C, H, W]."""
    m = onnx.load(model_path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inputs = [v for v in m.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise bench_error(f"{model_path}: expected one input, found {[v.name for v in inputs]}")
    v = inputs[0]
    dims = [d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims[1:]) <= 0 or v.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise bench_error(f"{model_path}: input {v.name} is not float [N, C, H, W] with fixed C, H, W: {dims}")
    return v.name, dims[1:]


def prefix_input(model_path, input_name, client_type, normalize):
    """Rewrites the graph in place (initializers stay where they are, external or not): the
    input becomes `client_type` followed by Cast to float32 and, with `normalize`,
    (x - mean[c]) * (1 / std[c]), what the node's input_normalization computes."""
    m = onnx.load(model_path, load_external_data=False)
    g = m.graph
    fed = input_name + "__float"
    nodes = [helper.make_node("Cast", [input_name], [input_name + "__cast" if normalize else fed],
                              to=TensorProto.FLOAT)]
    if normalize:
        c = len(MEAN)
        g.initializer.extend([
            numpy_helper.from_array(np.array(MEAN, np.float32).reshape(c, 1, 1), input_name + "__mean"),
            numpy_helper.from_array((1 / np.array(STD, np.float64)).astype(np.float32).reshape(c, 1, 1),
                                    input_name + "__inv_std")])
        nodes += [helper.make_node("Sub", [input_name + "__cast", input_name + "__mean"], [input_name + "__centered"]),
                  helper.make_node("Mul", [input_name + "__centered", input_name + "__inv_std"], [fed])]
    for n in g.node:
        for i, x in enumerate(n.input):
            if x == input_name:
                n.input[i] = fed
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    for v in g.input:
        if v.name == input_name:
            v.type.tensor_type.elem_type = client_type
    onnx.save(m, model_path)


# ---- the node ----------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class node:
    """`troupe serve` on loopback with a metrics port."""

    def __init__(self, troupe, models, node_yaml, log_path, start_timeout_s, extra_args=()):
        self.metrics_port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([troupe, "serve", "--models", models, "--listen", "tcp://127.0.0.1:*",
                                      "--metrics-port", str(self.metrics_port), "--config", node_yaml,
                                      *(extra_args or ["--grpc-port", "0", "--http-port", "0"])],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        # The node prints `listening` once bound, then `ready` (or `loaded`: not ready) after the load.
        deadline = time.time() + start_timeout_s
        event = {}
        while event.get("event") not in ("ready", "loaded"):
            out = []
            t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
            t.start()
            t.join(max(0.0, deadline - time.time()))
            if not out or not out[0]:
                self.stop()
                raise bench_error("troupe serve did not become ready:\n" + self.log_tail())
            event = json.loads(out[0])
        self.endpoint = event["endpoint"]

    def check_ready(self, model):
        """The node serves even when a model failed to load (it logs the error): fail here, with
        the node's log, rather than at the first request."""
        if metric(self.metrics(), "troupe_model_ready", model=model, version="1") != 1:
            self.stop()
            raise bench_error(f"model {model} is not ready; node log:\n" + self.log_tail())

    def log_tail(self, n=3000):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-n:]

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if getattr(self, "worker_node", None) is not None:
            stop_process(self.worker_node)


def stop_process(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cluster_node(args, models, node_yaml, tmp, model_name):
    """--cluster on: a control node (frontends, batching; no worker of its own) and a worker node
    with this host's GPUs joined to it over tcp:// on loopback (docs/cluster.md): the same requests
    cross one more hop, tensors as ZeroMQ frames."""
    join = f"tcp://127.0.0.1:{free_port()}"
    srv = node(args.troupe, models, node_yaml, os.path.join(tmp, "serve.log"), args.start_timeout_s,
               extra_args=["--grpc-port", "0", "--http-port", "0", "--role", "control", "--workers-listen", join])
    wlog = open(os.path.join(tmp, "worker-node.log"), "w")
    srv.worker_node = subprocess.Popen([args.troupe, "serve", "--role", "worker", "--join", join, "--config", node_yaml,
                                        "--node-name", "gpu-worker", "--model-cache-dir", os.path.join(tmp, "cache")],
                                       stdout=subprocess.DEVNULL, stderr=wlog)
    deadline = time.time() + args.start_timeout_s
    while metric(srv.metrics(), "troupe_model_ready", model=model_name, version="1") != 1:
        if time.time() > deadline or srv.worker_node.poll() is not None:
            srv.stop()
            wlog.flush()
            raise bench_error("the worker node's replica did not become ready:\n" +
                              open(wlog.name).read()[-3000:] + srv.log_tail())
        time.sleep(0.2)
    return srv


def metric(text, name, **labels):
    """One sample of the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        have = {}
        if "{" in head:
            for part in head[head.index("{") + 1:-1].split(","):
                if "=" in part:
                    k, v = part.split("=", 1)
                    have[k] = v.strip('"')
        if all(have.get(k) == str(v) for k, v in labels.items()):
            return float(value)
    return 0.0


def write_repository(root, name, model_src, args, dtype):
    """models/<name>/1/model.onnx + config.yaml for `dtype`; returns (model dir, config text)."""
    vdir = os.path.join(root, "models", name, "1")
    os.makedirs(vdir, exist_ok=True)
    model = os.path.join(vdir, "model.onnx")
    src_dir = os.path.dirname(model_src)
    # The model file is copied (it may be rewritten below); its external data files are linked.
    for f in os.listdir(src_dir):
        p = os.path.join(src_dir, f)
        if not os.path.isfile(p):
            continue
        if p == model_src:
            shutil.copy(p, model)
        elif not os.path.exists(os.path.join(vdir, f)):
            os.link(p, os.path.join(vdir, f))
    input_name, _ = image_input(model_src)
    if dtype == "uint8-graph":
        prefix_input(model, input_name, TensorProto.UINT8, normalize=True)
    elif dtype == "fp16":
        prefix_input(model, input_name, TensorProto.FLOAT16, normalize=False)
    preferred = [int(x) for x in args.preferred.split(",") if x]
    cfg = [f"max_batch_size: {args.max_batch}",
           "dynamic_batching:",
           f"  max_queue_delay_microseconds: {args.queue_delay_us}",
           f"  preferred_batch_size: [{', '.join(str(p) for p in preferred if p <= args.max_batch)}]",
           f"instance_group: [{{count: {args.instances}, kind: {'KIND_CPU' if args.cpu else 'KIND_GPU'}}}]"]
    if not args.cpu:
        cfg.append(f"precision: {args.precision}")
    if dtype == "uint8":
        cfg += ["input_normalization:",
                f"  input: {input_name}",
                "  dtype: uint8",
                f"  mean: [{', '.join(str(m) for m in MEAN)}]",
                f"  std: [{', '.join(str(s) for s in STD)}]"]
    text = "\n".join(cfg) + "\n"
    with open(os.path.join(root, "models", name, "config.yaml"), "w") as f:
        f.write(text)
    return model, text


def request_array(dtype, shape, rng):
    if dtype.startswith("uint8"):
        return rng.integers(0, 256, shape, dtype=np.uint8)
    x = rng.standard_normal(shape).astype(np.float32)
    return x.astype(np.float16) if dtype == "fp16" else x


# ---- load --------------------------------------------------------------------------------------

def process_tree(roots):
    """{pid: label} for the labelled root pids and their descendants (a worker node's worker
    processes), from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = {}, list(roots.items())
    while todo:
        pid, label = todo.pop()
        out[pid] = label
        todo += [(c, label + " child") for c in children.get(pid, [])]
    return out


def thread_cpu_ticks(roots):
    """{(pid, tid): (process label, thread name, user+system ticks)} of every thread of the tree."""
    ticks = {}
    for pid, label in process_tree(roots).items():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            fields = st.rsplit(")", 1)[1].split()
            ticks[(pid, int(tid))] = (label, st[st.index("(") + 1:st.rindex(")")], int(fields[11]) + int(fields[12]))
    return ticks


class thread_sampler:
    """Which threads of the nodes are busy during a bench point: CPU time per thread (from /proc)
    over the middle of the measured window, the busiest first. A profile by thread: a thread near
    1.0 is a single-threaded limit."""

    def __init__(self, roots, start_after_s, window_s):
        self.roots, self.result = roots, []
        self.thread = threading.Thread(target=self.run, args=(start_after_s, window_s), daemon=True)
        self.thread.start()

    def run(self, start_after_s, window_s):
        time.sleep(start_after_s)
        a, t0 = thread_cpu_ticks(self.roots), time.time()
        time.sleep(window_s)
        b, t1 = thread_cpu_ticks(self.roots), time.time()
        hz = os.sysconf("SC_CLK_TCK")
        rows = []
        for key, (label, name, end) in b.items():
            begin = a.get(key, (label, name, end))[2]
            cpu = (end - begin) / hz / (t1 - t0)
            if cpu >= 0.05:
                rows.append({"process": label, "thread": name, "cpu": round(cpu, 2)})
        rows.sort(key=lambda r: -r["cpu"])
        self.result = rows[:12]

    def busiest(self):
        self.thread.join(30)
        return self.result


def bench_point(args, srv, name, inputs, concurrency, connections, duration, tmp, server=None):
    """`troupe bench` at `concurrency`; `server` overrides the node's ZeroMQ endpoint (grpc://...)."""
    before = srv.metrics()
    roots = {srv.proc.pid: "control node" if getattr(srv, "worker_node", None) else "node"}
    if getattr(srv, "worker_node", None) is not None:
        roots[srv.worker_node.pid] = "worker node"
    sampler = thread_sampler(roots, args.warmup + 0.2 * duration, 0.6 * duration)
    out_json = os.path.join(tmp, f"bench_{concurrency}_{connections}.json")
    cmd = [args.troupe, "bench", name, "--server", server or srv.endpoint, "--concurrency", str(concurrency),
           "--connections", str(connections), "--duration", str(duration), "--warmup", str(args.warmup),
           "--inputs", inputs, "--json", out_json, "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + args.warmup + 120)
    if p.returncode != 0:
        raise bench_error(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}\nnode log:\n{srv.log_tail()}")
    after = srv.metrics()
    j = json.load(open(out_json))
    labels = {"model": name, "version": "1"}
    batches = metric(after, "troupe_batch_size_count", **labels) - metric(before, "troupe_batch_size_count", **labels)
    rows = metric(after, "troupe_batch_size_sum", **labels) - metric(before, "troupe_batch_size_sum", **labels)
    lat = j["latency_ms"]
    point = {"concurrency": concurrency, "connections": j.get("connections", connections),
             "throughput_rps": j["throughput_rps"], "p50_ms": lat["p50"], "p90_ms": lat["p90"],
             "p99_ms": lat["p99"], "max_ms": lat["max"], "mean_ms": lat["mean"],
             "errors": j["errors"], "lost": j["lost"],
             # per batch, warm-up included (the histogram's deltas over the whole run)
             "batch_rows_mean": rows / batches if batches else 0.0, "batches": batches,
             # per request, measured replies only
             "request_batch_rows_mean": j.get("server_reported", {}).get("batch_rows_mean", 0.0),
             "server_queue_ms_mean": j.get("server_reported", {}).get("queue_ms_mean", 0.0),
             "server_compute_ms_mean": j.get("server_reported", {}).get("compute_ms_mean", 0.0),
             "server_total_ms_mean": j.get("server_reported", {}).get("total_ms_mean", 0.0)}
    point["threads_busiest"] = sampler.busiest()
    util = metric(after, "troupe_gpu_utilization_ratio", gpu="0")
    if "troupe_gpu_utilization_ratio" in after:
        point["gpu_utilization"] = util
    if j["errors"] or j["lost"]:
        point["errors_by_code"] = j.get("errors_by_code", {})
    return point


# ---- the executor alone ------------------------------------------------------------------------

def executor(args, model, exec_flags, input_name, chw, dtype, batch, timing, tmp):
    rng = np.random.default_rng(batch)
    inputs = os.path.join(tmp, f"exec_in_{batch}.npz")
    if not os.path.exists(inputs):
        np.savez(inputs, **{input_name: request_array(dtype, [batch] + chw, rng)})
    out_json = os.path.join(tmp, f"exec_{batch}_{timing}.json")
    repeat = max(10, min(200, int(args.exec_images / batch)))
    cmd = [args.troupe, "run", model, "--inputs", inputs, "--repeat", str(repeat), "--warmup", "5",
           "--timing", timing, "--latency-json", out_json] + exec_flags
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise bench_error(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    j = json.load(open(out_json))
    return {"batch": batch, "timing": timing, "median_ms": j["median_ms"], "mean_ms": j["mean_ms"],
            "min_ms": j["min_ms"], "runs": j["runs"], "throughput_per_s": 1000.0 * batch / j["median_ms"],
            "cuda_graph": j.get("cuda_graph", False)}


# ---- report ------------------------------------------------------------------------------------

def machine(cpu_mode):
    m = {"host": platform.node(), "cpus": os.cpu_count(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                m["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if not cpu_mode:
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
            m["gpu"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            m["gpu"] = "? (nvidia-smi failed)"
    return m


NORMALISED = {"uint8": "; normalised by the node (config.yaml input_normalization)",
              "uint8-graph": "; normalised by Cast, Sub and Mul written in front of the ONNX graph",
              "fp16": "; cast at the graph's entry (computed at the configured precision)"}


def markdown(r):
    t = r["targets"]
    op = r.get("operating_point")
    lines = [f"# Serving on {'the CPU (script check)' if r['cpu_mode'] else 'the GPU host'}: "
             f"{r['model']['name']} {r['model']['precision']} end to end vs the executor alone", "",
             f"Machine: {r['machine'].get('gpu', 'no GPU')}; {r['machine']['cpus']} CPUs "
             f"({r['machine'].get('cpu', '?')}); {r['machine']['date']}.", "",
             f"Requests: one image each, {r['requests']['dtype']} {r['requests']['shape']} "
             f"({r['requests']['bytes']} bytes){NORMALISED.get(r['requests']['dtype'], '')}.",
             f"Node: config.yaml below; `troupe bench` closed loop, the requests in flight over up to "
             f"{r['args']['connections']} connections; {r['args']['duration']} s measured after "
             f"{r['args']['warmup']} s of warm-up per point.", "",
             "```yaml", r["config_yaml"].rstrip(), "```", "",
             "| in flight | conns | req/s | p50 ms | p90 ms | p99 ms | rows/batch | rows/batch (per request) | queue ms | compute ms | errors |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in r["sweep"]:
        mark = " (operating point)" if op and p["concurrency"] == op["concurrency"] else ""
        lines.append(f"| {p['concurrency']}{mark} | {p['connections']} | {p['throughput_rps']:,.0f} | {p['p50_ms']:.2f} | "
                     f"{p['p90_ms']:.2f} | {p['p99_ms']:.2f} | {p['batch_rows_mean']:.1f} | {p['request_batch_rows_mean']:.1f} | "
                     f"{p['server_queue_ms_mean']:.2f} | {p['server_compute_ms_mean']:.2f} | {p['errors']} |")
    if r["executor"]:
        lines += ["", "Executor alone (`troupe run`, the same model file and input type; host = --timing end-to-end: "
                  "input copy in, run, output copy out, from pageable memory; device = the plan's steps on inputs "
                  "already on the device):", "",
                  "| batch | timing | median ms | images/s |", "|---:|---|---:|---:|"]
    for e in r["executor"]:
        lines.append(f"| {e['batch']} | {'host' if e['timing'] == 'end-to-end' else 'device'} | {e['median_ms']:.3f} | "
                     f"{e['throughput_per_s']:,.0f} |")
    lines.append("")
    if op and "ratio_host" not in op:
        lines.append(f"Operating point (best throughput with p99 <= {t['p99_ms']} ms): {op['concurrency']} in flight, "
                     f"{op['throughput_rps']:,.0f} req/s, p99 {op['p99_ms']:.2f} ms, "
                     f"{op['batch_rows_mean']:.1f} rows per batch.")
    elif op:
        lines += [f"Operating point (best throughput with p99 <= {t['p99_ms']} ms): {op['concurrency']} in flight, "
                  f"{op['throughput_rps']:,.0f} req/s, p99 {op['p99_ms']:.2f} ms, "
                  f"{op['batch_rows_mean']:.1f} rows per batch -> executor at batch {op['batch']}: "
                  f"{op['executor_host_per_s']:,.0f} images/s (host timing), {op['executor_device_per_s']:,.0f} (device).",
                  f"- throughput end to end / executor (host timing): **{100 * op['ratio_host']:.1f}%** "
                  f"(target >= {100 * t['throughput_ratio']:.0f}%: {'met' if op['ratio_host'] >= t['throughput_ratio'] else 'NOT met'}); "
                  f"vs device timing {100 * op['ratio_device']:.1f}%."]
    else:
        lines.append(f"No sweep point kept p99 <= {t['p99_ms']} ms: no operating point.")
    b1 = r.get("batch1")
    if b1 and "executor_host_ms" not in b1:
        lines.append(f"- batch 1: e2e p50 {b1['e2e_p50_ms']:.3f} ms (p99 {b1['e2e_p99_ms']:.3f}).")
    elif b1:
        lines.append(f"- batch 1: e2e p50 {b1['e2e_p50_ms']:.3f} ms (p99 {b1['e2e_p99_ms']:.3f}) vs executor "
                     f"{b1['executor_host_ms']:.3f} ms host / {b1['executor_device_ms']:.3f} ms device: overhead "
                     f"**{b1['overhead_us']:.0f} us** (target <= {t['batch1_overhead_us']} us: "
                     f"{'met' if b1['overhead_us'] <= t['batch1_overhead_us'] else 'NOT met'}).")
        if b1.get("server_total_ms_mean"):
            lines.append(f"  Means as the node reports them: total in the node {b1['server_total_ms_mean']:.3f} ms "
                         f"(queue {b1['server_queue_ms_mean']:.3f}, compute {b1['server_compute_ms_mean']:.3f}) "
                         f"of {b1['e2e_mean_ms']:.3f} ms end to end; the rest is the transport and the client.")
    if r["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in r["notes"]]
    lines += ["",
              f"Reproduce: `{r['command']}`. Raw figures: {r['json_name']}.", ""]
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--troupe", default=os.path.join(REPO, "build-gpu", "troupe"))
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/troupe-out"))
    ap.add_argument("--model-path", default=os.path.join(REPO, "tests", "models", "resnet50.onnx"),
                    help="an ONNX image model [N,3,H,W] (weights filled with fill_weights.py), or tiny-cnn")
    ap.add_argument("--cpu", action="store_true", help="CPU backend, no GPU (a check of the script)")
    ap.add_argument("--input-dtype", default="uint8", choices=["uint8", "uint8-graph", "fp16", "fp32"])
    ap.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32", "tf32"])
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--preferred", default="1,2,4,8,16,32,64,128",
                    help="preferred_batch_size: a batch leaves at once with the largest reachable one")
    ap.add_argument("--queue-delay-us", type=int, default=0)
    ap.add_argument("--instances", type=int, default=1, help="replicas per worker (instance_group.count)")
    ap.add_argument("--worker-processes", default="off", choices=["on", "off"],
                    help="node.yaml worker_processes: each worker in a `troupe worker` process")
    ap.add_argument("--cluster", default="off", choices=["on", "off"],
                    help="on: a control node and a worker node on this host (docs/cluster.md)")
    ap.add_argument("--link-connections", type=int, default=None,
                    help="--cluster on: node.yaml node_link_connections (connections per remote worker; "
                         "default: the node's own); the result files' names then end in -lcN")
    ap.add_argument("--batches-per-replica", type=int, default=None,
                    help="node.yaml max_batches_per_replica (default: the node's own: 2, 3 on a control node); the result "
                         "files' names then end in -bN")
    ap.add_argument("--actor-threads", type=int, default=2)
    ap.add_argument("--idle-spin-us", type=int, default=None,
                    help="node.yaml idle_spin_us (default: the node's own, 500 on >= 8 hardware threads)")
    ap.add_argument("--compute-threads", type=int, default=0, help="--cpu: OpenMP threads per run (0: 1)")
    ap.add_argument("--concurrency", default="1,4,8,16,24,32,48,64,96,128,192,256")
    ap.add_argument("--connections", type=int, default=8, help="at most this many client connections per point")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--batch1-duration", type=float, default=8.0)
    ap.add_argument("--exec-images", type=int, default=4000, help="images per executor timing (repeat = this / batch)")
    ap.add_argument("--p99-limit-ms", type=float, default=15.0)
    ap.add_argument("--time-budget-s", type=float, default=500, help="optional steps are skipped past this")
    ap.add_argument("--start-timeout-s", type=float, default=300)
    ap.add_argument("--no-executor", action="store_true",
                    help="skip the executor-alone timings (the cluster bench compares two nodes' sweeps)")
    ap.add_argument("--quick", action="store_true", help="short durations (with --cpu: the script check)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup, args.batch1_duration, args.exec_images = 1.0, 0.3, 1.5, 200
        if args.concurrency == ap.get_default("concurrency"):
            args.concurrency = "1,4,16,32"
    if args.cpu:
        args.precision = "fp32"
        # OpenMP threads that spin on a shared machine distort CPU timings badly: one by default.
        args.compute_threads = args.compute_threads or 1
    if not os.access(args.troupe, os.X_OK):
        sys.exit(f"no troupe binary at {args.troupe}")
    os.makedirs(args.out, exist_ok=True)
    tag = ("cpu" if args.cpu else "gpu") + ("-cluster" if args.cluster == "on" else "")
    if args.cluster == "on" and args.link_connections:
        tag += f"-lc{args.link_connections}"
    if args.batches_per_replica:
        tag += f"-b{args.batches_per_replica}"
    tmp = tempfile.mkdtemp(prefix="troupe-serving-")
    notes = []
    try:
        result = run(args, tmp, notes, tag)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    json_path = os.path.join(args.out, f"serving-{tag}.json")
    md_path = os.path.join(args.out, f"serving-{tag}.md")
    result["json_name"] = os.path.basename(json_path)
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    md = markdown(result)
    with open(md_path, "w") as f:
        f.write(md)
    print(md)
    log(f"wrote {json_path} and {md_path}")


def run(args, tmp, notes, tag):
    # 1. the model
    if args.model_path == "tiny-cnn":
        src_dir = os.path.join(tmp, "src")
        os.makedirs(src_dir)
        src = os.path.join(src_dir, "model.onnx")
        tiny_cnn(src, 32)
        model_name, calibrated = "tiny_cnn", None
    else:
        log(f"filling weights of {args.model_path}")
        src, calibrated = fill_into(args.model_path, os.path.join(tmp, "src"))
        model_name = os.path.splitext(os.path.basename(args.model_path))[0]
        if not calibrated:
            notes.append("onnxruntime not installed: weights not calibrated (fan-in initialisation); "
                         "the timings do not depend on the values")
    input_name, chw = image_input(src)
    dtype = args.input_dtype
    run_help = subprocess.run([args.troupe, "run", "--help"], capture_output=True, text=True).stdout
    has_normalize_flag = "--normalize-input" in run_help

    node_yaml = os.path.join(tmp, "node.yaml")
    with open(node_yaml, "w") as f:
        f.write(f"gpus: {'none' if args.cpu else 'all'}\ncpu_workers: 1\nactor_threads: {args.actor_threads}\n"
                f"detached_workers: true\ncompute_threads: {args.compute_threads if args.cpu else 0}\n"
                "max_inflight: 8192\nwarmup_runs: 2\nlog_level: warn\n"
                f"worker_processes: {args.worker_processes}\n")
        if args.idle_spin_us is not None:
            f.write(f"idle_spin_us: {args.idle_spin_us}\n")
        if args.batches_per_replica:
            f.write(f"max_batches_per_replica: {args.batches_per_replica}\n")
        if args.cluster == "on" and args.link_connections:
            f.write(f"node_link_connections: {args.link_connections}\n")

    # 2. the node
    root = os.path.join(tmp, "repo")
    model_file, config_text = write_repository(root, model_name, src, args, dtype)
    log(f"starting troupe serve ({dtype} requests{', control + worker node' if args.cluster == 'on' else ''})")
    try:
        if args.cluster == "on":
            srv = cluster_node(args, os.path.join(root, "models"), node_yaml, tmp, model_name)
        else:
            srv = node(args.troupe, os.path.join(root, "models"), node_yaml, os.path.join(tmp, "serve.log"),
                       args.start_timeout_s)
        srv.check_ready(model_name)
    except bench_error as e:
        if dtype != "uint8" or "input_normalization" not in str(e):
            raise
        notes.append("the node refused the input_normalization block (a build without it): uint8 "
                     "requests normalised by Cast/Sub/Mul written into the ONNX graph instead (uint8-graph)")
        log("input_normalization refused: falling back to uint8-graph")
        dtype = "uint8-graph"
        shutil.rmtree(root)
        model_file, config_text = write_repository(root, model_name, src, args, dtype)
        srv = node(args.troupe, os.path.join(root, "models"), node_yaml, os.path.join(tmp, "serve.log"),
                   args.start_timeout_s)
        srv.check_ready(model_name)
    log(f"serving on {srv.endpoint}")
    rng = np.random.default_rng(7)
    one = request_array(dtype, [1] + chw, rng)
    inputs = os.path.join(tmp, "request.npz")
    np.savez(inputs, **{input_name: one})

    sweep = []
    batch1 = None
    try:
        for c in [int(x) for x in args.concurrency.split(",") if x]:
            if time.time() - T0 > args.time_budget_s * 0.55:
                notes.append(f"sweep stopped before concurrency {c}: time budget")
                break
            p = bench_point(args, srv, model_name, inputs, c, min(c, args.connections), args.duration, tmp)
            sweep.append(p)
            log(f"concurrency {c:4d} x{p['connections']}: {p['throughput_rps']:9.0f} req/s  p50 {p['p50_ms']:7.2f}  "
                f"p99 {p['p99_ms']:7.2f} ms  rows/batch {p['batch_rows_mean']:6.1f}  errors {p['errors']}")
            log("  busiest threads: " + ", ".join(f"{t['process']}/{t['thread']} {t['cpu']:.2f}"
                                                  for t in p["threads_busiest"][:6]))
            if p["errors"] or p["lost"]:
                notes.append(f"concurrency {c}: {p['errors']} errors, {p['lost']} lost: {p.get('errors_by_code')}")
            if p["p99_ms"] > 3 * args.p99_limit_ms and len(sweep) >= 2 and \
                    p["throughput_rps"] <= 1.05 * max(q["throughput_rps"] for q in sweep[:-1]):
                break  # past saturation: more in flight only adds queueing
        log("batch 1: one request at a time")
        b1 = bench_point(args, srv, model_name, inputs, 1, 1, args.batch1_duration, tmp)
        batch1 = {"e2e_p50_ms": b1["p50_ms"], "e2e_p99_ms": b1["p99_ms"], "e2e_mean_ms": b1["mean_ms"],
                  "throughput_rps": b1["throughput_rps"], "server_compute_ms_mean": b1["server_compute_ms_mean"],
                  "server_queue_ms_mean": b1["server_queue_ms_mean"],
                  "server_total_ms_mean": b1["server_total_ms_mean"]}
        node_log = srv.log_tail(4000)
    finally:
        srv.stop()
    if any('"level":"error"' in line for line in node_log.splitlines()):
        notes.append("the node logged errors: " + node_log[-800:])

    within = [p for p in sweep if p["p99_ms"] <= args.p99_limit_ms and not p["errors"] and not p["lost"]]
    op_point = max(within, key=lambda p: p["throughput_rps"]) if within else None

    # 3. the executor alone, the node stopped (the GPU is the executor's alone)
    exec_flags = ["--backend", "cpu"] if args.cpu else ["--backend", "cuda", "--precision", args.precision]
    if args.cpu and args.compute_threads:
        exec_flags += ["--threads", str(args.compute_threads)]
    exec_model = model_file
    if dtype == "uint8":
        if has_normalize_flag:
            exec_flags += ["--normalize-input", f"dtype=uint8 mean={','.join(map(str, MEAN))} "
                                                f"std={','.join(map(str, STD))} input={input_name}"]
        else:
            write_repository(os.path.join(tmp, "exec_u8_repo"), model_name, src, args, "uint8-graph")
            exec_model = os.path.join(tmp, "exec_u8_repo", "models", model_name, "1", "model.onnx")
            notes.append("`troupe run` has no --normalize-input: the executor ran the uint8-graph model")
    if args.no_executor:
        notes.append("executor-alone timings skipped (--no-executor)")
        op = None
        if op_point:
            op = {k: op_point[k] for k in ("concurrency", "throughput_rps", "p99_ms", "batch_rows_mean")}
        return result_of(args, model_name, calibrated, dtype, one, chw, config_text, sweep, [], op, batch1, notes)
    batches = [1]
    if op_point:
        batches.append(max(1, int(round(op_point["batch_rows_mean"]))))
    executor_runs = []
    for b in dict.fromkeys(batches):
        for timing in ("end-to-end", "device"):
            e = executor(args, exec_model, exec_flags, input_name, chw, dtype, b, timing, tmp)
            executor_runs.append(e)
            log(f"executor batch {b:4d} {timing:10s}: {e['median_ms']:.3f} ms  {e['throughput_per_s']:9.0f} images/s")
    # Beside them, the batch sizes the node's buckets run at, while time is left.
    for b in [8, 32, 64, 128]:
        if b > args.max_batch or b in batches or time.time() - T0 > args.time_budget_s * 0.9:
            continue
        e = executor(args, exec_model, exec_flags, input_name, chw, dtype, b, "device", tmp)
        executor_runs.append(e)
        log(f"executor batch {b:4d} device    : {e['median_ms']:.3f} ms  {e['throughput_per_s']:9.0f} images/s")

    def exec_of(b, timing):
        return next(e for e in executor_runs if e["batch"] == b and e["timing"] == timing)

    op = None
    if op_point:
        b = batches[1]
        host, dev = exec_of(b, "end-to-end"), exec_of(b, "device")
        op = {"concurrency": op_point["concurrency"], "throughput_rps": op_point["throughput_rps"],
              "p99_ms": op_point["p99_ms"], "batch_rows_mean": op_point["batch_rows_mean"], "batch": b, "executor_host_per_s": host["throughput_per_s"],
              "executor_device_per_s": dev["throughput_per_s"],
              "ratio_host": op_point["throughput_rps"] / host["throughput_per_s"],
              "ratio_device": op_point["throughput_rps"] / dev["throughput_per_s"]}
    if batch1:
        batch1["executor_host_ms"] = exec_of(1, "end-to-end")["median_ms"]
        batch1["executor_device_ms"] = exec_of(1, "device")["median_ms"]
        batch1["overhead_us"] = 1000 * (batch1["e2e_p50_ms"] - batch1["executor_host_ms"])

    if not args.cpu:
        notes.append("the executor's host timing copies its inputs from pageable memory; the node stages "
                     "them into pinned memory: for large batches the executor's copy is the slower one")
        notes.append("a gpu_worker stages a batch (copies the requests' bytes into pinned memory, several "
                     "threads for large batches), then runs it: the GPU waits while the next batch is "
                     "staged (no overlap of one batch's staging with the previous batch's run yet)")
    return result_of(args, model_name, calibrated, dtype, one, chw, config_text, sweep, executor_runs, op, batch1,
                     notes)


def result_of(args, model_name, calibrated, dtype, one, chw, config_text, sweep, executor_runs, op, batch1, notes):
    return {
        "cpu_mode": args.cpu, "worker_processes": args.worker_processes, "cluster": args.cluster, "machine": machine(args.cpu),
        "model": {"name": model_name, "source": args.model_path, "precision": args.precision,
                  "weights_calibrated": calibrated},
        "requests": {"dtype": dtype, "shape": [1] + chw, "bytes": int(one.nbytes)},
        "config_yaml": config_text,
        "args": {k: getattr(args, k) for k in ("concurrency", "connections", "duration", "warmup", "batch1_duration",
                                               "max_batch", "preferred", "queue_delay_us", "instances",
                                               "actor_threads", "input_dtype", "link_connections",
                                               "batches_per_replica")},
        "targets": {"p99_ms": args.p99_limit_ms, "throughput_ratio": 0.90, "batch1_overhead_us": 150},
        "sweep": sweep, "executor": executor_runs, "operating_point": op, "batch1": batch1,
        "notes": notes, "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
    }


def on_sigterm(signum, frame):
    # `timeout` in scripts/gpu-host.sh: unwind, so that the node is stopped (it holds the GPU).
    raise bench_error("terminated (SIGTERM): over the time limit")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        main()
    except bench_error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
