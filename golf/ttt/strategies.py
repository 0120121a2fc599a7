"""TTT strategies: the implementations of the names in golf.ttt.STRATEGIES, and the fit loop they share.

A strategy receives the model and a sealed `TTTContext` (golf/ttt/context.py): validation tokens are
reachable only through `ctx.stream`'s doors, `score` for the official pass, `diagnose` for probe
measurements, `train_windows` for gradient batches, each recorded by the ledger; training tokens only
through `ctx.train`, which holds what the strategy declared it reads (`train_tail_tokens`). The verdict
on legality is computed afterwards from the ledger, never from the strategy's name. Which strategy runs
where (stage), which are declared illegal and the seed hyperparameters are the registry's
(golf/ttt/__init__.py); the window geometry is golf/windows.py's.

The fit (`_Fit`), once for every strategy: the timer, the working copy (ttt.compile), exactly the chosen
parameters trainable, the compiled forward, the optimizer, one step (autocast, backward, clip, step),
an epoch over batches with its finite check, the step count, the copy back and the `info` keys. The
strategies differ only in what they train, on which batches, and when they score.

A strategy whose outcome has `scored=True` made the official pass itself (score-first strategies
interleave scoring and training); otherwise run.py scores afterwards.

Memorization probe (`ttt.probe`, on by default). The validation documents are split into half A (the
first half of the documents; targets 1..split-1) and half B (targets split..n-1). With the probe on, no TTT
gradient ever touches half B, so B measures generalisation and A memorisation. Epoch-based strategies
record `per_epoch`, epochs+1 points from one run, each {epoch, val_bpb, val_bpb_adapted, val_bpb_heldout}:

* prequant_val, lora_single_pass, train_slice: after epoch e (e = 0: before any TTT) a diagnostic pass over
  half A (val_bpb_adapted), over half B (val_bpb_heldout), and val_bpb from the two meters merged (nats and
  bytes summed, then golf.metric's bits per byte; never an average of two bpb). For train_slice "adapted"
  is only a name: neither half is trained on.
* score_first (an epoch is an epoch over one chunk): for every trained chunk k, after its epoch e
  (e = 0: scored but not yet trained on), a diagnostic pass over the trained part of chunk k itself (the
  adapted tokens) and over a fixed held-out slice of half B (its first chunk_tokens targets). Each is added
  to the meter of epoch e, so point e aggregates all chunks at the same depth of adaptation; val_bpb merges
  the two meters. Cost: (epochs + 1) x (chunk + slice) diagnostic tokens per trained chunk.
With `ttt.probe_curve=false` only the points before TTT and after the last epoch are scored (per_epoch
[0, E]; score_first: depths 0 and E of every chunk), the same two numbers as the full curve's ends.
lora_score_first takes one step per chunk, so it has no epoch curve; it records the official bpb of half A
(adapted documents) and half B (never adapted) instead. With the probe off every strategy trains on all
that it may (prequant_val on every validation token) and `per_epoch` is empty.

Compiled TTT (`ttt.compile`): the steps run through `torch.compile` of a fresh deep copy of the model
(#1550: fullgraph compile of a fresh instance halved its TTT time, 860 s -> 426 s); the trained values are
copied back into the model afterwards. Probe and scoring passes use the same copy uncompiled (their window
shapes vary).

Every outcome records in `info` (merged into result.json's "ttt"): the resolved `lr` and `epochs`,
`wall_s` (all of the strategy's time, probe included), `probe_s`, `compiled`, `steps`, plus its own keys.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch

from golf.device import autocast
from golf.errors import GolfError
from golf.metric import BpbMeter, bits_per_byte
from golf.progress import Progress
from golf.ttt import STRATEGIES
from golf.ttt.context import TTTContext
from golf.ttt.lora import attach_lora
from golf.windows import (
    Window,
    chunk_bounds,
    document_windows,
    documents,
    make_windows,
    plain_windows,
    split_at_chunks,
)


@dataclass
class TTTOutcome:
    epochs: int
    per_epoch: list[dict] = field(default_factory=list)
    scored: bool = False  # True when the strategy itself made the official scoring pass
    info: dict = field(default_factory=dict)  # extra keys for result.json's "ttt"


LORA_BETAS = (0.9, 0.95)  # #77's Adam betas for the adapters


# ---------------------------------------------------------------------------------------------------------
# Small shared pieces
# ---------------------------------------------------------------------------------------------------------


def _batched(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _cosine(step: int, total: int) -> float:
    """Cosine decay factor: 1 at step 0, 0 at step `total`."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # queued GPU work belongs to the interval being timed
    return time.perf_counter()


@contextmanager
def _mode(model: torch.nn.Module, training: bool):
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


@contextmanager
def _trainable(model: torch.nn.Module, params: list[torch.nn.Parameter]):
    """Exactly `params` require grad inside the block; every flag is restored afterwards."""
    keep = [(p, p.requires_grad) for p in model.parameters()]
    chosen = {id(p) for p in params}
    for p, _ in keep:
        p.requires_grad_(id(p) in chosen)
    try:
        yield
    finally:
        for p, flag in keep:
            p.requires_grad_(flag)


def _step(fwd, opt, params, x: torch.Tensor, y: torch.Tensor, device: torch.device, clip: float) -> torch.Tensor:
    """One optimizer step on the mean loss of (x, y) (targets -100 carry no loss); returns the loss tensor."""
    with autocast(device):
        loss = fwd(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def _score(model, windows: list[Window], ctx: TTTContext) -> None:
    """Official scoring of `windows` (in order) through the ledger, in the eval config's batch size."""
    with _mode(model, False):
        for batch in _batched(windows, ctx.eval.batch_seqs):
            ctx.stream.score(model, batch, ctx.device, autocast(ctx.device))


def _diagnose(model, windows: list[Window], ctx: TTTContext, meter: BpbMeter) -> None:
    with _mode(model, False):
        for batch in _batched(windows, ctx.eval.batch_seqs):
            ctx.stream.diagnose(model, batch, ctx.device, autocast(ctx.device), meter)


def _bpb(meter: BpbMeter | None) -> float | None:
    return meter.val_bpb if meter is not None and meter.bytes > 0 else None


def _point(epoch: int, adapted: BpbMeter | None, heldout: BpbMeter | None, table) -> dict:
    """One per_epoch entry; the overall number merges the two meters' nats and bytes (never averages bpb)."""
    both = BpbMeter(table)
    for m in (adapted, heldout):
        if m is not None:
            both.merge(m)
    return {"epoch": epoch, "val_bpb": _bpb(both), "val_bpb_adapted": _bpb(adapted), "val_bpb_heldout": _bpb(heldout)}


class _HalvesProbe:
    """The probe of the whole-stream strategies: diagnostic passes over half A and half B."""

    def __init__(self, ctx: TTTContext):
        n, split, ev = ctx.stream.n, ctx.split, ctx.eval
        self.ctx = ctx
        self.windows_a = make_windows(ev, ctx.seq_len, 1, split) if split > 1 else []
        self.windows_b = make_windows(ev, ctx.seq_len, split, n) if split < n else []
        self.seconds = 0.0

    def point(self, model, epoch: int) -> dict:
        t0 = _now(self.ctx.device)
        table = self.ctx.stream.table
        a = BpbMeter(table) if self.windows_a else None
        b = BpbMeter(table) if self.windows_b else None
        for windows, meter in ((self.windows_a, a), (self.windows_b, b)):
            if meter is not None:
                _diagnose(model, windows, self.ctx, meter)
        self.seconds += _now(self.ctx.device) - t0
        return _point(epoch, a, b, table)


class _Fit:
    """One TTT fit, the part every strategy shares (module docstring): build it at the start of `run`, attach
    what trains to `fit.work`, then `with fit.training(params, make_opt, clip):` step, epoch, copy back.

    `work` is the module TTT updates: the model itself, or for ttt.compile a fresh deep copy, so
    compilation never wraps the model the pipeline keeps (#1550 compiled a fresh instance). `dynamic`
    is torch.compile's: False as in #1550 (the fine-tunes see two or three batch shapes); lora_score_first's
    windows vary in length, so it lets torch mark them dynamic instead (None)."""

    def __init__(self, strategy: Strategy, model: torch.nn.Module, ctx: TTTContext, dynamic: bool | None = False):
        self.t0 = _now(ctx.device)  # wall_s covers the whole strategy, probe included
        self.strategy, self.model, self.ctx, self.dynamic = strategy, model, ctx, dynamic
        self.compiled = bool(strategy.cfg.compile)
        self.work = copy.deepcopy(model) if self.compiled else model
        self.steps = 0
        self.lr = strategy.lr  # the lr of the last step (a schedule sets it per step or per chunk)

    @contextmanager
    def training(self, params: list[torch.nn.Parameter], make_opt: Callable, clip: float):
        """Exactly `params` trainable (flags restored afterwards), the forward for steps and the optimizer."""
        with _trainable(self.work, params):
            self.params, self.make_opt, self.clip = params, make_opt, clip
            self.fwd = torch.compile(self.work, dynamic=self.dynamic) if self.compiled else self.work
            self.opt = make_opt(params)
            yield self

    def reset_optimizer(self) -> None:
        """Fresh optimizer state (lora_score_first: new Adam moments for every document)."""
        self.opt = self.make_opt(self.params)

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.lr = lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = _step(self.fwd, self.opt, self.params, x, y, self.ctx.device, self.clip)
        self.steps += 1
        return loss

    def epoch(self, batches: list[Callable], where: str, lr_at: Callable[[int], float] | None = None) -> float:
        """One pass in train mode over `batches` (zero-argument callables, each giving one CPU (x, y); a
        ledger door is called only when its step comes); `lr_at(step)` sets the lr per step. Returns the
        mean loss, read back once per epoch and checked finite."""
        loss_sum = torch.zeros((), device=self.ctx.device)
        with _mode(self.work, True):
            for get_batch in batches:
                if lr_at is not None:
                    self.set_lr(lr_at(self.steps))
                loss_sum += self.step(*get_batch())
        loss = float(loss_sum.item()) / max(len(batches), 1)
        self.check_finite(loss, where)
        return loss

    def check_finite(self, loss: float, where: str) -> None:
        if not math.isfinite(loss):
            raise GolfError(f"ttt.strategy={self.strategy.name}: the TTT loss became {loss} {where}; lower ttt.lr")

    def copy_back(self) -> None:
        """The trained weights into the model the pipeline keeps (a no-op when TTT ran on it directly)."""
        if self.work is not self.model:
            self.model.load_state_dict(self.work.state_dict())

    def info(self, probe_s: float, **extra) -> dict:
        s = self.strategy
        return {"lr": s.lr, "epochs": s.epochs, "wall_s": _now(self.ctx.device) - self.t0, "probe_s": probe_s,
                "compiled": self.compiled, "probe": bool(s.cfg.probe), "steps": self.steps, **extra}


def _fit_epochs(fit: _Fit, batches: list[Callable], probe: _HalvesProbe | None,
                lr_at: Callable[[int], float] | None = None) -> list[dict]:
    """The whole-stream strategies' loop: `epochs` passes over the same batches; after each, its loss line
    and (probe on) its probe point. Returns per_epoch: epochs 0..E, only 0 and E with ttt.probe_curve=false,
    or [] with the probe off."""
    s, log = fit.strategy, fit.ctx.log
    per_epoch = [probe.point(fit.work, 0)] if probe else []
    with Progress(f"ttt {s.name}", s.epochs, "epoch") as bar:
        for epoch in range(1, s.epochs + 1):
            loss = fit.epoch(batches, f"in epoch {epoch}", lr_at)
            bar.update(1, loss=f"{loss:.4f}")
            log.write(fit.steps, ttt_epoch=epoch, ttt_loss=loss, ttt_lr=fit.lr)
            if probe and (s.cfg.probe_curve or epoch == s.epochs):
                per_epoch.append(probe.point(fit.work, epoch))
                log.write(fit.steps, phase="ttt_probe", **per_epoch[-1])
    return per_epoch


# ---------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------


class Strategy:
    """Base: the registry's entry for `name` (stage, declared_illegal) and the resolved epochs / lr."""

    name = "none"

    def __init__(self, ttt_cfg):
        self.cfg = ttt_cfg
        spec = STRATEGIES[self.name]
        self.stage, self.declared_illegal = spec.stage, spec.declared_illegal
        self.epochs = spec.epochs if ttt_cfg.epochs == -1 else int(ttt_cfg.epochs)
        self.lr = spec.lr if ttt_cfg.lr == -1 else float(ttt_cfg.lr)

    def train_tail_tokens(self, adapt_targets: int, seq_len: int) -> int:
        """How many tokens from the end of the last training shard this strategy reads (ctx.train); 0 = none.
        `adapt_targets` is how many validation targets a strategy that adapts on validation would train on
        (half A with the probe on, else all), for a control matched to that budget."""
        return 0

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        raise NotImplementedError


class NoTTT(Strategy):
    name = "none"

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        return TTTOutcome(epochs=0)


class _FullFineTune(Strategy):
    """AdamW over all weights but the first `freeze_blocks` blocks, cosine LR over the whole run (#1550).

    Subclasses say where the (x, y) batches come from (`_plan`). At least one block always adapts: the
    frozen count is min(freeze_blocks, blocks - 1), recorded as `frozen_blocks` (the tiny presets have 2).
    """

    def _plan(self, ctx: TTTContext) -> tuple[list, dict]:
        """(list of zero-argument callables, each returning one CPU (x, y) batch; extra info keys)."""
        raise NotImplementedError

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        fit = _Fit(self, model, ctx)
        batches, extra = self._plan(ctx)
        work = fit.work
        frozen = min(self.cfg.freeze_blocks, max(len(work.blocks) - 1, 0))
        frozen_ids = {id(p) for block in work.blocks[:frozen] for p in block.parameters()}
        params = [p for p in work.parameters() if id(p) not in frozen_ids]
        probe = _HalvesProbe(ctx) if self.cfg.probe else None
        total = self.epochs * len(batches)
        fit.lr = 0.0  # the log line's lr when there are no batches
        with fit.training(params, lambda ps: torch.optim.AdamW(ps, lr=self.lr, weight_decay=0.0), self.cfg.grad_clip):
            # wd 0 as in #442; the lr follows one cosine over every step of every epoch
            per_epoch = _fit_epochs(fit, batches, probe, lr_at=lambda step: self.lr * _cosine(step, total))
        fit.copy_back()
        info = fit.info(probe.seconds if probe else 0.0, frozen_blocks=frozen, **extra)
        return TTTOutcome(epochs=self.epochs, per_epoch=per_epoch, info=info)


class PrequantVal(_FullFineTune):
    """Pre-quantization fine-tune on validation tokens (#1550; illegal: every trained token fed a gradient
    before its official score). With the probe on it trains on half A only."""

    name = "prequant_val"

    def _plan(self, ctx: TTTContext) -> tuple[list, dict]:
        hi = ctx.split if self.cfg.probe else ctx.stream.n
        windows = plain_windows(1, hi, ctx.seq_len)  # targets 1..hi-1, each in one window
        # Each call goes through the ledger, which marks the targets as having fed a gradient.
        batches = [partial(ctx.stream.train_windows, b) for b in _batched(windows, self.cfg.batch_seqs)]
        return batches, {"trained_tokens": max(hi - 1, 0)}


class TrainSlice(_FullFineTune):
    """The same fine-tune on the tail of the LAST training shard (#1554; legal). It never asks the stream
    for tokens; the probe's diagnostic passes are its only contact with validation."""

    name = "train_slice"

    def train_tail_tokens(self, adapt_targets: int, seq_len: int) -> int:
        if self.cfg.slice_tokens == 0:  # budget-matched: prequant_val's window count, in full sequences
            self.matched = -(-adapt_targets // seq_len) * seq_len + 1
            return self.matched
        return self.cfg.slice_tokens

    def _plan(self, ctx: TTTContext) -> tuple[list, dict]:
        T, shard = ctx.seq_len, ctx.train.shard_name
        tail = torch.from_numpy(ctx.train.tail)
        n = int(tail.numel())
        if self.cfg.slice_tokens == 0 and n < self.matched:
            raise GolfError(f"ttt.slice_tokens=0: matching prequant_val's budget needs {self.matched} tokens, but "
                            f"the last training shard {shard} has {n}; give ttt.slice_tokens explicitly")
        seqs = (n - 1) // T  # 131,073 = 128 x 1024 + 1: 128 sequences and their shifted targets
        if seqs < 1:
            raise GolfError(f"ttt.slice_tokens={self.cfg.slice_tokens}: {shard} gives {n} tokens, "
                            f"fewer than one sequence of {T} plus its target; raise ttt.slice_tokens")
        x = tail[: seqs * T].view(seqs, T)  # (seqs, T)
        y = tail[1 : seqs * T + 1].view(seqs, T)
        bs = self.cfg.batch_seqs
        batches = [partial(lambda i: (x[i : i + bs], y[i : i + bs]), i) for i in range(0, seqs, bs)]
        line = f"ttt:legal_slice source={shard} tokens={n} (train data slice, not val_tokens)"
        print(line, file=sys.stderr, flush=True)
        ctx.log.write(0, log=line)
        return batches, {"source_shard": shard, "slice_tokens": n, "trained_tokens": seqs * T}


class LoRASinglePass(Strategy):
    """Rank-8 LoRA trained over the validation stream (half A with the probe on), then left on the model
    for run.py's official pass (#1127; illegal, C3). Adam, constant lr, no clipping, no shuffling."""

    name = "lora_single_pass"

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        cfg = self.cfg
        fit = _Fit(self, model, ctx)
        hi = ctx.split if cfg.probe else ctx.stream.n
        # each batch is asked of the ledger when its step comes, which marks its targets
        batches = [partial(ctx.stream.train_windows, b) for b in _batched(plain_windows(1, hi, ctx.seq_len), cfg.batch_seqs)]
        adapters = attach_lora(fit.work, cfg.lora_rank, cfg.lora_targets, seed=ctx.seed)
        probe = _HalvesProbe(ctx) if cfg.probe else None
        with fit.training(adapters.parameters(), lambda ps: torch.optim.Adam(ps, lr=self.lr, betas=LORA_BETAS), 0.0):
            per_epoch = _fit_epochs(fit, batches, probe)
        if fit.work is not model:  # the adapters must end up on the model run.py scores
            attach_lora(model, cfg.lora_rank, cfg.lora_targets, seed=ctx.seed).load_state(adapters.state())
        info = fit.info(probe.seconds if probe else 0.0, trained_tokens=max(hi - 1, 0),
                        lora_rank=cfg.lora_rank, lora_targets=cfg.lora_targets, lora_params=adapters.num_params())
        return TTTOutcome(epochs=self.epochs, per_epoch=per_epoch, scored=False, info=info)


class _ChunkProbe:
    """score_first's probe (module docstring): per epoch depth, the adapted chunks and a held-out slice."""

    def __init__(self, ctx: TTTContext, epochs: int, chunk_tokens: int, curve: bool = True):
        n, split, ev = ctx.stream.n, ctx.split, ctx.eval
        self.ctx = ctx
        self.heldout = make_windows(ev, ctx.seq_len, split, min(n, split + chunk_tokens)) if split < n else []
        self.depths = list(range(epochs + 1)) if curve else sorted({0, epochs})  # the depths measured
        self.adapted_m = {e: BpbMeter(ctx.stream.table) for e in self.depths}
        self.heldout_m = {e: BpbMeter(ctx.stream.table) for e in self.depths}
        self.seconds = 0.0

    def measure(self, model, lo: int, hi: int, epoch: int) -> None:
        if epoch not in self.adapted_m:
            return
        t0 = _now(self.ctx.device)
        _diagnose(model, make_windows(self.ctx.eval, self.ctx.seq_len, lo, hi), self.ctx, self.adapted_m[epoch])
        _diagnose(model, self.heldout, self.ctx, self.heldout_m[epoch])
        self.seconds += _now(self.ctx.device) - t0

    def points(self) -> list[dict]:
        table = self.ctx.stream.table
        return [_point(e, self.adapted_m[e], self.heldout_m[e] if self.heldout else None, table)
                for e in self.depths]


class ScoreFirst(Strategy):
    """Score-first chunked TTT (#549, #1493; legal). The stream is cut into chunk_tokens chunks; each chunk is
    scored officially (the configured eval windows, restricted to the chunk) and only then trained on:
    `epochs` passes of SGD (momentum, grad clip) over all weights, lr cosine-decayed across chunks as
    lr * 0.5 (1 + cos(pi k / (chunks - 1))). The last chunk is never trained on. With the probe on, only
    the half-A part of a chunk is trained on; half-B chunks are scored, never trained."""

    name = "score_first"

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        cfg, stream, T = self.cfg, ctx.stream, ctx.seq_len
        fit = _Fit(self, model, ctx)
        bounds = chunk_bounds(stream.n, cfg.chunk_tokens)
        scoring = split_at_chunks(make_windows(ctx.eval, T, 1, stream.n), cfg.chunk_tokens, len(bounds))
        last = len(bounds) - 1
        probe = _ChunkProbe(ctx, self.epochs, cfg.chunk_tokens, cfg.probe_curve) if cfg.probe else None
        trained = 0
        make_opt = lambda ps: torch.optim.SGD(ps, lr=self.lr, momentum=cfg.momentum)  # noqa: E731
        with fit.training(list(fit.work.parameters()), make_opt, cfg.grad_clip), \
                Progress(f"ttt {self.name}", len(bounds), "chunk") as bar:
            for k, (lo, hi) in enumerate(bounds):
                _score(fit.work, scoring[k], ctx)  # the chunk's scores are fixed here, before any update with it
                bar.update(1)
                train_hi = min(hi, ctx.split) if cfg.probe else hi
                if k == last or train_hi <= lo or self.epochs == 0:
                    continue
                fit.set_lr(self.lr * _cosine(k, last))
                # already scored: legal; each batch is asked of the ledger when its step comes
                batches = [partial(stream.train_windows, b) for b in _batched(plain_windows(lo, train_hi, T), cfg.batch_seqs)]
                if probe:
                    probe.measure(fit.work, lo, train_hi, 0)
                for epoch in range(1, self.epochs + 1):
                    loss = fit.epoch(batches, f"on chunk {k}")
                    if probe:
                        probe.measure(fit.work, lo, train_hi, epoch)
                    bar.update(0, epoch=f"{epoch}/{self.epochs}")
                trained += 1
                ctx.log.write(fit.steps, ttt_chunk=k, ttt_loss=loss, ttt_lr=fit.lr)
        fit.copy_back()
        per_epoch = probe.points() if probe and trained else []
        for point in per_epoch:
            ctx.log.write(fit.steps, phase="ttt_probe", **point)
        info = fit.info(probe.seconds if probe else 0.0, chunks=len(bounds), trained_chunks=trained,
                        chunk_tokens=cfg.chunk_tokens, momentum=cfg.momentum, grad_clip=cfg.grad_clip)
        return TTTOutcome(epochs=self.epochs, per_epoch=per_epoch, scored=True, info=info)


class LoRAScoreFirst(Strategy):
    """Per-document LoRA TTT, score-first (#77; legal). For each document, chunk by chunk of
    doc_chunk_tokens: score the chunk, then `epochs` (default 1) Adam steps on rank-8 adapters with the
    chunk's loss. Adapters and Adam moments are reset at every document start, so no document sees
    another's adaptation. The last chunk of a document is not trained on (its adapters are discarded).
    With the probe on only half-A documents are adapted.

    Documents are processed one at a time: #77 batches 64 documents with per-document adapters, but the
    ledger requires scoring in stream order, which interleaved documents would break."""

    name = "lora_score_first"

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        cfg, stream = self.cfg, ctx.stream
        fit = _Fit(self, model, ctx, dynamic=None)
        start_state = stream.official_sums()
        half_a_state = None
        docs = documents(stream.doc_starts, stream.n)
        adapters = attach_lora(fit.work, cfg.lora_rank, cfg.lora_targets, seed=ctx.seed)
        adapted_docs = 0
        make_opt = lambda ps: torch.optim.Adam(ps, lr=self.lr, betas=LORA_BETAS)  # noqa: E731
        try:
            with fit.training(adapters.parameters(), make_opt, 0.0), \
                    Progress(f"ttt {self.name}", len(docs), "doc") as bar:
                for doc_start, lo, hi in docs:
                    adapt = not cfg.probe or doc_start < ctx.split
                    if cfg.probe and not adapt and half_a_state is None:
                        half_a_state = stream.official_sums()
                    adapters.reset()
                    fit.reset_optimizer()  # fresh moments per document
                    chunks = [(c, min(c + cfg.doc_chunk_tokens, hi)) for c in range(lo, hi, cfg.doc_chunk_tokens)]
                    doc_loss = torch.zeros((), device=ctx.device)  # read back once per document, not per step
                    for j, (c_lo, c_hi) in enumerate(chunks):
                        windows = document_windows(doc_start, c_lo, c_hi, ctx.seq_len)
                        _score(fit.work, windows, ctx)
                        if not adapt or j == len(chunks) - 1:
                            continue
                        with _mode(fit.work, True):
                            for _ in range(self.epochs):
                                x, y = stream.train_windows(windows)  # the chunk just scored
                                doc_loss = doc_loss + fit.step(x, y)
                    fit.check_finite(float(doc_loss), f"in the document at token {doc_start}")
                    adapted_docs += int(adapt and len(chunks) > 1)
                    bar.update(1)
        finally:
            adapters.remove()  # the model goes back to exactly its weights; only the scores remain
        info = fit.info(0.0, documents=len(docs), adapted_documents=adapted_docs,
                        doc_chunk_tokens=cfg.doc_chunk_tokens, lora_rank=cfg.lora_rank, lora_targets=cfg.lora_targets)
        if half_a_state is not None:  # official bpb of the adapted documents vs the never-adapted ones
            end_state = stream.official_sums()
            a_nats, a_bytes = half_a_state[0] - start_state[0], half_a_state[1] - start_state[1]
            b_nats, b_bytes = end_state[0] - half_a_state[0], end_state[1] - half_a_state[1]
            if a_bytes > 0 and b_bytes > 0:
                info["official_bpb_half_a"] = bits_per_byte(a_nats, a_bytes)
                info["official_bpb_half_b"] = bits_per_byte(b_nats, b_bytes)
        return TTTOutcome(epochs=self.epochs, scored=True, info=info)


STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (NoTTT, PrequantVal, LoRASinglePass, TrainSlice, ScoreFirst, LoRAScoreFirst)
}


def get_strategy(ttt_cfg) -> Strategy:
    """Instantiate the configured strategy; refuse declared-illegal ones without ttt.allow_illegal."""
    if ttt_cfg.strategy not in STRATEGY_CLASSES:
        raise GolfError(f"ttt.strategy {ttt_cfg.strategy!r} is unknown; valid: {', '.join(STRATEGY_CLASSES)}")
    if STRATEGIES[ttt_cfg.strategy].declared_illegal and not ttt_cfg.allow_illegal:
        raise GolfError(f"ttt.strategy={ttt_cfg.strategy} trains on validation tokens before scoring them "
                        "(illegal in Parameter Golf); set ttt.allow_illegal=true to run it for study")
    return STRATEGY_CLASSES[ttt_cfg.strategy](ttt_cfg)
