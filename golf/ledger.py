"""The token ledger: validation tokens are reachable only through it, and it records what was done to them.

Parameter Golf's TTT rules (issue #1017; shared research notes) say, for every validation token t:
  C3 its score is fixed before any state is updated with t;
  C4 it is scored once, in one left-to-right pass (no rescoring, no choosing among passes).
Whether a run obeyed them is a fact about what the code did, not about a strategy's name. So validation
tokens live inside `ValidationStream`, which hands them out only through three doors, each of which writes to
the ledger with a logical clock:

  score(...)       the official, scored pass: per-token losses feed the bpb meter; `scored` +1, `score_time`
  diagnose(...)    diagnostic losses (the memorization probe): reported, never part of val_bpb; counted apart
  train_windows()  tokens for a gradient: `grad_time` set the first time a token feeds a gradient, as a
                   target or as context input of the window

`verdict()` then answers: legal only if every target was scored exactly once, the official scoring times
never go backwards along the stream, and no token fed a gradient before its official score.

Positions and windows (which inputs a pass reads, which targets it scores) are golf/windows.py's.

A TTT strategy gets the stream as a `SealedStream`: the three doors and the stream's shape (length, byte
table, document starts), no tokens and no way to the `ValidationStream` behind it under a public name, so
the verdict covers everything a strategy did with validation tokens (golf/ttt/context.py).
"""

from __future__ import annotations

import numpy as np
import torch

from golf.data.shards import BOS_ID
from golf.metric import BpbMeter, ByteTable
from golf.windows import Window

NEVER = np.iinfo(np.int64).max  # "no event yet" sorts after every clock value


class ValidationStream:
    """Validation tokens behind the ledger. Do not reach for `_tokens`: use score / diagnose / train_windows."""

    def __init__(self, tokens: np.ndarray, table: ByteTable, bos_id: int = BOS_ID):
        self._tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
        self.table = table
        self.n = int(self._tokens.numel())
        self.clock = 0
        self.scored = np.zeros(self.n, dtype=np.int32)  # official scores per target (index 0 unused: BOS)
        self.score_time = np.full(self.n, NEVER, dtype=np.int64)
        self.grad_time = np.full(self.n, NEVER, dtype=np.int64)
        self.diagnosed = np.zeros(self.n, dtype=np.int32)
        self.out_of_order = 0  # targets whose official score came before that of an earlier position
        self._last_scored = 0
        self.meter = BpbMeter(table)
        ids = self._tokens.numpy()
        self.doc_starts = np.flatnonzero(ids == bos_id)  # document structure (positions only) for strategies

    # --- the three doors --------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, model, windows: list[Window], device, ctx) -> np.ndarray:
        """Official scoring of a batch of windows under no_grad; returns per-target nll of the scored targets."""
        nll, prev, tgt, positions = self._forward(model, windows, device, ctx)
        self.clock += 1
        if positions.size:
            if positions.min() <= self._last_scored:
                self.out_of_order += int(np.count_nonzero(positions <= self._last_scored))
            self._last_scored = max(self._last_scored, int(positions.max()))
        self.scored[positions] += 1
        first = self.score_time[positions] == NEVER
        self.score_time[positions[first]] = self.clock
        self.meter.add(nll, prev, tgt)
        return nll

    @torch.no_grad()
    def diagnose(self, model, windows: list[Window], device, ctx, meter: BpbMeter) -> None:
        """Diagnostic scoring into a separate meter: reported by the probe, never part of val_bpb."""
        nll, prev, tgt, positions = self._forward(model, windows, device, ctx)
        self.clock += 1
        self.diagnosed[positions] += 1
        meter.add(nll, prev, tgt)

    def train_windows(self, windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for a gradient step on these windows, padded with -100 targets; marks every token the step
        reads: the targets with a loss and the context inputs before them (t_start .. t_end), since a
        context token shapes the gradient as much as a target does (position 0, BOS, is no target)."""
        self.clock += 1
        xs, ys = self._gather(windows)
        for w in windows:
            span = self.grad_time[max(w.start, 1) : w.end + 1]
            np.minimum(span, self.clock, out=span)
        return xs, ys

    # --- verdict ----------------------------------------------------------------------------------------

    def verdict(self) -> tuple[bool, list[str]]:
        targets = slice(1, self.n)
        scored = self.scored[targets]
        violations = []
        never = int(np.count_nonzero(scored == 0))
        if never:
            violations.append(f"C4 unscored: {never} tokens were never scored")
        twice = int(np.count_nonzero(scored > 1))
        if twice:
            violations.append(f"C4 rescored: {twice} tokens were scored more than once")
        if self.out_of_order:
            violations.append(f"C4 not one left-to-right pass: {self.out_of_order} tokens scored after a later position")
        early = int(np.count_nonzero(self.grad_time[targets] < self.score_time[targets]))
        if early:
            violations.append(f"C3 gradient before score: {early} tokens fed a gradient before their score was fixed")
        return not violations, violations

    # --- internals --------------------------------------------------------------------------------------

    def _gather(self, windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(w.end - w.start for w in windows)
        x = torch.zeros(len(windows), T, dtype=torch.long)
        y = torch.full((len(windows), T), -100, dtype=torch.long)
        for i, w in enumerate(windows):
            L = w.end - w.start
            x[i, :L] = self._tokens[w.start : w.end]
            y[i, :L] = self._tokens[w.start + 1 : w.end + 1]
            y[i, : w.score_from - w.start - 1] = -100  # context-only targets carry no loss
        return x, y

    def _forward(self, model, windows, device, ctx):
        x, y = self._gather(windows)
        with ctx:
            nll = model(x.to(device), y.clamp_min(0).to(device), reduction="none").float().cpu()  # (B, T)
        mask = y != -100
        positions = np.concatenate([np.arange(w.score_from, w.end + 1) for w in windows])
        prev = self._tokens[positions - 1].numpy()
        tgt = self._tokens[positions].numpy()
        return nll[mask].numpy().astype(np.float64), prev, tgt, positions


class SealedStream:
    """The validation stream as a TTT strategy sees it: the ledger's three doors and the stream's shape.

    It holds the `ValidationStream` under a name-mangled slot and nothing else, so every public attribute
    is one of the doors or a fact about positions, and anything else (`_tokens`, `meter`, `scored`, ...)
    raises AttributeError naming the doors. Python cannot make a reference truly private; what this makes
    sure is that no attribute a strategy would reach for by accident leads to tokens (tests/test_ttt.py
    also forbids private names in golf/ttt). The doors are looked up on the stream at each call."""

    __slots__ = ("__stream",)

    def __init__(self, stream: ValidationStream):
        self.__stream = stream

    def score(self, model, windows: list[Window], device, ctx) -> np.ndarray:
        return self.__stream.score(model, windows, device, ctx)

    def diagnose(self, model, windows: list[Window], device, ctx, meter: BpbMeter) -> None:
        """Diagnostic losses merged into `meter`. The stream's own meter takes the token ids (it needs them
        for the byte counts) and only its sums reach the caller's, so a meter-like object cannot collect
        the ids of windows not yet scored (and so not yet legal to learn from)."""
        own = BpbMeter(self.__stream.table)
        self.__stream.diagnose(model, windows, device, ctx, own)
        meter.merge(own)

    def train_windows(self, windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__stream.train_windows(windows)

    @property
    def n(self) -> int:
        return self.__stream.n

    @property
    def table(self) -> ByteTable:
        return self.__stream.table

    @property
    def doc_starts(self) -> np.ndarray:
        """Positions of the BOS tokens (document structure, no token values); a read-only copy."""
        starts = self.__stream.doc_starts.copy()
        starts.flags.writeable = False
        return starts

    def official_sums(self) -> tuple[float, float]:
        """(nats, bytes) summed so far by the official meter: a strategy may split its own official bpb."""
        meter = self.__stream.meter
        return meter.nats, meter.bytes

    def __getattr__(self, name: str):
        raise AttributeError(f"the validation stream has no {name!r} for a TTT strategy: its tokens are read "
                             "only through score / diagnose / train_windows, which the ledger records")
