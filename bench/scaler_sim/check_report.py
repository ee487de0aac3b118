#!/usr/bin/env python3
"""Checks scaler_sim's output: scaler.json's rows have exactly the issue's schema, every policy ran
on every trace, and scaler.md carries the table.

Usage: check_report.py [--run SCALER_SIM] OUT_DIR [TRACE...]; with --run, first runs
`SCALER_SIM --short --out-dir OUT_DIR --trace TRACE...` (the ctest)."""

import json
import math
import pathlib
import shutil
import subprocess
import sys

POLICIES = {"troupe", "ray_serve", "static_mean", "static_peak"}
ROW_KEYS = {"trace", "policy", "slo_attainment", "replica_seconds", "scale_actions", "flaps"}


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def main():
    args = sys.argv[1:]
    sim = None
    if args[:1] == ["--run"]:
        sim, args = args[1], args[2:]
    out = pathlib.Path(args[0])
    traces = set(args[1:])
    if sim:
        shutil.rmtree(out, ignore_errors=True)
        command = [sim, "--short", "--out-dir", str(out)]
        for t in sorted(traces):
            command += ["--trace", t]
        subprocess.run(command, check=True)
    report = json.loads((out / "scaler.json").read_text())
    rows = report.get("rows")
    if not isinstance(rows, list) or not rows:
        fail("scaler.json has no rows")
    seen = set()
    for row in rows:
        if set(row) != ROW_KEYS:
            fail(f"row keys {sorted(row)} != {sorted(ROW_KEYS)}")
        if not isinstance(row["trace"], str) or row["policy"] not in POLICIES:
            fail(f"bad trace or policy: {row}")
        a = row["slo_attainment"]
        if not isinstance(a, (int, float)) or not 0 <= a <= 1 or math.isnan(a):
            fail(f"slo_attainment out of [0, 1]: {row}")
        if not isinstance(row["replica_seconds"], (int, float)) or row["replica_seconds"] <= 0:
            fail(f"replica_seconds not positive: {row}")
        for key in ("scale_actions", "flaps"):
            if not isinstance(row[key], int) or isinstance(row[key], bool) or row[key] < 0:
                fail(f"{key} not a non-negative integer: {row}")
        if row["flaps"] > row["scale_actions"]:
            fail(f"more flaps than scale actions: {row}")
        if row["policy"].startswith("static") and row["scale_actions"] != 0:
            fail(f"a static policy scaled: {row}")
        seen.add((row["trace"], row["policy"]))
    ran = {t for t, _ in seen}
    if traces and ran != traces:
        fail(f"traces {sorted(ran)} != {sorted(traces)}")
    for t in ran:
        missing = POLICIES - {p for tt, p in seen if tt == t}
        if missing:
            fail(f"trace {t}: no row for {sorted(missing)}")
        by = {p: r for r in rows for p in [r["policy"]] if r["trace"] == t}
        if by["static_peak"]["replica_seconds"] < by["static_mean"]["replica_seconds"]:
            fail(f"trace {t}: static_peak holds fewer replicas than static_mean")
    md = (out / "scaler.md").read_text()
    if "| trace | policy | SLO attainment | replica-seconds |" not in md:
        fail("scaler.md has no results table")
    print(f"ok: {len(rows)} rows, traces {sorted(ran)}")


if __name__ == "__main__":
    main()
