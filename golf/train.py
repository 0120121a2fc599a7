"""The trainer: one code path for CPU float32, CUDA bf16, a single process and torchrun/DDP.

    for step in range(max_steps):                 # or until the wallclock budget runs out
        lr scale  <- constant, then linear warmdown (by steps, or by elapsed wallclock: train.warmdown_mode)
        progress  -> model.set_progress(frac)      # depth recurrence switch, UT attention curriculum
        late QAT  -> on once the LR scale drops below train.qat_threshold
        grad_accum micro-batches (0: 8 // world, the baseline's): loss/accum, backward (DDP all-reduces on the last)
        Muon + Adam step, EMA update, metrics line

Compile warm-up (train.compile): `compile_warmup_steps` steps are run first to trigger compilation, then
weights, optimizer state and the data stream are reset to their initial state, and only then does the timed
budget start, as in the baseline. A non-finite loss stops the run at once with the step and the last finite
loss (raised as `TrainingDiverged`, which the run folder records).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from golf import qat
from golf.data.dataset import Dataset
from golf.device import Dist, autocast, pick_device
from golf.errors import GolfError
from golf.io import MetricsLog
from golf.optim import build_optimizers, lr_scale, muon_momentum
from golf.progress import Progress


class TrainingDiverged(GolfError):
    def __init__(self, step: int, loss: float, last_finite: float | None):
        super().__init__(f"training diverged: loss {loss} at step {step} (last finite loss {last_finite})")
        self.step, self.loss, self.last_finite = step, loss, last_finite


# ---------------------------------------------------------------------------------------------------------
# Data: a deterministic stream over the training shards
# ---------------------------------------------------------------------------------------------------------


class TokenStream:
    """Reads the training shards in order, wrapping around, exactly as the baseline's loader does.

    A step is world*accum micro-batches ("parts"), read one after another from the stream: each part is
    its own contiguous span of L + 1 tokens (L = its sequences x seq_len, +1 for the shifted targets), so
    the boundary token between two parts is read once and never predicted (the baseline's
    DistributedTokenLoader; tests/test_parity.py compares the two). Rank r's micro-batch m is part
    m*world + r, so 2 ranks x 1 micro-batch see exactly the tokens of 1 rank x 2 micro-batches (the DDP
    parity test relies on this).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        if not dataset.train_shards:
            raise GolfError(f"dataset {dataset.directory}: no training shards")
        self.shard = 0
        self.tokens = dataset.train_tokens(0)
        self.pos = 0

    def _take(self, n: int) -> np.ndarray:
        parts, need = [], n
        while need > 0:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                self.shard = (self.shard + 1) % len(self.dataset.train_shards)
                self.tokens, self.pos = self.dataset.train_tokens(self.shard), 0
                continue
            k = min(avail, need)
            parts.append(np.asarray(self.tokens[self.pos : self.pos + k]))
            self.pos += k
            need -= k
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def next_step(self, batch_tokens: int, seq_len: int, world: int, accum: int) -> np.ndarray:
        """All micro-batches of one step: (world*accum, B_micro, seq_len + 1) int64."""
        parts = world * accum
        per_part = batch_tokens // parts // seq_len  # sequences per micro-batch
        if per_part < 1:
            raise GolfError(f"train.batch_tokens={batch_tokens} is too small for {parts} micro-batches of seq_len {seq_len}")
        span = per_part * seq_len + 1  # one part's tokens: inputs plus the last target
        spans = self._take(parts * span).astype(np.int64).reshape(parts, span)
        # overlapping windows of seq_len+1 within a part so that every position has its next-token target
        starts = np.arange(per_part) * seq_len
        return np.stack([spans[:, s : s + seq_len + 1] for s in starts], axis=1)  # (parts, per_part, T+1)


# ---------------------------------------------------------------------------------------------------------
# EMA of weights
# ---------------------------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of the parameters (records: decay 0.997 / 0.9965; seed #1127 0.9985)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v.to(state[k].dtype))


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    steps: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    final_train_loss: float | None
    compile_warmup_s: float
    curve: list[dict] = field(default_factory=list)  # the learning curve (train.val_every), in step order


def micro_batches(train_cfg, world: int) -> int:
    """Micro-batches per step and rank: train.grad_accum, or for 0 the baseline's 8 // world size."""
    if train_cfg.grad_accum:
        return train_cfg.grad_accum
    if 8 % world:
        raise GolfError(f"train.grad_accum=0 means 8 // world size, but world size {world} does not divide 8; "
                        "set train.grad_accum explicitly")
    return 8 // world


def apply_param_dtypes(model: torch.nn.Module, device: torch.device, train_cfg) -> None:
    """The baseline's parameter dtypes: on CUDA its token embedding (the tied head too) is a bf16 parameter.

    train_gpt.py casts the whole model to bf16, then puts the linear layers and every small or control
    tensor back to float32; of golf's baseline tensors only `tok_emb.weight` stays bf16, and Adam then
    updates it in bf16. CPU runs keep float32 (no bf16 autocast there). Changed in place (`.data`), so the
    Parameter, and any optimizer holding it, stays the same object.
    """
    if device.type == "cuda" and train_cfg.bf16_embedding:
        emb = model.tok_emb.weight
        emb.data = emb.data.to(torch.bfloat16)


def train(model: torch.nn.Module, dataset: Dataset, cfg, metrics_path: Path | None = None,
          device: torch.device | None = None, dist_info: Dist | None = None,
          curve: Callable[[torch.nn.Module], dict] | None = None) -> TrainResult:
    """Train `model` in place under `cfg` (a RunConfig: its train, model and, for QAT, quant sections).
    The EMA weights, if any, are copied in at the end.

    With `curve` (a no-gradient scoring of held-out tokens, {"val_loss", "val_bpb"}) and train.val_every > 0,
    the main rank scores the live model before the first step, every val_every steps and after the last: a
    metrics line of phase "val" each, and TrainResult.curve. Its time is left out of the wallclock budget
    and of wall_s, as the reference leaves out its validation passes; with several ranks and a time budget
    all ranks run on the main rank's clock (broadcast each step), so the curve cannot split their schedules."""
    tc = cfg.train
    device = device or pick_device(tc.device)
    d = dist_info or Dist()
    model.to(device)
    apply_param_dtypes(model, device, tc)
    accum = micro_batches(tc, d.world)
    switches = qat.attach(model, cfg.quant) if tc.qat_threshold > 0 else []
    opts = build_optimizers(model, tc)
    ddp_model = model
    if d.world > 1:
        # U-Net skip weights of a recurrent stack get no gradient until recurrence switches on
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.model.recur_start is not None)
    fwd = torch.compile(ddp_model, backend=tc.compile_backend) if tc.compile else ddp_model
    writer = MetricsLog(metrics_path if d.main else None, "train")

    def run_step(stream: TokenStream, step: int, elapsed_s: float) -> tuple[float, float]:
        scale = lr_scale(step, tc.max_steps, tc.warmdown_steps, elapsed_s, tc.wallclock_s, tc.warmdown_mode)
        for opt in opts:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
                if "momentum" in group:
                    group["momentum"] = muon_momentum(step, tc)
        frac = elapsed_s / tc.wallclock_s if tc.wallclock_s > 0 else step / max(tc.max_steps, 1)
        model.set_progress(min(frac, 1.0))
        if switches:
            qat.set_enabled(switches, scale < tc.qat_threshold)
        batches = torch.from_numpy(stream.next_step(tc.batch_tokens, tc.seq_len, d.world, accum))
        total = torch.zeros((), device=device)
        for m in range(accum):
            micro = batches[m * d.world + d.rank].to(device, non_blocking=True)
            x, y = micro[:, :-1], micro[:, 1:]
            sync = m == accum - 1
            ctx = ddp_model.no_sync() if (d.world > 1 and not sync) else nullcontext()
            with ctx, autocast(device):
                loss = fwd(x, y) / accum
            loss.backward()
            total += loss.detach()
        if d.world > 1:
            dist.all_reduce(total, op=dist.ReduceOp.AVG)
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        return float(total.item()), scale

    # Compile warm-up, outside the timed budget; then everything back to its initial state.
    warm_t0 = time.perf_counter()
    if tc.compile and tc.compile_warmup_steps > 0:
        initial_model = copy.deepcopy(model.state_dict())
        initial_opts = [copy.deepcopy(o.state_dict()) for o in opts]
        stream = TokenStream(dataset)
        for i in range(tc.compile_warmup_steps):
            run_step(stream, i, 0.0)
        model.load_state_dict(initial_model)
        for o, s in zip(opts, initial_opts):
            o.load_state_dict(s)
        model.set_progress(0.0)
    compile_warmup_s = time.perf_counter() - warm_t0

    ema = EMA(model, tc.ema_decay) if tc.ema_decay > 0 else None
    stream = TokenStream(dataset)
    step_tokens = (tc.batch_tokens // (d.world * accum) // tc.seq_len) * tc.seq_len * d.world * accum
    last_finite: float | None = None
    loss_value: float | None = None
    t0 = time.perf_counter()
    step = 0
    bar = Progress("train", total=tc.max_steps, unit="step") if d.main else None
    points: list[dict] = []
    measure = curve if (curve is not None and tc.val_every > 0 and d.main) else None

    def score_curve() -> float:
        """One learning-curve point; returns the seconds it took (kept out of the training clock)."""
        if device.type == "cuda":
            torch.cuda.synchronize()  # the step before is the training clock's, not the curve's
        t_val = time.perf_counter()
        point = {"step": step, "tokens": step * step_tokens, **measure(model)}
        points.append(point)
        writer.write(step, phase="val", tokens=point["tokens"], val_loss=point["val_loss"], val_bpb=point["val_bpb"])
        return time.perf_counter() - t_val

    # With a time budget on several ranks, every rank follows the main rank's clock: one LR schedule, one
    # recurrence and QAT switch-on, one stop (each rank's own clock differs, the more so while the main rank
    # alone scores a learning-curve point).
    shared_clock = d.world > 1 and tc.wallclock_s > 0
    try:
        if measure is not None:
            t0 += score_curve()
        while step < tc.max_steps:
            elapsed = time.perf_counter() - t0
            if shared_clock:
                clock = torch.tensor([elapsed], dtype=torch.float64, device=device)
                dist.broadcast(clock, src=0)
                elapsed = float(clock.item())
            if tc.wallclock_s > 0 and elapsed >= tc.wallclock_s:
                break
            t_step = time.perf_counter()
            loss_value, scale = run_step(stream, step, elapsed)
            if not math.isfinite(loss_value):
                writer.write(step, train_loss=None, diverged=True, last_finite_loss=last_finite)
                raise TrainingDiverged(step, loss_value, last_finite)
            last_finite = loss_value
            if ema is not None:
                ema.update(model)
            step += 1
            if bar is not None:  # the loss read-back above already synchronised the step
                bar.update(1, loss=f"{loss_value:.4f}", tok_s=f"{step_tokens / max(time.perf_counter() - t_step, 1e-9):,.0f}")
            if step % tc.log_every == 0 or step == tc.max_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t_step
                writer.write(step, train_loss=loss_value, lr_scale=scale, step_ms=dt * 1e3,
                             tokens_per_s=step_tokens / max(dt, 1e-9), elapsed_s=time.perf_counter() - t0,
                             qat=bool(switches and switches[0].enabled.item() > 0))
            if measure is not None and step % tc.val_every == 0:
                t0 += score_curve()
    finally:
        if bar is not None:
            bar.close()
    if measure is not None and step % tc.val_every != 0:  # the last point, off the grid of every val_every steps
        t0 += score_curve()
    wall_s = time.perf_counter() - t0
    if ema is not None:
        ema.copy_to(model)
    qat.detach(model)
    return TrainResult(step, step * step_tokens, wall_s, step * step_tokens / max(wall_s, 1e-9), loss_value,
                       compile_warmup_s, points)
