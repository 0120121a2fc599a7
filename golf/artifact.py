"""The artifact: a quantized model on disk, its exact byte count, and the code bytes that ship with it.

The challenge scores code bytes + compressed model bytes <= 16,000,000. Both numbers come from here, both
are measured, never estimated from parameter counts.

File format (version 1), all integers little-endian, no pickle anywhere:

    offset  size  field
    0       7     magic b"GOLFART"
    7       1     format version (1)
    8       1     compressor id (0 zlib, 1 zstd, 2 lzma, 3 brotli)
    9       8     payload length in bytes (uint64), before compression
    17      32    sha256 of the payload (the exact bytes handed to the compressor)
    49      ...   compressed payload, to the end of the file

The payload is a container: a uint32 header length, a compact JSON header, then raw buffers. The header
lists every tensor (name, kind, shape, original dtype, bits, method, alias) with the offset, length and
dtype of its data buffer and of its fp16 scale buffer, plus the scheme label, the QuantConfig and notes.
Buffers are grouped by type (all int8 symbols, then integer buffers, then fp16 scales, fp16 tensors,
fp32 tensors): similar bytes next to each other compress better. With `shuffle`, every buffer with
elements wider than one byte is byte-shuffled (see golf.compress) in place; the header says so.

Integrity: a file shorter than its header, a stream that does not decompress, a payload of the wrong
length or with the wrong sha256 all raise GolfError naming the file ("truncated" / "checksum mismatch").

Code bytes: the size of the exported train_gpt.py (`golf.export.script_bytes`); see its docstring.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from golf.compress import MAX_OUTPUT_BYTES, TooLarge, byte_shuffle, byte_unshuffle, compress, decompress
from golf.errors import GolfError
from golf.io import write_bytes
from golf.quant import QuantConfig
from golf.quant.state import DTYPES, QuantizedState, TensorRecord

FILE_MAGIC = b"GOLFART"
FORMAT_VERSION = 1
COMPRESSOR_IDS = {"zlib": 0, "zstd": 1, "lzma": 2, "brotli": 3}
_COMPRESSOR_NAMES = {v: k for k, v in COMPRESSOR_IDS.items()}
# magic, version, compressor id, payload length, sha256
_FILE_HEADER = struct.Struct("<7sBBQ32s")
FILE_HEADER_BYTES = _FILE_HEADER.size  # 49
LIMIT_BYTES = 16_000_000  # the challenge's cap on code + model bytes (decimal megabytes)

# numpy spellings of the stored dtypes, explicitly little-endian
_NUMPY_DTYPES = {
    "float32": "<f4",
    "float16": "<f2",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
}
# buffer layout order: similar statistics next to each other
_GROUP_ORDER = {"int": 0, "raw": 1, "scales": 2, "fp16": 3, "fp32": 4}


# ---------------------------------------------------------------------------------------------------------
# Container (payload) encoding
# ---------------------------------------------------------------------------------------------------------


def _tensor_bytes(t: torch.Tensor) -> tuple[bytes, str]:
    """Little-endian bytes of a CPU tensor and its dtype name."""
    name = str(t.dtype).removeprefix("torch.")
    if name not in _NUMPY_DTYPES:
        raise GolfError(f"artifact: cannot store a {t.dtype} buffer (supported: {sorted(_NUMPY_DTYPES)})")
    arr = t.detach().cpu().contiguous().numpy()
    return arr.astype(_NUMPY_DTYPES[name], copy=False).tobytes(), name


def _encode_payload(qs: QuantizedState, shuffle: bool) -> bytes:
    """QuantizedState -> container bytes (header length, JSON header, grouped buffers)."""
    # collect buffers with their layout group, then assign offsets group by group
    pending: list[tuple[int, int, str, bytes, str]] = []  # (group, record index, field, bytes, dtype)
    for i, r in enumerate(qs.records):
        if r.kind == "alias":
            continue
        if r.data is None:
            raise GolfError(f"artifact: tensor {r.name} ({r.kind}) has no data")
        data, dt = _tensor_bytes(r.data)
        group = "int" if r.is_int else ("raw" if r.kind == "raw" else r.kind)
        pending.append((_GROUP_ORDER[group], i, "data", data, dt))
        if r.is_int:
            if r.scales is None:
                raise GolfError(f"artifact: tensor {r.name} ({r.kind}) has no scales")
            sc, sdt = _tensor_bytes(r.scales)
            pending.append((_GROUP_ORDER["scales"], i, "scales", sc, sdt))
    pending.sort(key=lambda p: (p[0], p[1]))

    entries: list[dict[str, Any]] = [
        {
            "name": r.name,
            "kind": r.kind,
            "shape": list(r.shape),
            "dtype": r.dtype,
            "bits": r.bits,
            "method": r.method,
            "alias_of": r.alias_of,
        }
        for r in qs.records
    ]
    chunks: list[bytes] = []
    offset = 0
    for _, i, field_name, data, dt in pending:
        itemsize = np.dtype(_NUMPY_DTYPES[dt]).itemsize
        if shuffle and itemsize > 1:
            data = byte_shuffle(data, itemsize)
        entries[i][field_name] = [offset, len(data), dt]
        chunks.append(data)
        offset += len(data)
    header = {
        "format": "golf-quant",
        "label": qs.label,
        "shuffle": bool(shuffle),
        "config": qs.config,
        "notes": qs.notes,
        "tensors": entries,
    }
    header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return struct.pack("<I", len(header_bytes)) + header_bytes + b"".join(chunks)


def _split_payload(payload: bytes, where: str) -> tuple[dict[str, Any], memoryview]:
    """Container bytes -> (header dict, view of the buffer region)."""
    if len(payload) < 4:
        raise GolfError(f"{where}: payload too short for its header")
    (header_len,) = struct.unpack_from("<I", payload, 0)
    if 4 + header_len > len(payload):
        raise GolfError(f"{where}: header length {header_len} runs past the payload ({len(payload)} bytes)")
    try:
        header = json.loads(payload[4 : 4 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GolfError(f"{where}: header is not valid JSON ({exc})") from None
    if header.get("format") != "golf-quant" or not isinstance(header.get("tensors"), list):
        raise GolfError(f"{where}: header is not a golf-quant container")
    return header, memoryview(payload)[4 + header_len :]


def _buffer(buffers: memoryview, spec: list, shuffled: bool, where: str) -> torch.Tensor:
    """One stored buffer [offset, nbytes, dtype] -> 1-D CPU tensor (unshuffled)."""
    offset, nbytes, dt = spec
    if dt not in _NUMPY_DTYPES:
        raise GolfError(f"{where}: buffer dtype {dt!r} is not supported")
    if offset < 0 or nbytes < 0 or offset + nbytes > len(buffers):
        raise GolfError(
            f"{where}: buffer [{offset}, {offset + nbytes}) runs past the data ({len(buffers)} bytes)"
        )
    data = bytes(buffers[offset : offset + nbytes])
    itemsize = np.dtype(_NUMPY_DTYPES[dt]).itemsize
    if nbytes % itemsize:
        raise GolfError(f"{where}: buffer of {nbytes} bytes is not a whole number of {dt} elements")
    if shuffled and itemsize > 1:
        data = byte_unshuffle(data, itemsize)
    arr = np.frombuffer(data, dtype=_NUMPY_DTYPES[dt]).copy()  # copy: writable, owned by torch
    return torch.from_numpy(arr)


# What every tensor entry of the container header must hold, with the type of each field.
_ENTRY_FIELDS = {"name": str, "kind": str, "shape": list, "dtype": str}


def _check_entry(e: Any, i: int, where: str) -> str:
    """The entry's name, after checking the fields decoding relies on (a header is untrusted input)."""
    if not isinstance(e, dict):
        raise GolfError(f"{where}: header tensor #{i} is not an object")
    for key, kind in _ENTRY_FIELDS.items():
        if not isinstance(e.get(key), kind):
            raise GolfError(f"{where}: header tensor #{i} ({e.get('name', '?')}) lacks a {kind.__name__} {key!r}")
    shape = e["shape"]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise GolfError(f"{where}: tensor {e['name']} has shape {shape}; dimensions must be integers >= 0")
    for key in ("data", "scales"):
        spec = e.get(key)
        if spec is not None and not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[2], str)
                                     and all(isinstance(n, int) and not isinstance(n, bool) for n in spec[:2])):
            raise GolfError(f"{where}: tensor {e['name']} {key} must be [offset, length, dtype], got {spec!r}")
    return e["name"]


def _decode_payload(payload: bytes, where: str) -> QuantizedState:
    header, buffers = _split_payload(payload, where)
    shuffled = bool(header.get("shuffle", False))
    records: list[TensorRecord] = []
    for i, e in enumerate(header["tensors"]):
        name = _check_entry(e, i, where)
        shape = tuple(e["shape"])
        numel = math.prod(shape)
        data = scales = None
        if "data" in e:
            data = _buffer(buffers, e["data"], shuffled, f"{where}: tensor {name}")
            if data.numel() != numel:
                raise GolfError(
                    f"{where}: tensor {name} has {data.numel()} elements, shape {shape} needs {numel}"
                )
            if e["kind"].startswith("int") and not shape:
                raise GolfError(f"{where}: tensor {name} is quantized ({e['kind']}) but has no shape")
            data = data.reshape(shape[0], -1) if e["kind"].startswith("int") else data.reshape(shape)
        if "scales" in e:
            scales = _buffer(buffers, e["scales"], shuffled, f"{where}: tensor {name} scales")
        if e["dtype"] not in DTYPES:
            raise GolfError(f"{where}: tensor {name} has unknown dtype {e['dtype']!r}")
        records.append(
            TensorRecord(
                name,
                e["kind"],
                shape,
                e["dtype"],
                bits=e.get("bits"),
                method=e.get("method"),
                data=data,
                scales=scales,
                alias_of=e.get("alias_of"),
            )
        )
    return QuantizedState(
        records=records,
        label=header.get("label", "?"),
        config=header.get("config", {}),
        notes=list(header.get("notes", [])),
    )


# ---------------------------------------------------------------------------------------------------------
# File level: save / load with integrity checks
# ---------------------------------------------------------------------------------------------------------


def save_artifact(path: str | os.PathLike, qs: QuantizedState, cfg: QuantConfig) -> int:
    """Write `qs` compressed with `cfg.compressor` (and `cfg.shuffle`) atomically; return the file size."""
    payload = _encode_payload(qs, cfg.shuffle)
    compressed = compress(cfg.compressor, payload)
    head = _FILE_HEADER.pack(
        FILE_MAGIC,
        FORMAT_VERSION,
        COMPRESSOR_IDS[cfg.compressor],
        len(payload),
        hashlib.sha256(payload).digest(),
    )
    write_bytes(path, head + compressed)
    size = os.path.getsize(path)
    assert size == len(head) + len(compressed)
    return size


def _read_verified(path: str | os.PathLike) -> tuple[str, bytes, bytes]:
    """(compressor name, payload, compressed stream) of an artifact, after every integrity check."""
    where = f"artifact {path}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise GolfError(f"{where}: cannot read ({exc.strerror})") from None
    if len(raw) < FILE_HEADER_BYTES:
        raise GolfError(f"{where}: truncated ({len(raw)} bytes; the header alone is {FILE_HEADER_BYTES})")
    magic, version, comp_id, payload_len, digest = _FILE_HEADER.unpack_from(raw, 0)
    if magic != FILE_MAGIC:
        raise GolfError(f"{where}: not a golf artifact (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise GolfError(
            f"{where}: format version {version} is not supported (this golf reads {FORMAT_VERSION})"
        )
    if comp_id not in _COMPRESSOR_NAMES:
        raise GolfError(f"{where}: unknown compressor id {comp_id} (header corrupt?)")
    compressor = _COMPRESSOR_NAMES[comp_id]
    if payload_len > MAX_OUTPUT_BYTES:
        raise GolfError(f"{where}: header claims a payload of {payload_len} bytes, over golf's "
                        f"{MAX_OUTPUT_BYTES}-byte cap (header corrupt?)")
    stream = raw[FILE_HEADER_BYTES:]
    # Bounded by the header's length while streaming: a stream that would produce more stops at once.
    try:
        payload = decompress(compressor, stream, what=where, max_bytes=payload_len)
    except TooLarge as exc:
        raise GolfError(f"{where}: truncated or altered ({exc.reason}, but the header says {payload_len} "
                        f"payload bytes; not decompressed further)") from None
    if len(payload) != payload_len:
        raise GolfError(
            f"{where}: truncated or altered (payload {len(payload)} bytes, header says {payload_len})"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise GolfError(
            f"{where}: checksum mismatch (sha256 of the payload differs; file altered or corrupt)"
        )
    return compressor, payload, stream


def load_artifact(path: str | os.PathLike) -> QuantizedState:
    """Read an artifact back into a QuantizedState (no pickle; integrity checked first)."""
    _, payload, _ = _read_verified(path)
    return _decode_payload(payload, f"artifact {path}")


# ---------------------------------------------------------------------------------------------------------
# Byte accounting
# ---------------------------------------------------------------------------------------------------------


def byte_report(path: str | os.PathLike, code_bytes: int, limit: int = LIMIT_BYTES) -> dict[str, Any]:
    """The `artifact` block of result.json: model bytes are the file's size on disk, nothing else."""
    compressor, payload, _ = _read_verified(path)
    header, _ = _split_payload(payload, f"artifact {path}")
    bytes_model = os.path.getsize(path)
    bytes_total = bytes_model + int(code_bytes)
    return {
        "bytes_model": bytes_model,
        "bytes_code": int(code_bytes),
        "bytes_total": bytes_total,
        "limit": int(limit),
        "fits": bytes_total <= limit,
        "quant": header.get("label", "?"),
        "compressor": compressor,
        "path": str(path),
    }


def _entropy_bits(symbols: np.ndarray) -> float:
    """Order-0 (empirical, i.i.d.) entropy in bits per symbol."""
    if symbols.size == 0:
        return 0.0
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / symbols.size
    return float(-(p * np.log2(p)).sum())


def _symbols(t: torch.Tensor) -> np.ndarray:
    """Stored elements as unsigned integer symbols (fp16 -> uint16 bit patterns, and so on)."""
    arr = t.detach().cpu().contiguous().numpy().reshape(-1)
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    return arr.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[arr.dtype.itemsize])


def record_entropy(r: TensorRecord) -> tuple[float, float]:
    """(order-0 bits per data symbol, order-0 bytes of data symbols + scale symbols) of one record."""
    if r.data is None:  # an alias stores nothing
        return 0.0, 0.0
    bits = _entropy_bits(_symbols(r.data))
    bound = bits * r.data.numel() / 8
    if r.scales is not None:
        bound += _entropy_bits(_symbols(r.scales)) * r.scales.numel() / 8
    return bits, bound


def entropy_bound_bytes(qs: QuantizedState) -> float:
    """Order-0 entropy bound of all stored symbols of `qs`, in bytes (see inspect_artifact)."""
    return sum(record_entropy(r)[1] for r in qs.records)


def payload_bytes(qs: QuantizedState, shuffle: bool = False) -> int:
    """Uncompressed container size of `qs` (what the compressor sees)."""
    return len(_encode_payload(qs, shuffle))


def inspect_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Byte breakdown of an artifact: per tensor, totals, and the file against its entropy bound.

    Per tensor: `bytes_raw` (stored data + scales), `bytes_compressed_alone` (that tensor's stored
    buffers, shuffled as in the file, compressed alone with the artifact's compressor: an attribution,
    since the real file shares context across tensors), `share` (its fraction of the sum of those),
    `entropy_bits` (order-0 bits per data symbol) and `entropy_bound_bytes` (order-0 bytes of its data
    symbols plus its scale symbols). The order-0 bound is what an ideal coder of independent symbols
    would need; a context-modelling compressor can beat it, a generic one usually does not reach it.
    """
    compressor, payload, stream = _read_verified(path)
    where = f"artifact {path}"
    header, buffers = _split_payload(payload, where)
    qs = _decode_payload(payload, where)
    shuffled = bool(header.get("shuffle", False))
    tensors = []
    for e, r in zip(header["tensors"], qs.records):
        stored = b"".join(
            bytes(buffers[e[f][0] : e[f][0] + e[f][1]]) for f in ("data", "scales") if f in e
        )  # exactly the bytes as laid out in the payload (shuffled if the file is)
        entropy, bound = record_entropy(r)
        tensors.append(
            {
                "name": r.name,
                "shape": list(r.shape),
                "kind": r.kind,
                "bits": r.bits,
                "method": r.method,
                "alias_of": r.alias_of,
                "bytes_raw": r.nbytes(),
                "bytes_compressed_alone": len(compress(compressor, stored)) if stored else 0,
                "entropy_bits": entropy,
                "entropy_bound_bytes": bound,
            }
        )
    sum_alone = sum(t["bytes_compressed_alone"] for t in tensors)
    for t in tensors:
        t["share"] = t["bytes_compressed_alone"] / sum_alone if sum_alone else 0.0
    header_len = struct.unpack_from("<I", payload, 0)[0]
    bytes_file = os.path.getsize(path)
    entropy_bound = sum(t["entropy_bound_bytes"] for t in tensors)
    return {
        "path": str(path),
        "quant": header.get("label", "?"),
        "compressor": compressor,
        "shuffle": shuffled,
        "notes": header.get("notes", []),
        "tensors": tensors,
        "totals": {
            "tensors": len(tensors),
            "bytes_file": bytes_file,
            "bytes_file_header": FILE_HEADER_BYTES,
            "bytes_compressed_stream": len(stream),
            "bytes_payload": len(payload),
            "bytes_container_header": 4 + header_len,
            "bytes_raw": sum(t["bytes_raw"] for t in tensors),
            "bytes_compressed_alone": sum_alone,
            "entropy_bound_bytes": entropy_bound,
            "file_over_entropy_bound": bytes_file / entropy_bound if entropy_bound else math.inf,
            "compression_ratio": len(payload) / len(stream) if stream else math.inf,
        },
    }


# ---------------------------------------------------------------------------------------------------------
# Code bytes
# ---------------------------------------------------------------------------------------------------------

# The self-extracting wrapper (as records ship their scripts): {} is the base85 text of the lzma bytes.
_WRAPPER = 'import lzma,base64;exec(lzma.decompress(base64.b85decode("{}")))\n'


def wrap_code(text: str) -> str:
    """lzma (preset 9 extreme, .xz) + base85 self-extracting one-liner around `text`."""
    packed = lzma.compress(text.encode("utf-8"), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    return _WRAPPER.format(base64.b85encode(packed).decode("ascii"))
