"""What the Prometheus rules and the Grafana dashboard may refer to: the metrics and labels troupe
really exports, read from a real scrape of the node's registry (troupe_dump_metrics, built from
serving/metrics.cpp), plus what Prometheus itself adds (`up`, the target labels). And a small reader
of the metric names and label names a PromQL expression uses.
"""
import glob
import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Labels Prometheus attaches to every scraped series (prometheus.yml's jobs and relabelling).
TARGET_LABELS = {"job", "instance", "namespace", "pod"}
SYNTHETIC = {"up": set()}  # Prometheus's own series per target

# PromQL's functions, aggregations and keywords: identifiers that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2",
}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+\S+")
TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)")


def dump_binary():
    """TROUPE_DUMP_METRICS (set by ctest), else a build of the checkout."""
    env = os.environ.get("TROUPE_DUMP_METRICS")
    if env:
        return env
    found = sorted(glob.glob(os.path.join(REPO, "build*", "tests", "deploy", "troupe_dump_metrics")),
                   key=os.path.getmtime)
    if not found:
        raise RuntimeError("no troupe_dump_metrics: build the project (scripts/build.sh) first")
    return found[-1]


def scrape():
    return subprocess.run([dump_binary()], capture_output=True, text=True, check=True).stdout


def catalog(text):
    """{metric name: set of label names} of every sample (and TYPE line) of a text exposition;
    histograms also under their _bucket/_sum/_count names."""
    names = {}
    for line in text.splitlines():
        t = TYPE.match(line)
        if t:
            name, kind = t.groups()
            names.setdefault(name, set())
            if kind == "histogram":
                for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
                    names.setdefault(name + suffix, set()).update(extra)
            continue
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            labels = {part.split("=", 1)[0].strip() for part in (m.group(3) or "").split(",") if "=" in part}
            names.setdefault(m.group(1), set()).update(labels)
    # A histogram's own labels on its _bucket/_sum/_count and the base name alike.
    for name in list(names):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in names:
                names[name[: -len(suffix)]].update(names[name] - {"le"})
                names[name].update(names[name[: -len(suffix)]])
    return names


def series(text):
    """(series selector, value) of every sample line of a text exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, _, value = line.rpartition(" ")
        out.append((head, value))
    return out


def references(expr):
    """(metric names, label names) that a PromQL expression uses."""
    labels = set()
    e = expr
    # Label matchers: {name="value", other=~"..."}; strings may hold anything, so they go first.
    for body in re.findall(r"\{([^}]*)\}", e):
        labels.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', " ", e)
    # Grouping and vector matching: by (a, b), without (...), on (...), group_left (...).
    for body in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        labels.update(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", body))
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery durations
    e = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", e)  # numbers
    metrics = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        following = e[m.end():].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        metrics.add(word)
    return metrics, labels


def unknown_references(expr, known):
    """What `expr` uses that troupe does not export: ([metric names], [label names])."""
    metrics, labels = references(expr)
    known = {**SYNTHETIC, **known}
    missing_metrics = sorted(m for m in metrics if m not in known)
    available = set(TARGET_LABELS)
    for m in metrics:
        available |= known.get(m, set())
    missing_labels = sorted(labels - available)
    return missing_metrics, missing_labels
