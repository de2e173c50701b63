"""Plain-torch reference of Hugging Face LlamaForCausalLM / Qwen2ForCausalLM (inference + training).

Written to follow transformers' modeling_llama.py step by step (RMSNorm in f32, rotate-half RoPE,
GQA repeat_kv, causal softmax attention scaled by 1/sqrt(head_dim), SwiGLU MLP, final norm,
untied or tied lm_head), with optional q/k/v(/o) biases and llama3 rope_scaling. Also holds the
safetensors writer/reader used by train.py and the test-fixture generator.
Used by resources/demo/train.py and tests/model/fixtures/make_fixtures.py.
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def rope_inv_freq(cfg, dtype=torch.float64):
    d = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).to(dtype) / d))
    rs = cfg.get("rope_scaling")
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        factor = rs["factor"]
        lo = rs["low_freq_factor"]
        hi = rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl = old / lo
        high_wl = old / hi
        wl = 2 * math.pi / inv
        inv_l = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wl < high_wl) * ~(wl > low_wl)
        inv = torch.where(medium, smoothed, inv_l)
    return inv


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        h = x.to(torch.float32) if dt != torch.float64 else x
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.eps)
        return self.weight * h.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        K, H, Hkv, d = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        qkv_bias = cfg.get("attention_bias", False) or cfg["model_type"] == "qwen2"
        o_bias = cfg.get("attention_bias", False) and cfg["model_type"] != "qwen2"
        self.q_proj = nn.Linear(K, H * d, bias=qkv_bias)
        self.k_proj = nn.Linear(K, Hkv * d, bias=qkv_bias)
        self.v_proj = nn.Linear(K, Hkv * d, bias=qkv_bias)
        self.o_proj = nn.Linear(H * d, K, bias=o_bias)
        self.H, self.Hkv, self.d = H, Hkv, d

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.d).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.Hkv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.Hkv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.Hkv
        k = k.repeat_interleave(rep, dim=1)  # repeat_kv: head h uses kv head h // rep
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(2, 3)) / math.sqrt(self.d)
        mask = torch.full((T, T), float("-inf"), dtype=s.dtype).triu(1)
        s = s + mask
        p = torch.softmax(s.to(torch.float32) if s.dtype != torch.float64 else s, dim=-1).to(q.dtype)
        a = (p @ v).transpose(1, 2).reshape(B, T, self.H * self.d)
        return self.o_proj(a)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        K, Fd = cfg["hidden_size"], cfg["intermediate_size"]
        b = cfg.get("mlp_bias", False)
        self.gate_proj = nn.Linear(K, Fd, bias=b)
        self.up_proj = nn.Linear(K, Fd, bias=b)
        self.down_proj = nn.Linear(Fd, K, bias=b)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.mlp = MLP(cfg)

    def forward(self, h, cos, sin):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight
        std = cfg.get("initializer_range", 0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    def rope(self, T, dtype):
        inv = rope_inv_freq(self.cfg, torch.float64 if dtype == torch.float64 else torch.float32)
        pos = torch.arange(T, dtype=inv.dtype)
        freqs = pos[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, ids):
        h = self.model.embed_tokens(ids)
        cos, sin = self.rope(ids.shape[1], h.dtype)
        for layer in self.model.layers:
            h = layer(h, cos, sin)
        return self.lm_head(self.model.norm(h))


def state_dict_for_export(model):
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    if model.cfg.get("tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    return sd


# safetensors dtype -> (bytes per element, numpy little-endian storage type); BF16 is stored as
# the upper 16 bits of an f32 (FORMATS.md §1.3) and widened by a shift.
_ST_DTYPES = {"F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, "<u2")}
_ST_ORDER = {"F32": 0, "BF16": 1, "F16": 2}  # the reference writer's order: widest dtype first


def _to_storage(t, dtype):
    t = t.detach().contiguous()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4", copy=False).tobytes(order="C")
    if dtype == "F16":
        return t.to(torch.float16).numpy().astype("<f2", copy=False).tobytes(order="C")
    if dtype == "BF16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2", copy=False).tobytes(order="C")
    raise ValueError("unsupported safetensors dtype " + dtype)


def write_safetensors(path, tensors, dtype="F32"):
    """tensors: name -> float torch tensor, stored as dtype (F32, F16 or BF16) except that a
    name -> (tensor, dtype) pair overrides it; order by dtype, then name (FORMATS §1.5)."""
    items = {n: (v if isinstance(v, tuple) else (v, dtype)) for n, v in tensors.items()}
    names = sorted(items, key=lambda n: (_ST_ORDER[items[n][1]], n))
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    blobs = []
    for n in names:
        t, dt = items[n]
        b = _to_storage(t, dt)
        header[n] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """name -> float32 torch tensor for F32, F16 and BF16 tensors."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        size, np_type = _ST_DTYPES[v["dtype"]]
        arr = np.frombuffer(buf[a:b], dtype=np_type).reshape(v["shape"])
        if v["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[k] = torch.from_numpy(arr.astype(np.float32))
    return out


def read_checkpoint(model_dir):
    """All tensors of a model folder as float32: model.safetensors or the sharded form (§1.6)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(model_dir, "model.safetensors"))
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for s in shards:
        out.update(read_safetensors(os.path.join(model_dir, s)))
    return out


def config_from_hf(hf):
    """The cfg dict the model classes take, from a config.json (head_dim defaults to K / H)."""
    cfg = dict(hf)
    cfg.setdefault("head_dim", hf["hidden_size"] // hf["num_attention_heads"])
    cfg.setdefault("num_key_value_heads", hf["num_attention_heads"])
    if cfg.get("head_dim") is None:
        cfg["head_dim"] = hf["hidden_size"] // hf["num_attention_heads"]
    return cfg


def hf_config(cfg):
    """config.json as transformers writes it for LlamaForCausalLM / Qwen2ForCausalLM."""
    if cfg["model_type"] == "qwen2":
        out = {
            "architectures": ["Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": cfg["bos_token_id"],
            "eos_token_id": cfg["eos_token_id"],
            "hidden_act": "silu",
            "hidden_size": cfg["hidden_size"],
            "initializer_range": 0.02,
            "intermediate_size": cfg["intermediate_size"],
            "max_position_embeddings": cfg["max_position_embeddings"],
            "max_window_layers": cfg["num_hidden_layers"],
            "model_type": "qwen2",
            "num_attention_heads": cfg["num_attention_heads"],
            "num_hidden_layers": cfg["num_hidden_layers"],
            "num_key_value_heads": cfg["num_key_value_heads"],
            "rms_norm_eps": cfg["rms_norm_eps"],
            "rope_scaling": cfg.get("rope_scaling"),
            "rope_theta": cfg["rope_theta"],
            "sliding_window": None,
            "tie_word_embeddings": cfg.get("tie_word_embeddings", False),
            "torch_dtype": "float32",
            "transformers_version": "4.44.2",
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": cfg["vocab_size"],
        }
        return out
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": cfg.get("attention_bias", False),
        "attention_dropout": 0.0,
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "head_dim": cfg["head_dim"],
        "hidden_act": "silu",
        "hidden_size": cfg["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": cfg["intermediate_size"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "mlp_bias": cfg.get("mlp_bias", False),
        "model_type": "llama",
        "num_attention_heads": cfg["num_attention_heads"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_scaling": cfg.get("rope_scaling"),
        "rope_theta": cfg["rope_theta"],
        "tie_word_embeddings": cfg.get("tie_word_embeddings", False),
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
        "use_cache": True,
        "vocab_size": cfg["vocab_size"],
    }
