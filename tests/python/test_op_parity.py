"""The per-op parity harness: every case of op_cases.py on every backend against ONNX Runtime.

Each case is a one-node ONNX model; ORT (CPU, graph optimisations off) runs it alone as the
reference. troupe runs all cases of one opset as one model of independent nodes (one process per
opset and backend, to stay fast); when that run fails, the group's cases run one by one so that each
failure lands on its own case. Inputs are random values from a fixed seed (printed in the header;
TROUPE_TEST_SEED=N replays another, TROUPE_TEST_SEED=random draws a fresh one). Tolerances: fp32 relative L2 1e-4, fp16 1e-2, ints and bools exact.
Backends: cpu always, cuda (fp32 and fp16) where `nvidia-smi -L` lists a GPU.
"""
import os
import tempfile

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import harness
from op_cases import CASES, INDEX_BY_VALUE

MODES = [("cpu", "fp32", 1e-4), ("cuda", "fp32", 1e-4), ("cuda", "fp16", 1e-2)]
IR_VERSION = 8  # what libonnx 1.12's checker accepts; every opset here is valid under it


def _node_parts(c, prefix, rng):
    """(node, initializers, graph inputs, output names, feeds) of case c with names under prefix."""
    inputs, inits, graph_inputs, feeds = [], [], [], {}
    for j, spec in enumerate(c.inputs):
        if spec is None:
            inputs.append("")
            continue
        name = f"{prefix}x{j}"
        inputs.append(name)
        value = spec.make(rng)
        if spec.const:
            inits.append(numpy_helper.from_array(value, name))
        else:
            feeds[name] = value
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    while inputs and inputs[-1] == "":
        inputs.pop()
    attrs = {k: (numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v) for k, v in c.attrs.items()}
    outputs = [f"{prefix}y{k}" for k in range(c.n_out)]
    node = helper.make_node(c.op, inputs, outputs, name=f"{prefix}{c.name}", **attrs)
    return node, inits, graph_inputs, outputs, feeds


def _model(nodes, inits, graph_inputs, graph_outputs, opset, name):
    graph = helper.make_graph(nodes, name, graph_inputs, graph_outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="troupe-parity")
    m.ir_version = IR_VERSION
    return m


class _prepared:
    """One case made concrete for this session: its inputs, its one-node model, ORT's outputs."""

    def __init__(self, c):
        rng = harness.rng_for("op", c.name)
        node, inits, gin, outs, feeds = _node_parts(c, "", rng)
        untyped = _model([node], inits, gin, [helper.make_empty_tensor_value_info(o) for o in outs], c.opset, c.name)
        inferred = onnx.shape_inference.infer_shapes(untyped, strict_mode=True)
        self.out_types = [o.type.tensor_type.elem_type for o in inferred.graph.output]
        self.case = c
        self.node, self.inits, self.graph_inputs, self.outputs, self.feeds = node, inits, gin, outs, feeds
        self.out_shapes = [None] * len(outs)
        ref_model = _model([node], inits, gin, self._typed_outputs(""), c.opset, c.name)
        self.expected = harness.ort_run(ref_model.SerializeToString(), feeds)
        # libonnx's checker wants a shape on every graph output: give the one ORT produced
        self.out_shapes = [list(self.expected[o].shape) for o in outs]
        self.model = _model([node], inits, gin, self._typed_outputs(""), c.opset, c.name)

    def _typed_outputs(self, prefix):
        return [helper.make_tensor_value_info(f"{prefix}{o}", t, s)
                for o, t, s in zip(self.outputs, self.out_types, self.out_shapes)]

    def renamed(self, prefix):
        """The case's node, initializers, inputs, outputs and feeds with every name under prefix."""
        def rn(n):
            return f"{prefix}{n}" if n else n
        node = onnx.NodeProto()
        node.CopyFrom(self.node)
        node.name = rn(node.name)
        node.input[:] = [rn(n) for n in node.input]
        node.output[:] = [rn(n) for n in node.output]
        inits = []
        for t in self.inits:
            t2 = onnx.TensorProto()
            t2.CopyFrom(t)
            t2.name = rn(t.name)
            inits.append(t2)
        gin = []
        for v in self.graph_inputs:
            v2 = onnx.ValueInfoProto()
            v2.CopyFrom(v)
            v2.name = rn(v.name)
            gin.append(v2)
        return node, inits, gin, self._typed_outputs(prefix), {rn(k): v for k, v in self.feeds.items()}


class _runner:
    def __init__(self, binary, tmp_dir):
        self.binary = binary
        self.tmp_dir = tmp_dir
        self.prepared = {}
        self.results = {}  # (backend, precision, opset) -> {case name: {output: array} or error text}

    def prepare(self, c):
        if c.name not in self.prepared:
            self.prepared[c.name] = _prepared(c)
        return self.prepared[c.name]

    def _run_one(self, p, backend, precision):
        path = os.path.join(self.tmp_dir, f"{p.case.name}.onnx")
        onnx.save(p.model, path)
        r = harness.run_troupe(path, p.feeds, backend, precision, binary=self.binary, timeout_s=120)
        return r.outputs if r.returncode == 0 else r.describe()

    def result(self, c, backend, precision):
        key = (backend, precision, c.opset)
        if key not in self.results:
            group = [self.prepare(x) for x in CASES if x.opset == c.opset]
            nodes, inits, gin, gout, feeds = [], [], [], [], {}
            for i, p in enumerate(group):
                n, it, gi, go, f = p.renamed(f"c{i}_")
                nodes.append(n)
                inits += it
                gin += gi
                gout += go
                feeds.update(f)
            path = os.path.join(self.tmp_dir, f"group_opset{c.opset}.onnx")
            onnx.save(_model(nodes, inits, gin, gout, c.opset, f"parity_opset{c.opset}"), path)
            r = harness.run_troupe(path, feeds, backend, precision, binary=self.binary, timeout_s=300)
            res = {}
            if r.returncode == 0:
                for i, p in enumerate(group):
                    res[p.case.name] = {o: r.outputs.get(f"c{i}_{o}") for o in p.outputs}
            else:  # find which cases fail, one process each
                for p in group:
                    res[p.case.name] = self._run_one(p, backend, precision)
            self.results[key] = res
        return self.results[key][c.name]


@pytest.fixture(scope="session")
def runner():
    binary = harness.require_troupe()
    with tempfile.TemporaryDirectory(prefix="troupe-parity-") as d:
        yield _runner(binary, d)


def _by_value_reason(p, got, tol):
    """fp16 ArgMax/TopK: the indices must select values equal (within tol) to ORT's choice."""
    c = p.case
    x = p.feeds.get("x0")
    if x is None:
        return None
    axis = c.attrs.get("axis", -1 if c.op == "TopK" else 0)
    reasons = []
    if c.op == "ArgMax":
        idx_got, idx_ref = got.get("y0"), p.expected["y0"]
        if idx_got is None or idx_got.shape != idx_ref.shape or idx_got.dtype != idx_ref.dtype:
            return f"y0: got {None if idx_got is None else (idx_got.shape, idx_got.dtype)}, " \
                   f"expected {(idx_ref.shape, idx_ref.dtype)}"
        if not c.attrs.get("keepdims", 1):
            idx_got, idx_ref = np.expand_dims(idx_got, axis), np.expand_dims(idx_ref, axis)
        if np.any((idx_got < 0) | (idx_got >= x.shape[axis])):
            return "y0: index out of range"
        picked = np.take_along_axis(x, idx_got, axis).astype(np.float64)
        best = np.take_along_axis(x, idx_ref, axis).astype(np.float64)
        if np.max(np.abs(picked - best)) > tol * max(1.0, float(np.max(np.abs(x)))):
            reasons.append("y0: ArgMax picks values that are not maximal")
    else:
        vals, idx = got.get("y0"), got.get("y1")
        reason, _ = harness.compare("y0", vals, p.expected["y0"], tol)
        if reason:
            reasons.append(reason)
        ref_idx = p.expected["y1"]
        if idx is None or idx.shape != ref_idx.shape or idx.dtype != ref_idx.dtype:
            reasons.append(f"y1: got {None if idx is None else (idx.shape, idx.dtype)}, "
                           f"expected {(ref_idx.shape, ref_idx.dtype)}")
        elif np.any((idx < 0) | (idx >= x.shape[axis])):
            reasons.append("y1: index out of range")
        else:
            reason, _ = harness.compare("y1 (values at indices)", np.take_along_axis(x, idx, axis),
                                        p.expected["y0"], tol)
            if reason:
                reasons.append(reason)
    return "; ".join(reasons) or None


def _params():
    out = []
    for backend, precision, tol in MODES:
        for c in CASES:
            out.append(pytest.param(c, backend, precision, tol, id=f"{backend}-{precision}-{c.name}"))
    return out


@pytest.mark.parametrize("c,backend,precision,tol", _params())
def test_op(c, backend, precision, tol, runner):
    if backend not in harness.available_backends():
        pytest.skip(f"no {backend} device here (nvidia-smi -L lists no GPU)")
    p = runner.prepare(c)
    got = runner.result(c, backend, precision)
    seed = harness.test_seed()
    if isinstance(got, str):
        pytest.fail(f"{c.name} ({c.op}, opset {c.opset}) on {backend}/{precision}: {got} (seed {seed})")
    if precision == "fp16" and c.op in INDEX_BY_VALUE:
        reason = _by_value_reason(p, got, tol)
        assert reason is None, f"{c.name} on {backend}/{precision}: {reason} (seed {seed})"
        return
    reasons = []
    for o in p.outputs:
        reason, _ = harness.compare(o, got.get(o), p.expected[o], tol)
        if reason:
            reasons.append(reason)
    assert not reasons, (f"{c.name} ({c.op}, opset {c.opset}) on {backend}/{precision}: "
                         + "; ".join(reasons) + f" (seed {seed})")
