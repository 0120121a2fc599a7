"""The ledger's verdicts and the evaluation windows' exactly-once coverage."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golf.config import EvalConfig
from golf.evaluate import evaluate
from golf.ledger import ValidationStream
from golf.metric import ByteTable
from golf.windows import Window, plain_windows, sliding_windows

V = 16


class Bigram(torch.nn.Module):
    """A real (trainable) bigram LM: its loss at t depends only on token t-1, whatever the context."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.logits = torch.nn.Embedding(V, V)

    def forward(self, x, y=None, reduction="mean"):
        logits = self.logits(x)
        if y is None:
            return logits
        return (
            F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction=reduction).reshape(y.shape)
            if reduction == "none"
            else F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        )


def table():
    base = np.ones(V, dtype=np.int64)
    base[:2] = 0
    boundary = np.zeros(V, dtype=bool)
    boundary[:2] = True
    return ByteTable(base, np.zeros(V, dtype=bool), boundary)


def stream(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(2, V, size=n)
    toks[0] = 1
    toks[rng.choice(np.arange(1, n), 5, replace=False)] = 1  # documents
    return ValidationStream(toks, table())


@pytest.mark.parametrize(
    "n, T, stride", [(1000, 64, 16), (1001, 64, 64), (130, 128, 7), (65, 64, 64), (3, 64, 1), (500, 50, 49)]
)
def test_windows_score_every_target_exactly_once(n, T, stride):
    for windows in (plain_windows(1, n, T), sliding_windows(1, n, T, stride)):
        counts = np.zeros(n, dtype=int)
        for w in windows:
            assert w.end - w.start <= T and w.start < w.score_from <= w.end
            counts[w.score_from : w.end + 1] += 1
        assert counts[0] == 0 and (counts[1:] == 1).all()


def test_sliding_windows_keep_full_context_after_the_first():
    for w in sliding_windows(1, 1000, 64, 16)[1:-1]:
        assert w.end - w.start == 64 and w.end - w.score_from + 1 == 16


def test_plain_and_sliding_agree_for_a_context_free_model():
    model = Bigram()
    results = []
    for mode in ("windows", "sliding"):
        s = stream()
        evaluate(model, s, EvalConfig(mode=mode, stride=16, batch_seqs=7), 64, torch.device("cpu"))
        assert s.verdict() == (True, [])
        results.append((s.meter.nats, s.meter.tokens, s.meter.bytes))
    assert results[0][1:] == results[1][1:] == (999, 999 - 5)
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)


def _sgd_step(model, s, windows):
    x, y = s.train_windows(windows)
    loss = F.cross_entropy(model.logits(x).reshape(-1, V), y.reshape(-1), ignore_index=-100)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.5 * p.grad
            p.grad = None


def test_score_first_is_legal():
    model, s = Bigram(), stream()
    chunks = plain_windows(1, s.n, 100)
    for i, w in enumerate(chunks):
        s.score(model, [w], "cpu", nullcontext())
        if i < len(chunks) - 1:
            _sgd_step(model, s, [Window(w.start, w.end, w.start + 1)])
    assert s.verdict() == (True, [])


def test_adapt_then_score_is_flagged():
    model, s = Bigram(), stream()
    _sgd_step(model, s, [Window(0, 499, 1)])  # fine-tune on the first half, then score everything
    evaluate(model, s, EvalConfig(), 64, torch.device("cpu"))
    legal, violations = s.verdict()
    assert not legal and violations == [
        "C3 gradient before score: 499 tokens fed a gradient before their score was fixed"
    ]


def test_context_inputs_of_a_gradient_window_count_as_trained_on():
    """A window whose loss is on its last target only still feeds its 99 unscored inputs to the gradient."""
    model, s = Bigram(), stream()
    _sgd_step(model, s, [Window(0, 100, 100)])  # inputs t_0..t_99, one target with a loss
    x, y = s.train_windows([Window(0, 100, 100)])
    assert (y[0, :99] == -100).all() and y[0, 99] != -100
    evaluate(model, s, EvalConfig(), 64, torch.device("cpu"))
    legal, violations = s.verdict()
    assert not legal and violations == [
        "C3 gradient before score: 100 tokens fed a gradient before their score was fixed"
    ]


def test_gradient_on_the_chunk_before_its_score_is_flagged():
    model, s = Bigram(), stream()
    for w in plain_windows(1, s.n, 100):
        _sgd_step(model, s, [Window(w.start, w.end, w.start + 1)])  # train first: the classic leak
        s.score(model, [w], "cpu", nullcontext())
    legal, violations = s.verdict()
    assert not legal and violations[0].startswith("C3 gradient before score: 999 tokens")


def test_double_scoring_and_backwards_scoring_are_flagged():
    model, s = Bigram(), stream()
    evaluate(model, s, EvalConfig(), 64, torch.device("cpu"))
    evaluate(model, s, EvalConfig(), 64, torch.device("cpu"), lo=1, hi=200)  # a second pass over a prefix
    legal, violations = s.verdict()
    assert not legal
    assert "C4 rescored: 199 tokens were scored more than once" in violations
    assert any(v.startswith("C4 not one left-to-right pass") for v in violations)


def test_unscored_tokens_are_flagged_and_diagnostics_do_not_count():
    from golf.evaluate import diagnose

    model, s = Bigram(), stream()
    d = diagnose(model, s, EvalConfig(), 64, torch.device("cpu"), 1, s.n)
    assert d["tokens"] == 999 and s.meter.tokens == 0
    evaluate(model, s, EvalConfig(), 64, torch.device("cpu"), lo=1, hi=900)
    legal, violations = s.verdict()
    assert not legal and violations == ["C4 unscored: 100 tokens were never scored"]
