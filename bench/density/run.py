#!/usr/bin/env python3
"""GPU density (issue 14's bench): how many ResNet-50 and BERT-base fp16 replicas fit on one GPU
with troupe vs PyTorch eager processes, memory per replica at batch 128 against PyTorch eager's
reserved memory, and throughput against torch.compile's, all measured fresh in one run.

In order, each process alone on the GPU (the bench process itself never creates a CUDA context:
device figures come from NVML through nvidia-smi):
  1. troupe, per model: `troupe run --backend cuda --precision fp16 --timing device --latency-json`
     at batch 128 in a fresh process: memory per replica from the executor's own accounting
     (device_reserved_bytes: weights + activation arena with the convolution workspace + kernel
     scratch + pool rounding) and throughput (128 / the plan's median time, inputs on the device).
     Where `troupe run` has a batch-slicing option (issue 14, item 2), ResNet-50 also with 4 slices.
  2. PyTorch, per model (bench/density/torch_child.py, a fresh process): eager fp16 under
     inference_mode, warm-up at batch 128, torch.cuda.max_memory_reserved(), the process's NVML
     footprint at that moment (context = footprint - memory_reserved), then torch.compile (Inductor,
     default mode) with compilation and timing capped at --compile-cap-s (a failure is recorded).
  3. troupe node series, per model: `troupe serve` in explicit mode loads --node-copies copies of
     the model (distinct names, each its own weights, one batch-128 plan) one by one; NVML after
     each load: slope = memory per replica as the driver sees it, intercept = the process's fixed
     cost. Replicas per GPU are computed from these and the GPU's free memory (labelled so).
  4. 20 models of ResNet-50 size from a budget that holds 5: only where the node accepts
     `worker_memory_budget_mb` in node.yaml (weight eviction); a node that refuses it is recorded
     as the reason the part was skipped. Otherwise: 20 copies loaded under the budget, cold-start
     (page-in) latency from `troupe infer` round-robin over the models (server-reported total),
     and throughput of `troupe bench` clients on all 20 models against the 5 resident ones.
Writes OUT/density.json (rows with the issue's keys, then details) and OUT/density.md (a draft
for bench/results/density.md), logs as OUT/density-*.log.

    python3 bench/density/run.py --troupe build-gpu/troupe --out $OUT        (the GPU host)
    python3 bench/density/run.py --dry-run --out /tmp/d                        (made-up figures)
    python3 bench/density/run.py --cpu-check --troupe build/troupe --out /tmp/d  (CPU backend, tiny
        stand-in models: a check of the plumbing, not a measurement)
"""

import argparse
import datetime
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "bench", "serving"))  # gpu_run: fill_into, node (imported where used)
import gpu_memory  # noqa: E402
import report  # noqa: E402

T0 = time.time()
SOURCES = {"resnet50": "resnet50.onnx", "bert_base": "bert_base.onnx"}
CPU_CHECK_TEXT = "minilm_l6.onnx"  # --cpu-check's stand-in for BERT-base: the same inputs, smaller
TORCH_CHILD = os.path.join(HERE, "torch_child.py")  # a test puts a stand-in here


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


class bench_error(Exception):
    pass


class terminated(BaseException):
    """SIGTERM (the `timeout` of scripts/gpu-host.sh): not an Exception, so that no part of the run
    records it as its own failure and goes on; it unwinds to main, which writes what was measured."""


def tail(text, n=1500):
    text = text or ""
    return text[-n:]


# ---- models and inputs -------------------------------------------------------------------------

def prepare_model(args, model, work):
    """A folder holding model.onnx with its weights filled; the stand-ins with --cpu-check."""
    import gpu_run  # bench/serving/gpu_run.py: numpy, onnx
    dst = os.path.join(work, "filled", model)
    if args.cpu_check and model == "resnet50":
        os.makedirs(dst, exist_ok=True)
        gpu_run.tiny_cnn(os.path.join(dst, "model.onnx"), 32)
        return dst
    src = os.path.join(REPO, "tests", "models", CPU_CHECK_TEXT if args.cpu_check else SOURCES[model])
    log(f"filling weights of {os.path.relpath(src, REPO)}")
    gpu_run.fill_into(src, dst)
    return dst


def graph_inputs(model_file):
    import onnx
    m = onnx.load(model_file, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    out = []
    for v in m.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        out.append((v.name, tt.elem_type, [d.dim_value if d.dim_value > 0 else -1 for d in tt.shape.dim]))
    return out


def write_inputs(model_file, batch, seq, path, uint8_images=False):
    """Random inputs at `batch` rows: an image model's float input N(0, 1) (uint8 pixels with
    uint8_images), a text model's token ids in [0, 30522) with an all-ones mask (what the PyTorch
    child feeds)."""
    import numpy as np
    import onnx
    rng = np.random.default_rng(batch)
    arrays = {}
    for name, elem, dims in graph_inputs(model_file):
        if elem == onnx.TensorProto.FLOAT and uint8_images:
            arrays[name] = rng.integers(0, 256, [batch] + dims[1:], dtype=np.uint8)
        elif elem == onnx.TensorProto.FLOAT:
            arrays[name] = rng.standard_normal([batch] + [d if d > 0 else seq for d in dims[1:]]).astype(np.float32)
        elif "mask" in name:
            arrays[name] = np.ones((batch, seq), np.int64)
        elif "type" in name:
            arrays[name] = np.zeros((batch, seq), np.int64)
        else:
            arrays[name] = rng.integers(0, 30522, (batch, seq)).astype(np.int64)
    np.savez(path, **arrays)
    return path


def is_text(model_file):
    return any(dims[1:] and min(dims[1:]) < 0 for _, _, dims in graph_inputs(model_file))


# ---- 1. troupe run -----------------------------------------------------------------------------

def troupe_run(args, model, model_dir, work, records, extra=(), tag=""):
    model_file = os.path.join(model_dir, "model.onnx")
    inputs = os.path.join(work, f"inputs_{model}_{args.batch}.npz")
    if not os.path.exists(inputs):
        write_inputs(model_file, args.batch, args.sequence, inputs)
    lat = os.path.join(work, f"lat_{model}{tag}.json")
    cmd = [args.troupe, "run", model_file, "--inputs", inputs, "--backend", args.backend,
           "--precision", args.precision, "--repeat", str(args.troupe_repeat), "--warmup", "5",
           "--timing", "device", "--latency-json", lat, "--tuning-records-file", records, *extra]
    base = gpu_memory.settled_baseline()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s = gpu_memory.sampler(p.pid, interval_s=0.5).start()
    try:
        out, err = p.communicate(timeout=args.troupe_timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        s.stop()
        return {"error": f"troupe run did not finish within {args.troupe_timeout_s} s", "command": " ".join(cmd)}
    s.stop()
    with open(os.path.join(args.out, f"density-troupe-run-{model}{tag}.log"), "w") as f:
        f.write(out + err)
    if p.returncode != 0 or not os.path.exists(lat):
        return {"error": f"troupe run exited {p.returncode}: {tail(err or out, 800)}", "command": " ".join(cmd)}
    with open(lat) as f:
        r = json.load(f)
    r["command"] = " ".join(cmd)
    for line in out.splitlines():
        for key in ("memory_mib:", "launch:", "tuning:"):
            if line.strip().startswith(key):
                r[key.rstrip(":") + "_line"] = line.strip()
    if base and s.peak_used_mib is not None:
        r["nvml_peak_mib"] = round(s.peak_used_mib - base["used_mib"], 1)
        if r.get("device_reserved_bytes"):
            # The process's peak above its pool: an upper bound on its fixed cost (the peak may hold
            # transient autotuning buffers too); the node series measures the fixed cost properly.
            r["nvml_overhead_mib"] = round(r["nvml_peak_mib"] - r["device_reserved_bytes"] / 2**20, 1)
    r["nvml_peak_pid_mib"] = s.peak_pid_mib
    r["nvml_samples"] = s.samples
    return r


def slicing_flag(args):
    """The option of `troupe run` that runs a batch as slices (issue 14, item 2), if this build has one."""
    if args.sliced_args != "auto":
        return args.sliced_args.split() if args.sliced_args else None
    h = subprocess.run([args.troupe, "run", "--help"], capture_output=True, text=True).stdout
    m = re.search(r"(--[a-z0-9][a-z0-9-]*slice[a-z0-9-]*)", h)
    # --slice-rows N: rows per slice; four slices of the batch (the figure the issue cites).
    return [m.group(1), str(max(args.batch // 4, 1))] if m else None


# ---- 2. PyTorch --------------------------------------------------------------------------------

class child_lines:
    """A child's stdout as JSON phases, read on a thread; `wait_for` returns the first of the
    given phases (every phase seen is kept in `seen`), None at EOF, raises TimeoutError."""

    def __init__(self, proc):
        self.q = queue.Queue()
        self.seen = {}
        self.other = []
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.q.put(line)
        stream.close()
        self.q.put(None)

    def wait_for(self, phases, timeout_s):
        deadline = time.time() + timeout_s
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                raise TimeoutError
            if line is None:
                return None
            try:
                msg = json.loads(line)
            except ValueError:
                self.other.append(line.rstrip())
                continue
            if not isinstance(msg, dict) or "phase" not in msg:
                continue
            self.seen[msg["phase"]] = msg
            if msg["phase"] in phases:
                return msg


def end_group(proc, grace_s):
    """Waits up to grace_s for the child to exit, then kills its process group (the child and
    whatever it started: Inductor's compile workers), which start_new_session made its own."""
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass


def run_torch(args, model):
    """Eager memory and time, then torch.compile's time, of one model in a fresh process."""
    r = {}
    log_path = os.path.join(args.out, f"density-torch-{model}.log")
    cmd = [sys.executable, TORCH_CHILD, "--model", model, "--batch", str(args.batch),
           "--seq", str(args.sequence), "--device", "cpu" if args.cpu_check else "cuda",
           "--measure-s", str(args.measure_s)]
    if args.no_compile:
        cmd.append("--no-compile")
    base = gpu_memory.settled_baseline()
    grace_s = 15
    with open(log_path, "w") as err:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                             start_new_session=True)
        lines = child_lines(p)
        phase = "model build and eager warm-up"
        try:
            ready = lines.wait_for({"eager_ready"}, args.torch_start_timeout_s)
            if ready is None:
                raise bench_error("exited")
            r.update({k: v for k, v in ready.items() if k != "phase"})
            r["torch"] = (lines.seen.get("start") or {}).get("torch")
            r["device_name"] = (lines.seen.get("start") or {}).get("device_name")
            now = gpu_memory.device()
            if base and now:
                r["nvml_footprint_mib"] = round(now["used_mib"] - base["used_mib"], 1)
            r["nvml_pid_mib"] = gpu_memory.processes().get(p.pid)
            p.stdin.write("go\n")
            p.stdin.flush()
            phase = "eager timing"
            eager = lines.wait_for({"eager"}, 120)
            if eager is None:
                raise bench_error("exited")
            r["eager_ms"], r["eager_iters"] = eager["eager_ms"], eager["iters"]
            if not args.no_compile:
                phase = "torch.compile"
                lines.wait_for({"compile_start"}, 30)
                try:
                    c = lines.wait_for({"compile", "compile_error"}, args.compile_cap_s)
                except TimeoutError:
                    compiled = lines.seen.get("compiled")
                    r["compile_error"] = (f"compilation and timing exceeded the cap of {args.compile_cap_s:.0f} s"
                                          + (f" (compiled in {compiled['compile_s']} s; the timing did not finish)"
                                             if compiled else " before compilation finished"))
                    grace_s = 0  # past the cap: killed at once
                    c = {}
                if c is None:
                    raise bench_error("exited")
                if c.get("phase") == "compile":
                    r["compile_ms"], r["compile_iters"] = c["compile_ms"], c["iters"]
                elif c.get("phase") == "compile_error":
                    r["compile_error"] = c["error"]
                if lines.seen.get("compiled"):
                    r["compile_s"] = lines.seen["compiled"]["compile_s"]
        except TimeoutError:
            r["error" if phase != "torch.compile" else "compile_error"] = f"timed out during {phase}"
            grace_s = 0
        except (bench_error, OSError):  # OSError: the pipe to a child that died
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            err.flush()
            with open(log_path) as f:
                msg = f"the PyTorch process exited ({p.poll()}) during {phase}: {tail(f.read(), 800)}"
            r["error" if phase != "torch.compile" else "compile_error"] = msg
        finally:
            try:
                p.stdin.close()
            except OSError:
                pass
            end_group(p, grace_s)
    return r


# ---- nodes -------------------------------------------------------------------------------------

def model_config(args, uint8_input=None):
    """One replica per model with one plan at --batch rows; `uint8_input`: that image input comes
    as uint8 pixels, normalised on the device (a quarter of the bytes on the wire)."""
    cfg = [f"max_batch_size: {args.batch}", f"batch_buckets: [{args.batch}]",
           f"instance_group: [{{count: 1, kind: {'KIND_CPU' if args.cpu_check else 'KIND_GPU'}}}]"]
    if not args.cpu_check:
        cfg.append(f"precision: {args.precision}")
    if uint8_input:
        import gpu_run
        cfg += ["input_normalization:", f"  input: {uint8_input}", "  dtype: uint8",
                f"  mean: [{', '.join(str(m) for m in gpu_run.MEAN)}]",
                f"  std: [{', '.join(str(s) for s in gpu_run.STD)}]"]
    return "\n".join(cfg) + "\n"


def write_copies(root, base_name, model_dir, count, config_text):
    """root/<base_name>_<i>/1 -> model_dir (a link: one file, each name loaded on its own)."""
    names = []
    for i in range(count):
        name = f"{base_name}_{i:02d}"
        os.makedirs(os.path.join(root, name), exist_ok=True)
        link = os.path.join(root, name, "1")
        if not os.path.lexists(link):
            os.symlink(model_dir, link)
        with open(os.path.join(root, name, "config.yaml"), "w") as f:
            f.write(config_text)
        names.append(name)
    return names


def start_node(args, root, work, tag, records, extra_yaml=""):
    import gpu_run
    node_yaml = os.path.join(work, f"node_{tag}.yaml")
    with open(node_yaml, "w") as f:
        f.write(f"gpus: {'none' if args.cpu_check else 'all'}\ncpu_workers: 1\nactor_threads: 2\n"
                f"warmup_runs: 1\nlog_level: info\n{extra_yaml}")
    mgmt = f"tcp://127.0.0.1:{gpu_run.free_port()}"
    extra = ["--grpc-port", "0", "--http-port", "0", "--model-control-mode", "explicit",
             "--management-listen", mgmt, "--tuning-records-file", records]
    srv = gpu_run.node(args.troupe, root, node_yaml, os.path.join(args.out, f"density-serve-{tag}.log"),
                       args.node_start_timeout_s, extra_args=extra)
    srv.mgmt = mgmt
    return srv


def load(args, srv, name):
    t0 = time.time()
    r = subprocess.run([args.troupe, "models", "load", name, "--server", srv.mgmt], capture_output=True, text=True,
                       timeout=args.load_timeout_s)
    return time.time() - t0, r


INFER_LINE = re.compile(r"served by \S+ version \d+, batch (\d+): queue (\d+) us, compute (\d+) us, total (\d+) us")


def infer(args, srv, name, inputs, wait_s=120):
    """One request through `troupe infer`: (ok, {"wall_ms", "batch", "queue_ms", "compute_ms",
    "total_ms"} or the error text)."""
    t0 = time.time()
    r = subprocess.run([args.troupe, "infer", name, "--inputs", inputs, "--server", srv.endpoint,
                        "--wait", str(wait_s)], capture_output=True, text=True, timeout=wait_s + 30)
    wall_ms = (time.time() - t0) * 1000
    m = INFER_LINE.search(r.stdout)
    if r.returncode != 0 or not m:
        return False, tail(r.stderr or r.stdout, 600)
    return True, {"wall_ms": round(wall_ms, 2), "batch": int(m.group(1)), "queue_ms": int(m.group(2)) / 1000,
                  "compute_ms": int(m.group(3)) / 1000, "total_ms": int(m.group(4)) / 1000}


def pool_mib(srv):
    """Sum of troupe_pool_bytes over the node's workers and devices (its own accounting), MiB."""
    try:
        text = srv.metrics()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith("troupe_pool_bytes{") or line.startswith("troupe_pool_bytes "):
            try:
                total = (total or 0) + float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return None if total is None else round(total / 2**20, 1)


def node_series(args, model, model_dir, work, records):
    """--node-copies copies of `model` loaded one by one into one explicit-mode node; NVML after each."""
    root = os.path.join(work, f"series_{model}")
    names = write_copies(root, model, model_dir, args.node_copies, model_config(args))
    text = is_text(os.path.join(model_dir, "model.onnx"))
    one = None
    if text:  # dynamic sequence: the plan compiles at the first request, one per copy
        one = write_inputs(os.path.join(model_dir, "model.onnx"), 1, args.sequence,
                           os.path.join(work, f"one_{model}.npz"))
    base = gpu_memory.settled_baseline()
    used = lambda: gpu_memory.above(base)  # noqa: E731
    series = {"copies": args.node_copies, "loads": [], "config_yaml": model_config(args)}
    try:
        srv = start_node(args, root, work, f"series-{model}", records)
    except Exception as e:  # noqa: BLE001 (gpu_run.bench_error and OS errors alike: recorded)
        series["error"] = f"node did not start: {tail(str(e), 800)}"
        return series
    try:
        series["idle_nvml_delta_mib"] = used()
        for name in names:
            seconds, r = load(args, srv, name)
            entry = {"name": name, "load_s": round(seconds, 2), "rc": r.returncode}
            if r.returncode != 0:
                series["error"] = f"load {name}: {tail(r.stderr or r.stdout, 600)}"
                break
            if one:
                ok, res = infer(args, srv, name, one, wait_s=300)
                if not ok:
                    series["error"] = f"first request to {name}: {res}"
                    break
                entry["first_request"] = res
            entry["nvml_delta_mib"] = used()
            entry["pool_mib"] = pool_mib(srv)
            series["loads"].append(entry)
            log(f"  {name}: loaded in {seconds:.1f} s; GPU +{entry['nvml_delta_mib']} MiB over the baseline, "
                f"pools {entry['pool_mib']} MiB")
    finally:
        srv.stop()
    return series


# ---- 4. many models under a memory budget ------------------------------------------------------

def refusal_reason(text):
    for line in text.splitlines():
        if "worker_memory_budget_mb" in line:
            return f"the node refused worker_memory_budget_mb: {line.strip()[:400]}"
    return f"the node did not start with worker_memory_budget_mb: {tail(text, 400)}"


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(math.ceil(q / 100 * len(xs))) - 1))
    return xs[k]


def bench_clients(args, srv, targets, concurrency, tag, work):
    """One `troupe bench` client per entry of `targets` (a model name each, repeats allowed), all
    at once, --rr-concurrency requests in flight each; aggregate images/s."""
    procs = []
    for i, name in enumerate(targets):
        out_json = os.path.join(work, f"bench_{tag}_{i:02d}.json")
        cmd = [args.troupe, "bench", name, "--server", srv.endpoint, "--concurrency", str(concurrency),
               "--connections", "1", "--rows", str(args.rr_rows), "--duration", str(args.rr_duration_s),
               "--warmup", "1", "--json", out_json, "--quiet"]
        procs.append((name, out_json, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                       text=True)))
    res = {"clients": len(targets), "models": len(set(targets)), "concurrency": concurrency, "rows": args.rr_rows,
           "duration_s": args.rr_duration_s, "per_client": [], "errors": 0, "failed": []}
    for name, out_json, p in procs:
        try:
            _, err = p.communicate(timeout=args.rr_duration_s + 180)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        if p.returncode != 0 or not os.path.exists(out_json):
            res["failed"].append(f"{name}: {tail(err, 300)}")
            continue
        with open(out_json) as f:
            j = json.load(f)
        res["per_client"].append({"model": name, "throughput_rps": j["throughput_rps"], "p50_ms": j["latency_ms"]["p50"],
                                  "p99_ms": j["latency_ms"]["p99"], "errors": j["errors"], "lost": j["lost"]})
        res["errors"] += j["errors"] + j["lost"]
    pc = res["per_client"]
    res["images_per_s"] = round(sum(c["throughput_rps"] for c in pc) * args.rr_rows, 1) if pc else None
    res["p50_ms"] = percentile([c["p50_ms"] for c in pc], 50)
    res["p99_ms"] = max([c["p99_ms"] for c in pc], default=None)
    return res


def budget_metrics(srv):
    """The node's own samples whose family speaks of eviction, paging, cold starts or budgets."""
    try:
        text = srv.metrics()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        name = line.split(" ")[0]
        if line.startswith("#") or "shape_cache" in name or not re.search(r"evict|page|cold|budget|resident|swap",
                                                                           name):
            continue
        try:
            found[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
        except (ValueError, IndexError):
            pass
    return dict(list(found.items())[:40])


def many_models(args, meas, model_dir, work, records):
    per_replica = None
    r50 = meas["models"].get("resnet50") or {}
    slope, _ = report.fit_node_series(r50.get("troupe_node") or {})
    if slope and slope > 0:
        per_replica, basis = slope, "NVML slope of the node series"
    elif (r50.get("troupe_run") or {}).get("device_reserved_bytes"):
        per_replica, basis = r50["troupe_run"]["device_reserved_bytes"] / 2**20, "executor accounting"
    if not per_replica:
        return {"supported": None, "reason": "no memory figure per ResNet-50 replica to size the budget"}
    budget_mb = int(math.ceil(per_replica * (args.budget_replicas + 0.5)))
    mm = {"supported": None, "models": args.many_models, "budget_replicas": args.budget_replicas,
          "per_replica_mib": round(per_replica, 1), "per_replica_basis": basis, "budget_mb": budget_mb}
    root = os.path.join(work, "many")
    image_input = graph_inputs(os.path.join(model_dir, "model.onnx"))[0][0]
    config_text = model_config(args, uint8_input=image_input)
    mm["config_yaml"] = config_text
    names = write_copies(root, "resnet50", model_dir, args.many_models, config_text)
    base = gpu_memory.settled_baseline()
    used = lambda: gpu_memory.above(base)  # noqa: E731
    try:
        srv = start_node(args, root, work, "many", records, extra_yaml=f"worker_memory_budget_mb: {budget_mb}\n")
    except Exception as e:  # noqa: BLE001
        mm["supported"] = False
        mm["reason"] = refusal_reason(str(e))
        return mm
    mm["supported"] = True
    try:
        loaded = []
        mm["loads"] = []
        for name in names:
            if time.time() - T0 > args.budget_s:
                mm["error"] = f"time budget: {len(loaded)} of {len(names)} loaded"
                break
            seconds, r = load(args, srv, name)
            entry = {"name": name, "load_s": round(seconds, 2), "rc": r.returncode, "nvml_delta_mib": used(),
                     "pool_mib": pool_mib(srv)}
            mm["loads"].append(entry)
            if r.returncode != 0:
                mm["error"] = f"load {name}: {tail(r.stderr or r.stdout, 500)}"
                break
            loaded.append(name)
        ok_loads = [l["load_s"] for l in mm["loads"] if l["rc"] == 0]
        mm["load_p50_s"] = percentile(ok_loads, 50)
        deltas = [l["nvml_delta_mib"] for l in mm["loads"] if l.get("nvml_delta_mib") is not None]
        if len(deltas) > args.budget_replicas:
            # Held to the budget: memory stops growing once it holds budget_replicas replicas.
            mm["budget_held"] = max(deltas) <= deltas[args.budget_replicas - 1] + per_replica
            if not mm["budget_held"]:
                meas["notes"].append(f"20 models: GPU memory grew to {max(deltas):.0f} MiB above the baseline, past "
                                     f"the budget of {budget_mb} MiB: the budget was accepted but not held")
        if len(loaded) <= args.budget_replicas:
            mm["error"] = (mm.get("error", "") + f"; only {len(loaded)} models loaded: no traffic").lstrip("; ")
            return mm
        if time_left(args) < 40:
            mm["error"] = (mm.get("error", "") + "; no traffic: time budget (--budget-s)").lstrip("; ")
            return mm
        one = write_inputs(os.path.join(model_dir, "model.onnx"), 1, args.sequence, os.path.join(work, "one_image.npz"),
                           uint8_images=True)
        # Warm: the model loaded last is resident; the same request five times.
        warm = [infer(args, srv, loaded[-1], one) for _ in range(5)]
        # Cold: round-robin over every model, one request at a time: with more models than the
        # budget holds, each request finds its model evicted (least recently used).
        cold = [infer(args, srv, name, one) for _ in range(args.cold_cycles) for name in loaded]
        for key, runs in (("warm", warm), ("cold", cold)):
            good = [x for ok, x in runs if ok]
            totals = [x["total_ms"] for x in good]
            mm[key] = {"n": len(good), "failed": [x for ok, x in runs if not ok][:5],
                       "p50_ms": percentile(totals, 50), "p99_ms": percentile(totals, 99),
                       "wall_p50_ms": percentile([x["wall_ms"] for x in good], 50),
                       "compute_p50_ms": percentile([x["compute_ms"] for x in good], 50),
                       "queue_p50_ms": percentile([x["queue_ms"] for x in good], 50)}
        if mm["cold"]["p50_ms"] is not None and mm["warm"]["p50_ms"] is not None:
            mm["page_in_p50_ms"] = round(mm["cold"]["p50_ms"] - mm["warm"]["p50_ms"], 2)
        log(f"  cold p50 {mm['cold']['p50_ms']} ms, warm p50 {mm['warm']['p50_ms']} ms")
        # The same clients and requests in flight twice: spread over the models the budget holds
        # (the round-robin's last ones, resident), then over every model (evictions and page-ins).
        resident = loaded[-args.budget_replicas:]
        mm["rr_resident"] = bench_clients(args, srv, [resident[i % len(resident)] for i in range(len(loaded))],
                                          args.rr_concurrency, "resident", work)
        log(f"  {len(resident)} resident models: {mm['rr_resident']['images_per_s']} images/s")
        mm["rr_all"] = bench_clients(args, srv, loaded, args.rr_concurrency, "all", work)
        log(f"  all {len(loaded)} models: {mm['rr_all']['images_per_s']} images/s")
        mm["metrics"] = budget_metrics(srv)
    except Exception as e:  # noqa: BLE001: a failure here is a result of the part, not of the run
        mm["error"] = f"{type(e).__name__}: {tail(str(e), 600)}"
    finally:
        srv.stop()
    return mm


# ---- the run -----------------------------------------------------------------------------------

def guarded(meas, what, fn, *a, **kw):
    """fn(*a, **kw), or {"error": ...} when it raises: one part's failure is recorded (with the
    traceback in the log) and the run goes on to the next part and writes its files."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        msg = f"{what}: {type(e).__name__}: {tail(str(e), 600)}"
        meas["notes"].append(f"failed: {msg}")
        log(f"failed: {msg}")
        return {"error": msg}


def time_left(args):
    return args.budget_s - (time.time() - T0)


def measure(args, meas):
    """The parts in order of importance, the troupe ones first (the PyTorch part's time is bounded
    by its caps; the optional parts watch --budget-s)."""
    work = tempfile.mkdtemp(prefix="troupe-density-")
    meas["work_dir"] = work
    records = os.path.join(work, "tuning-records")  # troupe run times the convolutions; nodes adopt them
    try:
        dirs = {m: prepare_model(args, m, work) for m in args.models}
        sliced = slicing_flag(args)
        for m in args.models:
            log(f"troupe run {m} batch {args.batch}")
            r = guarded(meas, f"troupe run {m}", troupe_run, args, m, dirs[m], work, records)
            meas["models"][m]["troupe_run"] = r
            log("  " + (r.get("error") or f"median {r['median_ms']:.3f} ms, "
                                          f"{report.mib(r.get('device_reserved_bytes'))} MiB reserved, "
                                          f"NVML peak +{r.get('nvml_peak_mib')} MiB"))
            if sliced and m == "resnet50":
                log(f"troupe run {m} batch {args.batch} with {' '.join(sliced)}")
                s = guarded(meas, f"troupe run {m} sliced", troupe_run, args, m, dirs[m], work, records,
                            extra=sliced, tag="-sliced")
                s["variant"] = f"troupe run {' '.join(sliced)}"
                meas["models"][m]["troupe_sliced"] = s
                log("  " + (s.get("error") or f"median {s['median_ms']:.3f} ms, "
                                              f"{report.mib(s.get('device_reserved_bytes'))} MiB reserved"))
        for m in args.models:
            if args.skip_node:
                meas["models"][m]["troupe_node"] = {"skipped": "--skip-node"}
                continue
            if time_left(args) < 60:
                meas["models"][m]["troupe_node"] = {"skipped": "time budget (--budget-s)"}
                continue
            log(f"troupe serve: {args.node_copies} copies of {m}, loaded one by one")
            meas["models"][m]["troupe_node"] = guarded(meas, f"node series {m}", node_series, args, m, dirs[m],
                                                       work, records)
            fit = report.fit_node_series(meas["models"][m]["troupe_node"])
            log(f"  per replica {fit[0]} MiB, fixed {fit[1]} MiB (NVML)")
        if args.skip_torch:
            meas["notes"].append("PyTorch not run (--skip-torch)")
        for m in [] if args.skip_torch else args.models:
            log(f"PyTorch {m} batch {args.batch} (eager, then torch.compile capped at {args.compile_cap_s:.0f} s)")
            t = guarded(meas, f"PyTorch {m}", run_torch, args, m)
            meas["models"][m]["torch"] = t
            meas["torch"] = meas.get("torch") or t.get("torch")
            log(f"  eager max reserved {t.get('max_reserved_mib')} MiB, NVML footprint {t.get('nvml_footprint_mib')} "
                f"MiB, eager {t.get('eager_ms')} ms, compiled {t.get('compile_ms')} ms after {t.get('compile_s')} s "
                f"{t.get('error') or t.get('compile_error') or ''}")
        if args.skip_many or "resnet50" not in args.models:
            meas["many_models"] = {"supported": None, "reason": "not run (--skip-many or no ResNet-50)"}
        else:
            log(f"{args.many_models} ResNet-50 models under a budget of {args.budget_replicas} replicas")
            meas["many_models"] = guarded(meas, "20 models", many_models, args, meas, dirs["resnet50"], work, records)
            log(f"  {meas['many_models'].get('reason') or meas['many_models'].get('error') or 'done'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def fake_measurements(args, meas):
    """--dry-run: made-up figures of the right shape (no GPU, troupe, torch, numpy or onnx)."""
    gb = 2**20
    meas["gpu"] = {"name": "DRY RUN", "total_mib": 81559.0, "used_baseline_mib": 0.0, "free_baseline_mib": 81003.0}
    meas["device"], meas["torch"] = "DRY RUN (no GPU)", "0.0"
    figures = {"resnet50": (384 * gb, 48.7 * gb, 318.5 * gb, 61.3 * gb, 4.1, 896.0, 5.9, 520.0, 396.0),
               "bert_base": (416 * gb, 231.0 * gb, 148.0 * gb, 0.0, 6.4, 670.0, 7.7, 500.0, 430.0)}
    for m in args.models:
        reserved, w, a, ws, ms, torch_mib, compile_ms, fixed, slope = figures[m]
        meas["models"][m] = {
            "troupe_run": {"device_reserved_bytes": reserved, "weights_bytes": w, "arena_bytes": a, "workspace_bytes": ws,
                           "kernel_owned_bytes": 0, "median_ms": ms, "compile_ms": 17000.0, "cuda_graph": True,
                           "nvml_peak_mib": reserved / gb + 700, "nvml_overhead_mib": 700.0},
            "torch": {"reserved_mib": torch_mib, "max_reserved_mib": torch_mib, "nvml_footprint_mib": torch_mib + 520,
                      "eager_ms": 9.8, "compile_ms": compile_ms, "compile_s": 55.0, "torch": "0.0"},
            "troupe_node": {"idle_nvml_delta_mib": fixed - 100,
                            "loads": [{"nvml_delta_mib": fixed + slope * (i + 1), "pool_mib": reserved / gb * (i + 1)}
                                      for i in range(args.node_copies)]}}
    meas["many_models"] = {"supported": False, "reason": "DRY RUN: the node refused worker_memory_budget_mb: "
                           "unknown key 'worker_memory_budget_mb'", "budget_mb": 2178}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--troupe", default=os.path.join(REPO, "build-gpu", "troupe"))
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/troupe-out"))
    ap.add_argument("--models", default="resnet50,bert_base")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sequence", type=int, default=128, help="BERT-base's sequence length")
    ap.add_argument("--measure-s", type=float, default=3.0, help="seconds of timed PyTorch calls per figure")
    ap.add_argument("--troupe-repeat", type=int, default=300, help="timed `troupe run` executions")
    ap.add_argument("--troupe-timeout-s", type=float, default=240)
    ap.add_argument("--compile-cap-s", type=float, default=150,
                    help="torch.compile: compilation plus timing past this is recorded as a failure")
    ap.add_argument("--torch-start-timeout-s", type=float, default=180)
    ap.add_argument("--no-compile", action="store_true", help="PyTorch eager only")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-node", action="store_true", help="no node series (replicas from the executor's figure)")
    ap.add_argument("--skip-many", action="store_true", help="no 20-model part")
    ap.add_argument("--node-copies", type=int, default=4, help="copies loaded in the node series")
    ap.add_argument("--node-start-timeout-s", type=float, default=120)
    ap.add_argument("--load-timeout-s", type=float, default=300)
    ap.add_argument("--sliced-args", default="auto",
                    help="`troupe run` arguments of a batch-sliced ResNet-50 variant; auto: an option named "
                         "*slice* in `troupe run --help`, with a quarter of --batch (four slices); empty: none")
    ap.add_argument("--many-models", type=int, default=20)
    ap.add_argument("--budget-replicas", type=int, default=5, help="replicas the memory budget holds")
    ap.add_argument("--rr-rows", type=int, default=None,
                    help="images per request in the many-models throughput (default --batch: one whole batch, "
                         "uint8 pixels, so that every request is the same work however the models share the load)")
    ap.add_argument("--rr-concurrency", type=int, default=1, help="requests in flight per model (all models)")
    ap.add_argument("--rr-duration-s", type=float, default=8)
    ap.add_argument("--cold-cycles", type=int, default=2, help="round-robin passes for the cold-start figures")
    ap.add_argument("--budget-s", type=float, default=330,
                    help="optional parts (node series, 20 models) are skipped or cut short past this")
    ap.add_argument("--cpu-check", action="store_true", help="CPU backend and stand-in models: a script check")
    ap.add_argument("--dry-run", action="store_true", help="made-up figures through the report: a script check")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    for m in args.models:
        if m not in SOURCES:
            ap.error(f"unknown model {m} (resnet50, bert_base)")
    args.rr_rows = args.rr_rows or args.batch
    args.backend = "cpu" if args.cpu_check else "cuda"
    args.precision = "fp32" if args.cpu_check else "fp16"
    os.makedirs(args.out, exist_ok=True)
    if not args.dry_run and not os.access(args.troupe, os.X_OK):
        sys.exit(f"no troupe binary at {args.troupe}")

    now = datetime.datetime.now(datetime.timezone.utc)
    meas = {"date": now.date().isoformat(), "measured_at": now.strftime("%Y-%m-%d %H:%M UTC"),
            "batch": args.batch, "sequence": args.sequence, "precision": args.precision,
            "models": {m: {} for m in args.models}, "notes": [], "dry_run": args.dry_run,
            "args": {k: v for k, v in vars(args).items() if k not in ("troupe", "out")}}
    meas["args"]["command"] = " ".join(["bench/density/run.py"] + sys.argv[1:])
    try:
        meas["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        meas["commit"] = None
    if args.dry_run:
        fake_measurements(args, meas)
    else:
        v = subprocess.run([args.troupe, "version"], capture_output=True, text=True)
        meas["troupe_version"] = (v.stdout.splitlines() or ["?"])[0].replace("troupe ", "")
        base = gpu_memory.settled_baseline()
        if base:
            meas["device"] = base["name"]
            meas["gpu"] = {"name": base["name"], "driver": base["driver"], "total_mib": base["total_mib"],
                           "used_baseline_mib": base["used_mib"], "free_baseline_mib": base["free_mib"],
                           "processes_at_start": {str(k): v for k, v in gpu_memory.processes().items()}}
            if meas["gpu"]["processes_at_start"]:
                meas["notes"].append(f"other processes held GPU memory at the start: {meas['gpu']['processes_at_start']} "
                                     "(MiB by pid): every NVML figure is a difference against a baseline read just "
                                     "before the process measured")
        else:
            meas["device"] = "CPU (--cpu-check)" if args.cpu_check else "? (nvidia-smi failed)"
            meas["gpu"] = {}
            if not args.cpu_check:
                meas["notes"].append("nvidia-smi gave no figures: no NVML-based memory or replica counts")
        try:
            measure(args, meas)
        except (Exception, terminated) as e:  # noqa: BLE001: what was measured is still written
            traceback.print_exc()
            meas["notes"].append(f"stopped early: {type(e).__name__}: {tail(str(e), 600)}")
            log(f"stopped early: {e}")
    meas["elapsed_s"] = round(time.time() - T0, 1)
    rep = report.report(meas)
    with open(os.path.join(args.out, "density.json"), "w") as f:
        json.dump(rep, f, indent=1)
    md = report.markdown(rep)
    with open(os.path.join(args.out, "density.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"wrote {os.path.join(args.out, 'density.json')} and density.md")
    return 0


def on_sigterm(signum, frame):
    # `timeout` in scripts/gpu-host.sh: unwind (nodes stopped, children killed), then write what was measured.
    raise terminated("SIGTERM: over the time limit")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)
    sys.exit(main())
