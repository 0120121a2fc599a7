"""Full GPTQ: round columns one at a time and push each rounding error onto the columns not yet rounded.

For a linear layer y = x W^T, the loss increase from replacing W by Wq is, to second order, proportional
to tr((W - Wq) H (W - Wq)^T) with H = X^T X, the Gram matrix of the layer's inputs over calibration data
(Frantar et al., 2022, "GPTQ"). Rounding-to-nearest ignores H; GPTQ quantizes column j, then adjusts the
remaining columns of the same rows so that, through the correlations in H, they compensate the error
just made. With strongly correlated inputs (every real network) this is much better than plain rounding
at the same bits and the same per-row grid.

The procedure, as used by parameter-golf records (and in the paper):
1. H = X^T X accumulated in float64 by forward hooks (`collect_hessians`).
2. Dead inputs (zero diagonal) get H_jj = 1 and W[:, j] = 0. Damping: H += 0.01 * mean(diag H) * I,
   which keeps the inverse well conditioned (retried x10, x100 if Cholesky still fails).
3. Act-order: columns sorted by descending H_jj, so the most "important" inputs are rounded first, while
   many columns remain to absorb their error.
4. U = upper Cholesky factor of H^-1; the update for column j uses row j of U (the paper's trick that
   replaces repeated inverse updates).
5. Work in blocks of 128 columns: errors are propagated inside the block column by column, and to the
   columns after the block with one matrix product (the "lazy batch" update).
The per-row grid (fp16 scales) is fixed before the sweep (rowmax, GPTQ-lite's clip search, or SDClip);
only the symbols are chosen by GPTQ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from golf.errors import GolfError
from golf.progress import Progress
from golf.quant.rowwise import qrange


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    scales16: torch.Tensor,
    bits: int,
    block: int = 128,
    damp: float = 0.01,
    name: str = "tensor",
) -> torch.Tensor:
    """GPTQ symbols for w (rows, cols) on the fixed grid `scales16` (rows,) fp16; H is (cols, cols).

    Returns int8 symbols (rows, cols) in the original column order. Runs on CPU, on one thread.
    """
    with _one_cpu_thread():
        return _gptq_sweep(w.detach().cpu(), hessian.detach().cpu(), scales16.cpu(), bits, block, damp, name)


def _gptq_sweep(
    w: torch.Tensor,
    hessian: torch.Tensor,
    scales16: torch.Tensor,
    bits: int,
    block: int,
    damp: float,
    name: str,
) -> torch.Tensor:
    qmin, qmax = qrange(bits)
    rows, cols = w.shape
    if tuple(hessian.shape) != (cols, cols):
        raise GolfError(f"{name}: Hessian shape {tuple(hessian.shape)} does not match ({cols}, {cols})")
    W = w.detach().float().clone()  # (rows, cols), updated in place as errors are propagated
    H = hessian.detach().to(torch.float64).clone()  # (cols, cols)
    if not torch.isfinite(H).all():
        raise GolfError(f"{name}: Hessian contains inf/nan (calibration activations diverged)")

    # inputs that were always zero carry no information: fix their H entry, zero their weights
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    # act-order: most active input columns first. The sweep works on W transposed, (cols, rows), so
    # that "column j" is a contiguous row in memory (2x faster on CPU than strided column views).
    perm = torch.argsort(torch.diagonal(H), descending=True)
    inv_perm = torch.argsort(perm)
    WT = W[:, perm].T.contiguous()  # (cols, rows)
    H = H[perm][:, perm]

    U = _inverse_cholesky_upper(H, damp, name).float()  # (cols, cols) upper-triangular factor of H^-1
    s = scales16.float()  # (rows,)
    QT = torch.zeros(cols, rows, dtype=torch.int8)

    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = WT[i1:i2].clone()  # (b, rows) the block being rounded
        E1 = torch.zeros_like(W1)  # (b, rows) scaled errors, for the update after the block
        U1 = U[i1:i2, i1:i2]  # (b, b)
        for j in range(i2 - i1):
            col = W1[j]  # (rows,)
            q = torch.clamp(torch.round(col / s), qmin, qmax)  # (rows,) symbols for this column
            QT[i1 + j] = q.to(torch.int8)
            err = (col - q * s) / U1[j, j]  # (rows,) error in the metric of H^-1
            # compensate with the not-yet-rounded columns of this block (rank-1 update)
            W1[j:] -= U1[j, j:].unsqueeze(1) * err.unsqueeze(0)
            E1[j] = err
        # lazy batch update: the whole block's errors hit the columns after it at once
        WT[i2:] -= U[i1:i2, i2:].T @ E1
    return QT.T[:, inv_perm].contiguous()


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Run torch CPU ops on one thread, restoring the caller's setting afterwards.

    GPTQ is a long chain of small ops (about ten per column). On a busy CPU, OpenMP worker threads spin
    at every one of them: measured on 2 shared cores, a 1024x512 matrix took 1.1 s with 2 threads
    (0.86 s of it in a 512x512 cholesky_inverse) and 0.07 s with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _inverse_cholesky_upper(H: torch.Tensor, damp: float, name: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + d*I)^-1 in float64, raising the damping if H is not positive definite."""
    mean_diag = torch.diagonal(H).mean()
    eye = torch.eye(H.shape[0], dtype=H.dtype)
    for factor in (1.0, 10.0, 100.0):
        Hd = H + (damp * factor) * mean_diag * eye
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)  # (cols, cols) = Hd^-1
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return U
    raise GolfError(
        f"{name}: Hessian is not positive definite even with 100x damping; check calibration data"
    )


def hessian_weighted_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr((W - Wq) H (W - Wq)^T): the second-order loss proxy GPTQ minimises (float64)."""
    E = w.double() - w_hat.double()  # (rows, cols)
    return float(torch.einsum("ri,ij,rj->", E, hessian.double(), E))


def _batch_tokens(batch: Any) -> int:
    """Tokens in one calibration batch: numel of an integer tensor, rows of a float (..., C) tensor."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point():
            return int(batch.shape[:-1].numel()) if batch.dim() > 1 else 1
        return int(batch.numel())
    return 0


def collect_hessians(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[nn.Module, Any], Any] | None = None,
    max_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """H = X^T X / n of the inputs of every nn.Linear, keyed by its state_dict name `<module>.weight`.

    Calibration data must come from TRAINING tokens: the caller guarantees it. Feeding validation tokens
    here would let the artifact depend on the data it is scored on.

    `forward(model, batch)` runs one batch (default: `model(batch)`); outputs are discarded. Sums are
    accumulated in float64 on the activations' device and returned on CPU in float64, divided by the
    number of input rows seen (the scale of H does not change GPTQ, but keeps magnitudes comparable).
    A module called several times per forward (weight sharing, depth recurrence) accumulates every call.
    `max_tokens` stops after that many tokens (see `_batch_tokens`).
    """
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GolfError("collect_hessians: the model has no nn.Linear modules to calibrate")
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}

    def make_hook(key: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            x = inputs[0].detach()
            x = x.reshape(-1, x.shape[-1]).to(torch.float64)  # (N, in)
            if key not in sums:
                sums[key] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
                rows[key] = 0
            sums[key].addmm_(x.T, x)  # += X^T X
            rows[key] += x.shape[0]

        return hook

    handles = [
        m.register_forward_hook(make_hook(f"{name}.weight" if name else "weight")) for name, m in linears
    ]
    was_training = model.training
    model.eval()
    tokens_seen = 0
    try:
        with torch.no_grad(), Progress("gptq calibration", getattr(batches, "__len__", lambda: None)(), "batch") as bar:
            for batch in batches:
                if forward is None:
                    model(batch)
                else:
                    forward(model, batch)
                tokens_seen += _batch_tokens(batch)
                bar.update(1)
                if max_tokens is not None and tokens_seen >= max_tokens:
                    break
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not sums:
        raise GolfError("collect_hessians: no calibration batch reached any nn.Linear (empty batches?)")
    return {key: (sums[key] / max(rows[key], 1)).cpu() for key in sums}
