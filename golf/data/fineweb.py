"""The real challenge data: parameter-golf's tokenized FineWeb, from the Hugging Face hub.

Parameter Golf publishes FineWeb already tokenized, in its shard format, in a hub *dataset* repo. The layout
(facts from openai/parameter-golf's `data/cached_challenge_fineweb.py`; all paths are inside the repo):

    datasets/manifest.json                                   what the export holds (see below)
    datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin     the fixed validation set (first 50k docs)
    datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin   training shards, 10^8 tokens each, in order
    datasets/tokenizers/fineweb_1024_bpe.model               the SentencePiece model the shards were cut with

The manifest lists `datasets` (each with `name`, `tokenizer_name`, optional `path`, and `stats` holding
`files_train` / `files_val`) and `tokenizers` (each with `name` and `model_path`, relative to `datasets/`).
sp1024 lives in `willdepueoai/parameter-golf`; sp8192 in the community repo `kevclark/parameter-golf`, same
layout. Training on the first N shards means training on a prefix of the same frozen shuffled export, so
runs with different N see their data in the same order.

What `fetch_fineweb` does: downloads the hub manifest, every validation shard, the first `train_shards`
training shards and the tokenizer into `<root>/downloads/hf/<repo_id>/`, checks each shard's header, then
assembles a golf dataset directory `<root>/datasets/fineweb10B_<variant>/` (contract: shards under their
original names, the tokenizer, and a golf `manifest.json` computed from the shards: token counts from the
headers, document counts as BOS tokens, `val.bytes` from the metric's byte tables). Files are hard-linked from
the download area, so the data is stored once. A complete directory holding at least the requested number of
training shards is returned at once, with no hub call.

Downloads go through a `hub` object with one method, `download(repo_id, filename, local_dir) -> Path`:
`HfHub` calls `huggingface_hub.hf_hub_download`; `LocalHub(directory)` reads the same layout from a local
mirror (`<directory>/<repo_id>/<filename>`, or `<directory>/<filename>` for a single-repo mirror such as
`huggingface-cli download ... --local-dir`). Setting `GOLF_HF_LOCAL=<directory>` selects the mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np

from golf.data.shards import BOS_ID, read_header, read_shard
from golf.data.store import data_root, load_complete_manifest, writable_root
from golf.errors import GolfError
from golf.io import atomic_dir, atomic_path, sha256_file, write_json
from golf.progress import Progress

REMOTE_ROOT = "datasets"  # the export's folder inside the hub repo; manifest paths are relative to it
SHARD_PREFIX = "fineweb"  # fineweb_train_000000.bin: kept as published, so it is also the dataset's name
FINEWEB_LICENSE = "ODC-By-1.0 (FineWeb)"
SCAN_TOKENS = 1 << 24  # tokens per chunk when scanning shards: bounds memory (~0.4 GB of int64 temporaries)


@dataclass(frozen=True)
class Variant:
    repo_id: str  # hub dataset repo that publishes it
    dataset: str  # dataset name in the hub manifest, also the local directory name


VARIANTS: dict[str, Variant] = {
    "sp1024": Variant("willdepueoai/parameter-golf", "fineweb10B_sp1024"),  # the official baseline data
    "sp8192": Variant("kevclark/parameter-golf", "fineweb10B_sp8192"),  # community export used by records
}


# ----------------------------------------------------------------------------------------------------------
# Hubs
# ----------------------------------------------------------------------------------------------------------


class Hub(Protocol):
    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        """Place `filename` of dataset repo `repo_id` at `local_dir/filename` and return that path."""
        ...


class HfHub:
    """The Hugging Face hub, through `huggingface_hub.hf_hub_download` (repo_type="dataset")."""

    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        from huggingface_hub import hf_hub_download

        try:
            return Path(
                hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", local_dir=local_dir)
            )
        # The hub raises many types (HTTP, auth, offline, not found); to a user they all mean the same.
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise GolfError(
                f"hub {repo_id}: cannot download {filename} ({type(e).__name__}: {reason})"
            ) from e


class LocalHub:
    """A directory laid out like the hub: `<directory>/<repo_id>/<filename>` or `<directory>/<filename>`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser()
        if not self.directory.is_dir():
            raise GolfError(f"local hub {self.directory}: not a directory (check GOLF_HF_LOCAL)")

    def download(self, repo_id: str, filename: str, local_dir: Path) -> Path:
        for candidate in (self.directory / repo_id / filename, self.directory / filename):
            if candidate.is_file():
                dest = Path(local_dir) / filename
                link_or_copy(candidate, dest)
                return dest
        raise GolfError(f"local hub {self.directory}: {filename} of {repo_id} not found")


def default_hub() -> Hub:
    """`LocalHub($GOLF_HF_LOCAL)` when that is set, else the real hub."""
    mirror = os.environ.get("GOLF_HF_LOCAL")
    return LocalHub(mirror) if mirror else HfHub()


def link_or_copy(src: Path, dest: Path) -> None:
    """Put `src`'s bytes at `dest` atomically; a hard link when the filesystem allows (no second copy)."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links not supported
            shutil.copyfile(src, tmp)


# ----------------------------------------------------------------------------------------------------------
# The hub manifest
# ----------------------------------------------------------------------------------------------------------


def _repo_path(relative: str, what: str) -> str:
    """`datasets/<relative>`, refusing paths that would escape the export (absolute or `..`)."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise GolfError(f"hub manifest: {what} path {relative!r} is not a relative path inside the export")
    return str(PurePosixPath(REMOTE_ROOT) / path)


@dataclass(frozen=True)
class HubPlan:
    """What to download for one dataset, read from the hub manifest."""

    dataset_path: str  # e.g. datasets/datasets/fineweb10B_sp1024
    files_train: int
    files_val: int
    tokenizer_path: str  # e.g. datasets/tokenizers/fineweb_1024_bpe.model
    tokenizer_vocab_size: int | None


def read_hub_manifest(manifest: dict, dataset: str) -> HubPlan:
    where = f"hub manifest ({REMOTE_ROOT}/manifest.json)"
    datasets = manifest.get("datasets") if isinstance(manifest, dict) else None
    if not isinstance(datasets, list):
        raise GolfError(f"{where}: no 'datasets' list")
    entry = next((d for d in datasets if isinstance(d, dict) and d.get("name") == dataset), None)
    if entry is None:
        names = ", ".join(sorted(str(d.get("name")) for d in datasets if isinstance(d, dict))) or "none"
        raise GolfError(f"{where}: dataset {dataset} not published here (published: {names})")
    try:
        stats = entry["stats"]
        files_train, files_val = int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError) as e:
        raise GolfError(f"{where}: dataset {dataset} lacks stats.files_train / stats.files_val") from e
    tokenizer_name = entry.get("tokenizer_name")
    tokenizers = manifest.get("tokenizers") or []
    tok = next((t for t in tokenizers if isinstance(t, dict) and t.get("name") == tokenizer_name), None)
    if tok is None or not str(tok.get("model_path", "")).endswith(".model"):
        raise GolfError(f"{where}: tokenizer {tokenizer_name!r} of {dataset} has no SentencePiece model_path")
    vocab = tok.get("vocab_size", entry.get("vocab_size"))
    return HubPlan(
        dataset_path=_repo_path(str(entry.get("path") or f"datasets/{dataset}"), "dataset"),
        files_train=files_train,
        files_val=files_val,
        tokenizer_path=_repo_path(str(tok["model_path"]), "tokenizer"),
        tokenizer_vocab_size=int(vocab) if vocab is not None else None,
    )


# ----------------------------------------------------------------------------------------------------------
# Shard statistics for the golf manifest
# ----------------------------------------------------------------------------------------------------------


def scan_shards(paths: list[Path], vocab_size: int) -> tuple[int, int]:
    """(tokens, documents) over shards, refusing token ids outside the vocabulary. Documents = BOS tokens."""
    tokens_total = docs_total = 0
    for path in paths:
        tokens = read_shard(path)  # (N,) uint16, memory-mapped
        for start in range(0, tokens.size, SCAN_TOKENS):
            chunk = np.asarray(tokens[start : start + SCAN_TOKENS])
            top = int(chunk.max())
            if top >= vocab_size:
                raise GolfError(f"shard {path}: token id {top} >= tokenizer vocab size {vocab_size}")
            docs_total += int(np.count_nonzero(chunk == BOS_ID))
        tokens_total += int(tokens.size)
    return tokens_total, docs_total


def val_stream_bytes(paths: list[Path], table) -> int:
    """The metric's byte count of the validation stream, shard after shard, in bounded memory.

    `stream_bytes` scores every token after the first against its predecessor. Cutting the stream into
    chunks must not change that: each later chunk is scored with the last token of the previous chunk
    prepended, so its first token gets its true predecessor.
    """
    from golf.metric import stream_bytes

    total, prev = 0, None
    for path in paths:
        tokens = read_shard(path)
        for start in range(0, tokens.size, SCAN_TOKENS):
            chunk = np.asarray(tokens[start : start + SCAN_TOKENS])
            total += stream_bytes(table, chunk if prev is None else np.concatenate(([prev], chunk)))
            prev = chunk[-1]
    return total


# ----------------------------------------------------------------------------------------------------------
# Fetch
# ----------------------------------------------------------------------------------------------------------


def fetch_fineweb(
    root: str | os.PathLike | None = None,
    variant: str = "sp1024",
    train_shards: int = 1,
    repo_id: str | None = None,
    hub: Hub | None = None,
) -> Path:
    """The golf dataset directory for a FineWeb variant with at least `train_shards` training shards."""
    from golf.metric import build_byte_table, load_tokenizer

    if variant not in VARIANTS:
        raise GolfError(f"fineweb variant {variant!r} unknown (choose from {', '.join(VARIANTS)})")
    if train_shards < 0:
        raise GolfError(f"--train-shards must be >= 0, got {train_shards}")
    spec = VARIANTS[variant]
    repo_id = repo_id or spec.repo_id
    root = data_root(root)
    out = root / "datasets" / spec.dataset
    source_version = f"hf:{repo_id}"

    cached = load_complete_manifest(out)
    if (
        cached is not None
        and cached["train"]["shards"] >= train_shards
        and [s.get("version") for s in cached.get("sources", [])] == [source_version]
    ):
        return out  # complete and big enough: no hub call at all

    hub = hub or default_hub()
    writable_root(root)
    staging = root / "downloads" / "hf" / repo_id
    # Always ask the hub for its manifest when there is work to do: it says how many shards exist.
    manifest_path = hub.download(repo_id, f"{REMOTE_ROOT}/manifest.json", staging)
    try:
        hub_manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GolfError(f"hub {repo_id}: {REMOTE_ROOT}/manifest.json is not JSON ({e})") from e
    plan = read_hub_manifest(hub_manifest, spec.dataset)
    if train_shards > plan.files_train:
        raise GolfError(
            f"--train-shards {train_shards}: {repo_id} publishes only {plan.files_train} for {variant}"
        )
    if plan.files_val < 1:
        raise GolfError(f"hub {repo_id}: {spec.dataset} has no validation shards")

    def fetch(filename: str, check) -> Path:
        # A file already in the download area that passes its check is reused without a hub call (both hubs
        # write atomically). A file that fails its check is deleted, so the next call downloads it again.
        local = staging / filename
        if local.is_file():
            try:
                check(local)
                return local
            except GolfError:
                local.unlink()
        path = Path(hub.download(repo_id, filename, staging))
        try:
            check(path)
        except GolfError:
            path.unlink(missing_ok=True)
            raise
        return path

    # Shards: magic, version and exact size checked before anything is assembled.
    with Progress(f"fetch {repo_id}", plan.files_val + train_shards + 1, "file") as bar:
        val_paths, train_paths = [], []
        for split, count, paths in (("val", plan.files_val, val_paths), ("train", train_shards, train_paths)):
            for i in range(count):
                paths.append(fetch(f"{plan.dataset_path}/{SHARD_PREFIX}_{split}_{i:06d}.bin", read_header))
                bar.update(1, last=paths[-1].name)
        tokenizer_path = fetch(plan.tokenizer_path, load_tokenizer)
        bar.update(1, last=tokenizer_path.name)
    sp = load_tokenizer(tokenizer_path)
    vocab_size = int(sp.get_piece_size())
    if plan.tokenizer_vocab_size is not None and plan.tokenizer_vocab_size != vocab_size:
        raise GolfError(
            f"tokenizer {tokenizer_path.name}: {vocab_size} pieces, hub manifest says {plan.tokenizer_vocab_size}"
        )
    val_tokens, val_docs = scan_shards(val_paths, vocab_size)
    train_tokens, train_docs = scan_shards(train_paths, vocab_size)
    manifest = {
        "name": SHARD_PREFIX,
        "vocab_size": vocab_size,
        "tokenizer": {
            "file": tokenizer_path.name,
            "sha256": sha256_file(tokenizer_path),
            "settings": {"origin": f"{source_version}/{plan.tokenizer_path}", "vocab_size": vocab_size},
        },
        "train": {"shards": len(train_paths), "tokens": train_tokens, "docs": train_docs},
        "val": {
            "shards": len(val_paths),
            "tokens": val_tokens,
            "docs": val_docs,
            "bytes": val_stream_bytes(val_paths, build_byte_table(sp)),
        },
        "sources": [
            {
                "name": spec.dataset,
                "version": source_version,
                "sha256": hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest(),  # the hub manifest
                "license": FINEWEB_LICENSE,
                "url": f"https://huggingface.co/datasets/{repo_id}",
            }
        ],
    }
    with atomic_dir(out) as tmp:
        for path in val_paths + train_paths + [tokenizer_path]:
            link_or_copy(path, tmp / path.name)
        write_json(tmp / "manifest.json", manifest)
    return out
