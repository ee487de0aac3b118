#!/usr/bin/env python3
"""Exports real torchvision / transformers architectures to ONNX without their weights.

Runs where torch, torchvision and transformers are installed (the GPU host); needs no network: every
model is built from its config with random initialisation. Each graph is written to
OUT/<name>.onnx with its large float initializers moved to external data in "<name>.weights", which
is NOT kept: tests/models/fill_weights.py writes deterministic values into it at test time. Integer
tensors (shape constants, position ids) always stay inline so the graph's meaning is intact.
OUT/manifest.json records each model's inputs.
"""
import argparse
import json
import os
import sys
import traceback

import onnx
import torch

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}


def strip_weights(path, name, threshold_bytes=1024):
    model = onnx.load(path, load_external_data=True)
    offset = 0
    moved = 0
    for t in model.graph.initializer:
        if t.data_type not in FLOAT_TYPES:
            continue
        raw = onnx.numpy_helper.to_array(t).tobytes()
        if len(raw) < threshold_bytes:
            continue
        dims = list(t.dims)
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.ClearField("double_data")
        t.ClearField("int32_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", f"{name}.weights"), ("offset", str(offset)), ("length", str(len(raw)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        offset += (len(raw) + 63) // 64 * 64
        moved += 1
        assert list(t.dims) == dims
    for f in os.listdir(os.path.dirname(path)):
        if f.endswith(".data") or f == f"{name}.weights":
            pass
    onnx.save(model, path)
    return moved, offset


def io_manifest(path):
    m = onnx.load(path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    def desc(v):
        tt = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
        return {"dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, "shape": dims}
    return {"inputs": {v.name: desc(v) for v in m.graph.input if v.name not in inits},
            "outputs": {v.name: desc(v) for v in m.graph.output},
            "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))}


def export(module, args, path, input_names, output_names, dynamic_axes, opset):
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, path, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def vision_models():
    import torchvision.models as tvm
    names = ["resnet50", "mobilenet_v3_large", "vit_b_16", "resnet18", "efficientnet_b0",
             "densenet121", "squeezenet1_1", "convnext_tiny", "regnet_y_400mf",
             "shufflenet_v2_x1_0", "mnasnet1_0", "googlenet", "swin_t", "alexnet", "resnext50_32x4d"]
    for n in names:
        kwargs = {"weights": None}
        if n == "googlenet":
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = True
        yield n, (lambda n=n, kw=kwargs: getattr(tvm, n)(**kw)), "image"


class TextWrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out[0]


def text_models():
    import transformers as tf
    specs = {
        "bert_base": lambda: tf.BertModel(tf.BertConfig(), add_pooling_layer=False),
        "bert_base_classifier": lambda: tf.BertForSequenceClassification(tf.BertConfig(num_labels=3)),
        "distilbert": lambda: tf.DistilBertModel(tf.DistilBertConfig()),
        "roberta": lambda: tf.RobertaModel(tf.RobertaConfig(), add_pooling_layer=False),
        "albert": lambda: tf.AlbertModel(tf.AlbertConfig(hidden_size=768, num_attention_heads=12,
                                                          intermediate_size=3072), add_pooling_layer=False),
        "electra": lambda: tf.ElectraModel(tf.ElectraConfig()),
        "minilm_l6": lambda: tf.BertModel(tf.BertConfig(hidden_size=384, num_hidden_layers=6,
                                                        num_attention_heads=12, intermediate_size=1536),
                                          add_pooling_layer=False),
    }
    for n, make in specs.items():
        def build(make=make):
            m = make()
            m.config._attn_implementation = "eager"
            return TextWrapper(m)
        yield n, build, "text"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    # nn.MultiheadAttention's fused fast path (ViT) has no ONNX export; the plain path does.
    torch.backends.mha.set_fastpath_enabled(False)
    manifest = {}
    failures = []
    for name, build, kind in list(vision_models()) + list(text_models()):
        if a.only and name not in a.only.split(","):
            continue
        path = os.path.join(a.out, f"{name}.onnx")
        try:
            m = build()
            if kind == "image":
                x = torch.randn(2, 3, 224, 224)
                export(m, (x,), path, ["input"], ["logits"], {"input": {0: "batch"}, "logits": {0: "batch"}},
                       a.opset)
            else:
                ids = torch.randint(0, 1000, (2, 16))
                mask = torch.ones(2, 16, dtype=torch.int64)
                export(m, (ids, mask), path, ["input_ids", "attention_mask"], ["output"],
                       {"input_ids": {0: "batch", 1: "sequence"},
                        "attention_mask": {0: "batch", 1: "sequence"},
                        "output": {0: "batch", 1: "sequence"}}, a.opset)
            moved, nbytes = strip_weights(path, name)
            for f in os.listdir(a.out):
                if f.startswith(name) and not f.endswith(".onnx"):
                    os.remove(os.path.join(a.out, f))
            entry = io_manifest(path)
            entry["kind"] = kind
            entry["weights_bytes"] = nbytes
            if kind == "text":
                entry["vocab_size"] = int(m.model.config.vocab_size)
            manifest[name] = entry
            print(f"{name}: {os.path.getsize(path)} bytes graph, {moved} tensors / {nbytes} bytes stripped",
                  flush=True)
        except Exception:
            failures.append(name)
            traceback.print_exc()
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print("failed:", failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
