"""Muon for the 2-D block matrices, Adam for the rest, and the learning-rate schedule.

Muon (Keller Jordan, 2024; the parameter-golf baseline) replaces each matrix's update with an approximately
orthogonal matrix of the same "direction": the momentum-smoothed gradient G is pushed towards U V^T (its
polar factor) by a few Newton-Schulz iterations. All singular values of the update end up near 1, so every
direction in weight space moves at the same rate, which trains transformers' hidden matrices faster than Adam.

Embeddings, the tied head and every vector/scalar (gains, mixes, skip weights) are not matrices in that
sense and go to Adam with their own learning rates, as in the baseline.
"""

from __future__ import annotations

import math

import torch

# Quintic Newton-Schulz coefficients of the baseline: chosen to maximise the slope at 0 so that 5 steps
# suffice, at the price of converging to singular values in roughly [0.7, 1.2] rather than exactly 1.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximate the polar factor U V^T of a 2-D matrix, returned in the iteration's dtype.

    dtype None: bf16 on GPU (the baseline's CUDA path), float32 on CPU. The baseline runs this in bf16
    everywhere; `dtype=torch.bfloat16` on CPU reproduces it bit for bit (tests/test_parity.py), which is
    why the order of operations below is the baseline's: normalise, then transpose, then iterate.
    """
    a, b, c = NS_COEFFS
    x = g.to(dtype or (torch.bfloat16 if g.is_cuda else torch.float32))
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1, inside the iteration's basin
    transposed = x.size(0) > x.size(1)
    if transposed:  # iterate on the wide orientation: X X^T is the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


class Muon(torch.optim.Optimizer):
    """SGD-momentum (Nesterov) whose update is orthogonalised by Newton-Schulz.

    Update: buf <- m*buf + g;  u = g + m*buf (Nesterov);  p <- p*(1 - lr*wd) - lr * sqrt(max(1, rows/cols)) * NS(u).
    The sqrt(rows/cols) factor keeps the per-element update size comparable for tall matrices (baseline).
    Weight decay is decoupled (applied to the weights, not the gradient), as in later records.
    """

    def __init__(self, params, lr: float = 0.04, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, weight_decay: float = 0.0, ns_dtype: torch.dtype | None = None):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay))
        self.ns_dtype = ns_dtype  # None: bf16 on GPU, float32 on CPU (see newton_schulz)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, m = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(m).add_(g)
                update = g.add(buf, alpha=m) if group["nesterov"] else buf
                update = newton_schulz(update, steps=group["ns_steps"], dtype=self.ns_dtype)
                # the shape factor is applied in the iteration's dtype (bf16 on GPU), as in the baseline
                update = (update * math.sqrt(max(1.0, p.size(0) / p.size(1)))).to(p.dtype)
                if group["weight_decay"]:
                    p.mul_(1.0 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr)


def build_optimizers(model, train_cfg) -> list[torch.optim.Optimizer]:
    """Muon on the block matrices, Adam on embeddings and scalars (each with its base LR in `base_lr`)."""
    groups = model.param_groups()
    matrices = [p for _, p in groups["matrix"]]
    embeds = [p for _, p in groups["embed"]]
    scalars = [p for _, p in groups["scalar"]]
    betas = (train_cfg.adam_beta1, train_cfg.adam_beta2)
    opts: list[torch.optim.Optimizer] = []
    if matrices:
        opts.append(Muon(matrices, lr=train_cfg.matrix_lr, momentum=train_cfg.muon_momentum,
                         ns_steps=train_cfg.muon_ns_steps, weight_decay=train_cfg.muon_weight_decay))
    adam_groups = []
    if embeds:
        adam_groups.append({"params": embeds, "lr": train_cfg.embed_lr})
    if scalars:
        adam_groups.append({"params": scalars, "lr": train_cfg.scalar_lr})
    if adam_groups:
        opts.append(torch.optim.Adam(adam_groups, betas=betas, eps=train_cfg.adam_eps))
    for opt in opts:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return opts


WARMDOWN_MODES = ("pg", "min")


def lr_scale(step: int, max_steps: int, warmdown_steps: int, elapsed_s: float = 0.0, wallclock_s: float = 0.0,
             mode: str = "pg") -> float:
    """Constant LR, then linear warmdown to 0 over the last `warmdown_steps` iterations.

    Without a wallclock budget the warmdown is by steps. With one, the end is not known in steps:
    - mode "pg" (the baseline's `lr_mul`): by time alone. The warmdown lasts warmdown_steps times the mean
      step time so far, and the scale is the remaining time over that; max_steps plays no part.
    - mode "min" (golf before issue 16): the earlier of the two, remaining steps = min(max_steps - step,
      remaining time / mean step time), so a run that reaches max_steps first still decays to 0.
    """
    if warmdown_steps <= 0:
        return 1.0
    if wallclock_s > 0 and mode == "pg":
        step_s = elapsed_s / max(step, 1)
        warmdown_s = warmdown_steps * step_s
        remaining_s = max(wallclock_s - elapsed_s, 0.0)
        return remaining_s / max(warmdown_s, 1e-12) if remaining_s <= warmdown_s else 1.0
    remaining = max_steps - step
    if wallclock_s > 0 and step > 0:
        step_s = elapsed_s / step
        remaining = min(remaining, (wallclock_s - elapsed_s) / max(step_s, 1e-9))
    return max(0.0, min(1.0, remaining / warmdown_steps))


def muon_momentum(step: int, cfg) -> float:
    """Linear momentum warm-up from `muon_momentum_start` to `muon_momentum` (baseline: 0.85 -> 0.95, 500 steps)."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * cfg.muon_momentum_start + frac * cfg.muon_momentum
