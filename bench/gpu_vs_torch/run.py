#!/usr/bin/env python3
"""troupe's executor vs PyTorch on the same GPU, in one invocation (GPU host).

For ResNet-50 and BERT-base (seq 128), fp16, at batch 1, 8, 32, 128, 256:
  - PyTorch eager (channels_last for the CNN), CUDA-graph replay of the same module, torch.compile
    (Inductor, default mode), each in a fresh process per (model, batch) so that
    torch.cuda.memory_reserved() after warm-up is that configuration's own;
  - troupe: `troupe run --backend cuda --precision fp16 --timing device` on the same architecture
    (weights filled deterministically), timing plan execution with inputs already on the device, and
    reporting the bytes its pool reserved for that one instance.
Writes OUT/gpu.json and OUT/gpu.md (and prints the table). Medians of --iters timed runs after warm-up.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = {"resnet50": "tests/models/resnet50.onnx", "bert_base": "tests/models/bert_base.onnx"}


def torch_child(model, batch, iters, modes):
    """Runs in a fresh process: measures the PyTorch modes for one (model, batch)."""
    import torch
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    if model == "resnet50":
        import torchvision
        m = torchvision.models.resnet50(weights=None).eval().half().to(dev).to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, 224, 224, device=dev, dtype=torch.half).to(memory_format=torch.channels_last)
        args = (x,)
    else:
        import transformers as tf
        m = tf.BertModel(tf.BertConfig(), add_pooling_layer=False).eval().half().to(dev)
        ids = torch.randint(0, 30522, (batch, 128), device=dev)
        mask = torch.ones(batch, 128, dtype=torch.int64, device=dev)
        args = (ids, mask)

    def timed(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(iters):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        times.sort()
        return times[len(times) // 2]

    out = {}
    with torch.inference_mode():
        for _ in range(5):
            m(*args)
        torch.cuda.synchronize()
        out["eager_ms"] = timed(lambda: m(*args))
        out["reserved_mib"] = torch.cuda.memory_reserved() / 2**20
        if "graph" in modes:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    m(*args)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                m(*args)
            for _ in range(3):
                g.replay()
            torch.cuda.synchronize()
            out["graph_ms"] = timed(g.replay)
            del g
        if "compile" in modes:
            cm = torch.compile(m)
            for _ in range(3):
                cm(*args)
            torch.cuda.synchronize()
            out["compile_ms"] = timed(lambda: cm(*args))
    print(json.dumps(out))


def run_torch(model, batch, iters, modes):
    cmd = [sys.executable, __file__, "--child", model, str(batch), str(iters), ",".join(modes)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        return {}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_troupe(troupe, model_path, model, batch, iters, work, profile_out=None):
    import numpy as np
    filled = os.path.join(work, os.path.basename(model_path))  # fill_weights writes into a folder
    if not os.path.exists(filled):
        subprocess.run([sys.executable, os.path.join(ROOT, "tests/models/fill_weights.py"), model_path, work],
                       check=True, capture_output=True)
    rng = np.random.default_rng(batch)
    inputs = os.path.join(work, f"{model}_{batch}.npz")
    if model == "resnet50":
        np.savez(inputs, input=rng.standard_normal((batch, 3, 224, 224)).astype(np.float32))
    else:
        np.savez(inputs, input_ids=rng.integers(0, 30522, (batch, 128)).astype(np.int64),
                 attention_mask=np.ones((batch, 128), np.int64))
    lat = os.path.join(work, f"lat_{model}_{batch}.json")
    cmd = [troupe, "run", filled, "--inputs", inputs, "--outputs", os.path.join(work, "out.npz"),
           "--backend", "cuda", "--precision", "fp16", "--repeat", str(iters), "--warmup", "5",
           "--timing", "device", "--latency-json", lat]
    if profile_out:
        cmd += ["--profile", "3"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.stderr.write(f"troupe failed on {model} batch {batch}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}\n")
        return {}
    if profile_out:
        with open(profile_out, "w") as f:
            f.write(p.stdout)
    return json.load(open(lat))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(","))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="resnet50,bert_base")
    ap.add_argument("--batches", default="1,8,32,128,256")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--modes", default="graph,compile")
    ap.add_argument("--profile", action="store_true",
                    help="troupe only: write its per-step profile to OUT/profile-MODEL-BATCH.txt")
    a = ap.parse_args()
    if a.profile:
        work = tempfile.mkdtemp(prefix="troupe_profile_")
        os.makedirs(a.out, exist_ok=True)
        for model in a.models.split(","):
            for batch in [int(b) for b in a.batches.split(",")]:
                out = os.path.join(a.out, f"profile-{model}-{batch}.txt")
                r = run_troupe(a.troupe, os.path.join(ROOT, MODELS[model]), model, batch, a.iters, work, out)
                print(model, batch, r.get("median_ms"), "ms", flush=True)
        return 0
    import torch
    device = torch.cuda.get_device_name(0)
    rows = []
    work = tempfile.mkdtemp(prefix="troupe_bench_")
    for model in a.models.split(","):
        for batch in [int(b) for b in a.batches.split(",")]:
            t = run_torch(model, batch, a.iters, a.modes.split(","))
            r = run_troupe(a.troupe, os.path.join(ROOT, MODELS[model]), model, batch, a.iters, work)
            per_s = lambda ms: round(batch * 1000.0 / ms, 1) if ms else None
            row = {"model": model, "precision": "fp16", "batch": batch,
                   "troupe_per_s": per_s(r.get("median_ms")), "torch_eager_per_s": per_s(t.get("eager_ms")),
                   "torch_graph_per_s": per_s(t.get("graph_ms")), "torch_compile_per_s": per_s(t.get("compile_ms")),
                   "troupe_ms": r.get("median_ms"), "torch_graph_ms": t.get("graph_ms"),
                   "torch_eager_ms": t.get("eager_ms"), "torch_compile_ms": t.get("compile_ms"),
                   "troupe_mem_mib": round(r["device_reserved_bytes"] / 2**20, 1) if r.get("device_reserved_bytes") else None,
                   # The instance's memory by kind (troupe run --latency-json), and whether a CUDA graph ran.
                   **{f"troupe_{k}_mib": round(r[f"{k}_bytes"] / 2**20, 1) for k in
                      ("weights", "arena", "workspace", "kernel_owned", "fragmentation", "peak_live")
                      if r.get(f"{k}_bytes") is not None},
                   "troupe_cuda_graph": r.get("cuda_graph"),
                   "torch_reserved_mib": round(t["reserved_mib"], 1) if t.get("reserved_mib") else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"device": device, "date": datetime.date.today().isoformat(), "torch": torch.__version__, "rows": rows}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gpu.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [f"# troupe vs PyTorch on {device}, {result['date']} (torch {torch.__version__})", "",
             "| model | batch | troupe /s | eager /s | CUDA graph /s | compile /s | best torch | troupe / best | troupe ms | graph ms | troupe MiB | torch eager reserved MiB | troupe weights / arena / workspace / kernel-owned MiB | troupe graph |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = max([v for v in (r["torch_eager_per_s"], r["torch_graph_per_s"], r["torch_compile_per_s"]) if v] or [0])
        ratio = f"{r['troupe_per_s'] / best:.2f}x" if r["troupe_per_s"] and best else "n/a"
        lines.append(f"| {r['model']} | {r['batch']} | {r['troupe_per_s']} | {r['torch_eager_per_s']} | {r['torch_graph_per_s']} | "
                     f"{r['torch_compile_per_s']} | {best} | {ratio} | {r['troupe_ms']} | {r['torch_graph_ms']} | "
                     f"{r['troupe_mem_mib']} | {r['torch_reserved_mib']} | "
                     f"{r.get('troupe_weights_mib')} / {r.get('troupe_arena_mib')} / {r.get('troupe_workspace_mib')} / "
                     f"{r.get('troupe_kernel_owned_mib')} | {r.get('troupe_cuda_graph')} |")
    with open(os.path.join(a.out, "gpu.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
