#!/usr/bin/env python3
"""Builds the transformers reference fixtures under tests/model/transformers/ (run once, outputs committed).

Needs a virtual environment with torch, transformers, safetensors, numpy and gguf from PyPI, e.g.
    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install torch transformers safetensors numpy gguf
    /tmp/tfvenv/bin/python tests/model/transformers/make_transformers_goldens.py

For every architecture a small model is built with the real transformers classes (random weights,
seeded), rounded to F16 and written as <case>/config.json + model.safetensors (F16). The reference
is that model's own forward pass run by transformers in float64 (model.double(), eager attention):
<case>/logits.f32 holds window 0's logits [T, V] (float32 little-endian) and expected.json the
token windows and the perplexity over all of them. The vocabulary is the demo tokenizer's (2048),
so the same weights are also written as <case>/model.gguf by llama.cpp's own Python writer (the
`gguf` package), with llama.cpp's tensor names and conventions (convert_hf_to_gguf.py: Llama q/k
rows permuted, Gemma norms stored as 1 + w, Phi-3 qkv_proj -> attn_qkv and gate_up_proj ->
ffn_up) and the demo tokenizer embedded. The demo model itself gets transformers goldens too
(resources/demo/golden/transformers.json + transformers_logits_window0.f32).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEMO = os.path.join(ROOT, "resources", "demo")
T = 16
WINDOWS = 4
V = 2048
DEMO_ROWS = 32  # demo logits kept for the first positions only (the perplexity covers every window)

COMMON = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=64, bos_token_id=2047, eos_token_id=2047,
              pad_token_id=0)

CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rms_norm_eps=1e-5, rope_theta=10000.0,
                                                      tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True,
                                                      use_sliding_window=True, sliding_window=5,
                                                      max_window_layers=1)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(rms_norm_eps=1e-5, rope_theta=10000.0,
                                                            tie_word_embeddings=False, sliding_window=6)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(rms_norm_eps=1e-6, rope_theta=10000.0,
                                                         query_pre_attn_scalar=8, sliding_window=5,
                                                         attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                                                         hidden_activation="gelu_pytorch_tanh")),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(rms_norm_eps=1e-6, query_pre_attn_scalar=8,
                                                             sliding_window=5, sliding_window_pattern=2,
                                                             hidden_activation="gelu_pytorch_tanh",
                                                             rope_parameters={
                                                                 "full_attention": {"rope_type": "linear", "factor": 2.0,
                                                                                    "rope_theta": 1e6},
                                                                 "sliding_attention": {"rope_type": "default",
                                                                                       "rope_theta": 10000.0}})),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                                                   original_max_position_embeddings=64, sliding_window=7)),
}


def eval_tokens():
    return np.fromfile(os.path.join(DEMO, "golden", "eval_tokens.i32"), dtype="<i4")


def reference(model, windows):
    """float64 logits [B, T, V] and the perplexity over positions [0, T-1) of every window."""
    ref = model.double()
    with torch.no_grad():
        ids = torch.tensor(windows, dtype=torch.long)
        logits = ref(input_ids=ids).logits
    lp = torch.log_softmax(logits, dim=-1)
    nll = -lp[:, :-1, :].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return logits, math.exp(nll.mean().item())


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                # Gemma multiplies by (1 + w): keep both conventions away from trivial values.
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (0.0 if "gemma" in type(model).__name__.lower()
                                                                     else 1.0))
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1])))
        for p in model.parameters():  # the stored F16 values are the model
            p.copy_(p.half().float())


# --- GGUF, as llama.cpp's convert_hf_to_gguf.py writes these architectures ------------------------

LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up",
}
GEMMA_NAMES = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
               "post_feedforward_layernorm": "post_ffw_norm"}


def llama_permute(w, heads):
    # convert_hf_to_gguf.LlamaModel.permute
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def write_gguf(path, case, cfg, state):
    import gguf
    arch = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
            "gemma3": "gemma3", "phi3": "phi3"}[case]
    w = gguf.GGUFWriter(path, arch)
    w.add_name(case)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    rope = getattr(cfg, "rope_parameters", None) or {}
    if "full_attention" in rope:
        rope = rope["full_attention"]
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    w.add_rope_freq_base(theta)
    if rope.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
        types = getattr(cfg, "layer_types", None)
        if types and not all(t == "sliding_attention" for t in types):
            w.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    if case == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    # Tokenizer: the demo tokenizer.json as a "gpt2" (byte-level BPE) vocabulary.
    tj = json.load(open(os.path.join(DEMO, "tokenizer.json")))
    vocab = tj["model"]["vocab"]
    tokens = [None] * V
    for tok, i in vocab.items():
        tokens[i] = tok
    types = [gguf.TokenType.NORMAL] * V
    for a in tj["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_add_bos_token(False)

    gemma = case.startswith("gemma")
    for name, t in state.items():
        a = t.float().numpy()
        if name == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif name == "model.norm.weight":
            g = "output_norm.weight"
        elif name == "lm_head.weight":
            g = "output.weight"
        else:
            parts = name.split(".")
            layer = parts[2]
            sub = ".".join(parts[3:-1])
            table = dict(LAYER_NAMES, **GEMMA_NAMES) if gemma else LAYER_NAMES
            g = "blk.%s.%s.%s" % (layer, table[sub], parts[-1])
            if arch == "llama" and sub == "self_attn.q_proj":
                a = llama_permute(a, cfg.num_attention_heads)
            if arch == "llama" and sub == "self_attn.k_proj":
                a = llama_permute(a, cfg.num_key_value_heads)
        if gemma and name.endswith("norm.weight"):
            a = a + 1.0  # llama.cpp stores Gemma's (1 + w)
        a = a.astype(np.float16 if a.ndim == 2 else np.float32)
        w.add_tensor(g, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_case(case, seed):
    cfg_cls, model_cls, extra = CASES[case]
    kw = dict(COMMON, **extra)
    cfg = getattr(transformers, cfg_cls)(**kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).eval()
    randomize(model, seed)
    out = os.path.join(HERE, case)
    os.makedirs(out, exist_ok=True)
    cfg.architectures = [model_cls]
    cfg.save_pretrained(out)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file({k: v.half() for k, v in state.items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    write_gguf(os.path.join(out, "model.gguf"), case, cfg, state)
    toks = eval_tokens()
    windows = [toks[i * T:(i + 1) * T].tolist() for i in range(WINDOWS)]
    logits, ppl = reference(model, windows)
    logits[0].float().numpy().astype("<f4").tofile(os.path.join(out, "logits.f32"))
    json.dump({"seq_len": T, "windows": windows, "perplexity": ppl, "vocab": V,
               "reference": "transformers %s %s, float64 forward of the F16 weights" % (transformers.__version__,
                                                                                        model_cls),
               "logits_file": "logits.f32 (float32 little-endian, [T, vocab], window 0)"},
              open(os.path.join(out, "expected.json"), "w"), indent=1)
    print(case, "ppl", ppl)


def make_demo():
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(DEMO, torch_dtype=torch.float32, attn_implementation="eager").eval()
    toks = eval_tokens()
    ctx = 128
    n = len(toks) // ctx
    windows = [toks[i * ctx:(i + 1) * ctx].tolist() for i in range(n)]
    ref = model.double()
    total, count, total2, count2 = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for b in range(0, n, 20):
            ids = torch.tensor(windows[b:b + 20], dtype=torch.long)
            logits = ref(input_ids=ids).logits
            if b == 0:
                logits[0, :DEMO_ROWS].float().numpy().astype("<f4").tofile(
                    os.path.join(DEMO, "golden", "transformers_logits_window0.f32"))
            lp = torch.log_softmax(logits, dim=-1)
            nll = -lp[:, :-1, :].gather(-1, ids[:, 1:, None]).squeeze(-1)
            total += nll.sum().item()
            count += nll.numel()
            total2 += nll[:, ctx // 2:].sum().item()
            count2 += nll[:, ctx // 2:].numel()
    json.dump({"reference": "transformers %s LlamaForCausalLM, float64 forward of model.safetensors" %
                            transformers.__version__,
               "ctx": ctx, "windows": n,
               "perplexity": {"all": {"value": math.exp(total / count), "tokens_scored": count},
                              "second-half": {"value": math.exp(total2 / count2), "tokens_scored": count2}},
               "logits_file": "transformers_logits_window0.f32 (float32 little-endian, [%d, vocab]: the first "
                              "positions of window 0)" % DEMO_ROWS, "logits_rows": DEMO_ROWS},
              open(os.path.join(DEMO, "golden", "transformers.json"), "w"), indent=1)
    print("demo ppl", math.exp(total / count))


if __name__ == "__main__":
    torch.set_num_threads(2)
    only = sys.argv[1:]
    for i, case in enumerate(CASES):
        if not only or case in only:
            make_case(case, 1234 + i)
    if not only or "demo" in only:
        make_demo()
