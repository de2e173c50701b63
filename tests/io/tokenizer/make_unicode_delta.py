#!/usr/bin/env python3
"""Writes core/io/tokenizer_unicode_delta.inc: the code points whose Unicode classes differ
between Hugging Face's tokenizers (the Rust crate's Oniguruma) and the PCRE2 / Qt of Debian 12.

Debian 12 ships PCRE2 10.42 and Qt 6.4, both with Unicode 14 tables; tokenizers 0.23 (Oniguruma
6.9.10) has Unicode 16. Every class the Split regex translation (core/io/tokenizer_regex.cpp) and
the hand-coded pre-tokenizers rely on is compared over all code points: for each, the ranges HF
has and PCRE2 lacks ("added") and the reverse ("removed"). Run once when either side changes:

    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install tokenizers
    /tmp/hf/bin/python tests/io/tokenizer/make_unicode_delta.py

It needs libpcre2-8 (the Debian package libpcre2-dev) and prints the tokenizers version used.
"""
import ctypes
import ctypes.util
import os
import sys

import tokenizers
from tokenizers import Regex, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "core", "io", "tokenizer_unicode_delta.inc")

GENERAL = "L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp C Cc Cf Co Cn".split()
# name in the table -> (Oniguruma pattern, PCRE2 pattern); each matches one code point.
CLASSES = {g: (r"\p{%s}" % g, r"\p{%s}" % g) for g in GENERAL}
CLASSES["Alphabetic"] = (r"\p{Alphabetic}", r"\p{Alphabetic}")
# Oniguruma's \w differs inside and outside brackets (outside, it adds ² ³ ¹ ¼ ½ ¾).
CLASSES["WordInClass"] = (r"[\w]", r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}]")
CLASSES["Word"] = (r"\w", r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{B2}\x{B3}\x{B9}\x{BC}-\x{BE}]")
CLASSES["WhiteSpace"] = (r"\s", r"[\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]")

CODE_POINTS = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
TEXT = "".join(map(chr, CODE_POINTS))
DATA = TEXT.encode("utf-8")


def hf_set(pattern):
    split = pre_tokenizers.Split(Regex(pattern), "removed", invert=True)  # keeps the matches
    return {ord(ch) for piece, _ in split.pre_tokenize_str(TEXT) for ch in piece}


class Pcre2:
    def __init__(self):
        path = ctypes.util.find_library("pcre2-8") or "libpcre2-8.so.0"
        self.lib = lib = ctypes.CDLL(path)
        lib.pcre2_compile_8.restype = ctypes.c_void_p
        lib.pcre2_compile_8.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                        ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
        lib.pcre2_match_data_create_8.restype = ctypes.c_void_p
        lib.pcre2_match_data_create_8.argtypes = [ctypes.c_uint32, ctypes.c_void_p]
        lib.pcre2_match_8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                      ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p]
        lib.pcre2_get_ovector_pointer_8.restype = ctypes.POINTER(ctypes.c_size_t)
        lib.pcre2_get_ovector_pointer_8.argtypes = [ctypes.c_void_p]
        lib.pcre2_config_8.argtypes = [ctypes.c_uint32, ctypes.c_void_p]
        buf = ctypes.create_string_buffer(64)
        lib.pcre2_config_8(10, buf)  # PCRE2_CONFIG_UNICODE_VERSION
        self.unicode = buf.value.decode()
        lib.pcre2_config_8(11, buf)  # PCRE2_CONFIG_VERSION
        self.version = buf.value.decode()

    def set(self, pattern):
        err, off = ctypes.c_int(), ctypes.c_size_t()
        pat = ("(?:%s)+" % pattern).encode()
        code = self.lib.pcre2_compile_8(pat, len(pat), 0x00080000 | 0x00020000, ctypes.byref(err), ctypes.byref(off),
                                        None)  # PCRE2_UTF | PCRE2_UCP
        if not code:
            sys.exit("PCRE2 refuses %s" % pattern)
        md = self.lib.pcre2_match_data_create_8(1, None)
        out, pos = set(), 0
        while self.lib.pcre2_match_8(code, DATA, len(DATA), pos, 0, md, None) >= 0:
            ov = self.lib.pcre2_get_ovector_pointer_8(md)
            out.update(map(ord, DATA[ov[0]:ov[1]].decode("utf-8")))
            pos = ov[1]
        return out


def ranges(points):
    out = []
    for c in sorted(points):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def array(name, rs):
    if not rs:
        return "constexpr CodeRange %s[] = {{1, 0}}; // none\n" % name
    items = ["{0x%X, 0x%X}" % (a, b) for a, b in rs]
    lines, line = [], "   "
    for it in items:
        if len(line) + len(it) + 2 > 118:
            lines.append(line)
            line = "   "
        line += " " + it + ","
    lines.append(line)
    return "constexpr CodeRange %s[] = {\n%s\n};\n" % (name, "\n".join(lines))


def main():
    pcre = Pcre2()
    body, table = [], []
    for name, (onig, pcre_pattern) in CLASSES.items():
        hf, ours = hf_set(onig), pcre.set(pcre_pattern)
        added, removed = ranges(hf - ours), ranges(ours - hf)
        print("%-12s HF %7d PCRE2 %7d  added %5d in %3d ranges, removed %d" % (
            name, len(hf), len(ours), len(hf - ours), len(added), len(ours - hf)))
        body.append(array("kAdded%s" % name, added))
        body.append(array("kRemoved%s" % name, removed))
        table.append('    {"%s", kAdded%s, %d, kRemoved%s, %d},' % (name, name, len(added), name, len(removed)))
    header = (
        "// Generated by tests/io/tokenizer/make_unicode_delta.py: do not edit.\n"
        "// Reference: Hugging Face tokenizers %s (Oniguruma).\n"
        "// Base: PCRE2 %s, Unicode %s (Qt 6.4 has the same Unicode tables).\n"
        "// For each class: the code point ranges the reference has and the base lacks (added), and the\n"
        "// reverse (removed). Code point 0 and the surrogates are not compared.\n\n"
        % (tokenizers.__version__, pcre.version, pcre.unicode))
    with open(OUT, "w") as f:
        f.write(header + "\n".join(body) + "\nconstexpr UnicodeDelta kUnicodeDeltas[] = {\n" + "\n".join(table) + "\n};\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
