#!/usr/bin/env python3
"""troupe's CPU backend vs ONNX Runtime on the same CPU threads.

For ResNet-50 and BERT-base (sequence 128), fp32, at batch 1 and 8, on the same inputs and the same
deterministic weights (tests/models/fill_weights.py):
  - ONNX Runtime: CPUExecutionProvider, ORT_ENABLE_ALL, intra_op_num_threads=T, inter_op 1,
    sequential execution; W warm-up runs, then N timed runs of session.run;
  - troupe: `troupe run --threads T --repeat N --warmup W --latency-json` (timing excludes loading,
    plan compilation and warm-up).
Medians are compared; speed-up = ORT ms / troupe ms (above 1: troupe is faster). Each row also
checks that the two agree (relative L2 error of the outputs). Prints the table and writes
OUT_DIR/cpu.md and OUT_DIR/cpu.json (default bench/results/).

    run.py [--troupe BIN] [--threads T] [--repeat N] [--warmup W] [--models resnet50,bert_base]
           [--batches 1,8] [--sequence 128] [--out-dir DIR]
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS_DIR = os.path.join(ROOT, "tests", "models")
sys.path.insert(0, MODELS_DIR)

import model_inputs  # noqa: E402
from fill_weights import fill_model  # noqa: E402

LABELS = {"resnet50": "ResNet-50", "bert_base": "BERT-base"}


def find_troupe(arg):
    if arg:
        return arg
    if os.environ.get("TROUPE_BIN"):
        return os.environ["TROUPE_BIN"]
    found = [p for p in glob.glob(os.path.join(ROOT, "build*", "troupe")) if os.access(p, os.X_OK)]
    if not found:
        sys.exit("error: no troupe binary: build the `troupe` target, or pass --troupe / set TROUPE_BIN")
    return max(found, key=os.path.getmtime)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def troupe_version(binary):
    try:
        p = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
        return (p.stdout.strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    n = float(np.linalg.norm(b))
    d = float(np.linalg.norm(a - b))
    return d / n if n > 0 else d


def bench_ort(model_path, feeds, threads, repeat, warmup):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for _ in range(warmup):
        sess.run(names, feeds)
    times_ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        outs = sess.run(names, feeds)
        times_ms.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times_ms)), dict(zip(names, outs))


def bench_troupe(binary, model_path, feeds, threads, repeat, warmup, tmp):
    in_path, out_path, lat_path = (os.path.join(tmp, n) for n in ("in.npz", "out.npz", "latency.json"))
    np.savez(in_path, **feeds)
    cmd = [binary, "run", model_path, "--inputs", in_path, "--outputs", out_path, "--backend", "cpu",
           "--threads", str(threads), "--repeat", str(repeat), "--warmup", str(warmup),
           "--latency-json", lat_path]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        why = f"signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
        tail = (p.stdout + p.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"troupe {why}: {' | '.join(tail)}")
    with open(lat_path) as f:
        latency = json.load(f)
    with np.load(out_path) as z:
        outs = {k: z[k] for k in z.files}
    return latency, outs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--troupe", help="the troupe binary (default: $TROUPE_BIN, else the newest build*/troupe)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=20, help="timed runs (at least 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--models", default="resnet50,bert_base")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--sequence", type=int, default=128, help="sequence length of text models")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    if a.repeat < 20:
        ap.error("--repeat must be at least 20: medians of fewer runs are noise")
    binary = find_troupe(a.troupe)
    with open(os.path.join(MODELS_DIR, "manifest.json")) as f:
        manifest = json.load(f)

    import onnx
    import onnxruntime
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="troupe-bench-") as tmp:
        for name in a.models.split(","):
            src = os.path.join(MODELS_DIR, f"{name}.onnx")
            if name not in manifest or not os.path.exists(src):
                print(f"{name}: not in tests/models (manifest.json and {name}.onnx needed), skipped", flush=True)
                failed = True
                continue
            entry = manifest[name]
            model_path = fill_model(src, os.path.join(tmp, name), calibration_entry=entry)
            for batch in (int(b) for b in a.batches.split(",")):
                feeds = model_inputs.make_inputs(entry, batch, a.sequence, np.random.default_rng(0))
                row = {"model": name, "batch": batch, "threads": a.threads, "repeat": a.repeat,
                       "warmup": a.warmup}
                if entry.get("kind") == "text":
                    row["sequence"] = a.sequence
                try:
                    latency, t_outs = bench_troupe(binary, model_path, feeds, a.threads, a.repeat, a.warmup, tmp)
                    row.update(troupe_ms=latency["median_ms"], troupe_min_ms=latency.get("min_ms"),
                               troupe_compile_ms=latency.get("compile_ms"))
                except RuntimeError as e:
                    row["troupe_error"] = str(e)
                    t_outs = None
                    failed = True
                ort_ms, o_outs = bench_ort(model_path, feeds, a.threads, a.repeat, a.warmup)
                row["ort_ms"] = ort_ms
                if t_outs is not None:
                    row["speedup"] = ort_ms / row["troupe_ms"]
                    row["rel_l2"] = max(rel_l2(t_outs.get(k), v) for k, v in o_outs.items())
                rows.append(row)
                print(format_row(row), flush=True)

    info = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": a.threads,
        "troupe": troupe_version(binary),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "cpu.json"), "w") as f:
        json.dump({"machine": info, "results": rows}, f, indent=1)
    md = markdown(info, rows, a)
    with open(os.path.join(a.out_dir, "cpu.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    return 1 if failed else 0


def format_row(r):
    t = f"{r['troupe_ms']:9.2f}" if "troupe_ms" in r else "   failed"
    s = f"{r['speedup']:6.2f}x" if "speedup" in r else "      -"
    e = f"{r['rel_l2']:.1e}" if "rel_l2" in r else r.get("troupe_error", "")
    return f"{LABELS.get(r['model'], r['model']):<10} {r['batch']:>5} {t} {r['ort_ms']:9.2f} {s}  {e}"


def markdown(info, rows, a):
    lines = [
        "# troupe vs ONNX Runtime on the CPU",
        "",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs; {info['os']}; {info['date']}.",
        f"Versions: {info['troupe']}; onnxruntime {info['onnxruntime']}; onnx {info['onnx']}; "
        f"numpy {info['numpy']}; Python {info['python']}.",
        "",
        f"fp32, {a.threads} threads for both (ORT: intra-op {a.threads}, inter-op 1, sequential, "
        f"ORT_ENABLE_ALL); median of {a.repeat} timed runs after {a.warmup} warm-up runs; same inputs "
        f"and weights (tests/models/fill_weights.py). Text models at sequence {a.sequence}. "
        "Speed-up = ORT ms / troupe ms (above 1: troupe is faster). rel. L2 = largest relative L2 "
        "error between the two engines' outputs.",
        "",
        "| model | batch | troupe ms | ORT ms | speed-up | rel. L2 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        t = f"{r['troupe_ms']:.2f}" if "troupe_ms" in r else "failed"
        s = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        e = f"{r['rel_l2']:.1e}" if "rel_l2" in r else r.get("troupe_error", "")
        lines.append(f"| {LABELS.get(r['model'], r['model'])} | {r['batch']} | {t} | {r['ort_ms']:.2f} | {s} | {e} |")
    lines += ["", "Reproduce: `cmake --build build --target bench_cpu` (or `python3 bench/cpu_vs_ort/run.py`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
