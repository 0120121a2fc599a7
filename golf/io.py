"""Atomic file writes: nothing half-written is ever visible under its final name.

Every file golf writes for others to read (shards, manifests, results, artifacts) goes through these
helpers: the bytes land in a temporary file in the same directory, are flushed to disk, and are then
renamed over the final path. A crash leaves either the old file or no file, never a partial one.
`file_lock` is the one lock: concurrent study runs take it per cell and per base model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _plain_mode(base: int) -> int:
    """The mode a plain open()/mkdir() would give (`base` minus the umask): mkstemp/mkdtemp use 0600/0700."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _plain_mode(0o666))
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when complete.

    An existing directory at `path` is replaced only after the new one is fully written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _plain_mode(0o777))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock (flock) on `path`, created if missing; yields whether it was acquired.

    The kernel drops the lock when the holder exits or dies, so a killed process never leaves a stale lock
    behind (unlike a lock file whose existence is the lock). With `blocking=False` it yields False at once
    when another process (or another open of the same file) holds it.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (a 200 MB shard never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MetricsLog:
    """A run's metrics.jsonl, the one writer and its one schema: a JSON object a line,

        {"step": int, "phase": "train" | "val" | "ttt" | "ttt_probe", ...what that phase measured}

    `step` counts within its phase (training steps, TTT optimizer steps). Training lines carry train_loss,
    lr_scale, step_ms, tokens_per_s, elapsed_s, qat (or diverged, last_finite_loss); learning-curve lines
    (train.val_every) tokens, val_loss, val_bpb at their training step; TTT lines carry the
    strategy and ttt_loss / ttt_lr / ttt_epoch or ttt_chunk, or a `log` message; probe lines the per-epoch
    scores. Each line is appended and the file closed at once, so a crash loses nothing already measured and
    a later stage (TTT after training, or after a cached base's lines were copied in) appends after it.
    `path=None` writes nothing (ranks other than the main one).
    """

    __slots__ = ("__path", "phase", "fixed")  # the path stays inside: TTT strategies get a writer, not a path

    def __init__(self, path: str | os.PathLike | None, phase: str, **fixed: Any):
        self.__path, self.phase, self.fixed = path, phase, fixed

    def write(self, step: int, phase: str | None = None, **row: Any) -> None:
        if self.__path is None:
            return
        with open(self.__path, "a") as f:
            f.write(json.dumps({"step": step, "phase": phase or self.phase, **self.fixed, **row}) + "\n")
