#!/usr/bin/python3
"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<harness>/) and the
reproducers of the crashes named in issue 20 (tests/fuzz/regressions/<harness>/).

Python 3 standard library only; no torch needed (torch checkpoints are written with a fake
`torch` module, exactly as torch.save lays them out). Every file stays under 64 KiB.
Run from anywhere:  python3 tests/fuzz/make_seeds.py
Re-running rewrites the generated files; files copied from fixtures keep their names.
"""
import io
import json
import os
import pickle
import shutil
import struct
import sys
import types
import zipfile
import zlib
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEP = b"\n--qbfuzz--\n"  # fuzz_util.h kPartSeparator
MAX = 64 * 1024


def out(kind, harness, name, data):
    d = os.path.join(HERE, kind, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    if kind == "corpus":
        assert len(data) < MAX, (harness, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def seed(harness, name, data):
    out("corpus", harness, name, data)


def regression(harness, name, data):
    out("regressions", harness, name, data)


def copy_fixture(harness, rel, name=None):
    src = os.path.join(ROOT, rel)
    with open(src, "rb") as f:
        data = f.read()
    seed(harness, name or os.path.basename(rel), data)


# ---- safetensors ----

def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes) in data order."""
    header = OrderedDict()
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def make_safetensors():
    h = "safetensors"
    seed(h, "f32_2x3.safetensors", safetensors([("w", "F32", [2, 3], f32([1, 2, 3, 4, 5, 6]))]))
    seed(h, "mixed.safetensors", safetensors([
        ("model.embed_tokens.weight", "F16", [4, 2], struct.pack("<8e", *range(8))),
        ("model.norm.weight", "BF16", [2], b"\x80\x3f\x00\x40"),
        ("scalar", "F32", [], f32([7])),
        ("empty", "F32", [0, 4], b""),
        ("ids", "I64", [2], struct.pack("<2q", 1, -1)),
        ("mask", "BOOL", [3], b"\x01\x00\x01"),
    ], metadata={"format": "pt"}))
    seed(h, "u8_i32.safetensors", safetensors([
        ("codes", "U8", [4], b"\x00\x01\x02\x03"),
        ("g_idx", "I32", [2], struct.pack("<2i", 0, 1)),
        ("scales", "F64", [1], struct.pack("<d", 0.5)),
    ]))
    shard = safetensors([("a", "F32", [2], f32([1, 2])), ("b", "F32", [1], f32([3]))])
    index = json.dumps({"metadata": {"total_size": 12},
                        "weight_map": {"a": "model-00001-of-00001.safetensors",
                                       "b": "model-00001-of-00001.safetensors"}}).encode()
    seed(h, "sharded_index", index + SEP + shard)
    seed(h, "sharded_missing_shard", json.dumps(
        {"weight_map": {"a": "model-00002-of-00002.safetensors"}}).encode() + SEP + shard)


# ---- GGUF ----

GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STR, GGUF_ARR, GGUF_U64 = 4, 5, 6, 7, 8, 9, 10


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == GGUF_U32:
        return struct.pack("<I", v)
    if t == GGUF_I32:
        return struct.pack("<i", v)
    if t == GGUF_F32:
        return struct.pack("<f", v)
    if t == GGUF_BOOL:
        return struct.pack("<?", v)
    if t == GGUF_STR:
        return gstr(v)
    if t == GGUF_U64:
        return struct.pack("<Q", v)
    if t == GGUF_ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    raise ValueError(t)


def gguf(kvs, tensors, align=32):
    """kvs: list of (key, type, value); tensors: list of (name, dims (ggml order), ggml type, raw)."""
    out_ = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out_ += gstr(k) + struct.pack("<I", t) + gval(t, v)
    off = 0
    infos = b""
    for name, dims, typ, raw in tensors:
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", typ, off)
        off += len(raw)
        off += -off % align
    out_ += infos
    out_ += b"\0" * (-len(out_) % align)
    for _, _, _, raw in tensors:
        out_ += raw + b"\0" * (-len(raw) % align)
    return out_


def make_gguf():
    h = "gguf"
    V, K, F, HEADS, KV = 16, 8, 16, 2, 1
    D = K // HEADS
    kvs = [
        ("general.architecture", GGUF_STR, "llama"),
        ("general.name", GGUF_STR, "fuzz-tiny"),
        ("general.alignment", GGUF_U32, 32),
        ("general.file_type", GGUF_U32, 0),
        ("llama.context_length", GGUF_U32, 64),
        ("llama.embedding_length", GGUF_U32, K),
        ("llama.block_count", GGUF_U32, 1),
        ("llama.feed_forward_length", GGUF_U32, F),
        ("llama.attention.head_count", GGUF_U32, HEADS),
        ("llama.attention.head_count_kv", GGUF_U32, KV),
        ("llama.attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5),
        ("llama.rope.freq_base", GGUF_F32, 10000.0),
        ("tokenizer.ggml.model", GGUF_STR, "llama"),
        ("tokenizer.ggml.tokens", GGUF_ARR, (GGUF_STR, ["<unk>", "<s>", "</s>"] + ["t%d" % i for i in range(V - 3)])),
        ("tokenizer.ggml.scores", GGUF_ARR, (GGUF_F32, [0.0] * V)),
        ("tokenizer.ggml.token_type", GGUF_ARR, (GGUF_I32, [2, 3, 3] + [1] * (V - 3))),
        ("tokenizer.ggml.bos_token_id", GGUF_U32, 1),
        ("tokenizer.ggml.eos_token_id", GGUF_U32, 2),
        ("tokenizer.ggml.add_bos_token", GGUF_BOOL, True),
    ]

    def t(name, rows, cols=None):
        dims = [cols, rows] if cols else [rows]
        n = rows * (cols or 1)
        return (name, dims, 0, f32([(i % 7) * 0.125 - 0.25 for i in range(n)]))

    tensors = [t("token_embd.weight", V, K), t("blk.0.attn_norm.weight", K),
               t("blk.0.attn_q.weight", HEADS * D, K), t("blk.0.attn_k.weight", KV * D, K),
               t("blk.0.attn_v.weight", KV * D, K), t("blk.0.attn_output.weight", K, HEADS * D),
               t("blk.0.ffn_norm.weight", K), t("blk.0.ffn_gate.weight", F, K),
               t("blk.0.ffn_up.weight", F, K), t("blk.0.ffn_down.weight", K, F),
               t("output_norm.weight", K), t("output.weight", V, K)]
    seed(h, "tiny_llama_f32.gguf", gguf(kvs, tensors))
    # Quantized blocks: Q8_0 (type 8: f16 scale + 32 int8) and Q4_0 (type 2: f16 scale + 16 bytes).
    q8 = (struct.pack("<e", 0.5) + bytes(range(32))) * 2
    q4 = (struct.pack("<e", 0.25) + bytes(range(16))) * 2
    seed(h, "quant_blocks.gguf", gguf(kvs[:4], [("blk.0.attn_q.weight", [32, 2], 8, q8),
                                                 ("blk.0.attn_k.weight", [32, 2], 2, q4),
                                                 ("f16", [4], 1, struct.pack("<4e", 1, 2, 3, 4))]))
    seed(h, "metadata_only.gguf", gguf([
        ("general.architecture", GGUF_STR, "qwen2"),
        ("a.u64", GGUF_U64, 1 << 40),
        ("a.i32s", GGUF_ARR, (GGUF_I32, [-1, 0, 1])),
        ("a.nested", GGUF_ARR, (GGUF_ARR, [(GGUF_U32, [1, 2])])),
        ("a.bool", GGUF_BOOL, False),
    ], []))
    seed(h, "header_only.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 0))


# ---- PyTorch .bin ----

def fake_torch():
    """A stand-in `torch` package so that pickle writes the same globals torch.save does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    torch._utils = utils
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    storages = {}
    for cls in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "BoolStorage"):
        c = type(cls, (), {})
        c.__module__ = "torch"
        c.__qualname__ = cls
        setattr(torch, cls, c)
        storages[cls] = c

    def _rebuild_tensor_v2(*a):
        raise NotImplementedError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    def _rebuild_parameter(*a):
        raise NotImplementedError

    _rebuild_parameter.__module__ = "torch._utils"
    _rebuild_parameter.__qualname__ = "_rebuild_parameter"
    utils._rebuild_parameter = _rebuild_parameter
    return storages, _rebuild_tensor_v2, _rebuild_parameter


STORAGES, REBUILD, REBUILD_PARAM = fake_torch()


class Storage:
    def __init__(self, cls, key, raw, esize):
        self.cls, self.key, self.raw, self.numel = STORAGES[cls], key, raw, len(raw) // esize


class Tensor:
    def __init__(self, storage, offset, size, stride, param=False):
        self.storage, self.offset, self.size, self.stride, self.param = storage, offset, size, stride, param

    def __reduce__(self):
        args = (self.storage, self.offset, tuple(self.size), tuple(self.stride), False, OrderedDict())
        if self.param:
            return (REBUILD_PARAM, ((REBUILD, args), False, OrderedDict()))
        return (REBUILD, args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def torch_bin(state, storages, prefix="archive", compress_pkl=False):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(state)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(prefix + "/data.pkl"), buf.getvalue(),
                    compress_type=zipfile.ZIP_DEFLATED if compress_pkl else zipfile.ZIP_STORED)
        zf.writestr(zipfile.ZipInfo(prefix + "/byteorder"), b"little")
        for s in storages:
            zf.writestr(zipfile.ZipInfo(prefix + "/data/" + s.key), s.raw)
        zf.writestr(zipfile.ZipInfo(prefix + "/version"), b"3\n")
    return z.getvalue()


def raw_pickle(state):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(state)
    return buf.getvalue()


def make_torch_bin():
    h = "torch_bin"
    s0 = Storage("FloatStorage", "0", f32([float(i) for i in range(12)]), 4)
    s1 = Storage("HalfStorage", "1", struct.pack("<4e", 1, 2, 3, 4), 2)
    state = OrderedDict([
        ("model.embed_tokens.weight", Tensor(s0, 0, [3, 4], [4, 1])),
        ("transposed", Tensor(s0, 0, [4, 3], [1, 4])),
        ("offset_view", Tensor(s0, 2, [2, 2], [4, 1])),
        ("norm", Tensor(s1, 0, [4], [1], param=True)),
        ("step", 7),
    ])
    seed(h, "small_state_dict.bin", torch_bin(state, [s0, s1]))
    seed(h, "wrapped_state_dict.bin", torch_bin({"state_dict": OrderedDict([("w", Tensor(s1, 1, [3], [1]))])},
                                                [s1], prefix="model"))
    seed(h, "raw_state_dict.pkl", raw_pickle(state))
    for f in ("edge_cases.bin", "evil.bin", "llama_f16.bin"):
        copy_fixture(h, "tests/io/fixtures/" + f)

    # Issue 20: nesting hundreds of thousands deep blows the stack (recursive destruction).
    # Raw pickles stay under libFuzzer's -max_len; the regression files may be larger.
    deep = b"\x80\x02]" + b"\x85" * 200000 + b"."   # ([...],) nested by TUPLE1
    regression(h, "deep_tuple_nesting.pkl", deep)
    deep_lists = b"\x80\x02" + b"]" * 60000 + b"a" * 59999 + b"."  # [[[...]]] by APPEND
    regression(h, "deep_list_nesting.pkl", deep_lists)
    cyc = b"\x80\x02]q\x00h\x00a."  # l = []; l.append(l)
    regression(h, "self_referencing_list.pkl", cyc)
    # _rebuild_from_type_v2(_rebuild_from_type_v2, t, (_rebuild_from_type_v2, t, (...)))
    g = b"ctorch._tensor\n_rebuild_from_type_v2\nq\x000"  # memo[0] = the global, popped
    n = 40000
    innermost = b"ccollections\nOrderedDict\nN)\x87"  # (OrderedDict, None, ())
    chain = b"\x80\x02" + g + b"h\x00" + b"h\x00N" * n + innermost + b"\x87" * n + b"R."
    regression(h, "rebuild_from_type_chain.pkl", chain)

    # Issue 20: size x stride wraps around 2^64 so the last element seems to fit the storage,
    # then the strided copy reads outside it.
    s4 = Storage("FloatStorage", "0", f32([1, 2, 3, 4]), 4)
    regression(h, "stride_wraps_2_64.bin",
               torch_bin(OrderedDict([("w", Tensor(s4, 0, [5], [1 << 62]))]), [s4]))
    regression(h, "offset_plus_span_wraps.bin",
               torch_bin(OrderedDict([("w", Tensor(s4, (1 << 63) - 2, [2, 2], [1, (1 << 62)]))]), [s4]))
    # Issue 20: a stride-0 view expanding one element to 10^9 and 2^40 elements.
    regression(h, "stride0_expands_1e9.bin",
               torch_bin(OrderedDict([("w", Tensor(s4, 0, [10 ** 9], [0]))]), [s4]))
    regression(h, "stride0_expands_2_40.bin",
               torch_bin(OrderedDict([("w", Tensor(s4, 0, [1 << 20, 1 << 20], [0, 0]))]), [s4]))
    # data.pkl deflated: refused before reading, and never inflated past the stored size.
    regression(h, "deflated_pickle.bin", torch_bin(state, [s0, s1], compress_pkl=True))


# ---- tokenizer.json ----

def make_tokenizer():
    h = "tokenizer"
    for f in ("gpt2_bytelevel.json", "llama3_style.json", "qwen2_style.json", "spm_legacy.json",
              "spm_metaspace.json", "deepseek_v3_style.json", "o200k_style.json"):
        copy_fixture(h, "tests/io/tokenizer/" + f)
    with open(os.path.join(ROOT, "tests/io/tokenizer/spm_legacy.json"), "rb") as f:
        spm = f.read()
    with open(os.path.join(ROOT, "resources/demo/tokenizer_config.json"), "rb") as f:
        cfg = f.read()
    seed(h, "spm_legacy_with_config", spm + SEP + cfg)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "ab": 5, "\u2581": 6, "\u2581a": 7}
    tiny = {"version": "1.0", "added_tokens": [
        {"id": 1, "content": "<s>", "special": True, "normalized": False},
        {"id": 2, "content": "</s>", "special": True, "normalized": False}],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            {"type": "NFKC"}, {"type": "Strip", "strip_left": False, "strip_right": True}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "byte_fallback": True,
                  "fuse_unk": True, "vocab": vocab, "merges": ["a b", "\u2581 a"]}}
    seed(h, "tiny_spm.json", json.dumps(tiny))
    # A Split regex is user input: (a+)+$ backtracks exponentially on the run of 'a' that opens
    # the file text the harness encodes; PCRE2's match limit must end it quickly.
    regex = {"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated",
                               "invert": False},
             "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}
    regression(h, "catastrophic_split_regex.json", ("{\"_\": \"" + "a" * 200 + "!\", " +
                                                    json.dumps(regex)[1:]).encode())

    # Issue 20: normalizers that grow a text without bound (each step doubles every space,
    # 64 steps: 2^64 times the input).
    grow = json.loads(json.dumps(tiny))
    grow["normalizer"] = {"type": "Sequence", "normalizers":
                          [{"type": "Replace", "pattern": {"String": " "}, "content": "  "}] * 64}
    regression(h, "replace_doubles_64_times.json", json.dumps(grow))
    grow["normalizer"] = {"type": "Sequence", "normalizers":
                          [{"type": "Prepend", "prepend": " " * 1000}] +
                          [{"type": "Replace", "pattern": {"String": " "}, "content": "  "}] * 40}
    regression(h, "prepend_then_replace.json", json.dumps(grow))
    grow["normalizer"] = {"type": "Sequence", "normalizers":
                          [{"type": "Replace", "pattern": {"String": "e"}, "content": "e" * 20000}] * 3}
    regression(h, "replace_grows_20000x_cubed.json", json.dumps(grow))
    # The same through the decoder chain (decode() of the encoded ids).
    grow["normalizer"] = None
    grow["decoder"] = {"type": "Sequence", "decoders":
                       [{"type": "Replace", "pattern": {"String": "a"}, "content": "aa"}] * 64}
    regression(h, "decoder_replace_doubles_64_times.json", json.dumps(grow))
    # Found by fuzzing: two tokens, one with id 2^24 - 1, made a 565 MB dense id table.
    regression(h, "sparse_id_16m.json", json.dumps(
        {"model": {"type": "BPE", "vocab": {"a": 16777215, "b": 0}, "merges": []}}))


# ---- config.json ----

def make_hf_config():
    h = "hf_config"
    copy_fixture(h, "resources/demo/config.json", "demo_config.json")
    for d in ("llama_gqa", "llama3_rope", "qwen2_bias"):
        copy_fixture(h, "tests/model/fixtures/%s/config.json" % d, d + "_config.json")
    copy_fixture(h, "tests/io/fixtures/llama_f32/config.json", "llama_f32_config.json")
    seed(h, "mistral_config.json", json.dumps({
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "sliding_window": None, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "tie_word_embeddings": True}))


# ---- plan.json ----

def make_quant_plan():
    h = "quant_plan"
    seed(h, "uniform_rtn.json", json.dumps({"version": 1, "default": {"method": "rtn", "bits": 4}}))
    seed(h, "rules.json", json.dumps({
        "version": 1, "description": "mixed",
        "default": {"method": "neuqi", "bits": 4, "group_size": 128, "sym": False},
        "rules": [
            {"match": "model.layers.*.mlp.down_proj", "bits": 8},
            {"match": "model.layers.0.*", "skip": True},
            {"match": "model.layers.0.mlp.down_proj", "skip": False, "method": "gptq", "group_size": 16},
            {"match": "model.layers.1.self_attn.*", "method": "rtn", "bits": 3, "sym": True},
            {"match": "lm_head", "bits": 2}]}, indent=2))
    seed(h, "gptq_options.json", json.dumps({"default": {
        "method": "gptq", "bits": 3, "group_size": -1, "act_order": True, "static_groups": True,
        "block_size": 64, "damping": 0.01}}))
    seed(h, "invalid_trailing_comma.json", '{"default": {"method": "rtn",}}')


# ---- .qbproj ----

def qbproj(tensors, rows=32, cols=32, groups=1, bits=4, extras=None, version="1.0", entries_form=False):
    """tensors: HF names, each with a rows x cols grid of `groups` groups."""
    st = []
    tlist = []
    for name in tensors:
        st.append((name + ".codes", "U8", [rows, cols], bytes((i * 7) % (1 << bits) for i in range(rows * cols))))
        st.append((name + ".scales", "F64", [rows, groups], struct.pack("<%dd" % (rows * groups), *([0.01] * (rows * groups)))))
        st.append((name + ".zeros", "F64", [rows, groups], struct.pack("<%dd" % (rows * groups), *([8.0] * (rows * groups)))))
        st.append((name + ".g_idx", "I32", [cols], struct.pack("<%di" % cols, *[c * groups // cols for c in range(cols)])))
        tlist.append({"name": name, "bits": bits, "rows": rows, "cols": cols, "groups": groups})
    extras = extras or {}
    man = {"format": "qbproj", "version": version, "created_by": "make_seeds.py",
           "model": {"path": "llama_gqa", "format": "safetensors",
                     "files": [{"path": "llama_gqa/model.safetensors", "bytes": 80560}], "bytes": 80560},
           "tensors": tlist,
           "entries": {"plan": "plan.json", "calibration": "calibration.json", "metrics": "metrics.json",
                       "tensors": "tensors.safetensors"},
           "extras": list(extras)}
    plan = {"version": 1, "default": {"method": "rtn", "bits": bits}}
    metrics = {"bits_per_weight": 4.5, "size_bytes": 1000, "perplexity": 12.5,
               "timings": {"calibrate": 0.1, "total": 1.0},
               "tensors": [{"name": n, "layer": 0, "method": "rtn", "bits": bits, "skipped": False} for n in tensors]}
    if entries_form:  # fuzz_qbproj's own form: name, separator, bytes, separator, ...
        parts = [("manifest.json", json.dumps(man, indent=1)), ("plan.json", json.dumps(plan)),
                 ("calibration.json", "{}"), ("metrics.json", json.dumps(metrics))]
        parts += [("extras/%s.json" % n, json.dumps(v)) for n, v in extras.items()]
        parts.append(("tensors.safetensors", safetensors(st)))
        return SEP.join(x if isinstance(x, bytes) else x.encode() for p in parts for x in p)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        def put(name, data, deflate=True):
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data,
                        compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
        put("manifest.json", json.dumps(man, indent=2))
        put("plan.json", json.dumps(plan))
        put("calibration.json", json.dumps({"nsamples": 4, "seqlen": 16, "seed": 0}))
        put("metrics.json", json.dumps(metrics))
        for n, v in extras.items():
            put("extras/%s.json" % n, json.dumps(v))
        put("tensors.safetensors", safetensors(st), deflate=False)
    return z.getvalue()


def zip_with_declared_size(name, payload, declared):
    """A one-entry deflated zip whose headers claim `declared` uncompressed bytes."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = comp.compress(payload) + comp.flush()
    crc = zlib.crc32(payload)
    n = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), declared, len(n), 0) + n
    cd = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), declared,
                     len(n), 0, 0, 0, 0, 0, 0) + n
    body = local + data
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), len(body), 0)
    return body + cd + eocd


def make_qbproj():
    h = "qbproj"
    seed(h, "one_tensor.qbproj", qbproj(["model.layers.0.self_attn.q_proj.weight"]))
    seed(h, "grouped_with_extras.qbproj", qbproj(["model.layers.1.mlp.down_proj.weight"], rows=32, cols=48,
                                                 groups=3, bits=3, extras={"histograms": {"bins": [1, 2, 3]}}))
    seed(h, "shape_mismatch.qbproj", qbproj(["model.layers.0.self_attn.k_proj.weight"], rows=8, cols=8))
    seed(h, "newer_version.qbproj", qbproj([], version="2.0"))
    seed(h, "entries_one_tensor", qbproj(["model.layers.0.mlp.up_proj.weight"], rows=48, cols=32,
                                         groups=2, entries_form=True))
    seed(h, "entries_extras", qbproj(["model.layers.1.self_attn.o_proj.weight"], bits=2,
                                     extras={"histograms": [1, 2]}, entries_form=True))
    # Issue 20: zip entries that inflate to GBs. A 4 GiB claim from a few hundred bytes is
    # refused by the deflate ratio; a small claim over a 60 MB stream stops at the claim.
    regression(h, "declares_4gib.qbproj", zip_with_declared_size("manifest.json", b" " * 100000, 0xFFFFFFFF))
    regression(h, "inflates_past_declared.qbproj",
               zip_with_declared_size("manifest.json", b"{" + b" " * (60 << 20) + b"}", 1000))


# ---- CLI text inputs ----

def make_cli_args():
    h = "cli_args"
    seed(h, "quantize", b"\x00model_dir\n--calib\ncalib.txt\n--method\ngptq\n--bits\n4\n--group=128\n--sym\n"
                        b"--nsamples\n16\n--seqlen\n64\n--out\nm.gguf\n--format\ngguf\n--gguf-type\nq4_0")
    seed(h, "eval", b"\x01model\n--text\neval.txt\n--ctx=512\n--score\nsecond-half\n--batch\n4\n--json")
    seed(h, "export_bad_value", b"\x02project.qbproj\n--format\nqbproj\n--threads\n12x\n--out")
    seed(h, "convert", b"\x03model\n--out\nx.gguf\n--gguf-type\nf16\n--name=tiny\n--report")
    seed(h, "tokenize_text", b"\x04tok\n--text\nHello, world!\n--no-special\n\xe2\x96\x81unicode \xf0\x9f\x99\x82")
    seed(h, "info_positionals", b"\x05gguf\nsafetensors\nall\nsecond-half\nrtn\nneuqi\nq8_0\n--json")


if __name__ == "__main__":
    make_safetensors()
    make_gguf()
    make_torch_bin()
    make_tokenizer()
    make_hf_config()
    make_quant_plan()
    make_qbproj()
    make_cli_args()
    print("seeds written under", os.path.join(HERE, "corpus"))
