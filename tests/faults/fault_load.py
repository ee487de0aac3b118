"""The closed loop and the records of the fault suite (tests/faults; docs/faults.md), shared by the CPU
tests (test_faults.py) and the GPU host's (test_gpu_faults.py)."""

import datetime
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from conftest import troupe_bin  # noqa: E402
from troupe_client import troupe_pb2 as pb  # noqa: E402

LANES = 4
CODE_NAMES = {v.number: v.name for v in pb.ErrorCode.DESCRIPTOR.values}


def record(row):
    path = os.environ.get("TROUPE_FAULTS_RESULTS")
    if not path:
        return
    row = dict(row, date=datetime.date.today().isoformat())
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def faults_cli(endpoint, *args):
    r = subprocess.run([troupe_bin(), "faults", *args, "--server", endpoint],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"troupe faults {' '.join(args)}: {r.stdout} {r.stderr}"
    return r.stdout


def inject(endpoint, kind, target, **fields):
    args = ["inject", "--kind", kind, "--target", target]
    for k, v in fields.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return faults_cli(endpoint, *args)


def worker_pids(node_pid):
    """The node's children (its worker processes), from /proc (procps may not be installed)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses; the last ')' ends it.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == node_pid:
            pids.append(int(d))
    return sorted(pids)


class ClosedLoop:
    """LANES requests in flight on `model`, each sent again as soon as its reply arrives, and a
    health probe every 10 ms. `events` are (seconds after the start, callable) run on a thread of
    their own (a CLI call takes tens of milliseconds: the loop must not stall)."""

    def __init__(self, endpoint, model="mlp", timeout_us=0, lanes=LANES, inputs=None):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.model = model
        self.timeout_us = timeout_us
        self.lanes = lanes
        # (name, dtype, shape, bytes) of each input; the test MLP's by default.
        self.inputs = inputs or [("x", pb.FLOAT, (1, 16),
                                  np.random.default_rng(7).standard_normal((1, 16)).astype(np.float32).tobytes())]
        self.sent = {}      # id -> send time
        self.replies = {}   # id -> [(time, code)]
        self.health = []    # (time, ready)
        self.event_times = []  # when each of run()'s events began, in their order

    def envelope(self, rid):
        m = pb.ClientMessage()
        m.id = rid
        m.infer.id = rid
        m.infer.model = self.model
        if self.timeout_us:
            m.infer.timeout_us = self.timeout_us
        for name, dtype, shape, _ in self.inputs:
            d = m.infer.inputs.add(name=name, dtype=dtype)
            d.shape.extend(shape)
        return m.SerializeToString()

    def run(self, seconds, events=(), drain_s=60):
        start = time.monotonic()
        threads = []
        self.event_times = [None] * len(events)

        def timed(i, fn):
            self.event_times[i] = time.monotonic()
            fn()

        for i, (at, fn) in enumerate(events):
            t = threading.Timer(at, timed, args=(i, fn))
            t.start()
            threads.append(t)
        n = 0
        outstanding = set()
        health_out = False
        next_health = start
        # Lanes whose last reply was UNAVAILABLE (the model is not ready: its only worker is being
        # replaced) wait for a health probe that says ready, as a polite client would.
        paused = 0
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        end = start + seconds
        while True:
            now = time.monotonic()
            sending = now < end
            while sending and len(outstanding) + paused < self.lanes:
                rid = f"r{n}"
                n += 1
                self.sent[rid] = time.monotonic()
                self.sock.send_multipart([self.envelope(rid)] + [x for *_, x in self.inputs])
                outstanding.add(rid)
            if sending and not health_out and now >= next_health:
                h = pb.ClientMessage()
                h.id = f"h{now}"
                h.health.SetInParent()
                self.sock.send(h.SerializeToString())
                health_out = True
                next_health = now + 0.01
            if not sending and not outstanding:
                break
            if now > end + drain_s:
                break
            if not poller.poll(5):
                continue
            while self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                frames = self.sock.recv_multipart()
                t = time.monotonic()
                m = pb.ServerMessage()
                m.ParseFromString(frames[0])
                if m.id.startswith("h"):
                    health_out = False
                    self.health.append((t, m.health.ready))
                    if m.health.ready:
                        paused = 0
                    continue
                code = "OK" if m.WhichOneof("kind") == "infer" else CODE_NAMES.get(m.error.code, str(m.error.code))
                self.replies.setdefault(m.id, []).append((t, code))
                if m.id in outstanding and code == "UNAVAILABLE":
                    paused += 1
                outstanding.discard(m.id)
        for t in threads:
            t.join()
        self.sock.close()
        self.start = start
        return self

    # ---- what the run shows ----

    def answered_exactly_once(self):
        missing = [r for r in self.sent if r not in self.replies]
        twice = [r for r, v in self.replies.items() if len(v) != 1]
        unknown = [r for r in self.replies if r not in self.sent]
        return missing, twice, unknown

    def codes(self):
        return Counter(v[0][1] for v in self.replies.values())

    def latencies_ms(self, since=None, until=None):
        out = []
        for r, v in self.replies.items():
            t0 = self.sent[r]
            if (since is None or t0 >= since) and (until is None or t0 < until):
                out.append((v[0][0] - t0) * 1e3)
        return out

    def summary(self, fault, fault_at, worker_processes=True, device="cpu"):
        base = self.latencies_ms(until=fault_at) or [0.0]
        during = self.latencies_ms(since=fault_at) or [0.0]
        p50 = float(np.percentile(base, 50))
        slow_ms = max(10 * p50, 50.0)
        disturbed = [self.sent[r] for r, v in self.replies.items()
                     if self.sent[r] >= fault_at - 0.05 and (v[0][1] != "OK" or (v[0][0] - self.sent[r]) * 1e3 > slow_ms)]
        disturbed_s = (max(self.replies[r][0][0] for r, v in self.replies.items()
                           if self.sent[r] in disturbed) - fault_at) if disturbed else 0.0
        unready = [t for t, ready in self.health if not ready and t >= fault_at]
        unready_s = recovery_s = None
        if unready:
            first = unready[0]
            back = [t for t, ready in self.health if ready and t > first]
            if back:
                unready_s = back[0] - first
                recovery_s = back[0] - fault_at
        missing, twice, unknown = self.answered_exactly_once()
        return {
            "fault": fault, "device": device, "worker_processes": worker_processes,
            "requests": len(self.sent), "answered_exactly_once": not (missing or twice or unknown),
            "replies": dict(self.codes()),
            # Readiness as the health probes saw it: not ready for unready_s; ready again
            # recovery_s after the fault was injected.
            "unready_s": None if unready_s is None else round(unready_s, 3),
            "recovery_s": None if recovery_s is None else round(recovery_s, 3),
            "disturbed_s": round(disturbed_s, 3),
            "p99_ms_before": round(float(np.percentile(base, 99)), 3),
            "p99_ms_during": round(float(np.percentile(during, 99)), 3),
        }


def check(loop, summary, allowed=("OK",)):
    missing, twice, unknown = loop.answered_exactly_once()
    assert not missing, f"{len(missing)} requests never answered, e.g. {missing[:5]}"
    assert not twice, f"{len(twice)} requests answered more than once, e.g. {twice[:5]}"
    assert not unknown, f"replies to ids never sent: {unknown[:5]}"
    bad = {c: n for c, n in summary["replies"].items() if c not in allowed}
    assert not bad, f"unexpected replies {bad} (allowed {allowed}); {summary}"
    record(summary)


