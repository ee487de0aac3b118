#!/usr/bin/env python3
"""Small stand-ins for the exported models, built with onnx.helper and shaped like the real thing.

Both are saved the way export_models.py leaves a real export: the graph only, with float
initializers pointing at external data "<name>.weights" that is NOT written (fill_weights.py writes
it), and a manifest entry in the same form as tests/models/manifest.json. They keep the whole-model
pipeline (fill weights -> ORT vs troupe) exercised whatever models are on disk.

  small_cnn          Conv-BN-Relu-MaxPool, a residual block (Conv-BN-Relu-Conv-BN, Add, Relu),
                     a strided Conv shortcut block, GlobalAveragePool, Flatten, Gemm; dynamic batch
  tiny_transformer   a BERT-style encoder layer as torch.onnx exports it: embeddings (Gather), the
                     position-id Slice driven by Shape->Gather->Unsqueeze, the extended attention
                     mask (Unsqueeze, Cast, Sub, Mul by float min), LayerNormalization, MatMul+Add
                     projections, head split via Shape->Gather->Unsqueeze->Concat->Reshape and
                     Transpose, Softmax, erf-GELU; dynamic batch and sequence

    standins.py OUT_DIR   -> writes OUT_DIR/<name>.onnx and OUT_DIR/manifest.json
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _external(name, shape, location, offset):
    """A float32 initializer whose data lies in `location` at `offset` (64-byte aligned)."""
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(shape)
    t.data_location = TensorProto.EXTERNAL
    nbytes = int(np.prod(shape)) * 4
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t, offset + (nbytes + 63) // 64 * 64


class _builder:
    def __init__(self, name):
        self.name = name
        self.nodes = []
        self.inits = []
        self.offset = 0
        self.counter = 0

    def weight(self, name, shape):
        t, self.offset = _external(name, shape, f"{self.name}.weights", self.offset)
        self.inits.append(t)
        return name

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        self.counter += 1
        outs = [f"/{op.lower()}_{self.counter}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"/{op}_{self.counter}", **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs, outputs):
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="troupe-standins")
        m.ir_version = 8
        return m


def small_cnn():
    b = _builder("small_cnn")

    def conv_bn(x, cin, cout, k, stride, prefix, relu=True):
        w = b.weight(f"{prefix}.conv.weight", [cout, cin, k, k])
        y = b.node("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
        y = b.node("BatchNormalization",
                   [y, b.weight(f"{prefix}.bn.weight", [cout]), b.weight(f"{prefix}.bn.bias", [cout]),
                    b.weight(f"{prefix}.bn.running_mean", [cout]), b.weight(f"{prefix}.bn.running_var", [cout])],
                   epsilon=1e-5)
        return b.node("Relu", [y]) if relu else y

    x = conv_bn("input", 3, 16, 3, 1, "stem")
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    # identity residual block
    y = conv_bn(x, 16, 16, 3, 1, "layer1.0.a")
    y = conv_bn(y, 16, 16, 3, 1, "layer1.0.b", relu=False)
    x = b.node("Relu", [b.node("Add", [x, y])])
    # downsampling block with a strided 1x1 conv shortcut
    y = conv_bn(x, 16, 32, 3, 2, "layer2.0.a")
    y = conv_bn(y, 32, 32, 3, 1, "layer2.0.b", relu=False)
    s = conv_bn(x, 16, 32, 1, 2, "layer2.0.down", relu=False)
    x = b.node("Relu", [b.node("Add", [s, y])])
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    b.node("Gemm", [x, b.weight("fc.weight", [10, 32]), b.weight("fc.bias", [10])], transB=1)
    b.nodes[-1].output[0] = "logits"
    m = b.model([helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])])
    entry = {"inputs": {"input": {"dtype": "float32", "shape": ["batch", 3, 32, 32]}},
             "outputs": {"logits": {"dtype": "float32", "shape": ["batch", 10]}},
             "opset": OPSET, "kind": "image"}
    return m, entry


def tiny_transformer(vocab=100, hidden=32, heads=4, ffn=64, max_pos=64):
    b = _builder("tiny_transformer")
    head_dim = hidden // heads
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731

    # embeddings: word + position (+ token type 0), LayerNorm
    words = b.node("Gather", [b.weight("embeddings.word_embeddings.weight", [vocab, hidden]), "input_ids"])
    ids_shape = b.node("Shape", ["input_ids"])
    seq_len = b.node("Gather", [ids_shape, b.const("/c_one", np.array(1, np.int64))], axis=0)
    seq_len_1d = b.node("Unsqueeze", [seq_len, b.const("/c_axes0", i64(0))])
    pos_ids = b.node("Slice", [b.const("embeddings.position_ids", np.arange(max_pos, dtype=np.int64)[None, :]),
                               b.const("/c_zero_1d", i64(0)), seq_len_1d, b.const("/c_axis1_1d", i64(1)),
                               b.const("/c_step1", i64(1))])
    pos = b.node("Gather", [b.weight("embeddings.position_embeddings.weight", [max_pos, hidden]), pos_ids])
    tok = b.node("Gather", [b.weight("embeddings.token_type_embeddings.weight", [2, hidden]),
                            b.const("/c_tok0", np.zeros((1, 1), np.int64))])
    x = b.node("Add", [b.node("Add", [words, tok]), pos])

    def layer_norm(x, prefix):
        # LN parameters stay inline, as export_models.py keeps tensors below 1 KiB
        g = b.const(f"{prefix}.weight", np.linspace(0.8, 1.2, hidden, dtype=np.float32))
        be = b.const(f"{prefix}.bias", np.linspace(-0.05, 0.05, hidden, dtype=np.float32))
        return b.node("LayerNormalization", [x, g, be], axis=-1, epsilon=1e-12)

    x = layer_norm(x, "embeddings.LayerNorm")

    # extended attention mask: (1 - mask[:, None, None, :]) * finfo(float32).min
    m = b.node("Unsqueeze", ["attention_mask", b.const("/c_axes12", i64(1, 2))])
    m = b.node("Cast", [m], to=TensorProto.FLOAT)
    m = b.node("Sub", [b.const("/c_onef", np.array(1.0, np.float32)), m])
    mask_add = b.node("Mul", [m, b.const("/c_fmin", np.array(np.finfo(np.float32).min, np.float32))])

    def linear(x, prefix, cin, cout):
        y = b.node("MatMul", [x, b.weight(f"{prefix}.weight_t", [cin, cout])])
        return b.node("Add", [b.weight(f"{prefix}.bias", [cout]), y])

    def dim(x, i):
        s = b.node("Shape", [x])
        d = b.node("Gather", [s, b.const(f"/c_idx{b.counter}", np.array(i, np.int64))], axis=0)
        return b.node("Unsqueeze", [d, b.const(f"/c_ax{b.counter}", i64(0))])

    def split_heads(t, perm):
        shape = b.node("Concat", [dim(t, 0), dim(t, 1), b.const(f"/c_h{b.counter}", i64(heads)),
                                  b.const(f"/c_d{b.counter}", i64(head_dim))], axis=0)
        return b.node("Transpose", [b.node("Reshape", [t, shape])], perm=perm)

    p = "encoder.layer.0.attention"
    q = split_heads(linear(x, f"{p}.self.query", hidden, hidden), [0, 2, 1, 3])
    k = split_heads(linear(x, f"{p}.self.key", hidden, hidden), [0, 2, 3, 1])
    v = split_heads(linear(x, f"{p}.self.value", hidden, hidden), [0, 2, 1, 3])
    scores = b.node("MatMul", [q, k])
    scores = b.node("Div", [scores, b.const("/c_sqrt_d", np.array(np.sqrt(head_dim), np.float32))])
    scores = b.node("Add", [scores, mask_add])
    probs = b.node("Softmax", [scores], axis=-1)
    ctx = b.node("Transpose", [b.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    merged = b.node("Concat", [dim(x, 0), dim(x, 1), b.const("/c_hidden", i64(hidden))], axis=0)
    ctx = b.node("Reshape", [ctx, merged])
    attn = linear(ctx, f"{p}.output.dense", hidden, hidden)
    x = layer_norm(b.node("Add", [attn, x]), f"{p}.output.LayerNorm")

    # FFN with the erf GELU as torch writes it: x * 0.5 * (1 + erf(x / sqrt(2)))
    f = "encoder.layer.0"
    h = linear(x, f"{f}.intermediate.dense", hidden, ffn)
    e = b.node("Erf", [b.node("Div", [h, b.const("/c_sqrt2", np.array(1.4142135, np.float32))])])
    e = b.node("Add", [e, b.const("/c_one_f", np.array(1.0, np.float32))])
    h = b.node("Mul", [b.node("Mul", [h, e]), b.const("/c_half", np.array(0.5, np.float32))])
    h = linear(h, f"{f}.output.dense", ffn, hidden)
    x = layer_norm(b.node("Add", [h, x]), f"{f}.output.LayerNorm")
    b.nodes[-1].output[0] = "output"

    model = b.model([helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
                     helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
                    [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", "sequence", hidden])])
    entry = {"inputs": {"input_ids": {"dtype": "int64", "shape": ["batch", "sequence"]},
                        "attention_mask": {"dtype": "int64", "shape": ["batch", "sequence"]}},
             "outputs": {"output": {"dtype": "float32", "shape": ["batch", "sequence", hidden]}},
             "opset": OPSET, "kind": "text", "vocab_size": vocab}
    return model, entry


BUILDERS = {"small_cnn": small_cnn, "tiny_transformer": tiny_transformer}


def write_all(out_dir):
    """Writes every stand-in graph (no weights) into out_dir; returns {name: manifest entry}."""
    os.makedirs(out_dir, exist_ok=True)
    manifest = {}
    for name, build in BUILDERS.items():
        model, entry = build()
        onnx.save(model, os.path.join(out_dir, f"{name}.onnx"))
        manifest[name] = entry
    return manifest


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    manifest = write_all(sys.argv[1])
    with open(os.path.join(sys.argv[1], "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
