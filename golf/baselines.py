"""Count-based baselines: what a neural model must beat to say anything.

A language model that does not beat an n-gram count model of its own training tokens has learned little
beyond local token statistics, and whatever test-time training does to it is mostly picking up the n-gram
statistics of what it adapts on. So every run reports, beside its `val_bpb`, three count models fitted on
exactly the training tokens its model consumed (same shards, same order, same count: the trainer's own
`TokenStream`) and scored on exactly the targets its official pass scored, through the one bits-per-byte
function (`golf.metric.BpbMeter`):

    unigram      add-one (Laplace) unigram over the vocabulary
    bigram_kn    interpolated Kneser-Ney bigram
    trigram_kn   interpolated Kneser-Ney trigram

Interpolated Kneser-Ney (Chen & Goodman 1998, section 3.5; one absolute discount per order). For the
highest order n with history h and counts c:

    P_n(w | h) = max(c(h w) - D_n, 0) / c(h) + D_n * N1+(h .) / c(h) * P_{n-1}(w | h')

where h' drops the oldest token of h and N1+(h .) is the number of distinct tokens seen after h; an
unseen history (c(h) = 0) uses P_{n-1} directly. The lower orders replace counts by *continuation counts*
N1+(. h' w), the number of distinct tokens seen before h' w: a token that follows many contexts is a
likely continuation of a new one. The lowest order interpolates with the uniform distribution over the V
ids, so every id has a probability > 0 and each P sums to 1 over the vocabulary (tested). Discounts come
from the count-of-counts of the counts they discount: D = n1 / (n1 + 2 n2) (Ney, Essen & Kneser 1994).

Context at a target is the stream before it (t_{j-2}, t_{j-1}), across document boundaries (BOS is a token
like any other; the neural model sees the same inside a window). The first target has only BOS before it
and is scored at the bigram level.

Everything is vectorised numpy over n-gram keys (a*V^2 + b*V + c in int64), so 8.5M training tokens fit in
seconds and a vocabulary of 8,192 needs no dense V^2 table.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golf.io import write_json
from golf.metric import BpbMeter, ByteTable

BASELINES = ("unigram", "bigram_kn", "trigram_kn")


def _discount(counts: np.ndarray) -> float:
    """D = n1 / (n1 + 2 n2) from the count-of-counts; 0.5 when the counts give no estimate."""
    n1 = int(np.count_nonzero(counts == 1))
    n2 = int(np.count_nonzero(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 + n2 > 0 and n1 > 0 else 0.5


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[k] for each query key present in the sorted `keys`, else 0."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    idx = np.searchsorted(keys, query)
    idx_c = np.minimum(idx, keys.size - 1)
    hit = keys[idx_c] == query
    return np.where(hit, values[idx_c], 0)


def _group_sums(keys: np.ndarray, values: np.ndarray, divisor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group sorted n-gram keys by their history (key // divisor): (histories, sum of values, distinct count)."""
    hist = keys // divisor
    starts = np.flatnonzero(np.r_[True, hist[1:] != hist[:-1]]) if hist.size else np.zeros(0, dtype=np.int64)
    sums = np.add.reduceat(values, starts) if hist.size else np.zeros(0, dtype=values.dtype)
    distinct = np.diff(np.r_[starts, hist.size]) if hist.size else np.zeros(0, dtype=np.int64)
    return hist[starts], sums, distinct


@dataclass
class _Level:
    """One order of the KN model: counts (raw at the top, continuation below) of n-grams and their histories."""

    keys: np.ndarray  # sorted n-gram keys (history * V + w)
    counts: np.ndarray  # count of each key
    hist_keys: np.ndarray  # sorted histories
    hist_totals: np.ndarray  # sum of counts per history
    hist_types: np.ndarray  # distinct continuations per history: N1+(h .)
    discount: float

    @classmethod
    def build(cls, keys: np.ndarray, counts: np.ndarray, vocab: int) -> "_Level":
        hist, totals, types = _group_sums(keys, counts, vocab)
        return cls(keys, counts, hist, totals, types, _discount(counts))

    def prob(self, hist: np.ndarray, w: np.ndarray, lower: np.ndarray, vocab: int) -> np.ndarray:
        """Interpolated P(w | hist) given the lower order's P(w | shorter hist) at the same targets."""
        c = _lookup(self.keys, self.counts, hist * vocab + w).astype(np.float64)
        total = _lookup(self.hist_keys, self.hist_totals, hist).astype(np.float64)
        types = _lookup(self.hist_keys, self.hist_types, hist).astype(np.float64)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        p = np.maximum(c - self.discount, 0.0) / safe + self.discount * types / safe * lower
        return np.where(seen, p, lower)


class NGramModel:
    """Unigram, interpolated-KN bigram and trigram counts of one token stream (see the module docstring)."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, segment_len: int | None = None):
        """Count the n-grams of `tokens`, read as consecutive segments of `segment_len` tokens (training
        windows; None = one segment). The first token of a segment is context only; n-grams never cross
        a segment boundary, so the counts are exactly the (context, target) pairs a model trained on."""
        V = self.vocab = int(vocab_size)
        t = np.asarray(tokens, dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() >= V):
            raise ValueError(f"token ids must lie in [0, {V})")
        seg = segment_len or max(t.size, 1)
        if t.size % seg:
            raise ValueError(f"{t.size} tokens are not whole segments of {seg}")
        offset = np.arange(t.size) % seg  # position inside the segment
        targets = t[offset >= 1]
        self.unigram_counts = np.bincount(targets, minlength=V).astype(np.int64)
        self.n_tokens = int(targets.size)  # targets counted (the unigram's sample size)

        k2, c2 = np.unique((t[:-1] * V + t[1:])[offset[1:] >= 1], return_counts=True)
        k3, c3 = np.unique(((t[:-2] * V + t[1:-1]) * V + t[2:])[offset[2:] >= 2], return_counts=True)

        # bigram model: raw bigram counts on top, continuation unigram below
        self.bigram = _Level.build(k2, c2, V)
        self.cont1 = self._continuation_unigram(k2)
        # trigram model: raw trigram counts on top; continuation bigram N1+(. v w) in the middle
        self.trigram = _Level.build(k3, c3, V)
        mid_keys, mid_counts = np.unique(k3 % (V * V), return_counts=True)  # distinct u per (v, w)
        self.cont2 = _Level.build(mid_keys, mid_counts, V)

    def _continuation_unigram(self, bigram_keys: np.ndarray) -> np.ndarray:
        """P1(w) = max(N1+(. w) - D, 0) / N1+(. .) + D * |{w: N1+(. w) > 0}| / N1+(. .) / V."""
        V = self.vocab
        cont = np.bincount(bigram_keys % V, minlength=V).astype(np.float64)  # distinct v before each w
        total = cont.sum()
        if total == 0:
            return np.full(V, 1.0 / V)
        d = _discount(cont[cont > 0])
        return np.maximum(cont - d, 0.0) / total + d * np.count_nonzero(cont) / total / V

    # --- probabilities of targets given their contexts ---------------------------------------------------

    def unigram_prob(self, w: np.ndarray) -> np.ndarray:
        return (self.unigram_counts[w] + 1.0) / (self.n_tokens + self.vocab)

    def bigram_prob(self, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self.bigram.prob(v, w, self.cont1[w], self.vocab)

    def trigram_prob(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        mid = self.cont2.prob(v, w, self.cont1[w], self.vocab)
        p = self.trigram.prob(u * self.vocab + v, w, mid, self.vocab)
        return np.where(u >= 0, p, self.bigram_prob(v, w))  # u = -1: no token two back (stream start)

    def score(self, stream: np.ndarray, positions: np.ndarray, table: ByteTable) -> dict[str, float]:
        """bpb of each baseline on targets stream[positions], through the one bits-per-byte function."""
        s = np.asarray(stream, dtype=np.int64)
        pos = np.asarray(positions, dtype=np.int64)
        w, v = s[pos], s[pos - 1]
        u = np.where(pos >= 2, s[np.maximum(pos - 2, 0)], -1)
        out = {}
        for name, p in (("unigram", self.unigram_prob(w)), ("bigram_kn", self.bigram_prob(v, w)),
                        ("trigram_kn", self.trigram_prob(u, v, w))):
            meter = BpbMeter(table)
            meter.add(-np.log(p), v, w)
            out[name] = meter.val_bpb
        return out


# ---------------------------------------------------------------------------------------------------------
# The run's own tokens, cached
# ---------------------------------------------------------------------------------------------------------


def consumed_training_windows(dataset, steps: int, batch_tokens: int, seq_len: int, world: int = 1,
                              accum: int = 1) -> np.ndarray:
    """Every (seq_len + 1)-token training window a run's model was trained on, concatenated (all ranks).

    Read through the trainer's own `TokenStream.next_step`, so it is the same shards, order and count; a
    window holds inputs t_0..t_{T-1} and targets t_1..t_T, so n-grams counted inside windows (never across
    them) are exactly the (context, target) pairs the model's loss saw."""
    from golf.train import TokenStream

    stream = TokenStream(dataset)
    parts = [stream.next_step(batch_tokens, seq_len, world, accum).reshape(-1) for _ in range(steps)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def cache_key(data_identity: dict, budget: dict, val: np.ndarray, positions: np.ndarray) -> str:
    """Identity of a baseline: the training data and token budget, and the exact validation targets scored."""
    h = hashlib.sha256(json.dumps({"data": data_identity, "budget": budget}, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(val, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(positions, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def run_baselines(dataset, budget: dict, val: np.ndarray, positions: np.ndarray, identity: dict,
                  cache_dir: Path | None) -> dict[str, float]:
    """`eval.baselines` of a run, fitted and scored once per (data, token budget, scored targets) and cached.

    `budget`: the trainer's steps, batch_tokens, seq_len, world and accum (what `TokenStream` was asked for)."""
    key = cache_key(identity, budget, val, positions)
    path = cache_dir / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if all(math.isfinite(float(cached[k])) for k in BASELINES):
                return {k: float(cached[k]) for k in BASELINES}
        except (OSError, ValueError, TypeError, KeyError):
            pass  # a damaged entry is recomputed and replaced
    windows = consumed_training_windows(dataset, **budget)
    seg = budget["seq_len"] + 1
    model = NGramModel(windows, dataset.vocab_size, segment_len=seg)
    scores = model.score(val, positions, dataset.byte_table)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**scores, "train_targets": model.n_tokens, "scored_targets": int(len(positions))})
    return scores
