#!/usr/bin/python3
"""Writes a random LLaMA or Qwen2 checkpoint of any shape, for benchmarks at real model sizes.

Weights ~ N(0, 0.02^2) (initializer_range; norms 1, biases 0), stored as BF16 (or F16/F32) in a
sharded safetensors checkpoint (model-0000k-of-0000n.safetensors + model.safetensors.index.json,
FORMATS.md §1.6, at least 2 shards), with config.json as transformers writes it and the demo
model's tokenizer (its ids are < 2048, so any vocab >= 2048 accepts them). Deterministic for a seed.
Tensors are made one at a time, so memory stays near one shard.

Usage: /usr/bin/python3 packaging/make_random_model.py OUT_DIR [--preset tinyllama-1.1b|llama-7b|qwen2-0.5b]
           [--layers N] [--hidden K] [--intermediate F] [--heads H] [--kv-heads Hkv] [--vocab V]
           [--arch llama|qwen2] [--dtype BF16] [--shards 2] [--seed 0]
e.g. a 1.1B-shaped model with 2 layers: make_random_model.py /tmp/tl2 --preset tinyllama-1.1b --layers 2
"""
import argparse
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(HERE, "..", "resources", "demo")
sys.path.insert(0, DEMO)
import llama_ref  # noqa: E402

PRESETS = {
    "tinyllama-1.1b": dict(arch="llama", layers=22, hidden=2048, intermediate=5632, heads=32, kv_heads=4,
                           vocab=32000, rope_theta=10000.0, tie=False),
    "llama-7b": dict(arch="llama", layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32,
                     vocab=32000, rope_theta=10000.0, tie=False),
    "qwen2-0.5b": dict(arch="qwen2", layers=24, hidden=896, intermediate=4864, heads=14, kv_heads=2,
                       vocab=151936, rope_theta=1000000.0, tie=True),
}


def tensor_specs(cfg):
    """(name, shape, kind) for every tensor of the checkpoint, in layer order."""
    K, F, H, Hkv, d = (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"],
                       cfg["num_key_value_heads"], cfg["head_dim"])
    qkv_bias = cfg["model_type"] == "qwen2"
    out = [("model.embed_tokens.weight", [cfg["vocab_size"], K], "w")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", [K], "norm"), (p + "post_attention_layernorm.weight", [K], "norm")]
        for n, rows in (("q_proj", H * d), ("k_proj", Hkv * d), ("v_proj", Hkv * d)):
            out.append((p + "self_attn." + n + ".weight", [rows, K], "w"))
            if qkv_bias:
                out.append((p + "self_attn." + n + ".bias", [rows], "bias"))
        out.append((p + "self_attn.o_proj.weight", [K, H * d], "w"))
        out += [(p + "mlp.gate_proj.weight", [F, K], "w"), (p + "mlp.up_proj.weight", [F, K], "w"),
                (p + "mlp.down_proj.weight", [K, F], "w")]
    out.append(("model.norm.weight", [K], "norm"))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", [cfg["vocab_size"], K], "w"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tinyllama-1.1b")
    ap.add_argument("--arch", choices=["llama", "qwen2"])
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--intermediate", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--dtype", choices=["BF16", "F16", "F32"], default="BF16")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    p = dict(PRESETS[a.preset])
    for k in ("arch", "layers", "hidden", "intermediate", "heads", "kv_heads", "vocab"):
        if getattr(a, k) is not None:
            p[k] = getattr(a, k)
    if p["hidden"] % p["heads"] or p["heads"] % p["kv_heads"] or p["vocab"] < 2048 or a.shards < 2:
        sys.exit("need hidden % heads == 0, heads % kv_heads == 0, vocab >= 2048 (the demo tokenizer), shards >= 2")
    cfg = {"model_type": p["arch"], "hidden_size": p["hidden"], "intermediate_size": p["intermediate"],
           "num_hidden_layers": p["layers"], "num_attention_heads": p["heads"], "num_key_value_heads": p["kv_heads"],
           "head_dim": p["hidden"] // p["heads"], "vocab_size": p["vocab"], "rms_norm_eps": 1e-5 if p["arch"] == "llama"
           else 1e-6, "rope_theta": p["rope_theta"], "max_position_embeddings": 2048, "bos_token_id": 2047,
           "eos_token_id": 2047, "tie_word_embeddings": p["tie"]}
    hf = llama_ref.hf_config(cfg)
    hf["torch_dtype"] = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[a.dtype]
    if p["arch"] == "qwen2":
        hf.pop("head_dim", None)

    specs = tensor_specs(cfg)
    elem = 4 if a.dtype == "F32" else 2
    total = sum(elem * torch.Size(s).numel() for _, s, _ in specs)
    per_shard = (total + a.shards - 1) // a.shards
    shards, cur, size = [], [], 0
    for spec in specs:  # greedy split in layer order; every shard gets at least one tensor
        cur.append(spec)
        size += elem * torch.Size(spec[1]).numel()
        if size >= per_shard and len(shards) < a.shards - 1:
            shards.append(cur)
            cur, size = [], 0
    if cur:
        shards.append(cur)

    os.makedirs(a.out, exist_ok=True)
    gen = torch.Generator().manual_seed(a.seed)
    weight_map = {}
    n = len(shards)
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        tensors = {}
        for name, shape, kind in shard:
            if kind == "w":
                tensors[name] = torch.randn(shape, generator=gen) * 0.02
            elif kind == "norm":
                tensors[name] = torch.ones(shape)
            else:
                tensors[name] = torch.zeros(shape)
            weight_map[name] = fname
        llama_ref.write_safetensors(os.path.join(a.out, fname), tensors, a.dtype)
        print(f"{fname}: {len(shard)} tensors", flush=True)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
    for t in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(DEMO, t), os.path.join(a.out, t))
    shutil.copy(os.path.join(DEMO, "calib.txt"), os.path.join(a.out, "calib.txt"))
    print(f"{a.out}: {p['layers']} layers, hidden {p['hidden']}, {total / 2**20:.1f} MiB in {n} shards ({a.dtype})")


if __name__ == "__main__":
    main()
