"""The fault suite (issue 12; docs/faults.md): for each fault the node can inject, a closed loop of
requests runs while the fault fires, and every request must get exactly one reply (counted by
request id over a raw ZeroMQ DEALER: the Python client would drop a second reply to one id unseen).
Each test records, as a JSON line in $TROUPE_FAULTS_RESULTS when set: the replies by code, how long
the model was not ready (health probes every 10 ms), how long replies were disturbed (errors, or
latency over ten times the undisturbed p50), and the p99 before and during the fault.

Faults are injected while the load runs, through `troupe faults inject` on the management socket.
The node runs one worker, so a failed batch is retried on the restarted worker (there is no other
replica); worker processes are on unless a test says otherwise. GPU-only faults run with
TROUPE_FAULTS_GPU=1 (scripts/gpu-host.sh faults) and skip here with a message."""

import json
import os
import subprocess
import time
from collections import Counter

import numpy as np
import pytest

from fault_load import ClosedLoop, check, faults_cli, inject, worker_pids  # noqa: E402
from conftest import Server, free_port, make_mlp, metric_value, troupe_bin, write  # noqa: E402


class Node:
    """`troupe serve` with one model, `mlp`, on one CPU worker, fault injection on and the
    management socket on loopback."""

    def __init__(self, tmp_path, worker_processes=True, extra_yaml="", models_extra=None):
        self.models = str(tmp_path / "models")
        make_mlp(os.path.join(self.models, "mlp", "1", "model.onnx"), seed=31)
        write(os.path.join(self.models, "mlp", "config.yaml"),
              "max_batch_size: 8\ndynamic_batching:\n  max_queue_delay_microseconds: 200\n")
        # models_extra: {name: config.yaml}; loaded only when a test asks.
        for name, config in (models_extra or {}).items():
            make_mlp(os.path.join(self.models, name, "1", "model.onnx"), seed=32)
            write(os.path.join(self.models, name, "config.yaml"), config)
        self.management = f"tcp://127.0.0.1:{free_port()}"
        node_yaml = str(tmp_path / "node.yaml")
        write(node_yaml,
              "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\n"
              "fault_injection: true\ndrain_timeout_ms: 20000\nlog_level: info\n"
              f"worker_processes: {'on' if worker_processes else 'off'}\n"
              # A hung batch of this model (microseconds) is found after a second, not two.
              "worker_watchdog_min_ms: 1000\n"
              "model_control_mode: explicit\nload_models: [mlp]\n"
              f"management_listen: {self.management}\n" + extra_yaml)
        self.log_path = str(tmp_path / "serve.log")
        self.server = Server(self.models, node_yaml, self.log_path)
        assert self.server.ready, self.server.reason

    def stop(self):
        code = self.server.terminate()
        assert code == 0, "troupe serve did not exit 0: " + open(self.log_path).read()[-3000:]


# While the model's only worker is replaced, new requests are refused UNAVAILABLE at once (the model
# is not ready: the loop's lanes then wait for it); the requests of the failed batch are retried on
# the new worker.
REPLACED = ("OK", "UNAVAILABLE")


# ---- worker faults -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["abort", "segfault"])
def test_worker_process_dies_and_its_batch_is_retried(tmp_path, kind):
    node = Node(tmp_path)
    try:
        pids = worker_pids(node.server.proc.pid)
        assert len(pids) == 1, pids
        loop = ClosedLoop(node.server.endpoint)
        def fire():
            inject(node.management, kind, "worker:0")
        loop.run(4.0, events=[(1.0, fire)])
        s = loop.summary(kind, loop.event_times[0])
        check(loop, s, allowed=REPLACED)
        assert s["unready_s"] is not None, f"readiness never flipped: {s}"
        after = worker_pids(node.server.proc.pid)
        assert len(after) == 1 and after != pids, (pids, after)
        assert any(r.get("msg") == "worker restarted" for r in node.server.log_records())
    finally:
        node.stop()


def test_kill_9_of_a_worker_process_under_load(tmp_path):
    node = Node(tmp_path)
    try:
        loop = ClosedLoop(node.server.endpoint)
        def kill():
            for p in worker_pids(node.server.proc.pid):
                os.kill(p, 9)
        loop.run(4.0, events=[(1.0, kill)])
        s = loop.summary("kill -9", loop.event_times[0])
        check(loop, s, allowed=REPLACED)
        assert s["unready_s"] is not None, s
    finally:
        node.stop()


@pytest.mark.parametrize("processes", [True, False], ids=["process", "in_process"])
def test_a_hung_worker_is_killed_by_the_watchdog(tmp_path, processes):
    node = Node(tmp_path, worker_processes=processes)
    try:
        loop = ClosedLoop(node.server.endpoint)
        def fire():
            # A process hangs until it is killed; an in-process worker's thread cannot be killed,
            # so its hang is bounded (docs/faults.md): its replacement waits for it.
            inject(node.management, "hang", "worker:0", **({} if processes else {"delay_ms": 2500}))
        loop.run(5.0 if processes else 7.0, events=[(1.0, fire)])
        s = loop.summary("hang" if processes else "hang (in-process, 2.5 s)", loop.event_times[0], processes)
        check(loop, s, allowed=REPLACED)
        kills = metric_value(node.server.metrics(), "troupe_watchdog_kills_total", model="mlp", version="1")
        assert kills == 1, f"watchdog kills {kills}; {s}"
        assert any(r.get("msg") == "worker hung" for r in node.server.log_records())
    finally:
        node.stop()


def test_failed_allocations_fail_a_load_without_a_restart(tmp_path):
    # One row per batch: no smaller plan to fall back to (batch slicing), so the load fails.
    node = Node(tmp_path, models_extra={"other": "max_batch_size: 1\n"})
    try:
        loop = ClosedLoop(node.server.endpoint)
        result = {}
        def fire():
            # One allocation fails: the rule fires at the worker's next chance (a batch of the
            # loop, carried with its run, or the load itself), and the process arms it: the next
            # load to allocate fails (a load racing the run that carries it may come first).
            inject(node.management, "fail_allocations", "worker:0", allocations=1)
            result["loads"] = []
            for _ in range(4):
                r = subprocess.run([troupe_bin(), "models", "load", "other", "--server", node.management],
                                   capture_output=True, text=True, timeout=60)
                result["loads"].append((r.returncode, r.stdout + r.stderr))
                if r.returncode != 0 and "out_of_memory" not in r.stderr + r.stdout:
                    break  # another error: fails below
                if any(c != 0 for c, _ in result["loads"]) and r.returncode == 0:
                    break
        loop.run(4.0, events=[(0.5, fire)])
        s = loop.summary("fail_allocations", loop.event_times[0])
        check(loop, s)
        loads = result["loads"]
        assert any(c != 0 and "out_of_memory" in out for c, out in loads), loads
        assert all(c == 0 or "out_of_memory" in out for c, out in loads), loads
        assert loads[-1][0] == 0, f"no load succeeded after the failure: {loads}"
        assert not any(r.get("msg") == "worker restarted" for r in node.server.log_records())
    finally:
        node.stop()


def test_a_failed_allocation_at_load_slices_the_bucket_instead(tmp_path):
    """Memory short for a batch bucket's plan: the bucket runs as slices of a smaller plan (one
    failed allocation is enough to show it); the load succeeds, nothing restarts."""
    node = Node(tmp_path, models_extra={"big": "max_batch_size: 8\n"})
    try:
        loop = ClosedLoop(node.server.endpoint)
        result = {}

        def fired():
            return metric_value(node.server.metrics(), "troupe_faults_fired_total", kind="fail_allocations")

        def fire():
            inject(node.management, "fail_allocations", "worker:0", allocations=1)
            # The rule fires with the loop's next batch (or a load): the process arms it before
            # it reads the load below, which comes after on the same link.
            deadline = time.monotonic() + 10
            while fired() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)  # polls the node's counter: the event waited for
            r = subprocess.run([troupe_bin(), "models", "load", "big", "--server", node.management],
                               capture_output=True, text=True, timeout=60)
            result["load"] = (r.returncode, r.stdout + r.stderr)
        loop.run(3.0, events=[(0.5, fire)])
        s = loop.summary("fail_allocations at a load (sliced)", loop.event_times[0])
        check(loop, s)
        assert fired() >= 1
        assert result["load"][0] == 0, result["load"]
        sliced = [r for r in node.server.log_records() if r.get("msg") == "batches sliced"]
        assert sliced and sliced[0].get("model") == "big", sliced
        assert sliced[0].get("bucket_rows") == 8 and sliced[0].get("slice_rows") == 4, sliced
        assert not any(r.get("msg") == "worker restarted" for r in node.server.log_records())
    finally:
        node.stop()


def test_a_crash_loop_backs_off_and_recovers(tmp_path):
    node = Node(tmp_path)
    try:
        loop = ClosedLoop(node.server.endpoint, timeout_us=3_000_000)
        def start():
            inject(node.management, "abort", "worker:0", times=0)
        def stop():
            faults_cli(node.management, "clear")
        loop.run(7.0, events=[(1.0, start), (3.5, stop)])
        s = loop.summary("crash loop (2.5 s)", loop.event_times[0])
        # Requests held through the loop get their one retry, then a typed error, or their
        # deadline: never silence, never two replies.
        check(loop, s, allowed=("OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"))
        failed = [r for r in node.server.log_records() if r.get("msg") == "worker failed"]
        assert len(failed) >= 3, f"{len(failed)} failures in the loop"
        delays = [int(r.get("delay_ms", 0)) for r in failed]
        assert max(delays) > delays[0], f"no backoff: {delays}"
        # Serving again after the loop ends.
        tail = [v[0][1] for r, v in loop.replies.items() if loop.sent[r] > loop.event_times[0] + 2.5 + max(delays) / 1e3 + 1.0]
        assert tail and all(c == "OK" for c in tail), Counter(tail)
    finally:
        node.stop()


# ---- message faults ------------------------------------------------------------------------

HOP_CASES = [
    # (name, kind, target, fields, worker_processes)
    ("batcher_worker drop", "drop", "batcher_worker:0", {}, True),
    ("batcher_worker drop (in-process)", "drop", "batcher_worker:0", {}, False),
    ("batcher_worker duplicate", "duplicate", "batcher_worker:0", {"times": 20}, True),
    ("batcher_worker duplicate (in-process)", "duplicate", "batcher_worker:0", {"times": 20}, False),
    ("batcher_worker delay 200 ms x5", "delay", "batcher_worker:0", {"times": 5, "delay_ms": 200}, True),
    ("worker_link drop", "drop", "worker_link:0", {}, True),
    ("worker_link duplicate", "duplicate", "worker_link:0", {"times": 20}, True),
    ("worker_link delay 200 ms x5", "delay", "worker_link:0", {"times": 5, "delay_ms": 200}, True),
    ("frontend_router delay 200 ms x3", "delay", "frontend_router", {"times": 3, "delay_ms": 200}, True),
]


@pytest.mark.parametrize("name,kind,target,fields,processes", HOP_CASES, ids=[c[0] for c in HOP_CASES])
def test_message_faults_on_a_hop(tmp_path, name, kind, target, fields, processes):
    node = Node(tmp_path, worker_processes=processes)
    try:
        loop = ClosedLoop(node.server.endpoint)
        def fire():
            inject(node.management, kind, target, **fields)
        loop.run(4.0, events=[(1.0, fire)])
        s = loop.summary(name, loop.event_times[0], processes)
        check(loop, s, allowed=REPLACED if kind == "drop" else ("OK",))
        listed = json.loads(faults_cli(node.management, "list", "--json"))
        rules = listed if isinstance(listed, list) else listed.get("rules", [])
        assert rules and all(r.get("fired", 0) >= 1 for r in rules), f"the fault never fired: {listed}"
        if kind == "drop":
            # Found by the watchdog: the worker is replaced and the batch retried.
            kills = metric_value(node.server.metrics(), "troupe_watchdog_kills_total", model="mlp", version="1")
            assert kills == 1, f"watchdog kills {kills}; {s}"
    finally:
        node.stop()


def test_slow_link_then_cleared(tmp_path):
    node = Node(tmp_path)
    try:
        loop = ClosedLoop(node.server.endpoint)
        def start():
            inject(node.management, "slow_link", "worker_link:0", times=0, delay_ms=20)
        loop.run(5.0, events=[(1.0, start), (3.0, lambda: faults_cli(node.management, "clear"))])
        s = loop.summary("worker_link slow_link 20 ms for 2 s", loop.event_times[0])
        check(loop, s)
        slow = loop.latencies_ms(since=loop.event_times[0] + 0.2, until=loop.event_times[0] + 1.8)
        assert slow and np.percentile(slow, 50) >= 20, "the link was not slowed"
    finally:
        node.stop()


def test_frontend_router_drop_is_answered_past_the_deadline(tmp_path):
    node = Node(tmp_path)
    try:
        # 300 ms deadlines: a dropped request is answered DEADLINE_EXCEEDED at its deadline plus
        # the frontend's one-second grace (cluster/frontend.cpp, lost_request_grace).
        loop = ClosedLoop(node.server.endpoint, timeout_us=300_000)
        def fire():
            inject(node.management, "drop", "frontend_router")
        loop.run(4.0, events=[(1.0, fire)])
        s = loop.summary("frontend_router drop", loop.event_times[0])
        check(loop, s, allowed=("OK", "DEADLINE_EXCEEDED"))
        assert s["replies"].get("DEADLINE_EXCEEDED", 0) >= 1, f"nothing was dropped: {s}"
    finally:
        node.stop()
