"""`golf data build`: text in, a parameter-golf dataset directory out.

Steps, each deterministic for the same inputs:
1. read documents: a `.txt` file is one document, a `.jsonl` file holds one per line (field `text`);
   directories are searched recursively for both, in sorted path order;
2. split by document: the first `val_docs` documents are validation, the rest training (documents never
   straddle the split, so no validation text leaks into training through a shared document);
3. train a SentencePiece BPE tokenizer on the *training* documents with the official parameter-golf settings;
4. encode every document with BOS (`BOS_ID`) in front and no EOS, concatenate, cut into shards;
5. write `manifest.json` (contract) with `val.bytes` from the metric's byte tables.

Everything is built in a temporary directory and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from golf.data.shards import BOS_ID, shard_name, write_shard
from golf.errors import GolfError
from golf.io import atomic_dir, write_json
from golf.metric import build_byte_table, stream_bytes
from golf.progress import Progress

DEFAULT_SHARD_TOKENS = 100_000_000  # parameter-golf shards hold 10^8 tokens

# The tokenizer settings of parameter-golf's sp1024 (shared research notes, "Data format").
TOKENIZER_SETTINGS = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": BOS_ID,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}


def iter_input_files(inputs: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
            if not found:
                raise GolfError(f"input {path}: directory holds no .txt or .jsonl files")
            files.extend(found)
        elif path.is_file():
            if path.suffix not in (".txt", ".jsonl"):
                raise GolfError(f"input {path}: unsupported file type {path.suffix!r} (use .txt or .jsonl)")
            files.append(path)
        else:
            raise GolfError(f"input {path}: no such file or directory")
    return files


def read_documents(inputs: Iterable[str | Path]) -> list[str]:
    """All non-blank documents of the inputs, in deterministic order."""
    return [text for text, _ in read_labelled_documents(inputs)]


def read_labelled_documents(inputs: Iterable[str | Path]) -> list[tuple[str, str | None]]:
    """(text, source) of every non-blank document of the inputs, in deterministic order; source is a JSONL
    record's `source` field (the offline corpus writes one: enwiki, sotu, kjv, ...), else None."""
    docs: list[tuple[str, str | None]] = []
    for path in iter_input_files(inputs):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise GolfError(f"input {path}: not UTF-8 text (byte {e.start})") from e
        if path.suffix == ".txt":
            if text.strip():
                docs.append((text, None))
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise GolfError(f"input {path}:{lineno}: invalid JSON ({e.msg})") from e
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise GolfError(f"input {path}:{lineno}: each line needs a string field 'text'")
            if record["text"].strip():
                source = record.get("source")
                docs.append((record["text"], source if isinstance(source, str) else None))
    if not docs:
        raise GolfError("input: no non-empty documents found in " + ", ".join(str(p) for p in inputs))
    return docs


def _training_sentences(docs: list[str]) -> Iterator[str]:
    # SentencePiece trains on "sentences"; paragraphs (lines) are the natural unit for prose, and lines
    # longer than its max_sentence_length would be dropped silently, so long lines are cut at spaces.
    for doc in docs:
        for line in doc.splitlines():
            line = line.strip()
            while len(line) > 4000:
                cut = line.rfind(" ", 0, 4000)
                cut = cut if cut > 0 else 4000
                yield line[:cut]
                line = line[cut:].strip()
            if line:
                yield line


def train_tokenizer(docs: list[str], vocab_size: int) -> bytes:
    """Train a SentencePiece BPE with the official settings; return the serialized model."""
    import sentencepiece as spm

    if vocab_size < 260 + 8:
        raise GolfError(f"vocab size {vocab_size} is too small: byte fallback alone takes 256 + 4 special ids")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_sentences(docs),
            model_writer=buf,
            vocab_size=vocab_size,
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            num_threads=2,
            minloglevel=2,
            **TOKENIZER_SETTINGS,
        )
    except RuntimeError as e:
        raise GolfError(f"tokenizer training failed: {str(e).splitlines()[0]}") from e
    return buf.getvalue()


def encode_documents(sp, docs: list[str]) -> np.ndarray:
    """BOS + ids for every document, concatenated, as uint16."""
    ids = sp.encode(docs, num_threads=2)
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    out = np.empty(int(lengths.sum()), dtype=np.uint16)
    pos = 0
    for seq in ids:
        out[pos] = BOS_ID
        out[pos + 1 : pos + 1 + len(seq)] = seq
        pos += 1 + len(seq)
    return out


def write_split(directory: Path, name: str, split: str, tokens: np.ndarray, shard_tokens: int) -> int:
    """Cut one split's stream into shards; returns the number of shards written."""
    count = 0
    for start in range(0, max(tokens.size, 1), shard_tokens):
        write_shard(directory / shard_name(name, split, count), tokens[start : start + shard_tokens])
        count += 1
    return count


def build_dataset(
    inputs: list[str | Path],
    vocab_size: int,
    out: str | Path,
    val_docs: int = 100,
    name: str = "corpus",
    sources: list[dict] | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> Path:
    """Build a dataset directory (contract: shards, tokenizer, manifest.json). Returns its path."""
    import sentencepiece as spm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GolfError(f"output {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise GolfError(f"output {out}: exists, is not empty and is not a golf dataset; refusing to overwrite")
    if val_docs < 1:
        raise GolfError(f"--val-docs must be >= 1, got {val_docs}")
    if shard_tokens < 1:  # 0 would loop forever, a negative value wrote a dataset without shards
        raise GolfError(f"--shard-tokens must be >= 1, got {shard_tokens}")
    if vocab_size < 1:
        raise GolfError(f"--vocab-size must be >= 1, got {vocab_size}")
    labelled = read_labelled_documents(inputs)
    docs = [text for text, _ in labelled]
    if val_docs >= len(docs):
        raise GolfError(f"--val-docs {val_docs} leaves no training documents (input has {len(docs)} documents)")
    val, train = docs[:val_docs], docs[val_docs:]
    val_sources = [source for _, source in labelled[:val_docs]]

    bar = Progress(f"build {name}", 3, "stage")  # each stage takes seconds on the 24 MB default corpus
    bar.update(0, stage="tokenizer")
    model_bytes = train_tokenizer(train, vocab_size)
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    bar.update(1, stage="encode")
    val_tokens = encode_documents(sp, val)
    train_tokens = encode_documents(sp, train)
    table = build_byte_table(sp)
    tokenizer_file = f"{name}_{vocab_size}_bpe.model"
    bar.update(1, stage="write", tokens=f"{val_tokens.size + train_tokens.size:,}")

    with atomic_dir(out) as tmp:
        (tmp / tokenizer_file).write_bytes(model_bytes)
        n_train = write_split(tmp, name, "train", train_tokens, shard_tokens)
        n_val = write_split(tmp, name, "val", val_tokens, shard_tokens)
        manifest = {
            "name": name,
            "vocab_size": int(sp.get_piece_size()),
            "tokenizer": {
                "file": tokenizer_file,
                "sha256": hashlib.sha256(model_bytes).hexdigest(),
                "settings": {"vocab_size": vocab_size, **TOKENIZER_SETTINGS},
            },
            "train": {"shards": n_train, "tokens": int(train_tokens.size), "docs": len(train)},
            "val": {
                "shards": n_val,
                "tokens": int(val_tokens.size),
                "docs": len(val),
                "bytes": stream_bytes(table, val_tokens),
                # each validation document's source, in stream order (the probe stratifies its halves by it)
                **({"doc_sources": val_sources} if any(val_sources) else {}),
            },
            "sources": list(sources or []),
        }
        write_json(tmp / "manifest.json", manifest)
    bar.update(1)
    bar.close()
    return out
