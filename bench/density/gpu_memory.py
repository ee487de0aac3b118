"""The GPU's memory as the driver sees it (NVML through nvidia-smi, so that the bench process itself
never creates a CUDA context): whole-device figures, per-process figures where the process table
is visible (not in every container), a settled baseline, and a sampler for processes that do not
pause. All figures in MiB; None where nvidia-smi is missing or fails."""

import shutil
import subprocess
import threading
import time


def available():
    return shutil.which("nvidia-smi") is not None


def _query(args):
    if not available():
        return None
    try:
        r = subprocess.run(["nvidia-smi", "-i", "0", *args, "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def device():
    """{"name", "driver", "total_mib", "used_mib", "free_mib"} of GPU 0, or None."""
    out = _query(["--query-gpu=name,driver_version,memory.total,memory.used,memory.free"])
    if not out or not out.strip():
        return None
    parts = [p.strip() for p in out.strip().splitlines()[0].split(",")]
    try:
        return {"name": parts[0], "driver": parts[1], "total_mib": float(parts[2]), "used_mib": float(parts[3]),
                "free_mib": float(parts[4])}
    except (IndexError, ValueError):
        return None


def used_mib():
    d = device()
    return d["used_mib"] if d else None


def above(base):
    """Used memory now minus `base`'s (a device() reading), or None."""
    u = used_mib()
    return None if u is None or not base else round(u - base["used_mib"], 1)


def processes():
    """{pid: used MiB} of the compute processes NVML lists (empty where it shows none: containers
    often hide them)."""
    out = _query(["--query-compute-apps=pid,used_memory"])
    found = {}
    for line in (out or "").strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            found[int(parts[0])] = float(parts[1])
        except (IndexError, ValueError):
            continue
    return found


def settled_baseline(timeout_s=10.0):
    """The device's figures once used memory stops changing (a process that just exited may still
    be releasing its memory): two equal readings 0.5 s apart, or the last one after timeout_s."""
    last = device()
    deadline = time.time() + timeout_s
    while last and time.time() < deadline:
        time.sleep(0.5)
        now = device()
        if now is None or now["used_mib"] == last["used_mib"]:
            return now or last
        last = now
    return last


class sampler:
    """Polls the device's used memory (and `pid`'s, where listed) on a thread until stop(): the peak
    of a process that runs and exits without pausing (`troupe run`)."""

    def __init__(self, pid=None, interval_s=0.25):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_used_mib = None
        self.peak_pid_mib = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        if available():
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            u = used_mib()
            if u is not None:
                self.samples += 1
                self.peak_used_mib = u if self.peak_used_mib is None else max(self.peak_used_mib, u)
            if self.pid is not None:
                p = processes().get(self.pid)
                if p is not None:
                    self.peak_pid_mib = p if self.peak_pid_mib is None else max(self.peak_pid_mib, p)
            self._stop.wait(self.interval_s)

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        return self
