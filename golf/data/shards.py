"""The parameter-golf shard format, read zero-copy and written atomically.

A shard is a 1,024-byte header of 256 little-endian int32 followed by the tokens as little-endian uint16:

    header[0] = 20240520   magic
    header[1] = 1          version
    header[2] = num_tokens
    header[3:] = 0
    then num_tokens * uint16

Every document in the token stream starts with BOS (`BOS_ID`, the one place golf states it: the
challenge's SentencePiece tokenizers and golf's `data build` both put BOS at id 1); there is no EOS.

The file size must be exactly 1024 + 2 * num_tokens; anything else is a truncated or foreign file. Reads are
memory-mapped (`np.memmap`), so opening a 100M-token FineWeb shard costs nothing until tokens are touched.
Shard names follow parameter-golf: `<name>_train_000000.bin`, `<name>_val_000000.bin`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from golf.errors import GolfError
from golf.io import atomic_path

BOS_ID = 1  # the token that opens every document (SentencePiece bos_id; pad 0, eos 2, unk 3)
MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
SHARD_RE = re.compile(r"^(?P<name>.+)_(?P<split>train|val)_(?P<index>\d{6})\.bin$")


def shard_name(name: str, split: str, index: int) -> str:
    return f"{name}_{split}_{index:06d}.bin"


def read_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise GolfError(f"shard {path}: cannot read ({e.strerror})") from e
    if len(raw) < HEADER_BYTES:
        raise GolfError(f"shard {path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise GolfError(f"shard {path}: wrong magic {int(header[0])} (expected {MAGIC}); not a parameter-golf shard")
    if header[1] != VERSION:
        raise GolfError(f"shard {path}: unsupported version {int(header[1])} (expected {VERSION})")
    num_tokens = int(header[2])
    expected = HEADER_BYTES + 2 * num_tokens
    if num_tokens < 0 or size != expected:
        raise GolfError(f"shard {path}: size {size} bytes does not match header ({num_tokens} tokens -> {expected} bytes)")
    return num_tokens


def read_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard's tokens as a read-only uint16 array (zero-copy)."""
    num_tokens = read_header(path)
    if num_tokens == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write tokens (any integer array with values in [0, 65535]) as one shard, atomically."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 0xFFFF):
        raise GolfError(f"shard {path}: token ids must fit in uint16, got range [{tokens.min()}, {tokens.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, tokens.size
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(tokens.astype("<u2", copy=False).tobytes())


def list_shards(directory: str | Path, split: str, name: str | None = None) -> list[Path]:
    """The shards of one split in a directory, sorted by index. `name` restricts the prefix."""
    out = []
    for p in Path(directory).iterdir():
        m = SHARD_RE.match(p.name)
        if m and m["split"] == split and (name is None or m["name"] == name):
            out.append(p)
    return sorted(out, key=lambda p: p.name)


def check_vocab(path: str | Path, tokens: np.ndarray, vocab_size: int) -> None:
    """Refuse a shard holding token ids at or above the vocabulary size."""
    if tokens.size:
        top = int(tokens.max())
        if top >= vocab_size:
            raise GolfError(f"shard {path}: token id {top} >= vocab size {vocab_size}")
