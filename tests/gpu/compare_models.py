#!/usr/bin/env python3
"""Whole models on the CUDA backend against the CPU backend (GPU host).

For each model: fill weights, make inputs, run `troupe run` on cpu (fp32) and on cuda in fp32,
fp16 and bf16, and print the relative L2 error of every output. Limits: fp32 1e-4, fp16 1e-2 (the
issue's per-op bounds, applied to whole models here), bf16 3e-2 (8 bits of mantissa against fp16's
11: every rounded activation costs about 8x more). Exit 1 when any comparison misses its limit.
"""
import os, subprocess, sys, tempfile
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "models"))


def main():
    troupe = sys.argv[1]
    models = sys.argv[2].split(",")
    work = tempfile.mkdtemp()
    failed = 0
    for name in models:
        subprocess.run([sys.executable, os.path.join(ROOT, "tests/models/fill_weights.py"),
                        os.path.join(ROOT, f"tests/models/{name}.onnx"), work], check=True, capture_output=True)
        model = os.path.join(work, f"{name}.onnx")
        rng = np.random.default_rng(1)
        if "bert" in name or name in ("distilbert", "roberta", "electra", "minilm_l6"):
            feeds = {"input_ids": rng.integers(0, 1000, (4, 128)).astype(np.int64),
                     "attention_mask": np.ones((4, 128), np.int64)}
        else:
            feeds = {"input": rng.standard_normal((4, 3, 224, 224)).astype(np.float32)}
        np.savez(os.path.join(work, "in.npz"), **feeds)
        outs = {}
        for tag, args in (("cpu", ["--backend", "cpu"]), ("cuda_fp32", ["--backend", "cuda"]),
                          ("cuda_fp16", ["--backend", "cuda", "--precision", "fp16"]),
                          ("cuda_bf16", ["--backend", "cuda", "--precision", "bf16"])):
            out = os.path.join(work, f"{tag}.npz")
            p = subprocess.run([troupe, "run", model, "--inputs", os.path.join(work, "in.npz"), "--outputs", out,
                                "--repeat", "3"] + args, capture_output=True, text=True)
            print(f"{name} {tag}: rc={p.returncode} {p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ''} {p.stderr.strip()[-400:]}")
            if p.returncode == 0:
                outs[tag] = np.load(out)
        if "cpu" not in outs:
            failed += 1
            continue
        for tag, limit in (("cuda_fp32", 1e-4), ("cuda_fp16", 1e-2), ("cuda_bf16", 3e-2)):
            if tag not in outs:
                failed += 1
                continue
            for k in outs["cpu"].files:
                ref, got = outs["cpu"][k].astype(np.float64), outs[tag][k].astype(np.float64)
                err = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)
                ok = np.isfinite(err) and err <= limit
                failed += 0 if ok else 1
                print(f"  {name} {tag} {k}: rel L2 {err:.3e} (limit {limit}) {'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
