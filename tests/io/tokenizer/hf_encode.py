#!/usr/bin/env python3
"""Reference ids from Hugging Face's tokenizers (the Rust crate, PyPI package `tokenizers`), used by
tst_tokenizer for parity checks. Same interface and output as hf_encode.mjs (the JS port):

    python hf_encode.py TOKENIZER_JSON STRINGS_JSON [--config CONFIG_JSON]

STRINGS_JSON is a JSON array of strings. Prints one JSON object on stdout:
  { "encode": [[ids with special tokens]...], "plain": [[ids without]...],
    "decode": [decode(plain)...], "decodeSkip": [decode(encode, skip_special_tokens)...],
    "version": "<tokenizers version>" }
With --config, add_bos_token / add_eos_token of tokenizer_config.json add BOS / EOS when the
tokenizer.json has no post-processor that adds special tokens (what transformers' fast tokenizers
do for Llama-style configs, and what Tokenizer::fromFile does). Exit status 2 when the package is
missing. Files are read as bytes and decoded by json (no BOM stripping: a U+FEFF is text).
"""
import json
import sys

try:
    import tokenizers
    from tokenizers import Tokenizer
except ImportError as e:
    print("the Python package tokenizers is missing: run the test set-up (packaging/bootstrap.sh --tests). %s" % e,
          file=sys.stderr)
    sys.exit(2)


def main():
    args = sys.argv[1:]
    config = {}
    if "--config" in args:
        i = args.index("--config")
        with open(args[i + 1], "rb") as f:
            config = json.loads(f.read().decode("utf-8"))
        del args[i:i + 2]
    if len(args) != 2:
        print("usage: hf_encode.py TOKENIZER_JSON STRINGS_JSON [--config FILE]", file=sys.stderr)
        sys.exit(64)
    with open(args[0], "rb") as f:
        raw = f.read().decode("utf-8")
    tok = Tokenizer.from_str(raw)
    with open(args[1], "rb") as f:
        strings = json.loads(f.read().decode("utf-8"))

    def token_id(key):
        v = config.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return tok.token_to_id(v) if isinstance(v, str) else None

    prefix, suffix = [], []
    if json.loads(raw).get("post_processor") is None or tok.post_processor.num_special_tokens_to_add(False) == 0:
        bos, eos = token_id("bos_token"), token_id("eos_token")
        if config.get("add_bos_token") is True and bos is not None:
            prefix = [bos]
        if config.get("add_eos_token") is True and eos is not None:
            suffix = [eos]

    out = {"encode": [], "plain": [], "decode": [], "decodeSkip": [], "version": tokenizers.__version__}
    plains = tok.encode_batch(strings, add_special_tokens=False)
    specials = tok.encode_batch(strings, add_special_tokens=True)
    for plain, special in zip(plains, specials):
        with_special = prefix + special.ids + suffix
        out["plain"].append(plain.ids)
        out["encode"].append(with_special)
        out["decode"].append(tok.decode(plain.ids, skip_special_tokens=False) if plain.ids else "")
        out["decodeSkip"].append(tok.decode(with_special, skip_special_tokens=True) if with_special else "")
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
