"""n-gram baselines: the vectorised Kneser-Ney model against a brute-force count, on toy and real tokens."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from golf.baselines import NGramModel, consumed_training_windows
from golf.data.dataset import Dataset
from golf.metric import BpbMeter, ByteTable


def _discount(counts) -> float:
    c = Counter(counts)
    return c[1] / (c[1] + 2 * c[2]) if c[1] else 0.5


class BruteKN:
    """Interpolated Kneser-Ney written from the textbook definition with dictionaries (no numpy tricks)."""

    def __init__(self, segments: list[list[int]], V: int):
        self.V = V
        self.uni = Counter(w for s in segments for w in s[1:])
        self.n = sum(self.uni.values())
        self.bi = Counter((s[i - 1], s[i]) for s in segments for i in range(1, len(s)))
        self.tri = Counter((s[i - 2], s[i - 1], s[i]) for s in segments for i in range(2, len(s)))
        before = defaultdict(set)  # w -> distinct v with c(v, w) > 0
        for v, w in self.bi:
            before[w].add(v)
        n_bi_types = len(self.bi)
        cont = {w: len(vs) for w, vs in before.items()}
        d1 = _discount(list(cont.values()))
        self.p1 = {w: max(cont.get(w, 0) - d1, 0) / n_bi_types + d1 * len(cont) / n_bi_types / V for w in range(V)}
        self.d2 = _discount(list(self.bi.values()))
        self.d3 = _discount(list(self.tri.values()))
        mid = defaultdict(set)  # (v, w) -> distinct u with c(u, v, w) > 0
        for u, v, w in self.tri:
            mid[(v, w)].add(u)
        self.mid = {k: len(us) for k, us in mid.items()}
        self.dm = _discount(list(self.mid.values()))

    def _interp(self, counts: dict, hist: tuple, w: int, d: float, lower: float) -> float:
        row = {k[-1]: c for k, c in counts.items() if k[:-1] == hist}
        total = sum(row.values())
        if total == 0:
            return lower
        return max(row.get(w, 0) - d, 0) / total + d * len(row) / total * lower

    def bigram(self, v: int, w: int) -> float:
        return self._interp(self.bi, (v,), w, self.d2, self.p1[w])

    def trigram(self, u: int, v: int, w: int) -> float:
        mid = self._interp(self.mid, (v,), w, self.dm, self.p1[w])
        return self._interp(self.tri, (u, v), w, self.d3, mid)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    V, seg = 7, 9
    # a skewed Markov chain so that counts of 1, 2 and more all occur, and some ids never follow others
    trans = rng.dirichlet(np.full(V, 0.3), size=V)
    t = [0]
    for _ in range(seg * 40 - 1):
        t.append(int(rng.choice(V, p=trans[t[-1]])))
    t = np.array(t)
    return t, V, seg, BruteKN([list(t[i : i + seg]) for i in range(0, t.size, seg)], V)


def test_kneser_ney_matches_a_brute_force_count(toy):
    t, V, seg, brute = toy
    m = NGramModel(t, V, segment_len=seg)
    grid = np.array([(u, v, w) for u in range(V) for v in range(V) for w in range(V)])
    u, v, w = grid.T
    np.testing.assert_allclose(m.bigram_prob(v, w), [brute.bigram(b, c) for b, c in zip(v, w)], rtol=1e-12)
    np.testing.assert_allclose(m.trigram_prob(u, v, w), [brute.trigram(a, b, c) for a, b, c in zip(u, v, w)],
                               rtol=1e-12)
    np.testing.assert_allclose(m.unigram_prob(np.arange(V)), [(brute.uni[i] + 1) / (brute.n + V) for i in range(V)])


def test_every_distribution_sums_to_one_and_is_positive(toy):
    t, V, seg, _ = toy
    m = NGramModel(t, V, segment_len=seg)
    w = np.arange(V)
    assert m.unigram_prob(w).sum() == pytest.approx(1.0, abs=1e-12)
    for v in range(V):
        p2 = m.bigram_prob(np.full(V, v), w)
        assert p2.min() > 0 and p2.sum() == pytest.approx(1.0, abs=1e-12)
        for u in range(V):
            p3 = m.trigram_prob(np.full(V, u), np.full(V, v), w)
            assert p3.min() > 0 and p3.sum() == pytest.approx(1.0, abs=1e-12)


def test_counts_stay_inside_segments():
    # two segments [0 1 2] [3 4 5]: the pairs (2, 3) and triples across the cut must not exist
    m = NGramModel(np.arange(6), 6, segment_len=3)
    assert m.n_tokens == 4  # targets: 1 2 4 5
    assert list(m.bigram.keys) == [0 * 6 + 1, 1 * 6 + 2, 3 * 6 + 4, 4 * 6 + 5]
    assert list(m.trigram.keys) == [(0 * 6 + 1) * 6 + 2, (3 * 6 + 4) * 6 + 5]
    with pytest.raises(ValueError, match="whole segments"):
        NGramModel(np.arange(7), 7, segment_len=3)


def test_score_goes_through_the_metric_and_uses_the_stream_context(toy):
    t, V, seg, brute = toy
    table = ByteTable(np.array([0, 1, 2, 3, 1, 2, 4]), np.array([False, True, True, False, True, False, False]),
                      np.array([True, False, False, False, False, False, False]))
    m = NGramModel(t, V, segment_len=seg)
    val = t[:50]
    pos = np.arange(1, 50)
    got = m.score(val, pos, table)
    meter = BpbMeter(table)
    p = [brute.bigram(val[0], val[1])] + [brute.trigram(val[j - 2], val[j - 1], val[j]) for j in range(2, 50)]
    meter.add(-np.log(p), val[pos - 1], val[pos])
    assert got["trigram_kn"] == pytest.approx(meter.val_bpb, rel=1e-12)


def test_consumed_windows_are_the_trainers_batches(tiny_dataset):
    from golf.train import TokenStream

    ds = Dataset.open(tiny_dataset)
    got = consumed_training_windows(ds, steps=3, batch_tokens=512, seq_len=64, world=1, accum=2)
    ref = TokenStream(ds)
    want = np.concatenate([ref.next_step(512, 64, 1, 2).reshape(-1) for _ in range(3)])
    np.testing.assert_array_equal(got, want)
    assert got.size == 3 * 512 // 64 * 65


def test_real_tokens_rank_the_orders_and_beat_uniform(tiny_dataset):
    """On real English text (the test corpus), more context must help: trigram < bigram < unigram < log2 V/byte."""
    ds = Dataset.open(tiny_dataset)
    windows = consumed_training_windows(ds, steps=40, batch_tokens=2048, seq_len=128)
    m = NGramModel(windows, ds.vocab_size, segment_len=129)
    val = np.asarray(ds.val_tokens)
    s = m.score(val, np.arange(1, val.size), ds.byte_table)
    uniform = BpbMeter(ds.byte_table)
    uniform.add(np.full(val.size - 1, math.log(ds.vocab_size)), val[:-1], val[1:])
    assert s["trigram_kn"] < s["bigram_kn"] < s["unigram"] < uniform.val_bpb
