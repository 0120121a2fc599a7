"""Lossless compressors and the byte shuffle that feeds them.

The artifact's size is what the challenge scores, so the last step (general-purpose compression of the
quantized weights) is a real lever: records moved from zlib-9 (the baseline) to zstd-22, lzma-9 and
brotli-11, often after a "byte shuffle". Each compressor here runs at its strongest setting, because
compression time is paid once, off the clock, while every byte counts.

Byte shuffle: a buffer of fp16 values interleaves a noisy low byte with a fairly predictable high byte
(sign + exponent). Regrouping the bytes by their position within the element (all byte-0s, then all
byte-1s) gives the compressor two homogeneous streams instead of one mixed one. For 1-byte elements
(int8 containers) the shuffle is the identity.

Registry: `COMPRESSORS` maps a name to a `(compress, decompress)` pair of `bytes -> bytes` callables.
Decompression failures (truncated or corrupted streams) surface as `GolfError`.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable

import brotli
import numpy as np
import zstandard

from golf.errors import GolfError

# ---------------------------------------------------------------------------------------------------------
# Compressors, each at its maximum setting
# ---------------------------------------------------------------------------------------------------------

# lzma: preset 9 plus the "extreme" flag (slower search, a few bytes smaller); .xz container so that
# lzma.decompress detects the format by itself.
_LZMA_PRESET = 9 | lzma.PRESET_EXTREME


def _zlib_compress(data: bytes) -> bytes:
    return zlib.compress(data, 9)  # the baseline's choice


def _zlib_decompress(data: bytes) -> bytes:
    # decompressobj + eof check: plain zlib.decompress would not tell us about missing tail bytes in
    # every case, and trailing junk after the stream is also a sign of an altered file.
    d = zlib.decompressobj()
    out = d.decompress(data) + d.flush()
    if not d.eof:
        raise ValueError("zlib stream is truncated")
    if d.unused_data:
        raise ValueError("trailing bytes after the zlib stream")
    return out


def _zstd_compress(data: bytes) -> bytes:
    # level 22 is zstd's "ultra" maximum; the frame records the content size so decompression can
    # allocate exactly and detect a short frame.
    return zstandard.ZstdCompressor(level=22, write_content_size=True).compress(data)


def _zstd_decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


def _lzma_compress(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=_LZMA_PRESET)


def _lzma_decompress(data: bytes) -> bytes:
    return lzma.decompress(data)


def _brotli_compress(data: bytes) -> bytes:
    # quality 11 is the maximum; lgwin 24 is the largest standard window (16 MiB), which matters for
    # multi-megabyte weight payloads.
    return brotli.compress(data, quality=11, lgwin=24)


def _brotli_decompress(data: bytes) -> bytes:
    return brotli.decompress(data)


COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "zlib": (_zlib_compress, _zlib_decompress),
    "zstd": (_zstd_compress, _zstd_decompress),
    "lzma": (_lzma_compress, _lzma_decompress),
    "brotli": (_brotli_compress, _brotli_decompress),
}


# what the four libraries raise on a truncated or corrupted stream
_STREAM_ERRORS = (zlib.error, lzma.LZMAError, zstandard.ZstdError, brotli.error, ValueError, EOFError)


def _lookup(name: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    if name not in COMPRESSORS:
        raise GolfError(f"compressor {name!r} is unknown; choose one of {sorted(COMPRESSORS)}")
    return COMPRESSORS[name]


def compress(name: str, data: bytes) -> bytes:
    """Compress `data` with the named compressor at its strongest setting."""
    return _lookup(name)[0](bytes(data))


def decompress(name: str, data: bytes, what: str = "data") -> bytes:
    """Inverse of `compress`; a corrupt or truncated stream raises GolfError naming `what`."""
    fn = _lookup(name)[1]
    try:
        return fn(bytes(data))
    except GolfError:
        raise
    except _STREAM_ERRORS as exc:  # each library has its own error type; all mean "not a valid stream"
        raise GolfError(f"{what}: {name} stream is truncated or corrupt ({type(exc).__name__}: {exc})")


# ---------------------------------------------------------------------------------------------------------
# Byte shuffle
# ---------------------------------------------------------------------------------------------------------


def byte_shuffle(data: bytes, itemsize: int) -> bytes:
    """Group bytes by their position within each `itemsize`-byte element.

    [a0 a1 b0 b1 c0 c1] with itemsize 2 -> [a0 b0 c0 a1 b1 c1]. `len(data)` must be a multiple of
    `itemsize`; itemsize 1 returns the data unchanged.
    """
    if itemsize < 1 or len(data) % itemsize:
        raise GolfError(f"byte_shuffle: {len(data)} bytes is not a whole number of {itemsize}-byte items")
    if itemsize == 1:
        return bytes(data)
    # (n, itemsize) -> (itemsize, n): a transpose of the byte matrix
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def byte_unshuffle(data: bytes, itemsize: int) -> bytes:
    """Inverse of `byte_shuffle` for the same `itemsize`."""
    if itemsize < 1 or len(data) % itemsize:
        raise GolfError(f"byte_unshuffle: {len(data)} bytes is not a whole number of {itemsize}-byte items")
    if itemsize == 1:
        return bytes(data)
    # (itemsize, n) -> (n, itemsize)
    return np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()
