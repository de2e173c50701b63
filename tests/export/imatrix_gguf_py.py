#!/usr/bin/env python3
"""Reads a GGUF importance matrix with llama.cpp's own Python package (gguf-py, PyPI `gguf`) and
prints what llama-quantize would use: per entry the importance in_sum2 / counts, as JSON
{"type": ..., "chunk_count": ..., "chunk_size": ..., "datasets": [...], "entries": {name: [..]}}.
Used by tst_imatrix (readByGgufPy) when QB_GGUF_PYTHON names an interpreter with `gguf` installed."""
import json
import sys

import numpy as np
from gguf import GGUFReader


def field_value(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if hasattr(f, "contents"):  # gguf >= 0.11
        return f.contents()
    if f.types and f.types[0] == 9:  # array of strings (the only array written)
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    if f.types and f.types[0] == 8:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def main(path):
    r = GGUFReader(path)
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in r.tensors}
    entries = {}
    for name, data in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        stem = name[: -len(".in_sum2")]
        counts = tensors[stem + ".counts"].reshape(-1)
        entries[stem] = (data.reshape(-1) / counts[0]).tolist()
    out = {
        "type": field_value(r, "general.type"),
        "chunk_count": field_value(r, "imatrix.chunk_count"),
        "chunk_size": field_value(r, "imatrix.chunk_size"),
        "datasets": field_value(r, "imatrix.datasets"),
        "entries": entries,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
