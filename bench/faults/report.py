"""Renders the fault suite's records (JSON lines that tests/faults write to $TROUPE_FAULTS_RESULTS)
as the markdown table of bench/results/faults.md.

    python3 bench/faults/report.py bench/results/faults-cpu.jsonl [more.jsonl ...]
"""

import json
import sys


def fmt(v):
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def table(rows):
    out = ["| fault | device | worker processes | requests | exactly once | replies | not ready (s) | "
           "ready again after (s) | disturbed (s) | p99 before (ms) | p99 during (ms) |",
           "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        replies = ", ".join(f"{k} {v}" for k, v in sorted(r["replies"].items(), key=lambda kv: -kv[1]))
        out.append(f"| {r['fault']} | {r['device']} | {'yes' if r['worker_processes'] else 'no'} | "
                   f"{r['requests']} | {'yes' if r['answered_exactly_once'] else 'NO'} | {replies} | "
                   f"{fmt(r.get('unready_s'))} | {fmt(r.get('recovery_s'))} | {fmt(r['disturbed_s'])} | "
                   f"{fmt(r['p99_ms_before'])} | {fmt(r['p99_ms_during'])} |")
    return "\n".join(out)


def main(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
