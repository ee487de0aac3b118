#!/usr/bin/env python3
"""Model lifecycle on the GPU host (issue 11's bench): one `troupe serve` in explicit model control
mode with a management socket;
  - time to load (read, compile, warm up) ResNet-50 and BERT-base through `troupe models load`:
    the first load in the process (every convolution timed), the second (the choices recorded by
    the first adopted), and the first in a fresh node given --tuning-records-file (the choices read
    from the file the first node wrote);
  - p99 of ResNet-50 under a closed loop (`troupe bench`, --concurrency) alone, and while a second
    copy of ResNet-50 loads and unloads beside it;
  - GPU memory (nvidia-smi) and the node's RSS after one load/unload cycle of SqueezeNet 1.1 and
    after --cycles more (over one keep-alive HTTP connection).
Writes OUT/lifecycle-gpu.json and OUT/lifecycle-gpu.md.

    python3 bench/serving/lifecycle_gpu.py --troupe build-gpu/troupe --out $OUT
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_run  # noqa: E402
from gpu_run import bench_error, log  # noqa: E402

REPO = gpu_run.REPO


def models_cmd(args, endpoint, *rest, timeout=900):
    t0 = time.time()
    r = subprocess.run([args.troupe, "models", *rest, "--server", endpoint], capture_output=True, text=True,
                       timeout=timeout)
    return time.time() - t0, r


def gpu_memory_mib():
    r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, timeout=30)
    return float(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.strip() else None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def bench(args, srv, seconds, tmp, tag):
    out_json = os.path.join(tmp, f"bench_{tag}.json")
    cmd = [args.troupe, "bench", "resnet50", "--server", srv.endpoint, "--concurrency", str(args.concurrency),
           "--connections", "4", "--duration", str(seconds), "--warmup", "1", "--json", out_json, "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if r.returncode != 0:
        raise bench_error(f"{' '.join(cmd)}: {r.stderr[-2000:]}")
    j = json.load(open(out_json))
    return {"throughput_rps": j["throughput_rps"], "p50_ms": j["latency_ms"]["p50"],
            "p99_ms": j["latency_ms"]["p99"], "max_ms": j["latency_ms"]["max"], "errors": j["errors"],
            "lost": j["lost"]}


class door:
    """One keep-alive HTTP/1.1 connection to the node's KServe door (repository extension)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def post(self, path):
        self.conn.request("POST", path, body=b"", headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        text = r.read().decode()
        if r.status != 200:
            raise bench_error(f"POST {path}: {r.status} {text}")


def write_repository(tmp):
    models = os.path.join(tmp, "models")
    for name, src, cfg in [("resnet50", "resnet50.onnx", "max_batch_size: 64\n"),
                           ("bert_base", "bert_base.onnx", "max_batch_size: 8\n"),
                           ("squeezenet", "squeezenet1_1.onnx", "max_batch_size: 4\n")]:
        log(f"filling weights of {src}")
        # filled in place: external data must stay inside the model's folder
        gpu_run.fill_into(os.path.join(REPO, "tests", "models", src), os.path.join(models, name, "1"))
        with open(os.path.join(models, name, "config.yaml"), "w") as f:
            f.write(cfg)
    # a second ResNet-50 that loads and unloads beside the serving one
    os.makedirs(os.path.join(models, "resnet50b"))
    os.symlink(os.path.join(models, "resnet50", "1"), os.path.join(models, "resnet50b", "1"))
    with open(os.path.join(models, "resnet50b", "config.yaml"), "w") as f:
        f.write("max_batch_size: 64\n")
    return models


def start_node(args, models, tmp, tag, extra=()):
    node_yaml = os.path.join(tmp, "node.yaml")
    with open(node_yaml, "w") as f:
        f.write("gpus: all\ncpu_workers: 1\nactor_threads: 2\nwarmup_runs: 2\nlog_level: info\n")
    endpoint = f"tcp://127.0.0.1:{gpu_run.free_port()}"
    http_port = gpu_run.free_port()
    srv = gpu_run.node(args.troupe, models, node_yaml, os.path.join(tmp, f"serve_{tag}.log"), 300,
                       extra_args=["--grpc-port", "0", "--http-port", str(http_port), "--model-control-mode",
                                   "explicit", "--management-listen", endpoint, *extra])
    srv.endpoint_mgmt = endpoint
    srv.http_port = http_port
    return srv


def timed_load(args, srv, name, result):
    seconds, r = models_cmd(args, srv.endpoint_mgmt, "load", name)
    if r.returncode != 0:
        result["notes"].append(f"load {name}: {r.stderr.strip()[-400:]}")
        return None
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--troupe", default=os.path.join(REPO, "build-gpu", "troupe"))
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/troupe-out"))
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--cycles", type=int, default=1000, help="load/unload cycles of SqueezeNet 1.1")
    ap.add_argument("--cycle-budget-s", type=float, default=150,
                    help="stop the cycles after this long (the count done is recorded)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result = {"machine": gpu_run.machine(False), "notes": []}
    help_text = subprocess.run([args.troupe, "serve", "--help"], capture_output=True, text=True).stdout
    has_records_file = "--tuning-records-file" in help_text
    with tempfile.TemporaryDirectory(prefix="troupe-lifecycle-") as tmp:
        models = write_repository(tmp)
        records = os.path.join(tmp, "tuning-records")
        extra = ["--tuning-records-file", records] if has_records_file else []
        log("starting troupe serve (explicit mode, nothing loaded)")
        srv = start_node(args, models, tmp, "first", extra)
        loads = {}
        try:
            # Load times: the first load of a model in the process times every convolution; the
            # second adopts the choices recorded by the first (and the file cache is warm).
            for name in ("resnet50", "bert_base"):
                first = timed_load(args, srv, name, result)
                models_cmd(args, srv.endpoint_mgmt, "unload", name)
                again = timed_load(args, srv, name, result)
                loads[name] = {"no_records": first, "records_in_process": again}
                log(f"load {name}: {loads[name]}")
            models_cmd(args, srv.endpoint_mgmt, "unload", "bert_base")
            # resnet50 stays loaded and serves below.
            log("p99 of resnet50 alone")
            result["alone"] = bench(args, srv, args.seconds, tmp, "alone")
            log("p99 of resnet50 while resnet50b loads and unloads")
            stop = threading.Event()
            churn = []

            def load_loop():
                time.sleep(1.5)
                while not stop.is_set():
                    s1, r1 = models_cmd(args, srv.endpoint_mgmt, "load", "resnet50b")
                    s2, r2 = models_cmd(args, srv.endpoint_mgmt, "unload", "resnet50b")
                    churn.append((s1, r1.returncode, s2, r2.returncode))

            t = threading.Thread(target=load_loop)
            t.start()
            try:
                result["while_loading"] = bench(args, srv, args.seconds, tmp, "loading")
            finally:
                stop.set()
                t.join()
            result["loads_during_bench"] = [{"load_s": a, "load_rc": b, "unload_s": c, "unload_rc": d}
                                            for a, b, c, d in churn]
            log(f"up to {args.cycles} load/unload cycles of squeezenet over HTTP")
            d = door(srv.http_port)
            d.post("/v2/repository/models/squeezenet/load")
            d.post("/v2/repository/models/squeezenet/unload")
            base_gpu, base_rss = gpu_memory_mib(), rss_kib(srv.proc.pid)
            t0 = time.time()
            done = 0
            while done < args.cycles and time.time() - t0 < args.cycle_budget_s:
                d.post("/v2/repository/models/squeezenet/load")
                d.post("/v2/repository/models/squeezenet/unload")
                done += 1
            result["cycles"] = {"model": "squeezenet1_1 (max_batch_size 4)", "count": done,
                                "seconds": time.time() - t0, "gpu_mib_after_first": base_gpu,
                                "gpu_mib_after": gpu_memory_mib(), "rss_kib_after_first": base_rss,
                                "rss_kib_after": rss_kib(srv.proc.pid)}
        finally:
            srv.stop()
        if has_records_file and os.path.exists(records):
            log("a fresh node that reads the recorded choices from the file")
            srv = start_node(args, models, tmp, "second", extra)
            try:
                for name in ("resnet50", "bert_base"):
                    loads[name]["records_from_file"] = timed_load(args, srv, name, result)
            finally:
                srv.stop()
        elif not has_records_file:
            result["notes"].append("this troupe has no --tuning-records-file: no fresh-process figure")
        result["load_seconds"] = loads
    a, w = result.get("alone"), result.get("while_loading")
    md = [f"### Model lifecycle on the GPU host ({result['machine']['date']}, {result['machine'].get('gpu', '')})", ""]
    fmt = lambda x: "-" if x is None else f"{x:.2f} s"  # noqa: E731
    for name, t in loads.items():
        md.append(f"- `troupe models load {name}` (read, compile, warm up; wall time of the call): "
                  f"no recorded choices {fmt(t.get('no_records'))}, choices recorded in the process "
                  f"{fmt(t.get('records_in_process'))}, fresh process with the records file "
                  f"{fmt(t.get('records_from_file'))}")
    if a and w:
        md.append(f"- ResNet-50 at {args.concurrency} in flight alone: {a['throughput_rps']:.0f} req/s, p50 "
                  f"{a['p50_ms']:.2f} ms, p99 {a['p99_ms']:.2f} ms; while a second ResNet-50 loaded and unloaded "
                  f"{len(result['loads_during_bench'])} times beside it: {w['throughput_rps']:.0f} req/s, p50 "
                  f"{w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms (errors {w['errors']}, lost {w['lost']})")
    c = result.get("cycles")
    if c:
        md.append(f"- {c['count']} load/unload cycles of {c['model']} ({c['seconds']:.1f} s): GPU memory "
                  f"{c['gpu_mib_after_first']} -> {c['gpu_mib_after']} MiB, node RSS {c['rss_kib_after_first']} -> "
                  f"{c['rss_kib_after']} KiB")
    md += [f"- note: {n}" for n in result["notes"]]
    with open(os.path.join(args.out, "lifecycle-gpu.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.out, "lifecycle-gpu.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    try:
        main()
    except bench_error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
