"""Tokenization speed of `golf data build` (target: >= 1 MB of text per second on a 2-core machine).

Times the encoding stage (BOS + ids for every document, as build_dataset does) on a corpus, with a tokenizer
trained on it beforehand (tokenizer training is a one-off cost, reported separately), and the zero-copy read
of a shard. Usage:

    python benchmarks/data_build_speed.py [--input PATH ...] [--vocab-size 1024] [--out results/benchmarks/data_build_speed.json]

Default input: the offline default corpus's documents (run `golf data fetch` first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm

from golf.data.build import encode_documents, read_documents, train_tokenizer
from golf.data.shards import read_shard, write_shard
from golf.data.store import data_root
from golf.io import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", default=[str(data_root() / "corpora" / "default" / "documents.jsonl")])
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--out", default="results/benchmarks/data_build_speed.json")
    args = p.parse_args()

    docs = read_documents(args.input)
    text_bytes = sum(len(d.encode("utf-8")) for d in docs)
    t0 = time.perf_counter()
    sp = spm.SentencePieceProcessor(model_proto=train_tokenizer(docs, args.vocab_size))
    train_s = time.perf_counter() - t0

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        tokens = encode_documents(sp, docs)
        best = min(best, time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "x_train_000000.bin"
        write_shard(shard, tokens)
        t0 = time.perf_counter()
        view = read_shard(shard)
        open_s = time.perf_counter() - t0
        zero_copy = isinstance(view, np.memmap)

    result = {
        "benchmark": "data_build_speed",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (CPU)",
        "input_mb": text_bytes / 1e6,
        "documents": len(docs),
        "tokens": int(tokens.size),
        "tokenizer_train_s": train_s,
        "encode_s": best,
        "encode_mb_per_s": text_bytes / 1e6 / best,
        "target_mb_per_s": 1.0,
        "meets_target": text_bytes / 1e6 / best >= 1.0,
        "shard_open_ms": open_s * 1e3,
        "shard_read_zero_copy": zero_copy,
        "command": " ".join(["python", *sys.argv]),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
