#!/usr/bin/python3
"""Reference GPTQ solve timing (PyTorch, CPU), for comparison with
`quantbench-cli bench --gptq-synthetic ROWSxCOLS,...`.

The solve is GPTQ.fasterquant + Quantizer(find_params/quantize) of the original repository
(https://github.com/IST-DASLab/gptq, gptq.py / quant.py): dead inputs, act-order, 1% damping,
Cholesky -> cholesky_inverse -> upper Cholesky, lazy blocks of 128, dynamic groups fitted on W
(asymmetric Min-Max, per channel / per group), Q permuted back.  Only fasterquant is timed
(tick at its start, as the original), with random W ~ N(0, 0.02^2) and H = 2/N X^T X.

Usage: /usr/bin/python3 gptq_reference.py [--threads N] [--bits 3] [--group 128] [--repeat 3]
                                          [--shapes 128x128,64x128,...] [--no-act-order]
Debian's torch links the reference (netlib) BLAS; for OpenBLAS run with
LD_LIBRARY_PATH pointing at an extracted libopenblas0-pthread (see the report in issue 4).
"""
import argparse
import time

import torch

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shapes", default=DEMO_SHAPES)
    ap.add_argument("--no-act-order", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
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
