"""Byte-level BPE (Llama-3 style pre-tokenizer) in plain Python: trainer, encoder, tokenizer.json writer.

The pre-tokenizer hand-codes the Llama-3 regex P3 (FORMATS.md §3.3) because Debian's python3 has
no `regex` module:
  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+
Letters/numbers are Unicode general categories L*/N*; \\s is the Unicode White_Space property.
Encoding follows Hugging Face tokenizers' BPE: per pre-token, bytes mapped through the GPT-2
byte->unicode table, then the adjacent pair of lowest merge rank is merged (leftmost first) until
no pair has a rank.
"""
import heapq
import json
import unicodedata
from collections import Counter, defaultdict

P3 = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")

_WS = set("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {chr(c) for c in range(0x2000, 0x200B)}


def is_ws(c):
    return c in _WS


def is_l(c):
    return unicodedata.category(c)[0] == "L"


def is_n(c):
    return unicodedata.category(c)[0] == "N"


def _contraction(s, i):
    if s[i] != "'" or i + 1 >= len(s):
        return 0
    a = s[i + 1].lower()
    if a in "stmd":
        return 2
    if i + 2 < len(s):
        ab = s[i + 1:i + 3].lower()
        if ab in ("re", "ve", "ll"):
            return 3
    return 0


def pretokenize(s):
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        # 1. contractions
        m = _contraction(s, i)
        if m:
            out.append(s[i:i + m]); i += m; continue
        # 2. [^\r\n\p{L}\p{N}]?\p{L}+
        j = -1
        if c not in "\r\n" and not is_l(c) and not is_n(c) and i + 1 < n and is_l(s[i + 1]):
            j = i + 1
        elif is_l(c):
            j = i
        if j >= 0:
            k = j
            while k < n and is_l(s[k]):
                k += 1
            out.append(s[i:k]); i = k; continue
        # 3. \p{N}{1,3}
        if is_n(c):
            k = i
            while k < n and k < i + 3 and is_n(s[k]):
                k += 1
            out.append(s[i:k]); i = k; continue

        # 4.  ?[^\s\p{L}\p{N}]+[\r\n]*
        def punct(ch):
            return not is_ws(ch) and not is_l(ch) and not is_n(ch)
        j = -1
        if c == " " and i + 1 < n and punct(s[i + 1]):
            j = i + 1
        elif punct(c):
            j = i
        if j >= 0:
            k = j
            while k < n and punct(s[k]):
                k += 1
            while k < n and s[k] in "\r\n":
                k += 1
            out.append(s[i:k]); i = k; continue
        # remaining alternatives all start with whitespace
        assert is_ws(c)
        e = i
        while e < n and is_ws(s[e]):
            e += 1
        # 5. \s*[\r\n]+ : backtrack to the last CR/LF in the run
        last = -1
        for k in range(e - 1, i - 1, -1):
            if s[k] in "\r\n":
                last = k
                break
        if last >= 0:
            out.append(s[i:last + 1]); i = last + 1; continue
        # 6. \s+(?!\S)
        if e == n:
            out.append(s[i:e]); i = e; continue
        if e - 1 > i:
            out.append(s[i:e - 1]); i = e - 1; continue
        # 7. \s+
        out.append(s[i:e]); i = e
    return out


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def to_bl(piece):
    return "".join(B2U[b] for b in piece.encode("utf-8"))


def train_bpe(texts, vocab_target, special):
    """Returns (vocab dict str->id, merges list of (a,b)). vocab_target includes the specials."""
    counts = Counter()
    for t in texts:
        for p in pretokenize(t):
            counts[to_bl(p)] += 1
    words = [list(w) for w in counts]
    freqs = [counts[w] for w in counts]
    vocab = {B2U[b]: b for b in range(256)}
    merges = []
    pair_count = defaultdict(int)
    where = defaultdict(set)
    for wi, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += freqs[wi]
            where[(a, b)].add(wi)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    n_merges_max = vocab_target - len(special)
    while len(vocab) < n_merges_max and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or -negc <= 0:
            continue
        a, b = pair
        new = a + b
        merges.append(pair)
        if new not in vocab:
            vocab[new] = len(vocab)
        changed = set()
        for wi in list(where[pair]):
            w = words[wi]
            f = freqs[wi]
            for x, y in zip(w, w[1:]):
                pair_count[(x, y)] -= f
                changed.add((x, y))
            nw = []
            k = 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    nw.append(new); k += 2
                else:
                    nw.append(w[k]); k += 1
            words[wi] = nw
            for x, y in zip(nw, nw[1:]):
                pair_count[(x, y)] += f
                where[(x, y)].add(wi)
                changed.add((x, y))
        del where[pair]
        pair_count.pop(pair, None)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
    for s in special:
        vocab[s] = len(vocab)
    return vocab, merges


class Tokenizer:
    def __init__(self, vocab, merges, special):
        self.vocab = vocab
        self.merges = merges
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.special = special
        self.inv = {v: k for k, v in vocab.items()}
        self.cache = {}
        self.u2b = {u: b for b, u in B2U.items()}

    def bpe(self, word):
        w = list(word)
        while len(w) > 1:
            best, bi = None, -1
            for i in range(len(w) - 1):
                r = self.ranks.get((w[i], w[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = w[bi], w[bi + 1]
            nw, k = [], 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    nw.append(a + b); k += 2
                else:
                    nw.append(w[k]); k += 1
            w = nw
        return w

    def encode(self, text):
        ids = []
        for p in pretokenize(text):
            bl = to_bl(p)
            r = self.cache.get(bl)
            if r is None:
                r = [self.vocab[x] for x in self.bpe(bl)]
                self.cache[bl] = r
            ids.extend(r)
        return ids

    def decode(self, ids):
        bs = bytearray()
        for i in ids:
            t = self.inv[i]
            if t in self.special:
                bs += t.encode("utf-8")
            else:
                bs += bytes(self.u2b[c] for c in t)
        return bs.decode("utf-8", errors="replace")

    def to_json(self):
        sp = [{"id": self.vocab[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False,
               "normalized": False, "special": True} for s in self.special]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": sp,
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": P3}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                               "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": self.vocab,
                      "merges": [a + " " + b for a, b in self.merges]},
        }


def self_test():
    cases = {
        "Hello world": ["Hello", " world"],
        "I'm don't  x": ["I", "'m", " don", "'t", " ", " x"],
        "abc123456 7": ["abc", "123", "456", " ", "7"],
        "a  \n\n  b": ["a", "  \n\n", " ", " b"],
        "x = (y);\n": ["x", " =", " (", "y", ");\n"],
        "end   ": ["end", "   "],
        "HE'LL": ["HE", "'LL"],
        "\tdef": ["\tdef"],
    }
    for s, exp in cases.items():
        got = pretokenize(s)
        assert got == exp, (s, got, exp)


if __name__ == "__main__":
    self_test()
    print("ok")
