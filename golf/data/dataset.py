"""A dataset directory, opened and checked: shards, tokenizer, manifest.

Two layouts are accepted:
* golf's (contract): shards, the tokenizer `.model` and `manifest.json` in one directory;
* parameter-golf's as it is: `fineweb_{train,val}_NNNNNN.bin` in `datasets/fineweb10B_sp1024/` with the
  tokenizer in the sibling `tokenizers/` folder and no manifest; the manifest is then derived from the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from golf.data.shards import BOS_ID, SHARD_RE, check_vocab, list_shards, read_header, read_shard
from golf.errors import GolfError
from golf.io import sha256_file
from golf.metric import ByteTable, build_byte_table, load_tokenizer, stream_bytes


def _find_tokenizer(directory: Path, vocab_hint: int | None) -> Path:
    candidates = []
    for where in (directory, directory.parent / "tokenizers", directory.parent.parent / "tokenizers"):
        if where.is_dir():
            candidates.extend(sorted(where.glob("*.model")))
    if vocab_hint is not None:
        # parameter-golf names its tokenizers fineweb_<vocab>_bpe.model
        matching = [c for c in candidates if f"_{vocab_hint}_" in c.name]
        candidates = matching or candidates
    if not candidates:
        raise GolfError(f"dataset {directory}: missing tokenizer (no .model file here or in ../tokenizers)")
    return candidates[0]


@dataclass
class Dataset:
    """An opened dataset directory. Token arrays are memory-mapped; nothing is loaded until asked."""

    directory: Path
    name: str
    tokenizer_path: Path
    train_shards: list[Path]
    val_shards: list[Path]
    manifest: dict = field(default_factory=dict)

    @classmethod
    def open(cls, directory: str | Path) -> "Dataset":
        directory = Path(directory)
        if not directory.is_dir():
            raise GolfError(f"dataset {directory}: not a directory")
        manifest_path = directory / "manifest.json"
        manifest: dict = {}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text())
            except json.JSONDecodeError as e:
                raise GolfError(f"dataset {manifest_path}: invalid JSON ({e.msg})") from e
            for key in ("name", "vocab_size", "tokenizer", "train", "val"):
                if key not in manifest:
                    raise GolfError(f"dataset {manifest_path}: missing key {key!r}")
        names = {m["name"] for p in directory.iterdir() if (m := SHARD_RE.match(p.name))}
        name = manifest.get("name") or (sorted(names)[0] if names else None)
        if name is None:
            raise GolfError(f"dataset {directory}: no shards named <name>_{{train,val}}_NNNNNN.bin")
        if manifest:
            tok = directory / manifest["tokenizer"]["file"]
            if not tok.exists():
                raise GolfError(f"dataset {directory}: missing tokenizer {tok.name} named in manifest.json")
        else:
            tok = _find_tokenizer(directory, _vocab_from_dirname(directory))
        ds = cls(directory, name, tok, list_shards(directory, "train", name), list_shards(directory, "val", name), manifest)
        if not ds.val_shards:
            raise GolfError(f"dataset {directory}: no validation shards ({name}_val_*.bin)")
        for shard in ds.train_shards + ds.val_shards:
            read_header(shard)  # size and magic of every shard, cheap
        if manifest and manifest["tokenizer"].get("sha256") and manifest["tokenizer"]["sha256"] != ds.tokenizer_sha256:
            raise GolfError(f"dataset {directory}: tokenizer {tok.name} does not match the manifest's sha256")
        return ds

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.tokenizer_path)

    @cached_property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_piece_size())

    @cached_property
    def tokenizer_sha256(self) -> str:
        return sha256_file(self.tokenizer_path)

    @cached_property
    def byte_table(self) -> ByteTable:
        return build_byte_table(self.tokenizer)

    @cached_property
    def val_tokens(self) -> np.ndarray:
        """The whole validation stream (BOS-separated documents), checked against the vocab."""
        parts = [read_shard(p) for p in self.val_shards]
        tokens = parts[0] if len(parts) == 1 else np.concatenate(parts)
        check_vocab(self.val_shards[0] if len(parts) == 1 else self.directory, tokens, self.vocab_size)
        return tokens

    @cached_property
    def val_doc_sources(self) -> list[str] | None:
        """Each validation document's source corpus, in stream order, or None when the dataset cannot say.

        From the manifest's `val.doc_sources` (golf data build writes it for JSONL input with a `source`
        field); for an offline default corpus built before that field existed, from the first `val.docs`
        records of the corpus file it was built from (`<data root>/corpora/default/documents.jsonl`, the
        same order the build used). A list whose length is not the number of validation documents is refused.
        """
        sources = (self.manifest.get("val") or {}).get("doc_sources")
        corpus = self.directory.parent.parent / "corpora" / "default" / "documents.jsonl"
        if sources is None and self.name == "default" and corpus.is_file():
            want = int((self.manifest.get("val") or {}).get("docs", 0))
            sources = []
            with open(corpus, encoding="utf-8") as f:
                for line in f:
                    if len(sources) == want:
                        break
                    sources.append(json.loads(line).get("source"))
        if sources is None:
            return None
        docs = int(np.count_nonzero(self.val_tokens == BOS_ID))
        if len(sources) != docs:
            raise GolfError(f"dataset {self.directory}: {len(sources)} validation document sources for {docs} "
                            "validation documents")
        return [str(s) if s is not None else "" for s in sources]

    @cached_property
    def val_bytes(self) -> int:
        return stream_bytes(self.byte_table, self.val_tokens)

    def train_tokens(self, shard_index: int) -> np.ndarray:
        """One training shard, its ids checked against the vocabulary the first time it is read (an id
        beyond the embedding table would otherwise fail deep inside the model's forward pass)."""
        tokens = read_shard(self.train_shards[shard_index])
        checked = self.__dict__.setdefault("_vocab_checked", set())
        if shard_index not in checked:
            check_vocab(self.train_shards[shard_index], tokens, self.vocab_size)  # one max(): ~1 ms per 1M ids
            checked.add(shard_index)
        return tokens

    def describe(self, check_all: bool = True) -> dict:
        """The `golf data inspect` report; refuses (GolfError) a dataset with out-of-range token ids."""
        shards = []
        totals = {"train": [0, 0], "val": [0, 0]}
        for split, paths in (("train", self.train_shards), ("val", self.val_shards)):
            for p in paths:
                tokens = read_shard(p)
                if check_all:
                    check_vocab(p, tokens, self.vocab_size)
                docs = int(np.count_nonzero(tokens == BOS_ID))
                shards.append({"file": p.name, "split": split, "tokens": int(tokens.size), "docs": docs})
                totals[split][0] += int(tokens.size)
                totals[split][1] += docs
        report = {
            "path": str(self.directory),
            "name": self.name,
            "vocab_size": self.vocab_size,
            "tokenizer": {"file": str(self.tokenizer_path), "sha256": self.tokenizer_sha256},
            "train": {"shards": len(self.train_shards), "tokens": totals["train"][0], "docs": totals["train"][1]},
            "val": {"shards": len(self.val_shards), "tokens": totals["val"][0], "docs": totals["val"][1],
                    "bytes": self.val_bytes},
            "shards": shards,
            "max_token_id_ok": True,
        }
        if self.manifest:
            for split in ("train", "val"):
                for key in ("tokens", "shards"):
                    if self.manifest[split].get(key) != report[split][key]:
                        raise GolfError(f"dataset {self.directory}: manifest {split}.{key}={self.manifest[split].get(key)} "
                                        f"but the shards hold {report[split][key]}")
            if self.manifest["val"].get("bytes") not in (None, report["val"]["bytes"]):
                raise GolfError(f"dataset {self.directory}: manifest val.bytes does not match the metric's byte count")
            report["sources"] = self.manifest.get("sources", [])
        return report


def _vocab_from_dirname(directory: Path) -> int | None:
    # fineweb10B_sp1024 -> 1024
    tail = directory.name.rsplit("_sp", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else None


def inspect_path(path: str | Path) -> dict:
    """`golf data inspect`: a dataset directory or a single shard."""
    path = Path(path)
    if path.is_file():
        tokens = read_shard(path)
        return {"path": str(path), "tokens": int(tokens.size), "docs": int(np.count_nonzero(tokens == BOS_ID)),
                "max_token_id": int(tokens.max()) if tokens.size else None}
    return Dataset.open(path).describe()
