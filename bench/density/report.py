"""The density bench's figures -> density.json rows and the density.md draft (pure functions, the
standard library only: bench/density/test_report.py checks them without a GPU or torch).

`measurements` is what bench/density/run.py gathered (run.py's docstring says how); every figure
may be missing (None, or the part absent with an "error"/"skipped" reason), and a row then says
null rather than a made-up number.
"""

import math

ROW_KEYS = ("model", "batch", "troupe_mem_mib", "torch_reserved_mib", "troupe_per_s", "torch_compile_per_s",
            "device", "date")
MEM_TARGET_RATIO = 1 / 3.8      # troupe's memory per replica / PyTorch eager's reserved, at most
THROUGHPUT_TARGET_RATIO = 1.1  # troupe's throughput / torch.compile's, at least
LABELS = {"resnet50": "ResNet-50", "bert_base": "BERT-base"}


def mib(nbytes):
    return None if nbytes is None else round(nbytes / 2**20, 1)


def per_s(batch, ms):
    return round(batch * 1000.0 / ms, 1) if ms else None


def ratio(a, b):
    return a / b if a is not None and b else None


def linear_fit(points):
    """Least squares (slope, intercept) of [(x, y)]; None with fewer than two distinct x."""
    pts = [(x, y) for x, y in points if y is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return slope, my - slope * mx


def fit_node_series(series):
    """A node's NVML figures after 1..k loads of copies of one model (MiB above the baseline with
    none of our processes on the GPU): per replica = the slope, fixed cost of the process (CUDA
    context, library handles, what the first load adds once) = the intercept."""
    loads = series.get("loads") or []
    fit = linear_fit([(i + 1, l.get("nvml_delta_mib")) for i, l in enumerate(loads)])
    if not fit:
        return None, None
    return round(fit[0], 1), round(fit[1], 1)


def replicas_that_fit(capacity_mib, fixed_mib, per_replica_mib):
    if capacity_mib is None or fixed_mib is None or not per_replica_mib or per_replica_mib <= 0:
        return None
    return max(0, int(math.floor((capacity_mib - fixed_mib) / per_replica_mib)))


def verdict(value, target, at_most):
    if value is None:
        return "not measured"
    ok = value <= target if at_most else value >= target
    return "met" if ok else "NOT met"


def model_row(name, m, meas):
    """One density.json row (the issue's keys first, then the details)."""
    batch = meas["batch"]
    tr = m.get("troupe_run") or {}
    tc = m.get("torch") or {}
    node = m.get("troupe_node") or {}
    gpu = meas.get("gpu") or {}
    troupe_mem = mib(tr.get("device_reserved_bytes"))
    troupe_ps = per_s(batch, tr.get("median_ms"))
    torch_reserved = tc.get("max_reserved_mib")
    compile_ps = per_s(batch, tc.get("compile_ms"))
    row = {"model": name, "batch": batch, "troupe_mem_mib": troupe_mem,
           "torch_reserved_mib": round(torch_reserved, 1) if torch_reserved is not None else None,
           "troupe_per_s": troupe_ps, "torch_compile_per_s": compile_ps,
           "device": meas.get("device"), "date": meas.get("date")}
    slope, fixed = fit_node_series(node)
    capacity = gpu.get("free_baseline_mib")
    # troupe: one node per GPU holds every replica; each replica (a distinct model name, its own
    # weights) costs what the driver saw per load; the process's fixed cost is paid once.
    per_replica = slope if slope and slope > 0 else None
    replicas_basis = "NVML slope over the node's loads"
    if per_replica is None and troupe_mem:
        per_replica = troupe_mem
        replicas_basis = "executor accounting (no NVML series)"
        fixed = tr.get("nvml_overhead_mib")
    footprint = tc.get("nvml_footprint_mib")
    context = footprint - tc["reserved_mib"] if footprint is not None and tc.get("reserved_mib") is not None else None
    row.update({
        "precision": meas.get("precision", "fp16"),
        "sequence": meas.get("sequence") if name == "bert_base" else None,
        "troupe_mem_source": "executor accounting: troupe run --latency-json device_reserved_bytes "
                             "(own pool + the weights' pool of one instance)",
        "troupe_weights_mib": mib(tr.get("weights_bytes")), "troupe_arena_mib": mib(tr.get("arena_bytes")),
        "troupe_workspace_mib": mib(tr.get("workspace_bytes")),
        "troupe_kernel_owned_mib": mib(tr.get("kernel_owned_bytes")),
        "troupe_ms": tr.get("median_ms"), "troupe_cuda_graph": tr.get("cuda_graph"),
        "troupe_compile_s": round(tr["compile_ms"] / 1000, 1) if tr.get("compile_ms") else None,
        "troupe_run_nvml_peak_mib": tr.get("nvml_peak_mib"),
        "troupe_nvml_per_replica_mib": slope, "troupe_node_fixed_mib": fixed,
        "troupe_node_idle_mib": node.get("idle_nvml_delta_mib"),
        "torch_memory_reserved_mib": tc.get("reserved_mib"), "torch_max_allocated_mib": tc.get("max_allocated_mib"),
        "torch_process_nvml_mib": footprint, "torch_context_mib": round(context, 1) if context is not None else None,
        "torch_eager_per_s": per_s(batch, tc.get("eager_ms")), "torch_compile_s": tc.get("compile_s"),
        "torch_compile_error": tc.get("compile_error"), "torch_error": tc.get("error"),
        "troupe_error": tr.get("error"), "torch_version": meas.get("torch"),
        "mem_ratio": round(ratio(troupe_mem, torch_reserved), 4) if ratio(troupe_mem, torch_reserved) else None,
        "mem_target_ratio": round(MEM_TARGET_RATIO, 4),
        "throughput_ratio": round(ratio(troupe_ps, compile_ps), 3) if ratio(troupe_ps, compile_ps) else None,
        "throughput_target_ratio": THROUGHPUT_TARGET_RATIO,
        "gpu_capacity_mib": capacity,
        "troupe_replicas_per_gpu": replicas_that_fit(capacity, fixed, per_replica),
        "troupe_replicas_basis": replicas_basis if per_replica else None,
        "torch_eager_processes_per_gpu": replicas_that_fit(capacity, 0, footprint),
        "torch_eager_replicas_one_process": replicas_that_fit(capacity, context, torch_reserved),
        "replicas_ratio": None,
        "replicas_note": "computed from measurements: floor((free memory with none of our processes - fixed "
                         "cost of one process) / memory per replica); not loaded until allocation failed",
    })
    if row["troupe_replicas_per_gpu"] is not None and row["torch_eager_processes_per_gpu"]:
        row["replicas_ratio"] = round(row["troupe_replicas_per_gpu"] / row["torch_eager_processes_per_gpu"], 2)
    row["mem_target"] = verdict(row["mem_ratio"], MEM_TARGET_RATIO, at_most=True)
    row["throughput_target"] = verdict(row["throughput_ratio"], THROUGHPUT_TARGET_RATIO, at_most=False)
    return row


def sliced_row(name, m, meas, base):
    """The same model with troupe run's batch slicing forced, where the build has it."""
    s = m.get("troupe_sliced")
    if not s:
        return None
    batch = meas["batch"]
    row = dict(base)
    row.update({"variant": s.get("variant"), "troupe_mem_mib": mib(s.get("device_reserved_bytes")),
                "troupe_per_s": per_s(batch, s.get("median_ms")), "troupe_ms": s.get("median_ms"),
                "troupe_weights_mib": mib(s.get("weights_bytes")), "troupe_arena_mib": mib(s.get("arena_bytes")),
                "troupe_workspace_mib": mib(s.get("workspace_bytes")),
                "troupe_kernel_owned_mib": mib(s.get("kernel_owned_bytes")),
                "troupe_cuda_graph": s.get("cuda_graph"), "troupe_error": s.get("error"),
                "troupe_run_nvml_peak_mib": s.get("nvml_peak_mib"),
                "troupe_nvml_per_replica_mib": None, "troupe_node_fixed_mib": None, "troupe_node_idle_mib": None})
    mr = ratio(row["troupe_mem_mib"], row["torch_reserved_mib"])
    tr = ratio(row["troupe_per_s"], row["torch_compile_per_s"])
    row["mem_ratio"] = round(mr, 4) if mr else None
    row["throughput_ratio"] = round(tr, 3) if tr else None
    row["mem_target"] = verdict(row["mem_ratio"], MEM_TARGET_RATIO, at_most=True)
    row["throughput_target"] = verdict(row["throughput_ratio"], THROUGHPUT_TARGET_RATIO, at_most=False)
    # No node series of the sliced variant: the whole-batch series' NVML slope less what slicing
    # saved in the executor's accounting (or that accounting alone without a series).
    per, basis = row["troupe_mem_mib"], "executor accounting of the sliced run"
    if per and base.get("troupe_nvml_per_replica_mib") and base.get("troupe_mem_mib"):
        per = base["troupe_nvml_per_replica_mib"] - (base["troupe_mem_mib"] - per)
        basis = "the whole batch's NVML slope less the executor's saving from slicing"
    row["troupe_replicas_per_gpu"] = replicas_that_fit(base.get("gpu_capacity_mib"), base.get("troupe_node_fixed_mib"), per)
    row["troupe_replicas_basis"] = basis if row["troupe_replicas_per_gpu"] is not None else None
    row["replicas_ratio"] = None
    if row["troupe_replicas_per_gpu"] is not None and row.get("torch_eager_processes_per_gpu"):
        row["replicas_ratio"] = round(row["troupe_replicas_per_gpu"] / row["torch_eager_processes_per_gpu"], 2)
    return row


def rows(meas):
    out = []
    for name, m in meas.get("models", {}).items():
        r = model_row(name, m, meas)
        r["variant"] = "whole batch"
        out.append(r)
        s = sliced_row(name, m, meas, r)
        if s:
            out.append(s)
    return out


def report(meas):
    """The whole density.json."""
    return {"rows": rows(meas), "device": meas.get("device"), "date": meas.get("date"),
            "measured_at": meas.get("measured_at"), "torch": meas.get("torch"), "gpu": meas.get("gpu"),
            "targets": {"mem_ratio_at_most": round(MEM_TARGET_RATIO, 4),
                        "throughput_ratio_at_least": THROUGHPUT_TARGET_RATIO},
            "many_models": meas.get("many_models"), "details": meas.get("models"),
            "args": meas.get("args"), "troupe_version": meas.get("troupe_version"),
            "commit": meas.get("commit"), "notes": meas.get("notes", []), "dry_run": meas.get("dry_run", False),
            "elapsed_s": meas.get("elapsed_s")}


# ---- markdown ----------------------------------------------------------------------------------

def fmt(x, spec=",.0f", none="-"):
    if x is None:
        return none
    return format(x, spec)


def pct_ratio(x):
    return "-" if x is None else f"1/{1 / x:.2f}" if x > 0 else "-"


def markdown(rep):
    rs = rep["rows"]
    meas_args = rep.get("args") or {}
    gpu = rep.get("gpu") or {}
    seq = meas_args.get("sequence", 128)
    b = meas_args.get("batch", 128)
    title = f"# Density on one GPU: troupe vs PyTorch, fp16 batch {b}"
    if rep.get("dry_run"):
        title += " (DRY RUN: made-up figures, a check of the script)"
    elif meas_args.get("cpu_check"):
        title += " (CPU CHECK: stand-in models on the CPU backend, a check of the script, not a measurement)"
    lines = [title, "",
             f"{rep.get('device') or '?'}, {rep.get('measured_at') or rep.get('date')}; torch "
             f"{rep.get('torch') or '?'}; troupe {rep.get('troupe_version') or '?'}"
             f"{' at ' + rep['commit'][:10] if rep.get('commit') else ''}. Everything below was measured in one "
             f"run of `{meas_args.get('command', 'bench/density/run.py')}`"
             f"{' (' + fmt(rep.get('elapsed_s')) + ' s)' if rep.get('elapsed_s') else ''}: each figure fresh, "
             "each PyTorch and troupe process started alone on an otherwise idle GPU.", "",
             f"## Memory per replica and throughput at batch {b}", "",
             "| model | troupe MiB (weights / arena / workspace) | PyTorch eager reserved MiB | troupe / eager | "
             "target <= 1/3.8 | troupe /s | torch.compile /s | troupe / compile | target >= 1.1x |",
             "|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rs:
        label = LABELS.get(r["model"], r["model"]) + (f" seq {r['sequence']}" if r.get("sequence") else "")
        if r.get("variant") not in (None, "whole batch"):
            label += f" ({r['variant']})"
        breakdown = (f" ({fmt(r.get('troupe_weights_mib'), '.1f')} / {fmt(r.get('troupe_arena_mib'), '.1f')} / "
                     f"{fmt(r.get('troupe_workspace_mib'), '.1f')})") if r.get("troupe_mem_mib") else ""
        lines.append(f"| {label} | {fmt(r['troupe_mem_mib'], ',.1f')}{breakdown} | {fmt(r['torch_reserved_mib'], ',.1f')} | "
                     f"{pct_ratio(r['mem_ratio'])} | {r['mem_target']} | {fmt(r['troupe_per_s'])} | "
                     f"{fmt(r['torch_compile_per_s'])} | {fmt(r['throughput_ratio'], '.2f')}{'x' if r['throughput_ratio'] else ''} | "
                     f"{r['throughput_target']} |")
    lines += ["", "## Replicas that fit on one GPU (computed from the measurements above)", "",
              f"Free memory with none of our processes on the GPU (NVML): {fmt(gpu.get('free_baseline_mib'), ',.0f')} MiB "
              f"of {fmt(gpu.get('total_mib'), ',.0f')} MiB.", "",
              "| model | troupe per replica, NVML MiB (executor) | troupe node fixed MiB | **troupe replicas** | "
              "PyTorch eager process, NVML MiB (of which context) | **PyTorch eager processes** | "
              "troupe / PyTorch processes | PyTorch eager, all in one process |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rs:
        label = LABELS.get(r["model"], r["model"])
        if r.get("variant") not in (None, "whole batch"):
            label += f" ({r['variant']}; {r.get('troupe_replicas_basis') or 'no figure'})"
        lines.append(f"| {label} | {fmt(r.get('troupe_nvml_per_replica_mib'), ',.1f')} ({fmt(r['troupe_mem_mib'], ',.1f')}) | "
                     f"{fmt(r.get('troupe_node_fixed_mib'), ',.0f')} | {fmt(r.get('troupe_replicas_per_gpu'))} | "
                     f"{fmt(r.get('torch_process_nvml_mib'), ',.0f')} ({fmt(r.get('torch_context_mib'), ',.0f')}) | "
                     f"{fmt(r.get('torch_eager_processes_per_gpu'))} | "
                     f"{fmt(r.get('replicas_ratio'), '.2f')}{'x' if r.get('replicas_ratio') else ''} | "
                     f"{fmt(r.get('torch_eager_replicas_one_process'))} |")
    lines += ["", "Computed, not loaded until allocation failed: troupe = floor((free - the node's fixed cost) / "
              "per replica), one node per GPU holding every replica, each replica a model of its own (its own "
              f"weights, one batch-{b} plan); PyTorch = floor(free / one eager process's footprint), one process "
              "per replica as PyTorch serving usually runs; the last column, PyTorch with every replica in one "
              "process (floor((free - one context) / max_memory_reserved)), bounds what PyTorch could do "
              "without processes of its own."]
    for r in rs:
        if r.get("variant") not in (None, "whole batch"):
            continue
        node = (rep.get("details") or {}).get(r["model"], {}).get("troupe_node") or {}
        if node.get("loads"):
            pts = ", ".join(f"{fmt(l.get('nvml_delta_mib'), ',.0f')}" for l in node["loads"])
            lines.append(f"- {LABELS.get(r['model'], r['model'])}: the node's GPU memory above the baseline (NVML, "
                         f"MiB) with nothing loaded {fmt(node.get('idle_nvml_delta_mib'), ',.0f')}, after 1..{len(node['loads'])} "
                         f"copies: {pts}; troupe_pool_bytes (the node's own accounting, published at each load: a plan "
                         "compiled at a first request shows from the next load on) "
                         + ", ".join(fmt(l.get('pool_mib'), ',.0f') for l in node["loads"]) + " MiB.")
        elif node.get("error") or node.get("skipped"):
            lines.append(f"- {LABELS.get(r['model'], r['model'])}: no node series ({node.get('error') or node.get('skipped')}).")

    lines += ["", "## Against the targets", "", "| target | measured | |", "|---|---|---|"]
    for r in rs:
        label = LABELS.get(r["model"], r["model"]) + (f" ({r['variant']})" if r.get("variant") not in (None, "whole batch") else "")
        lines.append(f"| {label} b{r['batch']} memory <= 1/3.8 of eager's reserved | "
                     f"{fmt(r['troupe_mem_mib'], ',.1f')} vs {fmt(r['torch_reserved_mib'], ',.1f')} MiB "
                     f"({pct_ratio(r['mem_ratio'])}) | {r['mem_target']} |")
        lines.append(f"| {label} b{r['batch']} throughput >= 1.1x torch.compile | "
                     f"{fmt(r['troupe_per_s'])} vs {fmt(r['torch_compile_per_s'])} /s "
                     f"({fmt(r['throughput_ratio'], '.2f')}x) | {r['throughput_target']} |")
    mm = rep.get("many_models") or {}
    lines += ["", "## 20 models of ResNet-50 size from a budget that holds 5", ""]
    lines += many_models_markdown(mm)
    lines += ["", "## How it was measured", "",
              f"- Models: torchvision ResNet-50 and transformers BertModel (BERT-base, no pooler, sequence {seq}) "
              "built from their configs without pretrained weights, fp16. troupe runs the ONNX exports committed "
              "in tests/models (tests/models/export_models.py) with weights filled by tests/models/fill_weights.py; "
              "PyTorch runs the same architectures (channels_last for ResNet-50, SDPA attention for BERT).",
              "- troupe memory per replica (`troupe_mem_mib`): the executor's own accounting, `troupe run --backend "
              "cuda --precision fp16 --timing device --latency-json` in a fresh process: device_reserved_bytes = the "
              "instance's own pool (activation arena with the shared convolution workspace, kernel-owned scratch, "
              "pool rounding) + the weights' pool. Cross-checked with NVML: a `troupe serve` node in explicit "
              "mode loads copies of the model one by one (distinct names, each its own weights, `batch_buckets: "
              f"[{b}]`; BERT's plan compiled by one request each) and the driver's used memory is read after each "
              "load (`nvidia-smi`, the GPU otherwise idle): slope = per replica, intercept = the process's fixed "
              "cost (CUDA context, cuDNN/cuBLAS handles and kernels).",
              "- troupe throughput: the same `troupe run`: median time of the plan (one CUDA graph) with the "
              f"inputs already on the device, images or sequences per second = {b} / median.",
              "- PyTorch eager reserved memory (`torch_reserved_mib`): a fresh process per model, "
              f"`torch.inference_mode()`, cudnn.benchmark on, warm-up runs at batch {b}, then "
              "`torch.cuda.max_memory_reserved()`; the process's NVML footprint is read at that moment "
              "(context = footprint - memory_reserved).",
              "- torch.compile throughput (`torch_compile_per_s`): in the same process after the eager figures, "
              "`torch.compile(model)` (Inductor, default mode), compile time capped "
              f"({meas_args.get('compile_cap_s', '?')} s for compilation and timing together), median of CUDA-event "
              "timed calls.",
              "- Ratios: troupe_mem / torch_reserved against 1/3.8 (the seed's figure); troupe / torch.compile "
              "throughput against 1.1."]
    notes = rep.get("notes") or []
    errors = [f"{r['model']}: {k} {r[k]}" for r in rs for k in ("troupe_error", "torch_error", "torch_compile_error")
              if r.get(k)]
    if notes or errors:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes + errors]
    lines += ["", "Raw figures: density.json.", ""]
    return "\n".join(lines)


def many_models_markdown(mm):
    if not mm:
        return ["Not run."]
    if not mm.get("supported"):
        return [f"Not measured: {mm.get('reason') or mm.get('error') or 'not run'}."]
    out = [f"{mm.get('models', '?')} copies of ResNet-50 (distinct names, one file) in one node with "
           f"`worker_memory_budget_mb: {mm.get('budget_mb')}` ({mm.get('budget_replicas')} replicas of "
           f"{fmt(mm.get('per_replica_mib'), ',.1f')} MiB ({mm.get('per_replica_basis', '?')}, the fp32-input "
           "replica above), plus half a replica); requests carry uint8 pixels, normalised on the device."]
    if mm.get("error"):
        out.append(f"Stopped: {mm['error']}")
    loads = mm.get("loads") or []
    if loads:
        out.append(f"Loads: {len([l for l in loads if l.get('rc') == 0])} of {len(loads)} succeeded; load time "
                   f"p50 {fmt(mm.get('load_p50_s'), '.2f')} s; GPU memory above the baseline after each (NVML MiB): "
                   + ", ".join(fmt(l.get("nvml_delta_mib"), ",.0f") for l in loads) + ".")
    cold, warm = mm.get("cold") or {}, mm.get("warm") or {}
    if cold:
        out.append(f"- Cold start (one request at a time, round-robin over the models, so every request finds its "
                   f"model evicted): server total p50 {fmt(cold.get('p50_ms'), '.2f')} ms, p99 "
                   f"{fmt(cold.get('p99_ms'), '.2f')} ms ({cold.get('n')} requests); the same request to a resident "
                   f"model: p50 {fmt(warm.get('p50_ms'), '.2f')} ms, p99 {fmt(warm.get('p99_ms'), '.2f')} ms: page-in "
                   f"about {fmt(mm.get('page_in_p50_ms'), '.2f')} ms at p50.")
    for key, label in (("rr_all", "every model"), ("rr_resident", "the same clients on the resident models only")):
        t = mm.get(key)
        if t:
            out.append(f"- Throughput, {label} ({t.get('clients')} closed-loop `troupe bench` clients over "
                       f"{t.get('models')} models, {t.get('concurrency')} in flight each, {t.get('rows')} images per "
                       f"request, {t.get('duration_s')} s): "
                       f"{fmt(t.get('images_per_s'))} images/s, p50 {fmt(t.get('p50_ms'), '.1f')} ms (median of the "
                       f"clients'), p99 {fmt(t.get('p99_ms'), '.1f')} ms (worst client), errors {t.get('errors')}.")
    if mm.get("metrics"):
        out.append("- The node's own figures: " + ", ".join(f"`{k}` {v:g}" for k, v in sorted(mm["metrics"].items())[:12]))
    return out
