#!/usr/bin/env python3
"""Checks of bench/density without a GPU, troupe or torch: the report's arithmetic and verdicts,
density.json's rows (the issue's keys), the whole script in --dry-run, and how run.py handles a
PyTorch child that answers, one whose torch.compile outlasts the cap, and one that dies.

    python3 bench/density/test_report.py        (ctest: density_report)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402
import run  # noqa: E402

MIB = 2**20


def measurements(**over):
    m = {"batch": 128, "sequence": 128, "device": "GPU", "date": "2026-12-06",
         "gpu": {"free_baseline_mib": 80000.0, "total_mib": 81559.0},
         "models": {"resnet50": {
             "troupe_run": {"device_reserved_bytes": 384 * MIB, "weights_bytes": 48 * MIB, "median_ms": 4.0},
             "torch": {"reserved_mib": 896.0, "max_reserved_mib": 896.0, "nvml_footprint_mib": 1400.0,
                       "compile_ms": 6.0},
             "troupe_node": {"loads": [{"nvml_delta_mib": 900.0 + 400 * i} for i in range(4)]}}}}
    m.update(over)
    return m


class report_test(unittest.TestCase):
    def test_fit_is_slope_and_intercept(self):
        self.assertEqual(report.linear_fit([(1, 900), (2, 1300), (3, 1700)]), (400.0, 500.0))
        self.assertIsNone(report.linear_fit([(1, 900)]))
        self.assertIsNone(report.linear_fit([(1, 900), (2, None)]))

    def test_row_has_the_issue_keys_and_the_arithmetic(self):
        row = report.rows(measurements())[0]
        self.assertEqual(list(row)[:len(report.ROW_KEYS)], list(report.ROW_KEYS))
        self.assertEqual(row["troupe_mem_mib"], 384.0)
        self.assertEqual(row["torch_reserved_mib"], 896.0)
        self.assertEqual(row["troupe_per_s"], 32000.0)
        self.assertAlmostEqual(row["torch_compile_per_s"], 21333.3)
        self.assertAlmostEqual(row["mem_ratio"], 384 / 896, places=4)
        self.assertEqual(row["mem_target"], "NOT met")          # 1/2.33 > 1/3.8
        self.assertEqual(row["throughput_target"], "met")       # 1.5x >= 1.1x
        self.assertEqual(row["troupe_nvml_per_replica_mib"], 400.0)
        self.assertEqual(row["troupe_node_fixed_mib"], 500.0)
        self.assertEqual(row["troupe_replicas_per_gpu"], (80000 - 500) // 400)
        self.assertEqual(row["torch_eager_processes_per_gpu"], 80000 // 1400)
        self.assertEqual(row["torch_context_mib"], 504.0)
        self.assertEqual(row["torch_eager_replicas_one_process"], int((80000 - 504) // 896))

    def test_targets_met_and_missing_figures(self):
        m = measurements()
        m["models"]["resnet50"]["troupe_run"]["device_reserved_bytes"] = 200 * MIB
        m["models"]["resnet50"]["torch"]["compile_ms"] = None
        m["models"]["resnet50"]["torch"]["compile_error"] = "cap"
        row = report.rows(m)[0]
        self.assertEqual(row["mem_target"], "met")
        self.assertIsNone(row["torch_compile_per_s"])
        self.assertEqual(row["throughput_target"], "not measured")
        self.assertIn("cap", report.markdown(report.report(m)))

    def test_no_node_series_falls_back_to_the_executor(self):
        m = measurements()
        m["models"]["resnet50"]["troupe_node"] = {"skipped": "time budget"}
        m["models"]["resnet50"]["troupe_run"]["nvml_overhead_mib"] = 700.0
        row = report.rows(m)[0]
        self.assertEqual(row["troupe_replicas_per_gpu"], int((80000 - 700) // 384))
        self.assertIn("executor", row["troupe_replicas_basis"])

    def test_sliced_variant_is_a_row_of_its_own(self):
        m = measurements()
        m["models"]["resnet50"]["troupe_sliced"] = {"device_reserved_bytes": 192 * MIB, "median_ms": 5.0,
                                                   "variant": "troupe run --batch-slices 4"}
        rs = report.rows(m)
        self.assertEqual([r["variant"] for r in rs], ["whole batch", "troupe run --batch-slices 4"])
        self.assertEqual(rs[1]["troupe_mem_mib"], 192.0)
        self.assertEqual(rs[1]["troupe_replicas_per_gpu"], int((80000 - 500) // (400 - 192)))

    def test_many_models_section(self):
        md = report.many_models_markdown({"supported": False, "reason": "the node refused it"})
        self.assertEqual(md, ["Not measured: the node refused it."])
        md = "\n".join(report.many_models_markdown({
            "supported": True, "models": 20, "budget_mb": 2178, "budget_replicas": 5, "per_replica_mib": 396.0,
            "loads": [{"rc": 0, "nvml_delta_mib": 900.0}], "load_p50_s": 1.2,
            "cold": {"p50_ms": 9.0, "p99_ms": 12.0, "n": 40}, "warm": {"p50_ms": 5.0, "p99_ms": 5.5},
            "page_in_p50_ms": 4.0, "rr_all": {"clients": 20, "concurrency": 1, "rows": 32, "duration_s": 8,
                                              "images_per_s": 9000.0, "p50_ms": 60.0, "p99_ms": 90.0, "errors": 0}}))
        self.assertIn("page-in about 4.00 ms", md)
        self.assertIn("9,000 images/s", md)

    def test_run_helpers(self):
        self.assertIn("refused worker_memory_budget_mb",
                      run.refusal_reason("x\nerror: node.yaml: node: unknown key 'worker_memory_budget_mb'\n"))
        m = run.INFER_LINE.search("served by r50_01 version 1, batch 1: queue 12 us, compute 4100 us, total 4200 us")
        self.assertEqual(m.groups(), ("1", "12", "4100", "4200"))
        self.assertEqual(run.percentile([3, 1, 2], 50), 2)
        self.assertEqual(run.percentile(list(range(1, 101)), 99), 99)


class dry_run_test(unittest.TestCase):
    def test_writes_json_rows_and_markdown(self):
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, os.path.join(HERE, "run.py"), "--dry-run", "--out", out], check=True,
                           capture_output=True, text=True, timeout=60)
            with open(os.path.join(out, "density.json")) as f:
                rep = json.load(f)
            self.assertEqual({r["model"] for r in rep["rows"]}, {"resnet50", "bert_base"})
            for r in rep["rows"]:
                self.assertTrue(set(report.ROW_KEYS) <= set(r), r)
                self.assertEqual(r["batch"], 128)
            with open(os.path.join(out, "density.md")) as f:
                md = f.read()
            self.assertIn("DRY RUN", md)
            self.assertIn("## Against the targets", md)


FAKE_CHILD = textwrap.dedent("""
    import json, os, sys, time
    mode = os.environ["FAKE_TORCH_MODE"]
    def emit(**kw):
        print(json.dumps(kw), flush=True)
    emit(phase="start", torch="9.9", device_name="fake")
    if mode == "crash":
        sys.stderr.write("RuntimeError: CUDA out of memory\\n")
        sys.exit(1)
    emit(phase="eager_ready", reserved_mib=896.0, max_reserved_mib=900.0)
    sys.stdin.readline()
    emit(phase="eager", eager_ms=9.5, iters=100)
    emit(phase="compile_start")
    if mode == "slow":
        time.sleep(600)
    emit(phase="compiled", compile_s=1.0)
    emit(phase="compile", compile_ms=6.0, iters=100)
    emit(phase="done")
""")


class torch_child_handling_test(unittest.TestCase):
    def run_fake(self, mode, cap_s=60):
        with tempfile.TemporaryDirectory() as out:
            child = os.path.join(out, "fake_child.py")
            with open(child, "w") as f:
                f.write(FAKE_CHILD)
            saved, run.TORCH_CHILD = run.TORCH_CHILD, child
            os.environ["FAKE_TORCH_MODE"] = mode
            args = argparse.Namespace(out=out, batch=128, sequence=128, cpu_check=True, measure_s=1.0,
                                      no_compile=False, compile_cap_s=cap_s, torch_start_timeout_s=30)
            try:
                t0 = time.time()
                r = run.run_torch(args, "resnet50")
                return r, time.time() - t0
            finally:
                run.TORCH_CHILD = saved

    def test_answers(self):
        r, _ = self.run_fake("ok")
        self.assertEqual((r["max_reserved_mib"], r["eager_ms"], r["compile_ms"], r["compile_s"]), (900.0, 9.5, 6.0, 1.0))
        self.assertNotIn("error", r)
        self.assertNotIn("compile_error", r)

    def test_compile_past_the_cap_is_recorded_and_killed(self):
        r, seconds = self.run_fake("slow", cap_s=1.5)
        self.assertIn("exceeded the cap of 2 s before compilation finished", r["compile_error"])
        self.assertEqual(r["eager_ms"], 9.5)
        self.assertLess(seconds, 20)

    def test_a_child_that_dies_is_recorded_with_its_stderr(self):
        r, _ = self.run_fake("crash")
        self.assertIn("CUDA out of memory", r["error"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
