// Generates the small tokenizer.json fixtures used by tst_tokenizer (run once; outputs are
// committed so CI needs no generator):  node tests/io/tokenizer/make_test_tokenizers.mjs
//
// It trains a tiny BPE (a few hundred merges) on the corpus below and writes five tokenizers:
//   gpt2_bytelevel.json   ByteLevel(use_regex) pre-tokenizer, legacy "a b" merges, added tokens
//                         with lstrip / non-special normalized entries
//   llama3_style.json     Split(P3) + ByteLevel(use_regex=false), ignore_merges, pair merges,
//                         TemplateProcessing with <|begin_of_text|>
//   qwen2_style.json      NFC + Split(PQ) + ByteLevel(use_regex=false), no BOS
//   spm_legacy.json       SentencePiece-style: Prepend+Replace normalizer, byte_fallback, <s> template
//   spm_metaspace.json    non-legacy Metaspace(prepend_scheme=first), unk + fuse_unk, no byte fallback
//   deepseek_v3_style.json  DeepSeek-V3's three Split regexes (digits, CJK, the rest) + ByteLevel
//   o200k_style.json      GPT-4o's o200k Split regex with behavior Removed, invert true + ByteLevel
// Training is deterministic (ties broken by the pair's text), so re-running gives the same files.

import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const outDir = dirname(fileURLToPath(import.meta.url));

const corpus = `
Quantization maps the weights of a large language model to a small set of levels. A uniform
quantizer with four bits has sixteen levels; the scale and the zero point are chosen per group of
one hundred and twenty eight weights. The GPTQ method quantizes one column at a time and updates
the remaining columns with the inverse Hessian, so the error of each column is compensated by the
columns that follow. Activation-aware methods scale the salient channels before rounding.
We measure perplexity on a held-out text: the lower the perplexity, the better the model predicts
the next token. The tokenizer splits the text into tokens; every token has an id in the vocabulary.
Hello world! Hello, world. HELLO WORLD? hello world... It's a test; isn't it? I'm sure you'll see.
They're here, we've got it, he'd know, she'll come, I'M LOUD, DON'T SHOUT, don't worry.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 128 256 512 1024 2048 4096 3.14159 2.71828 1e-5 2024-05-17.
The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again.
def quantize(weights, bits=4):
    scale = (weights.max() - weights.min()) / (2 ** bits - 1)
    return round(weights / scale) * scale
for (int i = 0; i < n; ++i) { sum += x[i] * w[i]; }
Café, naïve, résumé, façade, Ångström, São Paulo, Zürich, München, El Niño, déjà vu, crème brûlée.
Straße und Größe, Übermaß, schön, Mädchen, Brötchen, Fußgänger. Le café est très bon. Ça va?
中文文本测试，中文分词，文本，测试。日本語のテキスト、日本語。你好，世界。你好世界。
Emoji are bytes too: 😀 😀 👍 👍 ❤️ ❤️ 🎉.
Tabs	and	spaces   and
newlines

and windows\r\nline endings\r\n.
`.repeat(2);

// ---- byte-level helpers (GPT-2 byte <-> unicode table) ----
const bs = [];
for (let b = 0x21; b <= 0x7e; ++b) bs.push(b);
for (let b = 0xa1; b <= 0xac; ++b) bs.push(b);
for (let b = 0xae; b <= 0xff; ++b) bs.push(b);
const byteChar = new Array(256);
{
  let n = 0;
  for (const b of bs) byteChar[b] = String.fromCodePoint(b);
  for (let b = 0; b < 256; ++b) if (byteChar[b] === undefined) byteChar[b] = String.fromCodePoint(256 + n++);
}
const byteOrder = [...bs];
for (let b = 0; b < 256; ++b) if (!bs.includes(b)) byteOrder.push(b);
const enc = new TextEncoder();
const byteMap = (s) => Array.from(enc.encode(s), (b) => byteChar[b]).join("");

const GPT2 = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
const P3 = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const PQ = P3.replace(String.raw`\p{N}{1,3}`, String.raw`\p{N}`);
// The published patterns, as their tokenizer.json files hold them (DeepSeek-V3's third one has
// raw CR and LF characters inside its classes).
const DS_DIGITS = String.raw`\p{N}{1,3}`;
const DS_CJK = "[一-龥぀-ゟ゠-ヿ]+";
const DS_REST = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
const O200K = String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
// JS has no (?i:...) groups: spell the contractions out for training only.
const jsRegex = (p) =>
  new RegExp(p.replaceAll(String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)`, "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"), "gu");
// Isolated splits applied one after another (a Sequence of Split pre-tokenizers).
const splitAll = (text, regexes) => regexes.reduce((pieces, re) => pieces.flatMap((p) => {
  const out = [];
  let last = 0;
  for (const m of p.matchAll(jsRegex(re))) {
    if (m.index > last) out.push(p.slice(last, m.index));
    if (m[0].length) out.push(m[0]);
    last = m.index + m[0].length;
  }
  if (last < p.length) out.push(p.slice(last));
  return out;
}), [text]);

// ---- BPE training on word counts ----
function train(words, initialVocab, numMerges) {
  // words: Map<string(word), count>; symbols are the word's code points
  const entries = [...words].map(([w, c]) => ({ syms: Array.from(w), count: c }));
  const vocab = new Map(initialVocab.map((t, i) => [t, i]));
  const merges = [];
  for (let m = 0; m < numMerges; ++m) {
    const counts = new Map();
    for (const e of entries)
      for (let i = 0; i + 1 < e.syms.length; ++i) {
        const k = e.syms[i] + "\u0000" + e.syms[i + 1];
        counts.set(k, (counts.get(k) ?? 0) + e.count);
      }
    let best = null, bestCount = 1;
    for (const [k, c] of counts)
      if (c > bestCount || (c === bestCount && best !== null && k < best)) { best = k; bestCount = c; }
    if (best === null) break;
    const [a, b] = best.split("\u0000");
    if (!vocab.has(a) || !vocab.has(b)) throw new Error("merge of unknown symbols");
    merges.push([a, b]);
    if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
    for (const e of entries) {
      const out = [];
      for (let i = 0; i < e.syms.length; ++i) {
        if (i + 1 < e.syms.length && e.syms[i] === a && e.syms[i + 1] === b) { out.push(a + b); ++i; }
        else out.push(e.syms[i]);
      }
      e.syms = out;
    }
  }
  return { vocab: Object.fromEntries(vocab), merges };
}

function countWords(pieces) {
  const words = new Map();
  for (const p of pieces) words.set(p, (words.get(p) ?? 0) + 1);
  return words;
}

const added = (id, content, extra = {}) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...extra,
});

function bpeModel(vocab, merges, extra = {}) {
  return {
    type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
    end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
    vocab, merges, ...extra,
  };
}

function write(name, obj) {
  const text = JSON.stringify(obj, null, 1);
  writeFileSync(join(outDir, name), text + "\n");
  console.log(`${name}: ${text.length} bytes, ${Object.keys(obj.model.vocab).length} vocab, ${obj.model.merges.length} merges`);
}

function byteLevelTokenizer(regex, numMerges) {
  const pieces = (Array.isArray(regex) ? splitAll(corpus, regex) : corpus.match(jsRegex(regex))).map(byteMap);
  return train(countWords(pieces), byteOrder.map((b) => byteChar[b]), numMerges);
}

// (a) GPT-2 style
{
  const { vocab, merges } = byteLevelTokenizer(GPT2, 400);
  const n = Object.keys(vocab).length;
  write("gpt2_bytelevel.json", {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [
      added(n, "<|endoftext|>"),
      added(n + 1, "<mask>", { lstrip: true }),
      added(n + 2, "[[user]]", { special: false, normalized: true }),
    ],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: bpeModel(vocab, merges.map(([a, b]) => `${a} ${b}`)),
  });
}

// (b) Llama-3 style
{
  const { vocab, merges } = byteLevelTokenizer(P3, 400);
  // Whole-word entries no merge produces: only ignore_merges reaches them.
  for (const w of [" quantization", "Quantization", " perplexity"]) vocab[byteMap(w)] ??= Object.keys(vocab).length;
  const n = Object.keys(vocab).length;
  const specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
  write("llama3_style.json", {
    version: "1.0", truncation: null, padding: null,
    added_tokens: specials.map((s, i) => added(n + i, s)),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence", pretokenizers: [
        { type: "Split", pattern: { Regex: P3 }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "Sequence", processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
          pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
          special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [n], tokens: ["<|begin_of_text|>"] } },
        },
      ],
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: bpeModel(vocab, merges, { ignore_merges: true }),
  });
}

// (c) Qwen2 style
{
  const { vocab, merges } = byteLevelTokenizer(PQ, 400);
  const n = Object.keys(vocab).length;
  write("qwen2_style.json", {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [
      added(n, "<|endoftext|>"), added(n + 1, "<|im_start|>"), added(n + 2, "<|im_end|>"),
      added(n + 3, "<tool_call>", { special: false }),
    ],
    normalizer: { type: "NFC" },
    pre_tokenizer: {
      type: "Sequence", pretokenizers: [
        { type: "Split", pattern: { Regex: PQ }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: bpeModel(vocab, merges),
  });
}

// (d) SentencePiece-style
function spmTrain(numMerges) {
  const words = corpus.split(/ +/).filter((w) => w.length).map((w) => "\u2581" + w);
  const charCount = new Map();
  for (const w of words) for (const c of w) charCount.set(c, (charCount.get(c) ?? 0) + 1);
  // Rare characters stay out of the vocabulary so byte fallback / unk get exercised.
  const chars = [...charCount].filter(([, c]) => c >= 4).sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1)).map(([c]) => c);
  const base = ["<unk>", "<s>", "</s>"];
  for (let b = 0; b < 256; ++b) base.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  const keep = new Set(chars);
  const filtered = words.filter((w) => Array.from(w).every((c) => keep.has(c)));
  return train(countWords(filtered), [...base, ...chars], numMerges);
}
const spmAdded = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")];
const bosTemplate = {
  type: "TemplateProcessing",
  single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
  pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
    { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
  special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
};
{
  const { vocab, merges } = spmTrain(300);
  write("spm_legacy.json", {
    version: "1.0", truncation: null, padding: null,
    added_tokens: spmAdded,
    normalizer: {
      type: "Sequence", normalizers: [
        { type: "Prepend", prepend: "\u2581" },
        { type: "Replace", pattern: { String: " " }, content: "\u2581" },
      ],
    },
    pre_tokenizer: null,
    post_processor: bosTemplate,
    decoder: {
      type: "Sequence", decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" }, { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: bpeModel(vocab, merges.map(([a, b]) => `${a} ${b}`), { unk_token: "<unk>", fuse_unk: true, byte_fallback: true }),
  });
  write("spm_metaspace.json", {
    version: "1.0", truncation: null, padding: null,
    added_tokens: spmAdded,
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
    post_processor: bosTemplate,
    decoder: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
    model: bpeModel(vocab, merges, { unk_token: "<unk>", fuse_unk: true, byte_fallback: false }),
  });
}

// (e) DeepSeek-V3 style: three Isolated Split regexes, then ByteLevel without its own regex
{
  const { vocab, merges } = byteLevelTokenizer([DS_DIGITS, DS_CJK, DS_REST], 400);
  const n = Object.keys(vocab).length;
  const isolated = (pattern) => ({ type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false });
  write("deepseek_v3_style.json", {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [added(n, "<｜begin▁of▁sentence｜>"), added(n + 1, "<｜end▁of▁sentence｜>"),
      added(n + 2, "<｜User｜>", { special: false })],
    normalizer: { type: "Sequence", normalizers: [] },
    pre_tokenizer: {
      type: "Sequence", pretokenizers: [
        isolated(DS_DIGITS), isolated(DS_CJK), isolated(DS_REST),
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<｜begin▁of▁sentence｜>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<｜begin▁of▁sentence｜>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: {
        "<｜begin▁of▁sentence｜>": { id: "<｜begin▁of▁sentence｜>", ids: [n], tokens: ["<｜begin▁of▁sentence｜>"] },
      },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: bpeModel(vocab, merges.map(([a, b]) => `${a} ${b}`)),
  });
}

// (f) GPT-4o (o200k) style: Split with behavior Removed and invert true keeps only the matches
{
  const { vocab, merges } = byteLevelTokenizer(O200K, 400);
  const n = Object.keys(vocab).length;
  write("o200k_style.json", {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [added(n, "<|endoftext|>"), added(n + 1, "<|endofprompt|>")],
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence", pretokenizers: [
        { type: "Split", pattern: { Regex: O200K }, behavior: "Removed", invert: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: bpeModel(vocab, merges, { continuing_subword_prefix: "", end_of_word_suffix: "" }),
  });
}
