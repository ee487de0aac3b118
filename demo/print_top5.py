#!/usr/bin/env python3
"""Prints the top-5 classes of a classifier's output .npz (the first output, softmaxed).

    print_top5.py OUT.npz LABEL
"""
import sys

import numpy as np

out = np.load(sys.argv[1])
logits = out[out.files[0]].reshape(-1).astype(np.float64)
p = np.exp(logits - logits.max())
p /= p.sum()
top = np.argsort(-p)[:5]
print(f"  {sys.argv[2]}: top-5 " + "  ".join(f"class {int(i):4d} ({100 * p[i]:4.1f}%)" for i in top))
