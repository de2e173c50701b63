#!/usr/bin/env python3
"""Quantbench's GPTQ/NeUQI solved into GGUF types vs llama.cpp's own quantizer, scored by llama.cpp.

Issue 11 item 6, as a benchmark (not a test): for each GGUF type, the same model is quantized
  - by llama.cpp itself: llama_model_quantize from llama-cpp-python (built from llama.cpp's source
    distribution) on an F32 GGUF of the model, `pure` (every 2-D weight in the type, as asked), no
    importance matrix, and for the mixed row its own Q4_K_M recipe;
  - by quantbench-cli quantize --method gptq|neuqi --target gguf:TYPE with the embedding and head in
    the same type (--embed-type/--head-type), so both files hold the same types tensor for tensor;
and both files are scored by llama.cpp (node-llama-cpp, tests/export/llama_ppl.mjs) on the demo's
eval text. A table of type, bytes and llama.cpp perplexity (ours vs llama.cpp's) is printed and
written as JSON.

Models (rows must be multiples of 256 for the K-quants):
  widened  the demo model widened to hidden 256 / intermediate 512 without changing what it
           computes (duplicated heads and halved inputs, zero-padded MLP; the C++ twin is
           tests/export/export_test_util.h writeWidenedDemoModel)
  rotated  the widened model with its norm gains folded into the following linears and the
           residual stream rotated by a random orthogonal matrix (QuaRot-style): the same function,
           but no duplicated or zero weights, so every block is a real quantization problem

Set-up (once): a venv with llama-cpp-python, numpy; node-llama-cpp in .npm-test (packaging/bootstrap.sh
--tests):
  python3 -m venv /work/bench-venv
  CMAKE_ARGS="-DGGML_NATIVE=OFF" /work/bench-venv/bin/pip install llama-cpp-python numpy
With --planner Q3_K_M,Q4_K_M (issue 16 item 7): each of llama.cpp's own mixes against the plan
`quantbench-cli plan --target gguf` allocates to the same tensor bytes (same embedding and head
types as llama.cpp chose; sensitivities measured on the calibration text), both scored by llama.cpp.
Usage:
  /work/bench-venv/bin/python tests/export/bench/vs_llama_quantize.py --cli build/app/quantbench-cli \
      [--models widened,rotated] [--types Q4_K,Q3_K,Q2_K] [--methods gptq,neuqi] [--planner MIXES] [--nsamples 128]
      [--seqlen 128] [--out bench.json] [--work DIR]
"""
import argparse
import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DEMO = os.path.join(ROOT, "resources", "demo")
PPL_SCRIPT = os.path.join(ROOT, "tests", "export", "llama_ppl.mjs")
NODE_MODULES = os.path.join(ROOT, ".npm-test", "node_modules")

# llama.cpp's LLAMA_FTYPE_MOSTLY_* (llama.h)
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K": 12, "Q4_K": 15, "Q5_K": 17,
          "Q6_K": 18, "Q4_K_M": 15}
FTYPE_S = {"Q3_K": 11, "Q4_K": 14, "Q5_K": 16}  # the _S variants (every tensor the type when pure)
MIXES = {"Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
         "Q5_K_M": 17}  # llama.cpp's own per-tensor recipes


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def copy_model_files(dst, hidden, inter, heads, kv_heads):
    os.makedirs(dst, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(DEMO, f), dst)
    with open(os.path.join(DEMO, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(hidden_size=hidden, intermediate_size=inter, num_attention_heads=heads, num_key_value_heads=kv_heads)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def widened(demo):
    """hidden 128 -> 256 (residual duplicated, inputs halved), heads x2, MLP 352 -> 512 zero-padded."""
    h0, h, inter = 128, 256, 512
    out = {}
    for n, w in demo.items():
        if w.ndim == 1:
            out[n] = np.tile(w, 2)
        elif n == "model.embed_tokens.weight":
            out[n] = np.tile(w, (1, 2))
        elif any(k in n for k in ("q_proj", "k_proj", "v_proj", "o_proj")):
            out[n] = np.tile(w, (2, 2)) * 0.5
        elif "gate_proj" in n or "up_proj" in n:
            o = np.zeros((inter, h), np.float32)
            o[: w.shape[0]] = np.tile(w, (1, 2)) * 0.5
            out[n] = o
        elif "down_proj" in n:
            o = np.zeros((h, inter), np.float32)
            o[:, : w.shape[1]] = np.tile(w, (2, 1))
            out[n] = o
        elif n == "lm_head.weight":
            out[n] = np.tile(w, (1, 2)) * 0.5
        else:
            raise SystemExit(f"unexpected demo tensor {n}")
    assert out["model.embed_tokens.weight"].shape[1] == h and h0 * 2 == h
    return out


def rotated(w, seed=7):
    """Fold RMSNorm gains into the next linears, then rotate the residual stream by a random Q."""
    h = w["model.embed_tokens.weight"].shape[1]
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((h, h)))
    q = (q * np.sign(np.diag(r))).astype(np.float64)
    out = {}
    layers = sorted({int(n.split(".")[2]) for n in w if n.startswith("model.layers.")})
    f64 = {n: v.astype(np.float64) for n, v in w.items()}
    for layer in layers:
        p = f"model.layers.{layer}."
        g1 = f64[p + "input_layernorm.weight"]
        g2 = f64[p + "post_attention_layernorm.weight"]
        for k in ("q_proj", "k_proj", "v_proj"):
            out[p + f"self_attn.{k}.weight"] = (f64[p + f"self_attn.{k}.weight"] * g1) @ q
        for k in ("gate_proj", "up_proj"):
            out[p + f"mlp.{k}.weight"] = (f64[p + f"mlp.{k}.weight"] * g2) @ q
        out[p + "self_attn.o_proj.weight"] = q.T @ f64[p + "self_attn.o_proj.weight"]
        out[p + "mlp.down_proj.weight"] = q.T @ f64[p + "mlp.down_proj.weight"]
        out[p + "input_layernorm.weight"] = np.ones(h)
        out[p + "post_attention_layernorm.weight"] = np.ones(h)
    out["model.embed_tokens.weight"] = f64["model.embed_tokens.weight"] @ q
    out["lm_head.weight"] = (f64["lm_head.weight"] * f64["model.norm.weight"]) @ q
    out["model.norm.weight"] = np.ones(h)
    return {n: v.astype(np.float32) for n, v in out.items()}


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r.stdout


def llama_ppl(gguf, threads):
    env = dict(os.environ, QB_NODE_MODULES=NODE_MODULES)
    out = run(["node", PPL_SCRIPT, "--model", gguf, "--text", os.path.join(DEMO, "eval.txt"), "--ctx", "128",
               "--threads", str(threads)], env=env)
    o = json.loads(out.strip().splitlines()[-1])
    if not o.get("ok"):
        raise SystemExit(f"llama.cpp could not score {gguf}: {o.get('error')}")
    return o["perplexity"]


def llama_quantize(src, dst, ftype, pure, threads):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    params.pure = pure
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src}, ftype {ftype}) failed: {rc}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "app", "quantbench-cli"))
    ap.add_argument("--models", default="widened,rotated")
    ap.add_argument("--types", default="Q4_K,Q3_K,Q2_K")
    ap.add_argument("--methods", default="gptq,neuqi")
    ap.add_argument("--mixed", action="store_true", help="also llama.cpp's Q4_K_M mix (about 4.8 bits/weight)")
    ap.add_argument("--planner", default="",
                    help="comma-separated llama.cpp mixes (e.g. Q3_K_M,Q4_K_M): each against a plan that "
                         "quantbench-cli plan allocates to the same tensor bytes (issue 16 item 7)")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="qb-vs-llama-")
    demo = read_safetensors(os.path.join(DEMO, "model.safetensors"))
    rows = []
    for model in a.models.split(","):
        w = widened(demo)
        if model == "rotated":
            w = rotated(w)
        elif model != "widened":
            raise SystemExit(f"unknown model {model}")
        mdir = os.path.join(work, model)
        copy_model_files(mdir, 256, 512, 8, 4)
        write_safetensors(os.path.join(mdir, "model.safetensors"), w)
        f32 = os.path.join(work, f"{model}-f32.gguf")
        run([a.cli, "convert", mdir, "--out", f32, "--gguf-type", "f32"])
        base = llama_ppl(f32, a.threads)
        rows.append({"model": model, "type": "F32", "who": "-", "bytes": os.path.getsize(f32), "ppl": base})
        print(f"{model}: F32 perplexity in llama.cpp {base:.4f}", flush=True)
        plans = [(t, None) for t in a.types.split(",") if t]
        if a.mixed:
            # llama.cpp's Q4_K_M recipe for 4 layers (use_more_bits: layers 2 and 3 keep attn_v and
            # ffn_down in Q6_K), so that both files have the same size, tensor for tensor.
            plans.append(("Q4_K_M", {"default": {"target": "Q4_K"},
                                     "rules": [{"match": "model.layers.[23].mlp.down_proj", "target": "Q6_K"},
                                               {"match": "model.layers.[23].self_attn.v_proj", "target": "Q6_K"}],
                                     "embed_type": "Q4_K", "head_type": "Q6_K"}))
        for t, mixed in plans:
            theirs = os.path.join(work, f"{model}-{t}-llama.gguf")
            llama_quantize(f32, theirs, FTYPES[t] if mixed else FTYPE_S.get(t, FTYPES[t]), mixed is None,
                           a.threads)
            ppl_theirs = llama_ppl(theirs, a.threads)
            rows.append({"model": model, "type": t, "who": "llama.cpp", "bytes": os.path.getsize(theirs),
                         "ppl": ppl_theirs})
            for method in a.methods.split(","):
                ours = os.path.join(work, f"{model}-{t}-{method}.gguf")
                cmd = [a.cli, "quantize", mdir, "--calib", os.path.join(DEMO, "calib.txt"), "--nsamples",
                       str(a.nsamples), "--seqlen", str(a.seqlen), "--threads", str(a.threads), "--out", ours,
                       "--format", "gguf"]
                if mixed:
                    plan = dict(mixed)
                    plan["default"] = dict(plan["default"], method=method)
                    pf = os.path.join(work, f"plan-{t}-{method}.json")
                    with open(pf, "w") as f:
                        json.dump(plan, f)
                    cmd += ["--plan", pf]
                else:
                    cmd += ["--method", method, "--target", f"gguf:{t}", "--embed-type", t, "--head-type", t]
                run(cmd)
                ppl_ours = llama_ppl(ours, a.threads)
                rows.append({"model": model, "type": t, "who": f"quantbench {method}",
                             "bytes": os.path.getsize(ours), "ppl": ppl_ours})
                print(f"{model} {t:7s} llama.cpp {ppl_theirs:9.4f} ({os.path.getsize(theirs)} B)  "
                      f"quantbench {method} {ppl_ours:9.4f} ({os.path.getsize(ours)} B)", flush=True)
        for mix in [m for m in a.planner.split(",") if m]:
            theirs = os.path.join(work, f"{model}-{mix}-llama.gguf")
            llama_quantize(f32, theirs, MIXES[mix], False, a.threads)
            ppl_theirs = llama_ppl(theirs, a.threads)
            info = json.loads(run([a.cli, "info", theirs, "--json"]))
            data = sum(t["bytes"] for t in info["tensors"])
            types = {t["name"]: t["dtype"] for t in info["tensors"]}
            rows.append({"model": model, "type": mix, "who": "llama.cpp mix", "bytes": os.path.getsize(theirs),
                         "data_bytes": data, "ppl": ppl_theirs})
            # The same embedding and head types as llama.cpp chose, the decoder linears allocated by
            # the planner from the sensitivity atlas to the same tensor bytes. The atlas's measured
            # KL comes from the calibration text (its first 32 kB), not the text that is scored, in
            # windows of 128 tokens as the scoring (the demo models were trained on 128-token windows:
            # longer ones measure mostly positions past the trained length); the atlas is cached in
            # the work folder, so the second mix of a model reuses it.
            embed = types.get("model.embed_tokens.weight", "Q4_K")
            head = types.get("lm_head.weight", "Q6_K")
            pf = os.path.join(work, f"plan-{model}-{mix}.json")
            cal = ["--calib", os.path.join(DEMO, "calib.txt"), "--nsamples", str(a.nsamples), "--seqlen",
                   str(a.seqlen), "--threads", str(a.threads)]
            measure = os.path.join(work, "measure.txt")  # the first 32 kB of the calibration text
            with open(os.path.join(DEMO, "calib.txt"), "rb") as src, open(measure, "wb") as dst:
                dst.write(src.read(32768))
            planned = json.loads(run([a.cli, "plan", mdir, *cal, "--target", "gguf", "--embed-type", embed,
                                      "--head-type", head, "--budget", f"{data}b", "--eval", measure, "--ctx", "128", "--measure",
                                      "1000", "--cache", os.path.join(work, "atlas-cache"), "--out", pf, "--json"]))
            ours = os.path.join(work, f"{model}-{mix}-planned.gguf")
            run([a.cli, "quantize", mdir, *cal, "--plan", pf, "--out", ours, "--format", "gguf"])
            ours_info = json.loads(run([a.cli, "info", ours, "--json"]))
            ours_data = sum(t["bytes"] for t in ours_info["tensors"])
            ppl_ours = llama_ppl(ours, a.threads)
            rows.append({"model": model, "type": mix, "who": "quantbench plan", "bytes": os.path.getsize(ours),
                         "data_bytes": ours_data, "ppl": ppl_ours, "plan_bpw": planned.get("bits_per_weight")})
            print(f"{model} {mix:7s} llama.cpp mix {ppl_theirs:9.4f} ({data} B of tensors)  "
                  f"quantbench plan {ppl_ours:9.4f} ({ours_data} B)", flush=True)
    print("\nmodel    type    quantizer          bytes      llama.cpp perplexity")
    for r in rows:
        print(f"{r['model']:8s} {r['type']:7s} {r['who']:17s} {r['bytes']:9d}  {r['ppl']:.4f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
