#!/usr/bin/python3
"""Reference GPTQ (PyTorch, CPU): the solve alone, and the whole llama_sequential pipeline, for
comparison with `quantbench-cli bench --gptq-synthetic ROWSxCOLS,...` and
`quantbench-cli bench MODEL --quantize --reference` (which runs this script with --model).

The solve is GPTQ.fasterquant + Quantizer(find_params/quantize) of the original repository
(https://github.com/IST-DASLab/gptq, gptq.py / quant.py): dead inputs, act-order, 1% damping,
Cholesky -> cholesky_inverse -> upper Cholesky, lazy blocks of 128, dynamic groups fitted on W
(asymmetric Min-Max, per channel / per group), Q permuted back.

Synthetic mode (default) times fasterquant alone (tick at its start, as the original), with
random W ~ N(0, 0.02^2) and H = 2/N X^T X.

Pipeline mode (--model DIR --ids FILE) is llama.py's llama_sequential with --true-sequential on
the checkpoint's weights (F32 after loading; resources/demo/llama_ref.py is the decoder layer,
written after transformers' modeling_llama): the embedded calibration windows run through each
decoder layer one window at a time; for each group [k, v, q], [o], [up, gate], [down] forward
hooks feed GPTQ.add_batch (one H per linear, accumulated in float32 as the original), the whole
layer runs over every window, fasterquant replaces each weight by its quantized value; then the
layer runs once more to produce the next layer's inputs. FILE holds the calibration token ids as
little-endian int32, window-major (quantbench-cli writes it). Timed from the embedding to the
last layer's outputs (loading excluded); prints one JSON line with the stage split.

Usage: /usr/bin/python3 gptq_reference.py [--threads N] [--bits 3] [--group 128] [--repeat 3]
                                          [--shapes 128x128,64x128,...] [--no-act-order]
       /usr/bin/python3 gptq_reference.py --model DIR --ids FILE --seqlen L [--threads N] [--bits 3]
                                          [--group 128] [--sym] [--act-order]
Debian's torch links the reference (netlib) BLAS; for OpenBLAS run with
LD_LIBRARY_PATH pointing at an extracted libopenblas0-pthread (see the report in issue 4).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "resources", "demo"))
import llama_ref  # noqa: E402

# The demo model's decoder linears, per layer: q, k, v, o, gate, up, down (x 4 layers).
DEMO_SHAPES = "128x128,64x128,64x128,128x128,352x128,352x128,128x352"


class Quantizer:
    def __init__(self, bits, perchannel=True, sym=False):
        self.maxq = torch.tensor(2 ** bits - 1)
        self.perchannel = perchannel
        self.sym = sym

    def find_params(self, x, weight=True):
        shape = x.shape
        x = x.flatten(1)
        tmp = torch.zeros(x.shape[0])
        xmin = torch.minimum(x.min(1)[0], tmp)
        xmax = torch.maximum(x.max(1)[0], tmp)
        if self.sym:
            xmax = torch.maximum(torch.abs(xmin), xmax)
            tmp = xmin < 0
            if torch.any(tmp):
                xmin[tmp] = -xmax[tmp]
        tmp = (xmin == 0) & (xmax == 0)
        xmin[tmp] = -1
        xmax[tmp] = +1
        self.scale = (xmax - xmin) / self.maxq
        if self.sym:
            self.zero = torch.full_like(self.scale, (self.maxq + 1) / 2)
        else:
            self.zero = torch.round(-xmin / self.scale)
        self.scale = self.scale.reshape(-1, 1)
        self.zero = self.zero.reshape(-1, 1)


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def fasterquant(W0, H0, quantizer, blocksize=128, percdamp=.01, groupsize=-1, actorder=False):
    tick = time.perf_counter()
    W = W0.clone().float()
    columns = W.shape[1]
    quantizer.find_params(W, weight=True)
    H = H0.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    Losses = torch.zeros_like(W)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)], weight=True)
            q = quantize(w.unsqueeze(1), quantizer.scale, quantizer.zero, quantizer.maxq).flatten()
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if actorder:
        invperm = torch.argsort(perm)
        Q = Q[:, invperm]
    return time.perf_counter() - tick, Q, torch.sum(Losses).item()


class GPTQ:
    """Hessian accumulation of gptq.py's GPTQ class (add_batch), one per linear layer."""

    def __init__(self, layer):
        self.layer = layer
        self.H = torch.zeros((layer.weight.shape[1], layer.weight.shape[1]))
        self.nsamples = 0

    def add_batch(self, inp, out):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())


# llama.py's llama_sequential with --true-sequential
SEQUENTIAL = [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
              ["mlp.up_proj", "mlp.gate_proj"], ["mlp.down_proj"]]


def load_layer(cfg, tensors, i):
    layer = llama_ref.Layer(cfg)
    prefix = f"model.layers.{i}."
    layer.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return layer.eval()


@torch.no_grad()
def llama_sequential(cfg, tensors, ids, bits, group, sym, actorder):
    """ids [n, L] int64. Returns the stage seconds and the summed GPTQ losses."""
    n, L = ids.shape
    sec = {"load": 0.0, "embed": 0.0, "forward": 0.0, "solve": 0.0, "output": 0.0}
    loss = 0.0
    tick = time.perf_counter()
    inps = tensors["model.embed_tokens.weight"][ids]
    inv = llama_ref.rope_inv_freq(cfg, torch.float32)
    freqs = torch.arange(L, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    outs = torch.zeros_like(inps)
    sec["embed"] = time.perf_counter() - tick
    for i in range(cfg["num_hidden_layers"]):
        t0 = time.perf_counter()
        layer = load_layer(cfg, tensors, i)
        sec["load"] += time.perf_counter() - t0
        full = {name: m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        for names in SEQUENTIAL:
            t0 = time.perf_counter()
            subset = {name: full[name] for name in names}
            gptq = {name: GPTQ(subset[name]) for name in subset}

            def add_batch(name):
                def tmp(_, inp, out):
                    gptq[name].add_batch(inp[0].data, out.data)
                return tmp

            handles = [subset[name].register_forward_hook(add_batch(name)) for name in subset]
            for j in range(n):
                outs[j] = layer(inps[j].unsqueeze(0), cos, sin)[0]
            for h in handles:
                h.remove()
            t1 = time.perf_counter()
            sec["forward"] += t1 - t0
            for name in subset:
                W = subset[name].weight.data
                _, Q, l = fasterquant(W, gptq[name].H, Quantizer(bits, sym=sym), groupsize=group, actorder=actorder)
                subset[name].weight.data = Q.reshape(W.shape).to(W.dtype)
                loss += l
            sec["solve"] += time.perf_counter() - t1
            del gptq
        t0 = time.perf_counter()
        for j in range(n):
            outs[j] = layer(inps[j].unsqueeze(0), cos, sin)[0]
        sec["output"] += time.perf_counter() - t0
        del layer
        inps, outs = outs, inps
    sec["total"] = time.perf_counter() - tick - sec.pop("load")
    return sec, loss


def run_pipeline(a):
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = llama_ref.config_from_hf(json.load(f))
    tensors = llama_ref.read_checkpoint(a.model)
    ids = torch.from_numpy(np.fromfile(a.ids, dtype="<i4").astype(np.int64))
    if a.seqlen < 2 or ids.numel() == 0 or ids.numel() % a.seqlen:
        sys.exit(f"{a.ids}: {ids.numel()} token ids are not a whole number of {a.seqlen}-token windows")
    ids = ids.reshape(-1, a.seqlen)
    group = a.group if a.group > 0 else -1
    sec, loss = llama_sequential(cfg, tensors, ids, a.bits, group, a.sym, a.act_order)
    out = {"engine": "reference", "torch": torch.__version__, "threads": torch.get_num_threads(), "bits": a.bits,
           "group": group, "nsamples": int(ids.shape[0]), "seqlen": a.seqlen, "loss": loss}
    out.update({k: round(v, 4) for k, v in sec.items()})
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shapes", default=DEMO_SHAPES)
    ap.add_argument("--no-act-order", action="store_true")
    ap.add_argument("--model", help="pipeline mode: model folder (config.json + safetensors)")
    ap.add_argument("--ids", help="pipeline mode: calibration token ids, int32 little-endian")
    ap.add_argument("--seqlen", type=int, default=256, help="pipeline mode: tokens per window")
    ap.add_argument("--sym", action="store_true", help="pipeline mode: symmetric grid")
    ap.add_argument("--act-order", action="store_true", help="pipeline mode: act-order (off as GPTQ's default)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.model:
        if not a.ids:
            sys.exit("--model needs --ids")
        return run_pipeline(a)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {a.bits} bits, group {a.group}, "
          f"act-order {'off' if a.no_act_order else 'on'}, min of {a.repeat}")
    total = 0.0
    for shape in a.shapes.split(","):
        rows, cols = (int(v) for v in shape.split("x"))
        W = 0.02 * torch.randn(rows, cols)
        X = torch.randn(2 * cols, cols, dtype=torch.float64)
        H = (2.0 / X.shape[0] * X.T @ X).float()  # the reference keeps H in float32
        best = min(fasterquant(W, H, Quantizer(a.bits), groupsize=a.group, actorder=not a.no_act_order)[0]
                   for _ in range(a.repeat))
        total += best
        print(f"{rows:6d} x {cols:<6d} {best * 1e3:10.2f} ms")
    print(f"sum {total * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
