"""Window geometry: which token positions a forward pass reads and which of its targets it scores.

Everything here is arithmetic on positions; no tokens are read. The ledger (golf/ledger.py) gathers the
tokens of a `Window`; evaluation, the TTT strategies and the exported submission script cut the stream
into windows with these functions, so they all agree on what "target j" means.

Positions: the validation stream is t_0 .. t_{N-1} with t_0 = BOS. Target j (1 <= j < N) is t_j predicted
from t_<j. A window (s, e) feeds inputs t_s .. t_{e-1} and predicts targets s+1 .. e; only targets from
`score_from` on count (earlier ones are context).

  plain_windows / sliding_windows / make_windows   evaluation: each target in [lo, hi) scored once
  chunk_bounds / split_at_chunks                   score_first: the stream in chunks, eval windows cut at them
  documents / document_windows                     lora_score_first: per-document windows (document isolation)
  probe_split                                      the memorization probe's halves A and B
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Window:
    start: int  # first input position s
    end: int  # last target position e (inputs s..e-1, targets s+1..e)
    score_from: int  # first target position whose loss counts (earlier targets are context only)


def plain_windows(lo: int, hi: int, seq_len: int) -> list[Window]:
    """Non-overlapping windows scoring targets lo..hi-1 exactly once (the baseline's mode; short last window)."""
    out = []
    s = lo - 1
    while s + 1 < hi:
        e = min(s + seq_len, hi - 1)
        out.append(Window(s, e, s + 1))
        s = e
    return out


def sliding_windows(lo: int, hi: int, seq_len: int, stride: int) -> list[Window]:
    """Overlapping windows advancing by `stride`; each scores only its new targets, so every target in
    lo..hi-1 is scored once, with up to seq_len - stride tokens of context (records: stride 64)."""
    out = []
    e = min(lo - 1 + seq_len, hi - 1)
    out.append(Window(lo - 1, e, lo))
    while e < hi - 1:
        new_e = min(e + stride, hi - 1)
        s = max(lo - 1, new_e - seq_len)
        out.append(Window(s, new_e, e + 1))
        e = new_e
    return out


def make_windows(eval_cfg, seq_len: int, lo: int, hi: int) -> list[Window]:
    """The configured evaluation windows (`eval.mode`, `eval.stride`) over targets lo..hi-1."""
    if eval_cfg.mode == "sliding":
        return sliding_windows(lo, hi, seq_len, min(eval_cfg.stride, seq_len))
    return plain_windows(lo, hi, seq_len)


def chunk_bounds(n: int, chunk_tokens: int) -> list[tuple[int, int]]:
    """Targets 1..n-1 cut into [lo, hi) chunks of chunk_tokens (the last one shorter)."""
    return [(lo, min(lo + chunk_tokens, n)) for lo in range(1, n, chunk_tokens)]


def split_at_chunks(windows: list[Window], chunk_tokens: int, n_chunks: int) -> list[list[Window]]:
    """The eval windows restricted to each chunk: a window whose scored targets cross a chunk boundary is
    cut in two, so chunk k's windows score only chunk k's targets and read no input after its last target
    (context from earlier, already scored chunks is kept). Order is preserved: one left-to-right pass."""
    out: list[list[Window]] = [[] for _ in range(n_chunks)]
    for w in windows:
        first = w.score_from
        while first <= w.end:
            k = (first - 1) // chunk_tokens
            last = min(w.end, (k + 1) * chunk_tokens)  # chunk k holds targets k*C+1 .. (k+1)*C
            out[k].append(Window(w.start, last, first))
            first = last + 1
    return out


def documents(doc_starts: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    """(first input position, first target, end target exclusive) of each document. The BOS that opens the
    next document is the last target of this one ("the document ends here"), so targets 1..n-1 are covered
    exactly once; a stream that does not start with BOS gets a leading partial document."""
    starts = [int(s) for s in doc_starts]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    out = []
    for i, s in enumerate(starts):
        end = starts[i + 1] + 1 if i + 1 < len(starts) else n
        if end > s + 1:
            out.append((s, s + 1, end))
    return out


def document_windows(doc_start: int, lo: int, hi: int, seq_len: int) -> list[Window]:
    """Windows scoring targets lo..hi-1 of a document, each with as much context from that document (and
    only from it) as seq_len allows: document isolation, as in #77."""
    out, first = [], lo
    while first < hi:
        end = min(first + seq_len - 1, hi - 1)  # at most seq_len targets per window
        out.append(Window(max(doc_start, end - seq_len), end, first))
        first = end + 1
    return out


def probe_split(doc_starts: np.ndarray, n: int) -> int:
    """First target position of the probe's half B: the BOS of the first document of the second half of
    the documents (targets 1..split-1 are half A). One document: no half B (split = n)."""
    if len(doc_starts) < 2:
        return n
    return int(doc_starts[len(doc_starts) // 2])
