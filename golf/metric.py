"""Bits per byte, exactly: the single source of truth for every score golf reports.

Parameter Golf scores a model by the bits it needs per byte of validation *text*, so that models with
different tokenizers compare fairly. A model gives a cross-entropy (nats) per token; we need the number of
UTF-8 bytes each token stands for. That count is not a property of the token alone, because SentencePiece
folds a word's leading space into the piece (`▁the`): the space is real text only when something precedes it.

Derivation. Write the validation stream as tokens t_0 t_1 ... t_N with t_0 = BOS. Every t_i with i >= 1 is
predicted from t_<i and scored once. The text that t_i contributes is:

* 0 bytes if t_i is a *boundary* token (control: pad/bos/eos, unknown, unused): it stands for no text;
* 1 byte if t_i is a byte-fallback piece `<0xNN>`: it is exactly one raw byte of the UTF-8 text;
* otherwise len(utf8(piece without its leading `▁`)) bytes, plus 1 for the leading `▁` **only if t_{i-1}
  is not a boundary token**. After BOS the tokenizer (add_dummy_prefix=False, whitespace-stripping
  normaliser) never emits a real leading space, so a `▁` there stands for no byte of the document.

Hence bytes(t_i | t_{i-1}) = base[t_i] + space[t_i] * (1 - boundary[t_{i-1}]), three lookup tables built
once from the model. Summed over a document this equals the UTF-8 length of the tokenizer's decoding of that
document (tested for every validation document). Then

    val_loss = sum_i nll_i / N                       (nats per token)
    val_bpb  = sum_i nll_i / ln(2) / sum_i bytes_i   = val_loss / ln 2 * N / bytes

All sums are float64 (nats) and int64 (bytes): float32 accumulation over 60M tokens drifts in the 4th digit.
Known mistakes this avoids: counting the space byte after BOS (or twice), assuming a standalone `▁` piece,
and bytes-per-token constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golf.errors import GolfError


@dataclass(frozen=True)
class ByteTable:
    """Per-token-id lookup tables derived from a SentencePiece model."""

    base_bytes: np.ndarray  # (V,) int64: UTF-8 bytes of the piece without its leading ▁ (1 for <0xNN>, 0 for boundary)
    has_space: np.ndarray  # (V,) bool: piece starts with ▁ (a space byte unless it follows a boundary)
    is_boundary: np.ndarray  # (V,) bool: control / unknown / unused: stands for no text

    @property
    def vocab_size(self) -> int:
        return int(self.base_bytes.shape[0])


def build_byte_table(sp) -> ByteTable:
    """Build the tables from a loaded `sentencepiece.SentencePieceProcessor` (or a path to a .model)."""
    if isinstance(sp, (str, Path)):
        sp = load_tokenizer(sp)
    vocab = sp.get_piece_size()
    base = np.zeros(vocab, dtype=np.int64)
    space = np.zeros(vocab, dtype=bool)
    boundary = np.zeros(vocab, dtype=bool)
    for i in range(vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            boundary[i] = True
            continue
        if sp.is_byte(i):
            base[i] = 1  # <0xNN> is one raw byte of the text
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteTable(base, space, boundary)


def load_tokenizer(path: str | Path):
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise GolfError(f"tokenizer {path}: file not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError) as e:
        raise GolfError(f"tokenizer {path}: not a SentencePiece model ({str(e).splitlines()[0]})") from e
    return sp


def token_bytes(table: ByteTable, prev_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """Bytes of text each target token stands for, given the token before it. Same shape as the inputs."""
    prev_ids = np.asarray(prev_ids, dtype=np.int64)
    target_ids = np.asarray(target_ids, dtype=np.int64)
    space_counts = table.has_space[target_ids] & ~table.is_boundary[prev_ids]
    return table.base_bytes[target_ids] + space_counts.astype(np.int64)


def stream_bytes(table: ByteTable, tokens: np.ndarray) -> int:
    """Bytes of a whole token stream: every token after the first is a target, scored with its predecessor.

    The first token is never a target (the stream starts with BOS), exactly as in evaluation. This is the
    manifest's `val.bytes`.
    """
    tokens = np.asarray(tokens)
    if tokens.size < 2:
        return 0
    return int(token_bytes(table, tokens[:-1], tokens[1:]).sum(dtype=np.int64))


def bits_per_byte(nats_sum: float, bytes_sum: int) -> float:
    """THE metric: total cross-entropy in nats over the scored tokens -> bits per byte of their text."""
    if bytes_sum <= 0:
        raise GolfError("bits per byte: the scored tokens stand for 0 bytes of text; nothing to score")
    return float(nats_sum) / math.log(2.0) / float(bytes_sum)


class BpbMeter:
    """Accumulates scored tokens (float64 nats, int64 bytes) and reports val_loss and val_bpb.

    Every evaluation path (plain windows, sliding windows, TTT) feeds per-token losses through `add`, and
    every reported bpb comes from `bits_per_byte`.
    """

    def __init__(self, table: ByteTable):
        self.table = table
        self.nats = 0.0
        self.tokens = 0
        self.bytes = 0

    def add(self, nll: np.ndarray, prev_ids: np.ndarray, target_ids: np.ndarray) -> None:
        nll = np.asarray(nll, dtype=np.float64).reshape(-1)
        self.nats += float(nll.sum(dtype=np.float64))
        self.tokens += int(nll.size)
        self.bytes += int(token_bytes(self.table, np.asarray(prev_ids).reshape(-1), np.asarray(target_ids).reshape(-1)).sum())

    def merge(self, other: "BpbMeter") -> None:
        self.nats += other.nats
        self.tokens += other.tokens
        self.bytes += other.bytes

    @property
    def val_loss(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def val_bpb(self) -> float:
        return bits_per_byte(self.nats, self.bytes)
