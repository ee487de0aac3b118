#!/usr/bin/env python3
"""One PyTorch replica in a process of its own, started by bench/density/run.py, so that its memory
figures are this model's alone. Speaks JSON lines on stdout, one per phase:

  {"phase": "start", "torch": ..., "device_name": ...}
  {"phase": "eager_ready", "reserved_mib", "max_reserved_mib", "max_allocated_mib", ...}
      after warm-up at the batch size; then waits for one line on stdin (the parent reads the
      process's footprint from NVML meanwhile; EOF also continues)
  {"phase": "eager", "eager_ms", "iters"}
  {"phase": "compile_start"}, {"phase": "compiled", "compile_s"}, {"phase": "compile", "compile_ms", "iters"}
      or {"phase": "compile_error", "error"}     (not with --no-compile)
  {"phase": "done"}

The parent caps each phase's time and kills the process group past it. Models as
bench/gpu_vs_torch/run.py builds them: torchvision ResNet-50 (channels_last) and transformers'
BertModel without the pooler (SDPA attention), random weights, in --dtype, under inference_mode.
--device cpu (float32) is only a check of this script where there is no GPU.

    torch_child.py --model resnet50 --batch 128 [--seq 128] [--device cuda] [--measure-s 3] [--no-compile]
"""
import argparse
import json
import sys
import time
import traceback


def emit(**fields):
    print(json.dumps(fields), flush=True)


def build(torch, model, batch, seq, dev, dtype):
    if model == "resnet50":
        import torchvision
        m = torchvision.models.resnet50(weights=None).eval().to(device=dev, dtype=dtype)
        m = m.to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, 224, 224, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
        return m, (x,)
    if model == "bert_base":
        import transformers as tf
        m = tf.BertModel(tf.BertConfig(), add_pooling_layer=False).eval().to(device=dev, dtype=dtype)
        ids = torch.randint(0, 30522, (batch, seq), device=dev)
        mask = torch.ones(batch, seq, dtype=torch.int64, device=dev)
        return m, (ids, mask)
    raise ValueError(f"unknown model {model}")


def timer(torch, cuda):
    """fn -> milliseconds of one call, synchronised (CUDA events on the GPU)."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def once(fn):
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return once

    def once_cpu(fn):
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000
    return once_cpu


def median_ms(once, fn, seconds):
    """Median of calls timed one by one for about `seconds` (at least 10, at most 2000 calls)."""
    probe = sorted(once(fn) for _ in range(3))[1]
    iters = int(min(2000, max(10, seconds * 1000 / max(probe, 1e-3))))
    times = sorted(once(fn) for _ in range(iters))
    return times[len(times) // 2], iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["resnet50", "bert_base"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--measure-s", type=float, default=3.0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()

    import torch
    cuda = a.device == "cuda"
    dev = torch.device(a.device)
    dtype = torch.float16 if cuda else torch.float32
    if cuda:
        torch.backends.cudnn.benchmark = True  # as bench/gpu_vs_torch: the fastest eager PyTorch
    emit(phase="start", torch=torch.__version__,
         device_name=torch.cuda.get_device_name(0) if cuda else "cpu")
    m, args = build(torch, a.model, a.batch, a.seq, dev, dtype)
    once = timer(torch, cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
        for _ in range(a.warmup):
            m(*args)
        sync()
        ready = {}
        if cuda:
            free, total = torch.cuda.mem_get_info()
            ready = {"reserved_mib": torch.cuda.memory_reserved() / 2**20,
                     "max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                     "max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                     "cuda_free_mib": free / 2**20, "cuda_total_mib": total / 2**20}
        emit(phase="eager_ready", **ready)
        sys.stdin.readline()  # the parent has read NVML (or closed stdin)
        eager_ms, iters = median_ms(once, lambda: m(*args), a.measure_s)
        emit(phase="eager", eager_ms=eager_ms, iters=iters)
        if not a.no_compile:
            emit(phase="compile_start")
            try:
                t0 = time.time()
                cm = torch.compile(m)
                cm(*args)  # compiles
                sync()
                emit(phase="compiled", compile_s=round(time.time() - t0, 1))
                for _ in range(3):
                    cm(*args)
                sync()
                compile_ms, iters = median_ms(once, lambda: cm(*args), a.measure_s)
                emit(phase="compile", compile_ms=compile_ms, iters=iters)
            except Exception as e:  # a compiler failure is a result to record, not a crash
                traceback.print_exc()
                emit(phase="compile_error", error=f"{type(e).__name__}: {str(e)[-1200:]}")
    emit(phase="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
