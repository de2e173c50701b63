#!/usr/bin/python3
"""Writes a copy of a LLaMA/Qwen2/Mistral model with strong activation outlier channels and the
same function: the test model of weight-and-activation quantization (issue 14, item 6).

Usage: /usr/bin/python3 packaging/make_outlier_model.py SRC_DIR DST_DIR [--channels 4]
          [--factor 50] [--down-factor 20] [--seed 0]

In every decoder layer, `--channels` input channels of the residual stream (the same ones in every
layer, as real outlier channels are) get their RMSNorm gains (input_layernorm and
post_attention_layernorm) multiplied by --factor, and the matching input columns of q/k/v_proj and
gate/up_proj divided by it; `--channels` intermediate channels get their up_proj rows multiplied
by --down-factor and the matching down_proj columns divided by it. x·W^T is unchanged in exact
arithmetic, so the model computes the same function (up to float rounding), but the inputs of the
qkv, gate_up and down linears carry channels --factor times louder than the rest: what makes
per-token W4A4 fail and what SmoothQuant and Hadamard rotations repair. Tensors keep their
dtype (F32, F16 or BF16, BF16 rounded to nearest even); every other file is copied.
Needs only python3-numpy (reads and writes safetensors itself, single file or sharded).
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in DTYPES:
            raise SystemExit(f"{path}: {name}: dtype {info['dtype']} not supported")
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
        tensors[name] = (info["dtype"], arr)
    return tensors, meta


def write_safetensors(path, tensors, meta):
    header, blobs, off = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def to_f32(dtype, arr):
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def from_f32(dtype, x):
    if dtype == "BF16":
        u = x.astype(np.float32).view(np.uint32)
        u = u + 0x7FFF + ((u >> 16) & 1)  # round to nearest even
        return (u >> 16).astype(np.uint16)
    return x.astype(DTYPES[dtype])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--factor", type=float, default=50.0)
    ap.add_argument("--down-factor", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.src, "config.json")))
    if cfg.get("model_type") not in ("llama", "qwen2", "mistral", "qwen3"):
        raise SystemExit(f"model_type {cfg.get('model_type')}: only LLaMA-style norms (gain w, not 1 + w)")
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    rng = np.random.default_rng(a.seed)
    hid_ch = np.sort(rng.choice(hidden, a.channels, replace=False))
    int_ch = np.sort(rng.choice(inter, a.channels, replace=False))

    os.makedirs(a.dst, exist_ok=True)
    files = [f for f in os.listdir(a.src) if f.endswith(".safetensors")]
    for f in os.listdir(a.src):
        p = os.path.join(a.src, f)
        if os.path.isfile(p) and f not in files:
            shutil.copy2(p, os.path.join(a.dst, f))
    touched = 0
    for f in files:
        tensors, meta = read_safetensors(os.path.join(a.src, f))
        for name, (dtype, arr) in list(tensors.items()):
            x, scale = to_f32(dtype, arr).copy(), None
            if name.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")):
                x[hid_ch] *= a.factor
            elif name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight")) or (
                name.endswith("up_proj.weight")
            ):
                x[:, hid_ch] /= a.factor
                if name.endswith("up_proj.weight"):
                    x[int_ch, :] *= a.down_factor
            elif name.endswith("up_proj.bias"):
                x[int_ch] *= a.down_factor
            elif name.endswith("down_proj.weight"):
                x[:, int_ch] /= a.down_factor
            else:
                continue
            tensors[name] = (dtype, from_f32(dtype, x))
            touched += 1
        write_safetensors(os.path.join(a.dst, f), tensors, meta)
    print(f"{touched} tensors rescaled; residual channels {hid_ch.tolist()} x{a.factor:g}, "
          f"intermediate channels {int_ch.tolist()} x{a.down_factor:g} -> {a.dst}")


if __name__ == "__main__":
    main()
