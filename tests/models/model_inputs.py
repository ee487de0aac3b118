"""Random inputs for whole-model tests and benchmarks, from a manifest entry or a model's own inputs.

A manifest entry ({"inputs": {name: {"dtype": "float32", "shape": ["batch", 3, 224, 224]}}, ...,
"kind": "image"|"text", "vocab_size": N}) names its dynamic dims; "batch" and anything that reads
like a sequence length are bound by the caller, other unknown dims fall back to the sequence length.
Floats are N(0, 1); int64 token ids lie in [0, vocab); masks are ones with trailing zeros that differ
per row, so that padding is exercised without ever masking a whole row.
"""
import numpy as np
import onnx


def spec_from_model(model):
    """{"inputs": {...}} in manifest form, read from a ModelProto's graph inputs (initializers excluded)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = {}
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
        inputs[v.name] = {"dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, "shape": dims}
    return {"inputs": inputs, "vocab_size": guess_vocab_size(model)}


def guess_vocab_size(model):
    """Rows of the smallest embedding table indexed directly by an integer graph input, else None."""
    inits = {t.name: t for t in model.graph.initializer}
    graph_inputs = {v.name for v in model.graph.input} - set(inits)
    sizes = [inits[n.input[0]].dims[0] for n in model.graph.node
             if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in graph_inputs
             and n.input[0] in inits and len(inits[n.input[0]].dims) >= 1]
    return int(min(sizes)) if sizes else None


def resolve_shape(shape, batch, seq):
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            out.append(d)
            continue
        name = d.lower() if isinstance(d, str) else ""
        if "batch" in name or (not name and i == 0):
            out.append(batch)
        else:
            out.append(seq)
    return out


def make_inputs(entry, batch, seq, rng):
    """Returns {name: ndarray} for every input of a manifest entry."""
    vocab = entry.get("vocab_size") or 100
    feeds = {}
    for name, desc in entry["inputs"].items():
        shape = resolve_shape(desc["shape"], batch, seq)
        dtype = np.dtype(desc["dtype"])
        lname = name.lower()
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = np.ones(shape, dtype)
        elif "mask" in lname:
            feeds[name] = padding_mask(shape, dtype)
        elif "token_type" in lname or "segment" in lname:
            feeds[name] = np.zeros(shape, dtype)
        else:
            feeds[name] = rng.integers(0, vocab, size=shape).astype(dtype)
    return feeds


def padding_mask(shape, dtype):
    """Ones with 2, 5, 8, ... trailing zeros per row (capped so each row keeps at least one 1)."""
    mask = np.ones(shape, dtype)
    if len(shape) >= 2 and shape[-1] > 1:
        rows = mask.reshape(-1, shape[-1])
        for r in range(rows.shape[0]):
            zeros = min(2 + 3 * r, shape[-1] - 1)
            rows[r, shape[-1] - zeros:] = 0
    return mask
