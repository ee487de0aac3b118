#!/usr/bin/env python3
"""Creates the demo's model repository and sample inputs (scripts/demo.sh runs it).

The repository keeps only the configs (demo/models/<name>/config.yaml); the model files are made
here, deterministically, because the repo keeps graphs without weights:

  squeezenet/1/   SqueezeNet 1.1 from tests/models, weights filled by tests/models/fill_weights.py
                  (seeded, calibrated): an image classifier whose "classes" mean nothing, but whose
                  compute is the real architecture's
  mlp/1/          a tiny MLP (64 -> 128 -> 10) with seeded weights: cheap enough that batching and
                  the transport, not the compute, show in `troupe bench`

Sample inputs go to OUT_DIR: image<k>.npz, each one "photo" (a smooth synthetic scene, 224x224 RGB,
uint8 pixels or ImageNet-normalised float32 depending on what the squeezenet config takes), and
mlp.npz. Files that exist already are kept (a second run is quick).

    make_repository.py REPO_DIR OUT_DIR
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def make_squeezenet(version_dir):
    if os.path.exists(os.path.join(version_dir, "model.onnx")):
        return
    with tempfile.TemporaryDirectory() as tmp:
        fill = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "models", "fill_weights.py"),
                               os.path.join(ROOT, "tests", "models", "squeezenet1_1.onnx"), tmp],
                              capture_output=True, text=True)
        if fill.returncode != 0:
            sys.exit("fill_weights.py failed:\n" + fill.stdout + fill.stderr)
        os.makedirs(version_dir, exist_ok=True)
        # The graph names its external data file (squeezenet1_1.weights): it moves along unchanged.
        for name in os.listdir(tmp):
            if name != "squeezenet1_1.onnx":
                shutil.move(os.path.join(tmp, name), os.path.join(version_dir, name))
        shutil.move(os.path.join(tmp, "squeezenet1_1.onnx"), os.path.join(version_dir, "model.onnx"))


def make_mlp(version_dir, din=64, dh=128, dout=10):
    path = os.path.join(version_dir, "model.onnx")
    if os.path.exists(path):
        return
    rng = np.random.default_rng(2024)
    w = {"W1": rng.standard_normal((din, dh)) / np.sqrt(din), "b1": rng.uniform(-0.1, 0.1, dh),
         "W2": rng.standard_normal((dh, dout)) / np.sqrt(dh), "b2": rng.uniform(-0.1, 0.1, dout)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["y0"]),
             helper.make_node("Add", ["y0", "b2"], ["logits"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", din])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", dout])],
                          [numpy_helper.from_array(a.astype(np.float32), n) for n, a in w.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    os.makedirs(version_dir, exist_ok=True)
    onnx.save(m, path)


def scene(k, size=224):
    """A smooth synthetic RGB scene (uint8 HWC): sky-like gradient, a disc and stripes, seeded by k."""
    rng = np.random.default_rng(k)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    for c in range(3):
        img[..., c] = top[c] * (1 - y) + bottom[c] * y
    cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.3)]
    disc = (x - cx) ** 2 + (y - cy) ** 2 < r * r
    img[disc] = rng.uniform(0, 255, 3)
    stripes = np.sin(x * rng.uniform(10, 40)) > 0.8
    img[stripes] = img[stripes] * 0.5
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def squeezenet_input_dtype(repo):
    """uint8 when the squeezenet config declares uint8 input (normalised on the node), else float32."""
    try:
        text = open(os.path.join(repo, "squeezenet", "config.yaml")).read()
    except OSError:
        return "float32"
    return "uint8" if "dtype: uint8" in text else "float32"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    repo, out = sys.argv[1], sys.argv[2]
    make_squeezenet(os.path.join(repo, "squeezenet", "1"))
    make_mlp(os.path.join(repo, "mlp", "1"))
    os.makedirs(out, exist_ok=True)
    dtype = squeezenet_input_dtype(repo)
    for k in range(1, 4):
        img = scene(k).transpose(2, 0, 1)[None]  # NCHW, batch of one
        if dtype == "float32":
            img = ((img.astype(np.float32) - MEAN[:, None, None]) / STD[:, None, None]).astype(np.float32)
        np.savez(os.path.join(out, f"image{k}.npz"), input=img)
    np.savez(os.path.join(out, "mlp.npz"), x=np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32))


if __name__ == "__main__":
    main()
