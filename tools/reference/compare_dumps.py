#!/usr/bin/env python3
"""Lines up two tensor dumps (edgellm's `tensor-dump` feature and tools/reference/
llama_tensor_dump.cpp) layer by layer and prints, per tensor, the largest difference and how
many values differ at all: the first tensor that is not bit-identical is where to look.

    compare_dumps.py EDGELLM_DIR LLAMA_DIR [N_LAYERS]

llama.cpp's last layer keeps only the rows it outputs: where the row counts differ, the last
rows are compared.
"""
import os
import sys

import numpy as np

NAMES = ["attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "attn_out", "ffn_inp", "ffn_norm",
         "ffn_act", "ffn_out", "l_out"]
# edgellm's name -> llama.cpp's names for the same tensor
ALIASES = {"ffn_act": ["ffn_swiglu", "ffn_geglu", "ffn_gelu"]}


def load(path):
    raw = open(path, "rb").read()
    ne = np.frombuffer(raw[:32], dtype=np.int64)
    values = np.frombuffer(raw[32:], dtype=np.float32)
    if ne[2] > 1:  # [head_dim, heads, tokens]: one row per token
        return values.reshape(int(ne[2] * ne[3]), int(ne[0] * ne[1]))
    return values.reshape(-1, int(ne[0]))


def find(dir_, names, layer):
    for n in names:
        p = os.path.join(dir_, f"{n}-{layer}.bin" if layer is not None else f"{n}.bin")
        if os.path.exists(p):
            return p
    return None


def compare(ours_path, theirs_path, label):
    a, b = load(ours_path), load(theirs_path)
    if a.shape[0] != b.shape[0]:
        rows = min(a.shape[0], b.shape[0])
        a, b = a[-rows:], b[-rows:]
    if a.shape != b.shape:
        print(f"{label:20s} shapes differ: {a.shape} vs {b.shape}")
        return
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = max(float(np.abs(b).max()), 1e-30)
    print(f"{label:20s} max |diff| {diff.max():.3e} (rel {diff.max() / scale:.1e}), "
          f"{int((a != b).sum())}/{a.size} values differ")


def main():
    ours, theirs = sys.argv[1], sys.argv[2]
    n_layers = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    for layer in range(n_layers):
        if find(ours, ["l_out"], layer) is None:
            break
        for name in NAMES:
            p = find(ours, [name], layer)
            q = find(theirs, [name] + ALIASES.get(name, []), layer)
            if p and q:
                compare(p, q, f"{name}-{layer}")
    for name in ["result_norm", "result_output"]:
        p, q = find(ours, [name], None), find(theirs, [name], None)
        if p and q:
            compare(p, q, name)


if __name__ == "__main__":
    main()
