"""TTT strategies: a registry of named strategies, each running where the seeds put it.

A strategy receives the model and a `TTTContext`. Validation tokens are reachable only through
`ctx.stream` (golf.ledger.ValidationStream): `score` for the official pass, `diagnose` for probe
measurements, `train_windows` for gradient batches. Nothing in golf/ttt reads the stream's tokens or a
validation shard any other way (tests/test_ttt.py greps for it). The verdict on legality is computed
afterwards from the ledger, never from the strategy's name; `declared_illegal` only makes `golf run`
refuse to start such a strategy unless `ttt.allow_illegal=true` (contract).

The strategies (seed hyperparameters in SEED_DEFAULTS; `ttt.epochs` / `ttt.lr` = -1 picks them):

  name              stage      ledger verdict   what it does
  none              -          legal            nothing
  prequant_val      prequant   illegal (C3)     AdamW fine-tune on validation tokens, then quantize (#1550)
  lora_single_pass  postquant  illegal (C3)     rank-8 LoRA trained over the validation stream; the adapters
                                                stay on the model for run.py's official pass (#1127)
  train_slice       prequant   legal            the prequant_val fine-tune on the tail of the last training
                                                shard; never reads validation tokens (#1554)
  score_first       postquant  legal            chunks scored first, then SGD on them (#549, #1493)
  lora_score_first  postquant  legal            per document: chunks scored, then one Adam step on rank-8
                                                LoRA; adapters reset per document (#77)

`stage` says where run.py calls `run`: "prequant" on the trained float model before quantization (the
update is then quantized with it), "postquant" on the model rebuilt from the artifact. A strategy whose
outcome has `scored=True` made the official pass itself (score-first strategies interleave scoring and
training); otherwise run.py scores afterwards.

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
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from golf.data.dataset import Dataset
from golf.device import autocast
from golf.errors import GolfError
from golf.evaluate import make_windows
from golf.ledger import ValidationStream, Window, plain_windows
from golf.metric import BpbMeter, bits_per_byte
from golf.progress import Progress
from golf.ttt.lora import attach_lora


@dataclass
class TTTContext:
    cfg: object  # RunConfig
    stream: ValidationStream
    dataset: Dataset
    device: torch.device
    seq_len: int
    split: int  # first target position of held-out half B; targets 1..split-1 are half A
    metrics_path: Path | None = None


@dataclass
class TTTOutcome:
    epochs: int
    per_epoch: list[dict] = field(default_factory=list)
    scored: bool = False  # True when the strategy itself made the official scoring pass
    info: dict = field(default_factory=dict)  # extra keys for result.json's "ttt"


def probe_split(stream: ValidationStream) -> int:
    """First target position of half B: the BOS of the first document of the second half of the documents."""
    starts = stream.doc_starts
    if len(starts) < 2:
        return stream.n  # one document: no held-out half
    return int(starts[len(starts) // 2])


# Seed hyperparameters, used where ttt.epochs / ttt.lr are -1.
SEED_DEFAULTS: dict[str, dict[str, float]] = {
    "prequant_val": {"epochs": 6, "lr": 5e-4},  # #1550: 6 epochs; AdamW lr 5e-4 as in #442 and #1738
    "lora_single_pass": {"epochs": 1, "lr": 0.01},  # #1127: rank 8, lr 0.01, 1 epoch
    "train_slice": {"epochs": 3, "lr": 5e-4},  # #1554: 3 epochs AdamW lr 5e-4
    "score_first": {"epochs": 3, "lr": 0.005},  # #1493: SGD lr 0.005 (#549: 0.002), 3 epochs per chunk
    "lora_score_first": {"epochs": 1, "lr": 0.01},  # #77: one Adam step per chunk, lr 0.01
}
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


def _work_model(model: torch.nn.Module, compiled: bool) -> torch.nn.Module:
    """The module TTT updates: the model itself, or for ttt.compile a fresh deep copy, so compilation never
    wraps the model the pipeline keeps (#1550 compiled a fresh instance)."""
    return copy.deepcopy(model) if compiled else model


def _forward_for_steps(work: torch.nn.Module, compiled: bool, dynamic: bool | None = False):
    # dynamic=False as in #1550: the fine-tunes see two or three batch shapes; lora_score_first's windows
    # vary in length, so it lets torch mark them dynamic instead (dynamic=None).
    return torch.compile(work, dynamic=dynamic) if compiled else work


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


def _check_finite(loss: float, name: str, where: str) -> None:
    if not math.isfinite(loss):
        raise GolfError(f"ttt.strategy={name}: the TTT loss became {loss} {where}; lower ttt.lr")


def _score(model, windows: list[Window], ctx: TTTContext) -> None:
    """Official scoring of `windows` (in order) through the ledger, in the eval config's batch size."""
    with _mode(model, False):
        for batch in _batched(windows, ctx.cfg.eval.batch_seqs):
            ctx.stream.score(model, batch, ctx.device, autocast(ctx.device))


def _diagnose(model, windows: list[Window], ctx: TTTContext, meter: BpbMeter) -> None:
    with _mode(model, False):
        for batch in _batched(windows, ctx.cfg.eval.batch_seqs):
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


class _Log:
    """TTT lines appended to the run's metrics.jsonl: {"step", "phase": "ttt"|"ttt_probe", "strategy", ...}."""

    def __init__(self, path: Path | None, strategy: str):
        self.path, self.strategy = path, strategy

    def write(self, step: int, phase: str = "ttt", **row) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "phase": phase, "strategy": self.strategy, **row}) + "\n")


class _HalvesProbe:
    """The probe of the whole-stream strategies: diagnostic passes over half A and half B."""

    def __init__(self, ctx: TTTContext):
        n, split, ev = ctx.stream.n, ctx.split, ctx.cfg.eval
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


# ---------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------


class Strategy:
    """Base: name, stage, declared_illegal, and the resolved epochs / lr of the configured strategy."""

    name = "none"
    stage: str | None = None
    declared_illegal = False

    def __init__(self, ttt_cfg):
        self.cfg = ttt_cfg
        seed = SEED_DEFAULTS.get(self.name, {"epochs": 0, "lr": 0.0})
        self.epochs = int(seed["epochs"]) if ttt_cfg.epochs == -1 else int(ttt_cfg.epochs)
        self.lr = float(seed["lr"]) if ttt_cfg.lr == -1 else float(ttt_cfg.lr)

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        raise NotImplementedError

    def _info(self, t0: float, ctx: TTTContext, steps: int, probe_s: float, **extra) -> dict:
        return {"lr": self.lr, "epochs": self.epochs, "wall_s": _now(ctx.device) - t0, "probe_s": probe_s,
                "compiled": bool(self.cfg.compile), "probe": bool(self.cfg.probe), "steps": steps, **extra}


class NoTTT(Strategy):
    name = "none"

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        return TTTOutcome(epochs=0)


class _FullFineTune(Strategy):
    """AdamW over all weights but the first `freeze_blocks` blocks, cosine LR over the whole run (#1550).

    Subclasses say where the (x, y) batches come from (`_plan`). At least one block always adapts: the
    frozen count is min(freeze_blocks, blocks - 1), recorded as `frozen_blocks` (the tiny presets have 2).
    """

    stage = "prequant"

    def _plan(self, ctx: TTTContext, log: _Log) -> tuple[list, dict]:
        """(list of zero-argument callables, each returning one CPU (x, y) batch; extra info keys)."""
        raise NotImplementedError

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        t0 = _now(ctx.device)
        cfg = self.cfg
        log = _Log(ctx.metrics_path, self.name)
        batches, extra = self._plan(ctx, log)
        work = _work_model(model, cfg.compile)
        frozen = min(cfg.freeze_blocks, max(len(work.blocks) - 1, 0))
        frozen_ids = {id(p) for block in work.blocks[:frozen] for p in block.parameters()}
        params = [p for p in work.parameters() if id(p) not in frozen_ids]
        probe = _HalvesProbe(ctx) if cfg.probe else None
        per_epoch = [probe.point(work, 0)] if probe else []
        total, step = self.epochs * len(batches), 0
        with _trainable(work, params), _mode(work, True), Progress(f"ttt {self.name}", self.epochs, "epoch") as bar:
            fwd = _forward_for_steps(work, cfg.compile)
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)  # wd 0 as in #442
            for epoch in range(1, self.epochs + 1):
                loss_sum = torch.zeros((), device=ctx.device)
                for get_batch in batches:
                    lr = self.lr * _cosine(step, total)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    loss_sum += _step(fwd, opt, params, *get_batch(), ctx.device, cfg.grad_clip)
                    step += 1
                loss = float(loss_sum.item()) / max(len(batches), 1)
                _check_finite(loss, self.name, f"in epoch {epoch}")
                bar.update(1, loss=f"{loss:.4f}")
                log.write(step, ttt_epoch=epoch, ttt_loss=loss, ttt_lr=lr if batches else 0.0)
                if probe:
                    per_epoch.append(probe.point(work, epoch))
                    log.write(step, phase="ttt_probe", **per_epoch[-1])
        if work is not model:
            model.load_state_dict(work.state_dict())
        info = self._info(t0, ctx, step, probe.seconds if probe else 0.0, frozen_blocks=frozen, **extra)
        return TTTOutcome(epochs=self.epochs, per_epoch=per_epoch, info=info)


class PrequantVal(_FullFineTune):
    """Pre-quantization fine-tune on validation tokens (#1550; illegal: every trained token fed a gradient
    before its official score). With the probe on it trains on half A only."""

    name = "prequant_val"
    declared_illegal = True

    def _plan(self, ctx: TTTContext, log: _Log) -> tuple[list, dict]:
        hi = ctx.split if self.cfg.probe else ctx.stream.n
        windows = plain_windows(1, hi, ctx.seq_len)  # targets 1..hi-1, each in one window
        # Each call goes through the ledger, which marks the targets as having fed a gradient.
        batches = [partial(ctx.stream.train_windows, b) for b in _batched(windows, self.cfg.batch_seqs)]
        return batches, {"trained_tokens": max(hi - 1, 0)}


class TrainSlice(_FullFineTune):
    """The same fine-tune on the tail of the LAST training shard (#1554; legal). It never asks the stream
    for tokens; the probe's diagnostic passes are its only contact with validation."""

    name = "train_slice"

    def _plan(self, ctx: TTTContext, log: _Log) -> tuple[list, dict]:
        ds, T = ctx.dataset, ctx.seq_len
        index = len(ds.train_shards) - 1
        shard = ds.train_shards[index]
        tokens = ds.train_tokens(index)
        n = min(self.cfg.slice_tokens, int(tokens.size))
        tail = torch.from_numpy(np.asarray(tokens[tokens.size - n :], dtype=np.int64))
        seqs = (n - 1) // T  # 131,073 = 128 x 1024 + 1: 128 sequences and their shifted targets
        if seqs < 1:
            raise GolfError(f"ttt.slice_tokens={self.cfg.slice_tokens}: {shard.name} gives {n} tokens, "
                            f"fewer than one sequence of {T} plus its target; raise ttt.slice_tokens")
        x = tail[: seqs * T].view(seqs, T)  # (seqs, T)
        y = tail[1 : seqs * T + 1].view(seqs, T)
        bs = self.cfg.batch_seqs
        batches = [partial(lambda i: (x[i : i + bs], y[i : i + bs]), i) for i in range(0, seqs, bs)]
        line = f"ttt:legal_slice source={shard.name} tokens={n} (train data slice, not val_tokens)"
        print(line, file=sys.stderr, flush=True)
        log.write(0, log=line)
        return batches, {"source_shard": shard.name, "slice_tokens": n, "trained_tokens": seqs * T}


class LoRASinglePass(Strategy):
    """Rank-8 LoRA trained over the validation stream (half A with the probe on), then left on the model
    for run.py's official pass (#1127; illegal, C3). Adam, constant lr, no clipping, no shuffling."""

    name = "lora_single_pass"
    stage = "postquant"
    declared_illegal = True

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        t0 = _now(ctx.device)
        cfg = self.cfg
        log = _Log(ctx.metrics_path, self.name)
        hi = ctx.split if cfg.probe else ctx.stream.n
        batches = _batched(plain_windows(1, hi, ctx.seq_len), cfg.batch_seqs)
        work = _work_model(model, cfg.compile)
        adapters = attach_lora(work, cfg.lora_rank, cfg.lora_targets, seed=ctx.cfg.seed)
        params = adapters.parameters()
        probe = _HalvesProbe(ctx) if cfg.probe else None
        per_epoch = [probe.point(work, 0)] if probe else []
        step = 0
        with _trainable(work, params), _mode(work, True), Progress(f"ttt {self.name}", self.epochs, "epoch") as bar:
            fwd = _forward_for_steps(work, cfg.compile)
            opt = torch.optim.Adam(params, lr=self.lr, betas=LORA_BETAS)
            for epoch in range(1, self.epochs + 1):
                loss_sum = torch.zeros((), device=ctx.device)
                for batch in batches:
                    x, y = ctx.stream.train_windows(batch)  # marks the targets in the ledger
                    loss_sum += _step(fwd, opt, params, x, y, ctx.device, 0.0)
                    step += 1
                loss = float(loss_sum.item()) / max(len(batches), 1)
                _check_finite(loss, self.name, f"in epoch {epoch}")
                bar.update(1, loss=f"{loss:.4f}")
                log.write(step, ttt_epoch=epoch, ttt_loss=loss, ttt_lr=self.lr)
                if probe:
                    per_epoch.append(probe.point(work, epoch))
                    log.write(step, phase="ttt_probe", **per_epoch[-1])
        if work is not model:  # the adapters must end up on the model run.py scores
            attach_lora(model, cfg.lora_rank, cfg.lora_targets, seed=ctx.cfg.seed).load_state(adapters.state())
        info = self._info(t0, ctx, step, probe.seconds if probe else 0.0, trained_tokens=max(hi - 1, 0),
                          lora_rank=cfg.lora_rank, lora_targets=cfg.lora_targets, lora_params=adapters.num_params())
        return TTTOutcome(epochs=self.epochs, per_epoch=per_epoch, scored=False, info=info)


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


class _ChunkProbe:
    """score_first's probe (module docstring): per epoch depth, the adapted chunks and a held-out slice."""

    def __init__(self, ctx: TTTContext, epochs: int):
        n, split, ev = ctx.stream.n, ctx.split, ctx.cfg.eval
        self.ctx = ctx
        self.heldout = make_windows(ev, ctx.seq_len, split, min(n, split + ctx.cfg.ttt.chunk_tokens)) if split < n else []
        self.adapted_m = [BpbMeter(ctx.stream.table) for _ in range(epochs + 1)]
        self.heldout_m = [BpbMeter(ctx.stream.table) for _ in range(epochs + 1)]
        self.seconds = 0.0

    def measure(self, model, lo: int, hi: int, epoch: int) -> None:
        t0 = _now(self.ctx.device)
        _diagnose(model, make_windows(self.ctx.cfg.eval, self.ctx.seq_len, lo, hi), self.ctx, self.adapted_m[epoch])
        _diagnose(model, self.heldout, self.ctx, self.heldout_m[epoch])
        self.seconds += _now(self.ctx.device) - t0

    def points(self) -> list[dict]:
        table = self.ctx.stream.table
        return [_point(e, a, b if self.heldout else None, table) for e, (a, b) in enumerate(zip(self.adapted_m, self.heldout_m))]


class ScoreFirst(Strategy):
    """Score-first chunked TTT (#549, #1493; legal). The stream is cut into chunk_tokens chunks; each chunk is
    scored officially (the configured eval windows, restricted to the chunk) and only then trained on:
    `epochs` passes of SGD (momentum, grad clip) over all weights, lr cosine-decayed across chunks as
    lr * 0.5 (1 + cos(pi k / (chunks - 1))). The last chunk is never trained on. With the probe on, only
    the half-A part of a chunk is trained on; half-B chunks are scored, never trained."""

    name = "score_first"
    stage = "postquant"

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        t0 = _now(ctx.device)
        cfg, stream, T = self.cfg, ctx.stream, ctx.seq_len
        log = _Log(ctx.metrics_path, self.name)
        bounds = chunk_bounds(stream.n, cfg.chunk_tokens)
        scoring = split_at_chunks(make_windows(ctx.cfg.eval, T, 1, stream.n), cfg.chunk_tokens, len(bounds))
        last = len(bounds) - 1
        work = _work_model(model, cfg.compile)
        params = list(work.parameters())
        probe = _ChunkProbe(ctx, self.epochs) if cfg.probe else None
        step = trained = 0
        with _trainable(work, params), Progress(f"ttt {self.name}", len(bounds), "chunk") as bar:
            fwd = _forward_for_steps(work, cfg.compile)
            opt = torch.optim.SGD(params, lr=self.lr, momentum=cfg.momentum)
            for k, (lo, hi) in enumerate(bounds):
                _score(work, scoring[k], ctx)  # the chunk's scores are fixed here, before any update with it
                bar.update(1)
                train_hi = min(hi, ctx.split) if cfg.probe else hi
                if k == last or train_hi <= lo or self.epochs == 0:
                    continue
                lr = self.lr * _cosine(k, last)
                for group in opt.param_groups:
                    group["lr"] = lr
                batches = _batched(plain_windows(lo, train_hi, T), cfg.batch_seqs)
                if probe:
                    probe.measure(work, lo, train_hi, 0)
                for epoch in range(1, self.epochs + 1):
                    loss_sum = torch.zeros((), device=ctx.device)
                    with _mode(work, True):
                        for batch in batches:
                            x, y = stream.train_windows(batch)  # already scored: legal
                            loss_sum += _step(fwd, opt, params, x, y, ctx.device, cfg.grad_clip)
                            step += 1
                    if probe:
                        probe.measure(work, lo, train_hi, epoch)
                    bar.update(0, epoch=f"{epoch}/{self.epochs}")
                loss = float(loss_sum.item()) / len(batches)
                _check_finite(loss, self.name, f"on chunk {k}")
                trained += 1
                log.write(step, ttt_chunk=k, ttt_loss=loss, ttt_lr=lr)
        if work is not model:
            model.load_state_dict(work.state_dict())
        per_epoch = probe.points() if probe and trained else []
        for point in per_epoch:
            log.write(step, phase="ttt_probe", **point)
        info = self._info(t0, ctx, step, probe.seconds if probe else 0.0, chunks=len(bounds), trained_chunks=trained,
                          chunk_tokens=cfg.chunk_tokens, momentum=cfg.momentum, grad_clip=cfg.grad_clip)
        return TTTOutcome(epochs=self.epochs, per_epoch=per_epoch, scored=True, info=info)


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


class LoRAScoreFirst(Strategy):
    """Per-document LoRA TTT, score-first (#77; legal). For each document, chunk by chunk of
    doc_chunk_tokens: score the chunk, then `epochs` (default 1) Adam steps on rank-8 adapters with the
    chunk's loss. Adapters and Adam moments are reset at every document start, so no document sees
    another's adaptation. The last chunk of a document is not trained on (its adapters are discarded).
    With the probe on only half-A documents are adapted.

    Documents are processed one at a time: #77 batches 64 documents with per-document adapters, but the
    ledger requires scoring in stream order, which interleaved documents would break."""

    name = "lora_score_first"
    stage = "postquant"

    def run(self, model, ctx: TTTContext) -> TTTOutcome:
        t0 = _now(ctx.device)
        cfg, stream = self.cfg, ctx.stream
        meter = stream.meter
        start_state = (meter.nats, meter.bytes)
        half_a_state = None
        docs = documents(stream.doc_starts, stream.n)
        work = _work_model(model, cfg.compile)
        adapters = attach_lora(work, cfg.lora_rank, cfg.lora_targets, seed=ctx.cfg.seed)
        params = adapters.parameters()
        step = adapted_docs = 0
        try:
            with _trainable(work, params), Progress(f"ttt {self.name}", len(docs), "doc") as bar:
                fwd = _forward_for_steps(work, cfg.compile, dynamic=None)
                for doc_start, lo, hi in docs:
                    adapt = not cfg.probe or doc_start < ctx.split
                    if cfg.probe and not adapt and half_a_state is None:
                        half_a_state = (meter.nats, meter.bytes)
                    adapters.reset()
                    opt = torch.optim.Adam(params, lr=self.lr, betas=LORA_BETAS)  # fresh moments per document
                    chunks = [(c, min(c + cfg.doc_chunk_tokens, hi)) for c in range(lo, hi, cfg.doc_chunk_tokens)]
                    doc_loss = torch.zeros((), device=ctx.device)  # read back once per document, not per step
                    for j, (c_lo, c_hi) in enumerate(chunks):
                        windows = document_windows(doc_start, c_lo, c_hi, ctx.seq_len)
                        _score(work, windows, ctx)
                        if not adapt or j == len(chunks) - 1:
                            continue
                        with _mode(work, True):
                            for _ in range(self.epochs):
                                x, y = stream.train_windows(windows)  # the chunk just scored
                                doc_loss = doc_loss + _step(fwd, opt, params, x, y, ctx.device, 0.0)
                                step += 1
                    _check_finite(float(doc_loss), self.name, f"in the document at token {doc_start}")
                    adapted_docs += int(adapt and len(chunks) > 1)
                    bar.update(1)
        finally:
            adapters.remove()  # the model goes back to exactly its weights; only the scores remain
        info = self._info(t0, ctx, step, 0.0, documents=len(docs), adapted_documents=adapted_docs,
                          doc_chunk_tokens=cfg.doc_chunk_tokens, lora_rank=cfg.lora_rank, lora_targets=cfg.lora_targets)
        if half_a_state is not None:  # official bpb of the adapted documents vs the never-adapted ones
            a_nats, a_bytes = half_a_state[0] - start_state[0], half_a_state[1] - start_state[1]
            b_nats, b_bytes = meter.nats - half_a_state[0], meter.bytes - half_a_state[1]
            if a_bytes > 0 and b_bytes > 0:
                info["official_bpb_half_a"] = bits_per_byte(a_nats, a_bytes)
                info["official_bpb_half_b"] = bits_per_byte(b_nats, b_bytes)
        return TTTOutcome(epochs=self.epochs, scored=True, info=info)


STRATEGY_CLASSES: dict[str, type] = {
    "none": NoTTT,
    "prequant_val": PrequantVal,
    "lora_single_pass": LoRASinglePass,
    "train_slice": TrainSlice,
    "score_first": ScoreFirst,
    "lora_score_first": LoRAScoreFirst,
}


def get_strategy(ttt_cfg) -> object:
    """Instantiate the configured strategy; refuse declared-illegal ones without ttt.allow_illegal."""
    if ttt_cfg.strategy not in STRATEGY_CLASSES:
        raise GolfError(f"ttt.strategy {ttt_cfg.strategy!r} is unknown; valid: {', '.join(STRATEGY_CLASSES)}")
    cls = STRATEGY_CLASSES[ttt_cfg.strategy]
    if cls.declared_illegal and not ttt_cfg.allow_illegal:
        raise GolfError(f"ttt.strategy={ttt_cfg.strategy} trains on validation tokens before scoring them "
                        "(illegal in Parameter Golf); set ttt.allow_illegal=true to run it for study")
    return cls(ttt_cfg)
