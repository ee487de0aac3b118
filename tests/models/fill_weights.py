#!/usr/bin/env python3
"""Gives a weightless model deterministic weights: writes its missing external data files next to a
copy of the model in another folder.

tests/models/*.onnx hold real architectures whose large float initializers point at external data
that is not committed. Each such tensor gets values from a numpy Generator seeded with the CRC32 of
its name, drawn according to the role its consumers give it:

  conv / linear weight        N(0, 1/fan_in)
  embedding table, other      N(0, 0.02)
  BN / LN / layer scale       U(0.5, 1.5)     BN running_var too (it is a divisor)
  bias, BN mean and shift     U(-0.1, 0.1)

Deep nets still drift away from unit activations (residual sums, BN with made-up statistics,
sigmoid gates, SiLU), so a calibration step then runs the model on one sample of seeded random
inputs with ONNX Runtime and rescales every Conv/ConvTranspose/Gemm/MatMul weight, front to back,
until each layer's output has RMS within 1/4 octave of 1 (see calibrate()). Activations then stay
O(1) through the depth of the net, which keeps fp16 runs meaningful and the CPU free of denormals.
Scale factors are powers of 2^(1/8), so rounding noise in the calibration run hardly ever changes
the weights written.

A model without external data is copied unchanged. The model file itself is never rewritten, only
copied, so what is tested is the graph that was exported.

    fill_weights.py MODEL.onnx OUT_DIR [--no-calibrate]   -> prints OUT_DIR/MODEL.onnx
"""
import argparse
import math
import os
import shutil
import sys
import zlib

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_inputs  # noqa: E402

# Ops that only move or relabel a weight on its way to the op that gives it its role.
PASS_THROUGH = {"Identity", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Cast", "Flatten",
                "Expand", "Tile"}
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


class fill_error(Exception):
    pass


def external_tensors(model):
    """[(TensorProto, location, offset, length or None)] for every initializer stored externally."""
    out = []
    tensors = list(model.graph.initializer)
    for node in model.graph.node:  # Constant nodes may point at external data too
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                tensors.append(a.t)
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if not loc or os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/"):
            raise fill_error(f"initializer {t.name!r}: unusable external data location {loc!r}")
        length = int(info["length"]) if "length" in info else None
        out.append((t, loc, int(info.get("offset", "0")), length))
    return out


def _consumers(graph):
    cons = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                cons.setdefault(name, []).append((node, i))
    return cons


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _role_from_use(node, idx, dims, direct):
    """(role, fan_in) that one use gives a tensor, or None when the use says nothing."""
    op = node.op_type
    rank = len(dims)
    prod_tail = int(np.prod(dims[1:])) if rank >= 2 else 1
    if op == "Conv" and idx == 1:
        return "weight", prod_tail
    if op == "ConvTranspose" and idx == 1:
        return "weight", int(dims[0] * np.prod(dims[2:])) if rank >= 3 else prod_tail
    if op in ("Conv", "ConvTranspose") and idx == 2:
        return "shift", 0
    if op == "Gemm" and idx in (0, 1) and rank == 2:
        if not direct:
            return "weight", prod_tail
        if idx == 1:
            return "weight", dims[1] if _attr(node, "transB", 0) else dims[0]
        return "weight", dims[0] if _attr(node, "transA", 0) else dims[1]
    if op == "Gemm" and idx == 2:
        return "shift", 0
    if op == "MatMul" and rank >= 2:
        if not direct:
            return "weight", prod_tail
        return "weight", dims[-2] if idx == 1 else dims[-1]
    if op == "Gather" and idx == 0:
        return "embedding", 0
    if op == "BatchNormalization":
        return {1: ("scale", 0), 2: ("shift", 0), 3: ("shift", 0), 4: ("scale", 0)}.get(idx)
    if op in ("LayerNormalization", "InstanceNormalization", "GroupNormalization",
              "SimplifiedLayerNormalization"):
        return {1: ("scale", 0), 2: ("shift", 0)}.get(idx)
    if op == "PRelu" and idx == 1:
        return "slope", 0
    if op in ("Mul", "Div", "Pow", "Sqrt"):
        return "scale", 0
    if op == "Concat":  # class tokens, register tokens
        return "embedding", 0
    if op in ("Add", "Sub"):
        n_big = sum(1 for d in dims if d > 1)
        return ("shift", 0) if n_big <= 1 else ("embedding", 0)
    return None


def _role_from_name(name, dims):
    n = name.lower()
    if "running_var" in n or n.endswith(".var"):
        return "scale", 0
    if "running_mean" in n or "bias" in n or n.endswith(".mean"):
        return "shift", 0
    if "embed" in n or "token" in n or "pos" in n:
        return "embedding", 0
    if len(dims) <= 1:
        return ("scale", 0) if "weight" in n or "gamma" in n else ("shift", 0)
    return "weight", int(np.prod(dims[1:]))


def classify(model):
    """{initializer name: (role, fan_in)} for the external tensors, from how the graph uses them."""
    cons = _consumers(model.graph)
    roles = {}
    for t, _, _, _ in external_tensors(model):
        dims = list(t.dims)
        found = []
        frontier = [(t.name, True)]
        for _ in range(4):  # follow pass-through ops a few levels
            nxt = []
            for value, direct in frontier:
                for node, idx in cons.get(value, []):
                    if node.op_type in PASS_THROUGH and idx == 0:
                        nxt.extend((o, False) for o in node.output)
                        continue
                    r = _role_from_use(node, idx, dims, direct)
                    if r:
                        found.append(r)
            frontier = nxt
        # A tensor used both as a table and as a weight (tied embeddings) keeps the table's init.
        by_role = {r: f for r, f in found}
        for role in ("embedding", "weight", "scale", "slope", "shift"):
            if role in by_role:
                roles[t.name] = (role, max(1, by_role[role]) if role == "weight" else 0)
                break
        else:
            roles[t.name] = _role_from_name(t.name, dims)
    return roles


def initial_value(name, dims, role, fan_in):
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    shape = tuple(int(d) for d in dims)
    if role == "weight":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(1.0 / math.sqrt(max(fan_in, 1)))
    if role == "embedding":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    if role == "scale":
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    if role == "slope":
        return rng.uniform(0.0, 0.25, size=shape).astype(np.float32)
    return rng.uniform(-0.1, 0.1, size=shape).astype(np.float32)


def _np_dtype(t):
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    except Exception as e:  # noqa: BLE001 - onnx raises several types for unknown enums
        raise fill_error(f"initializer {t.name!r}: data type {t.data_type} has no numpy equivalent") from e


def fill_values(model):
    """{name: ndarray in the tensor's own dtype} for every external tensor (before calibration)."""
    roles = classify(model)
    values = {}
    for t, _, _, _ in external_tensors(model):
        dt = _np_dtype(t)
        if dt.kind == "f" or dt.name == "bfloat16":
            role, fan_in = roles[t.name]
            values[t.name] = initial_value(t.name, t.dims, role, fan_in).astype(dt)
        else:  # integer / bool tensors carry meaning (indices, shapes): exporters keep them inline
            values[t.name] = np.zeros(tuple(t.dims), dt)
    return values


# ---- calibration ---------------------------------------------------------------------------------

def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _trace_initializer(producer, value, names):
    """The member of `names` that `value` is, or is a pass-through copy of (torch dedupes equal
    constants into Identity nodes), else None."""
    for _ in range(8):
        if value in names:
            return value
        n = producer.get(value)
        if n is None or n.op_type not in PASS_THROUGH or not n.input:
            return None
        value = n.input[0]
    return None


def _weighted_layers(model, external_names):
    """[(x_name, y_name, weight_init, node)] for Conv/ConvTranspose/Gemm/MatMul nodes whose weight is an
    external float initializer (reached through pass-through ops); one entry per weight."""
    producer = _producers(model)

    def source(value):
        return _trace_initializer(producer, value, external_names)

    layers, seen = [], set()
    for n in model.graph.node:
        if n.op_type not in WEIGHTED_OPS or len(n.input) < 2 or not n.output[0]:
            continue
        w0, w1 = source(n.input[0]), source(n.input[1])
        if n.op_type == "MatMul" and w0 and not w1:
            x, w = n.input[1], w0
        elif w1 and not w0:
            x, w = n.input[0], w1
        else:
            continue
        if w in seen:  # a shared weight (ALBERT) is scaled once, by its first use
            continue
        seen.add(w)
        layers.append((x, n.output[0], w, n))
    return layers


def _rms(a):
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


# How an op passes a change of scale from its inputs to its output, for predicting what a rescale
# does downstream:
#  NORMALIZING  the output's scale does not depend on the input's (normalisations, softmax, shape
#               and comparison results): nothing passes;
#  SQUASHING    a bounded function: its scale does not follow the input's, but where the input moves
#               unpredictably so does the output (a squeeze-excite gate);
#  AVERAGING    a mean over space: after SiLU's positive part it grows like the square of the scale,
#               so a change through it cannot be predicted (calibration measures again first);
#  otherwise    the output's scale follows the inputs' (FIRST_INPUT_ONLY: the first input's only).
NORMALIZING = {"LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
               "SimplifiedLayerNormalization", "Softmax", "LogSoftmax", "Shape", "Size", "ConstantOfShape",
               "Range", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or",
               "ArgMax", "ArgMin", "Constant", "IsNaN", "IsInf"}
SQUASHING = {"Sigmoid", "Tanh", "Erf", "HardSigmoid", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Softplus"}
AVERAGING = {"GlobalAveragePool", "ReduceMean"}
FIRST_INPUT_ONLY = {"Div", "Gather", "GatherElements", "Reshape", "Expand", "Tile", "Slice", "Pad",
                    "Resize", "Squeeze", "Unsqueeze", "Split", "Clip", "BatchNormalization", "Cast", "TopK"}


def _scale_dependencies(model, layer_outputs):
    """value -> (A, U): A = the layers whose change of scale carries into the value predictably,
    U = those whose change reaches it through an AVERAGING op (unpredictably)."""
    producer = _producers(model)
    memo = {}
    empty = frozenset()

    def walk(value):
        if value in memo:
            return memo[value]
        memo[value] = (empty, empty)  # guards against malformed cyclic graphs
        n = producer.get(value)
        if value in layer_outputs:
            result = (frozenset([value]), empty)
        elif n is None or n.op_type in NORMALIZING:
            result = (empty, empty)
        else:
            deps = [walk(i) for i in n.input if i]
            a_all = frozenset().union(*(d[0] for d in deps))
            u_all = frozenset().union(*(d[1] for d in deps))
            if n.op_type in AVERAGING:
                result = (empty, a_all | u_all)
            elif n.op_type in SQUASHING:
                result = (empty, u_all)
            elif n.op_type == "Where":
                picked = [walk(i) for i in n.input[1:3] if i]
                result = (frozenset().union(*(d[0] for d in picked)), u_all)
            elif n.op_type in FIRST_INPUT_ONLY:
                result = (walk(n.input[0])[0] if n.input and n.input[0] else empty, u_all)
            else:
                result = (a_all, u_all)
        memo[value] = result
        return result
    return walk


def _calibration_session(model, values, weights, fetch):
    """An ORT session of the model with the weights being calibrated as graph inputs (fed each run),
    the other filled tensors inline and `fetch` added to the outputs."""
    import onnxruntime as ort

    cal = onnx.ModelProto()
    cal.CopyFrom(model)
    g = cal.graph
    kept = []
    listed = {i.name for i in g.input}  # IR < 4 lists initializers as inputs already
    elem = {}
    for t in g.initializer:
        if t.name in weights:
            elem[t.name] = t.data_type
            if t.name not in listed:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        elif t.name in values:
            kept.append(numpy_helper.from_array(values[t.name], t.name))
        else:
            kept.append(t)
    del g.initializer[:]
    g.initializer.extend(kept)
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == onnx.TensorProto.EXTERNAL:
                a.t.CopyFrom(numpy_helper.from_array(values[a.t.name], a.t.name))
    present = {o.name for o in g.output}
    for y, w in fetch:
        if y not in present:
            g.output.append(onnx.helper.make_tensor_value_info(y, elem[w], None))
            present.add(y)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(cal.SerializeToString(), so, providers=["CPUExecutionProvider"])


def calibrate(model, values, feeds, passes=5, log=None):
    """Rescales the weights in `values` (in place) so that every weighted layer's output has RMS
    about 1 on `feeds` (LSUV-style); returns {layer output: RMS} as last measured.

    A pass goes front to back in topological order. Each layer's weight is scaled so that its
    output lands at RMS 1, counting the change its ancestors' rescales in this pass will make to
    its input (predicted through the ops in between, see NORMALIZING...). Where a layer's input
    depends on an already rescaled layer through an AVERAGING op, the pass first runs the model
    again to measure. Passes repeat until every layer is within 1/4 octave of RMS 1."""
    init_names = {t.name for t in model.graph.initializer}
    float_ext = {n for n, v in values.items() if v.dtype.kind == "f" and n in init_names}
    layers = _weighted_layers(model, float_ext)
    if not layers:
        return {}
    weights = {w for _, _, w, _ in layers}
    deps = _scale_dependencies(model, {y for _, y, _, _ in layers})
    # Offsets (biases, BN means and shifts) are zero while calibrating: they do not scale with the
    # weights, and where a layer is still far too small they dominate what follows and make the
    # predicted change of scale wrong. At RMS 1 their U(-0.1, 0.1) hardly moves the scale.
    roles = classify(model)
    offsets = {n: v for n, v in values.items() if roles.get(n, ("", 0))[0] == "shift" and n not in weights}
    values.update({n: np.zeros_like(v) for n, v in offsets.items()})
    try:
        sess = _calibration_session(model, values, weights, [(y, w) for _, y, w, _ in layers])
    finally:
        values.update(offsets)
    fetch = [y for _, y, _, _ in layers]

    runs = 0

    def measure():
        nonlocal runs
        runs += 1
        run_feeds = dict(feeds)
        run_feeds.update({w: values[w] for w in weights})
        return {y: _rms(o) for y, o in zip(fetch, sess.run(fetch, run_feeds))}

    rms = measure()
    for p in range(passes):
        if all(r > 0 and abs(math.log2(r)) <= 0.25 for r in rms.values()):
            break
        shift = {}  # predicted change of a rescaled layer's output level since the last measure, octaves
        for x, y, w, _ in layers:
            predictable, unpredictable = deps(x)
            if unpredictable & shift.keys():
                rms = measure()
                shift = {}
            # Ancestors add up (residuals, concats) as if uncorrelated: weigh their shifts by energy.
            anc = [(rms[a] ** 2, shift.get(a, 0.0)) for a in predictable
                   if 0 < rms.get(a, 0.0) < math.inf]
            energy = sum(e for e, _ in anc)
            dx = 0.5 * math.log2(sum(e * 4.0 ** sh for e, sh in anc) / energy) if energy > 0 else 0.0
            r = rms.get(y, 0.0)
            if not (r > 0 and math.isfinite(r)):
                continue
            octaves = round((-math.log2(r) - dx) * 8) / 8
            shift[y] = dx + octaves
            if octaves:
                values[w] = (values[w].astype(np.float32) * np.float32(2.0 ** octaves)).astype(values[w].dtype)
        rms = measure()
        if log:
            r = list(rms.values())
            log(f"calibration pass {p + 1} ({runs} runs): {len(layers)} layers, output rms min {min(r):.3g} "
                f"median {float(np.median(r)):.3g} max {max(r):.3g}")
    return rms


# ---- writing -------------------------------------------------------------------------------------

def write_external(model, values, dst_dir):
    files = {}
    try:
        for t, loc, offset, length in external_tensors(model):
            raw = np.ascontiguousarray(values[t.name]).tobytes()
            if length is not None and length != len(raw):
                raise fill_error(f"initializer {t.name!r}: external length {length} but dims/dtype "
                                 f"need {len(raw)} bytes")
            path = os.path.join(dst_dir, loc)
            if path not in files:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                files[path] = open(path, "wb")
            f = files[path]
            f.seek(offset)
            f.write(raw)
    finally:
        for f in files.values():
            f.close()
    return sorted(files)


def fill_model(src_model, dst_dir, calibrate_weights=True, calibration_entry=None, log=None):
    """Copies src_model into dst_dir and writes its external data there; returns the copy's path.

    calibration_entry: a manifest entry describing the inputs (default: the model's own inputs),
    used with batch 1, sequence 16 and a fixed seed for the calibration run."""
    os.makedirs(dst_dir, exist_ok=True)
    dst_model = os.path.join(dst_dir, os.path.basename(src_model))
    if os.path.abspath(dst_model) == os.path.abspath(src_model):
        raise fill_error("destination folder must differ from the model's folder")
    shutil.copyfile(src_model, dst_model)
    model = onnx.load(src_model, load_external_data=False)
    if not external_tensors(model):
        return dst_model
    values = fill_values(model)
    if calibrate_weights:
        entry = dict(calibration_entry) if calibration_entry else model_inputs.spec_from_model(model)
        if not entry.get("vocab_size"):
            entry["vocab_size"] = model_inputs.guess_vocab_size(model)
        feeds = model_inputs.make_inputs(entry, batch=1, seq=16, rng=np.random.default_rng(0))
        calibrate(model, values, feeds, log=log)
    write_external(model, values, dst_dir)
    return dst_model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out_dir")
    ap.add_argument("--no-calibrate", action="store_true", help="keep the plain fan-in initialisation")
    a = ap.parse_args()
    try:
        print(fill_model(a.model, a.out_dir, calibrate_weights=not a.no_calibrate,
                         log=lambda s: print(s, file=sys.stderr)))
    except fill_error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
