"""Lossless compressors and the byte shuffle that feeds them.

The artifact's size is what the challenge scores, so the last step (general-purpose compression of the
quantized weights) is a real lever: records moved from zlib-9 (the baseline) to zstd-22, lzma-9 and
brotli-11, often after a "byte shuffle". Each compressor here runs at its strongest setting, because
compression time is paid once, off the clock, while every byte counts.

Byte shuffle: a buffer of fp16 values interleaves a noisy low byte with a fairly predictable high byte
(sign + exponent). Regrouping the bytes by their position within the element (all byte-0s, then all
byte-1s) gives the compressor two homogeneous streams instead of one mixed one. For 1-byte elements
(int8 containers) the shuffle is the identity.

Registry: `COMPRESSORS` maps a name to a `(compress, decompress)` pair; `decompress(data, max_bytes)` stops
with GolfError as soon as the output would exceed `max_bytes`. Decompression failures (truncated or
corrupted streams, or more output than allowed) surface as `GolfError`.

Why bounded: an artifact is untrusted input, and its compressed stream decides how much memory the reader
allocates. A 76-byte zstd frame can claim 1 TiB of content and 1.5 MB of brotli can expand to 8 GiB, so every
decompressor here streams its output in pieces and checks the running total against the bound *while*
decompressing (the caller passes the payload length the file header promises, itself capped).
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable, Iterator

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


# Output is produced in pieces of at most this many bytes, so a bound is enforced within one piece of it.
_PIECE_BYTES = 1 << 20


class OutputTooLarge(ValueError):
    """The stream decompresses to more than the caller allowed (a bomb, or a header that lies)."""


class TooLarge(GolfError):
    """What `decompress` raises for OutputTooLarge; `reason` says what passed which bound."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _collect(pieces: Iterator[bytes], max_bytes: int) -> bytes:
    """Join decompressed pieces, failing as soon as their total passes `max_bytes`."""
    out, total = [], 0
    for piece in pieces:
        total += len(piece)
        if total > max_bytes:
            raise OutputTooLarge(f"decompresses to more than {max_bytes} bytes")
        out.append(piece)
    return b"".join(out)


def _zlib_decompress(data: bytes, max_bytes: int) -> bytes:
    # decompressobj + eof check: plain zlib.decompress would not tell us about missing tail bytes in
    # every case, and trailing junk after the stream is also a sign of an altered file.
    d = zlib.decompressobj()

    def pieces() -> Iterator[bytes]:
        rest = data
        while True:
            piece = d.decompress(rest, _PIECE_BYTES)  # max_length: the rest waits in unconsumed_tail
            yield piece
            rest = d.unconsumed_tail
            if d.eof or (not rest and not piece):
                break

    out = _collect(pieces(), max_bytes)
    if not d.eof:
        raise ValueError("zlib stream is truncated")
    if d.unused_data:
        raise ValueError("trailing bytes after the zlib stream")
    return out


def _zstd_compress(data: bytes) -> bytes:
    # level 22 is zstd's "ultra" maximum; the frame records the content size so decompression can
    # allocate exactly and detect a short frame.
    return zstandard.ZstdCompressor(level=22, write_content_size=True).compress(data)


def _zstd_decompress(data: bytes, max_bytes: int) -> bytes:
    # ZstdDecompressor.decompress allocates the size the frame header claims before reading anything, so
    # the claim is checked first and the data is then read through a stream in bounded pieces.
    claimed = zstandard.frame_content_size(data)  # -1: the frame does not say
    if claimed > max_bytes:
        raise OutputTooLarge(f"zstd frame claims {claimed} bytes, more than the {max_bytes} allowed")
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)

    def pieces() -> Iterator[bytes]:
        while piece := reader.read(_PIECE_BYTES):
            yield piece

    out = _collect(pieces(), max_bytes)
    if claimed >= 0 and len(out) != claimed:
        raise ValueError(f"zstd frame is truncated ({len(out)} of {claimed} bytes)")
    return out


def _lzma_compress(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=_LZMA_PRESET)


# The xz header names the dictionary the decoder must allocate (up to 1.5 GiB); preset 9 uses 64 MiB.
_LZMA_MEMLIMIT = 256 << 20


def _lzma_decompress(data: bytes, max_bytes: int) -> bytes:
    d = lzma.LZMADecompressor(memlimit=_LZMA_MEMLIMIT)

    def pieces() -> Iterator[bytes]:
        rest = data
        while not d.eof:
            piece = d.decompress(rest, _PIECE_BYTES)  # max_length: the decompressor keeps the rest
            rest = b""
            if not piece and d.needs_input:
                raise EOFError("lzma stream is truncated")
            yield piece

    out = _collect(pieces(), max_bytes)
    if d.unused_data:
        raise ValueError("trailing bytes after the lzma stream")
    return out


def _brotli_compress(data: bytes) -> bytes:
    # quality 11 is the maximum; lgwin 24 is the largest standard window (16 MiB), which matters for
    # multi-megabyte weight payloads.
    return brotli.compress(data, quality=11, lgwin=24)


def _brotli_decompress(data: bytes, max_bytes: int) -> bytes:
    d = brotli.Decompressor()

    def pieces() -> Iterator[bytes]:
        # output_buffer_limit (brotli >= 1.2): each call returns at most about one piece; later calls with
        # empty input drain the rest.
        yield d.process(data, output_buffer_limit=_PIECE_BYTES)
        while not d.is_finished():
            piece = d.process(b"", output_buffer_limit=_PIECE_BYTES)
            if not piece and d.can_accept_more_data():
                raise EOFError("brotli stream is truncated")
            yield piece

    return _collect(pieces(), max_bytes)


COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]] = {
    "zlib": (_zlib_compress, _zlib_decompress),
    "zstd": (_zstd_compress, _zstd_decompress),
    "lzma": (_lzma_compress, _lzma_decompress),
    "brotli": (_brotli_compress, _brotli_decompress),
}


# The most any decompression here may produce, whatever a header says: 16 MB of artifact at the challenge's
# limit holds at most ~16e6 int8 symbols plus scales; 4 GiB leaves a wide margin for float payloads of
# research models and still fits the memory of any machine that trains them.
MAX_OUTPUT_BYTES = 4 << 30

# what the four libraries raise on a truncated or corrupted stream
_STREAM_ERRORS = (zlib.error, lzma.LZMAError, zstandard.ZstdError, brotli.error, ValueError, EOFError)


def _lookup(name: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
    if name not in COMPRESSORS:
        raise GolfError(f"compressor {name!r} is unknown; choose one of {sorted(COMPRESSORS)}")
    return COMPRESSORS[name]


def compress(name: str, data: bytes) -> bytes:
    """Compress `data` with the named compressor at its strongest setting."""
    return _lookup(name)[0](bytes(data))


def decompress(name: str, data: bytes, what: str = "data", max_bytes: int = MAX_OUTPUT_BYTES) -> bytes:
    """Inverse of `compress`, producing at most `max_bytes`; a corrupt or truncated stream, or one that
    would decompress to more, raises GolfError naming `what`."""
    fn = _lookup(name)[1]
    try:
        return fn(bytes(data), min(int(max_bytes), MAX_OUTPUT_BYTES))
    except GolfError:
        raise
    except OutputTooLarge as exc:
        raise TooLarge(f"{what}: {name} stream {exc}; refusing to decompress it", str(exc)) from None
    except MemoryError:
        raise GolfError(f"{what}: {name} stream needs more memory than this machine has") from None
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
