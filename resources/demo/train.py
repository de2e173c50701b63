#!/usr/bin/python3
"""Trains Quantbench's demo model: a tiny LlamaForCausalLM with its own byte-level BPE tokenizer.

Run by hand:  /usr/bin/python3 resources/demo/train.py [--minutes 12] [--threads 1] [--batch 16]
              [--shape demo|wide-mha] [--out DIR]   (wide-mha: a second, wider model without GQA)
(Debian's torch uses the reference BLAS; with an OpenBLAS libblas.so.3 on LD_LIBRARY_PATH it
trains ~20x faster, e.g. from `apt-get download libopenblas0-pthread && dpkg -x ...`.)
Needs only Debian's python3-torch and python3-numpy. Writes, next to this script:
  config.json, model.safetensors (F32), tokenizer.json, tokenizer_config.json,
  calib.txt, eval.txt, golden/{golden.json, eval_tokens.i32, logits_window0.f32}, train_stats.json
Text: docstrings of the CPython 3.11 standard library shipped in /usr/lib/python3.11 (PSF License
Agreement, see LICENSE.txt there), split by file into train / calibration / evaluation sets, plus
NumPy's docstrings (BSD-3-Clause, python3-numpy) as extra training text only.
"""
import argparse
import ast
import json
import math
import os
import random
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bpe  # noqa: E402
import llama_ref  # noqa: E402

PYLIB = "/usr/lib/python3.11"
NUMPY = "/usr/lib/python3/dist-packages/numpy"  # BSD-3-Clause; training text only
SPECIAL = ["<|endoftext|>"]
VOCAB = 2048
CTX = 128


def docstrings_of(path):
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except Exception:
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            d = ast.get_docstring(node, clean=True)
            if d and len(d) >= 40 and d.isascii():
                docs.append(d.strip())
    return docs


def python_files(top):
    files = []
    for root, dirs, fs in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "site-packages", "dist-packages",
                                                      "__pycache__", "idle_test", "lib2to3"))
        for f in sorted(fs):
            if f.endswith(".py"):
                files.append(os.path.join(root, f))
    return sorted(files)


def collect_docstrings():
    buckets = {"train": [], "calib": [], "eval": []}
    for path in python_files(PYLIB):
        rel = os.path.relpath(path, PYLIB)
        docs = docstrings_of(path)
        if not docs:
            continue
        h = zlib.crc32(rel.encode()) % 20
        key = "eval" if h == 0 else "calib" if h == 1 else "train"
        buckets[key].extend(docs)
    if os.path.isdir(NUMPY):
        for path in python_files(NUMPY):
            buckets["train"].extend(docstrings_of(path))
    return buckets


def cap(docs, limit):
    out, n = [], 0
    for d in docs:
        if n + len(d) + 2 > limit:
            break
        out.append(d)
        n += len(d) + 2
    return "\n\n".join(out) + "\n"


def perplexity(model, ids, ctx, first):
    """Non-overlapping windows from the start, trailing partial dropped, no BOS.
    Logits at positions [first, ctx-1) predict tokens at [first+1, ctx)."""
    nw = len(ids) // ctx
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in range(nw):
            x = torch.tensor(ids[w * ctx:(w + 1) * ctx], dtype=torch.long)[None]
            lp = torch.log_softmax(model(x)[0].to(torch.float64), dim=-1)
            tgt = x[0, first + 1:]
            nll -= lp[first:ctx - 1].gather(1, tgt[:, None]).sum().item()
            n += ctx - 1 - first
    return math.exp(nll / n), n, nw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (0: fit the time budget)")
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--shape", choices=["demo", "wide-mha"], default="demo",
                    help="demo: the bundled model; wide-mha: a second model for experiments (hidden 192, "
                         "6 heads without GQA, intermediate 512)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    random.seed(1234)
    t0 = time.time()

    b = collect_docstrings()
    eval_text = cap(b["eval"], 80_000)
    calib_text = cap(b["calib"], 100_000)
    train_text = "\n\n".join(b["train"]) + "\n"
    for name, txt in (("eval.txt", eval_text), ("calib.txt", calib_text)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(txt)
    print(f"text: train {len(train_text)} eval {len(eval_text)} calib {len(calib_text)} chars", flush=True)

    vocab, merges = bpe.train_bpe([train_text], VOCAB, SPECIAL)
    tok = bpe.Tokenizer(vocab, merges, SPECIAL)
    assert len(vocab) == VOCAB, len(vocab)
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok.to_json(), f, ensure_ascii=False, indent=2)
    eos = vocab[SPECIAL[0]]
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": False, "add_eos_token": False, "bos_token": SPECIAL[0],
                   "eos_token": SPECIAL[0], "unk_token": None, "model_max_length": 512,
                   "clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast"},
                  f, indent=2)
    print(f"bpe: {len(merges)} merges, {time.time() - t0:.0f}s", flush=True)

    train_ids = tok.encode(train_text)
    eval_ids = tok.encode(eval_text)
    assert tok.decode(eval_ids) == eval_text
    print(f"tokens: train {len(train_ids)} eval {len(eval_ids)}, {time.time() - t0:.0f}s", flush=True)

    cfg = {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 352,
           "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
           "tie_word_embeddings": False, "bos_token_id": eos, "eos_token_id": eos, "rope_scaling": None}
    if args.shape == "wide-mha":
        cfg.update({"hidden_size": 192, "intermediate_size": 512, "num_attention_heads": 6,
                    "num_key_value_heads": 6})
    model = llama_ref.LlamaForCausalLM(cfg)
    data = torch.tensor(train_ids, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    budget = args.minutes * 60.0
    tstart = time.time()
    step, total, warm = 0, (args.steps or None), 50
    losses = []
    while True:
        if total is None and step == 20:
            per = (time.time() - tstart) / 20
            total = max(20, int(budget / per))
            print(f"{per:.3f} s/step -> {total} steps", flush=True)
        if total is not None and step >= total:
            break
        T = total or 10**9
        lr = 3e-3 * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, T) / T)))
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(0, len(data) - CTX - 1, (args.batch,))
        x = torch.stack([data[i:i + CTX] for i in ix])
        y = torch.stack([data[i + 1:i + CTX + 1] for i in ix])
        loss = F.cross_entropy(model(x).view(-1, VOCAB), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(f"step {step} loss {sum(losses[-100:]) / len(losses[-100:]):.3f} lr {lr:.2e} "
                  f"{time.time() - tstart:.0f}s", flush=True)
        step += 1
    model.eval()

    # Export: exactly the float32 weights the golden values below are computed from.
    sd = llama_ref.state_dict_for_export(model)
    llama_ref.write_safetensors(os.path.join(args.out, "model.safetensors"), sd)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(llama_ref.hf_config(cfg), f, indent=2, sort_keys=True)
        f.write("\n")

    ref = llama_ref.LlamaForCausalLM(cfg).double()
    ref.load_state_dict({k: v.double() for k, v in llama_ref.read_safetensors(
        os.path.join(args.out, "model.safetensors")).items()})
    ref.eval()
    gdir = os.path.join(args.out, "golden")
    os.makedirs(gdir, exist_ok=True)
    np.asarray(eval_ids, dtype="<i4").tofile(os.path.join(gdir, "eval_tokens.i32"))
    with torch.no_grad():
        logits = ref(torch.tensor(eval_ids[:CTX], dtype=torch.long)[None])[0]
    logits.numpy().astype("<f4").tofile(os.path.join(gdir, "logits_window0.f32"))
    ppl_all, n_all, nw = perplexity(ref, eval_ids, CTX, 0)
    ppl_half, n_half, _ = perplexity(ref, eval_ids, CTX, CTX // 2)

    # Unigram baseline (add-one smoothed counts of the training tokens), scored on the same tokens.
    counts = np.bincount(np.asarray(train_ids), minlength=VOCAB).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    scored = [eval_ids[w * CTX + p] for w in range(nw) for p in range(1, CTX)]
    uni_ppl = math.exp(-float(np.mean(logp[scored])))

    golden = {
        "precision": "float64 torch forward of the float32 weights in model.safetensors",
        "text": "eval.txt", "text_bytes": len(eval_text.encode()), "tokens": len(eval_ids),
        "tokens_file": "eval_tokens.i32 (int32 little-endian, whole eval.txt, no BOS)",
        "ctx": CTX, "windows": nw, "bos_inserted": False,
        "windowing": "non-overlapping windows from token 0; trailing partial window dropped",
        "scoring": "logits at positions [first, ctx-1) predict tokens [first+1, ctx); first = 0 for 'all', "
                   "ctx/2 for 'second-half'",
        "perplexity": {"all": {"value": ppl_all, "tokens_scored": n_all},
                       "second-half": {"value": ppl_half, "tokens_scored": n_half}},
        "logits_file": "logits_window0.f32 (float32 little-endian, [ctx, vocab] row-major, "
                       "window 0 = eval tokens [0, ctx))",
        "logits_shape": [CTX, VOCAB],
        "unigram_perplexity_all": uni_ppl,
    }
    with open(os.path.join(gdir, "golden.json"), "w") as f:
        json.dump(golden, f, indent=2)
        f.write("\n")
    stats = {"steps": step, "batch": args.batch, "seq": CTX, "threads": args.threads,
             "final_train_loss": sum(losses[-100:]) / len(losses[-100:]),
             "train_tokens": len(train_ids), "train_chars": len(train_text),
             "params": sum(v.numel() for v in sd.values()), "wall_seconds": time.time() - t0,
             "eval_ppl_all": ppl_all, "eval_ppl_second_half": ppl_half, "unigram_ppl_all": uni_ppl}
    with open(os.path.join(args.out, "train_stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    print(json.dumps(stats, indent=2), flush=True)


if __name__ == "__main__":
    main()
