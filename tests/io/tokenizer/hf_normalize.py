#!/usr/bin/env python3
"""A normalizer of Hugging Face's tokenizers (the Rust crate, PyPI package `tokenizers`) run over a
text, for tst_tokenizer's code point by code point checks:

    python hf_normalize.py NORMALIZER_JSON INPUT OUTPUT

NORMALIZER_JSON is the tokenizer.json "normalizer" object as text; INPUT and OUTPUT are UTF-8 files
(read and written as bytes: a U+FEFF is text). Exit status 2 when the package is missing.
"""
import json
import sys

try:
    from tokenizers import Tokenizer
except ImportError as e:
    print("the Python package tokenizers is missing: run the test set-up (packaging/bootstrap.sh --tests). %s" % e,
          file=sys.stderr)
    sys.exit(2)


def main():
    if len(sys.argv) != 4:
        print("usage: hf_normalize.py NORMALIZER_JSON INPUT OUTPUT", file=sys.stderr)
        sys.exit(64)
    spec = {"version": "1.0", "normalizer": json.loads(sys.argv[1]),
            "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}
    tok = Tokenizer.from_str(json.dumps(spec))
    with open(sys.argv[2], "rb") as f:
        text = f.read().decode("utf-8")
    with open(sys.argv[3], "wb") as f:
        f.write(tok.normalizer.normalize_str(text).encode("utf-8"))


if __name__ == "__main__":
    main()
