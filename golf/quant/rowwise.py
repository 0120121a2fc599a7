"""Per-row round-to-nearest quantizers: the baseline's int8, plain intN, GPTQ-lite and SDClip.

All four share one grid: row r of a weight matrix W (rows, cols) is stored as int8 symbols q[r, :] and
one fp16 scale s[r], and read back as q * s. They differ only in how s is chosen:

- `int8` (the parameter-golf baseline, exactly): clip |w| at the 99.99984th percentile of its row,
  s = max(clip/127, 1/127). The percentile drops the one or two most extreme weights of a 512-wide row,
  which buys resolution for all the others; the floor puts every row whose clip is below 1.0 on the same
  absolute grid of 1/127, which is what keeps the baseline's artifact small for small weights (on
  freshly initialised baseline weights, where every row is below the floor, dropping it doubles the
  int8+zlib bytes). The symbols are rounded with the float32 s and s is *stored* rounded to the nearest
  fp16, so q * s_fp16 is off from q * s by up to half an fp16 ulp (2^-11 relative), as in the baseline.
- `int8_stored_scale`: the same clip and floor, but rounded with the fp16 scale that is stored (rounded
  up, as below), so the reader reconstructs exactly the grid the rounding used. Not the baseline.
- `intN` (int6 / int5 / int4, as in late-QAT records): s = rowmax/qmax with qmax = 2^(N-1)-1, symbols
  clamped to [-(qmax+1), qmax] (int6: [-32, 31]). Nothing is clipped.
- `gptq_lite` (records' "GPTQ-lite"): per row, try clip percentiles {0.999, 0.9995, 0.9999, 0.99999, 1.0}
  and keep whichever gives the lowest squared reconstruction error for that row.
- `sdclip` (records' SDClip): clip = k * std(row), s = clip/qmax; k = 12.85 for int6, 20 for int8
  embeddings. For near-Gaussian rows k*std is far beyond the row max, so most symbols sit near zero: the
  grid is coarser than rowmax's, which costs reconstruction error but lowers the symbols' entropy, and
  so the compressed size. That trade is the point of the method; it is not "clipping outliers".

Scales are stored in fp16. Except for `int8` (which follows the baseline), the symbols are computed from
the fp16 value actually stored (rounded *up* to the next fp16 when rounding to nearest would shrink it),
so every element with |w| <= qmax*s is reproduced within s/2 and the reader needs nothing but q and s.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from golf.errors import GolfError

# The baseline's clip percentile for int8 (train_gpt.py: 99.99984th percentile of |w| per row).
INT8_CLIP_QUANTILE = 0.9999984
# The baseline's smallest int8 scale: rows whose clip is below 1.0 share the grid k/127.
INT8_MIN_SCALE = 1.0 / 127.0
# GPTQ-lite's candidate clip percentiles (as quantiles of |w| within the row).
GPTQ_LITE_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
# SDClip's published k (clip = k * std(row)): 12.85 for int6 matrices, 20 for int8 embeddings.
SDCLIP_DEFAULT_K = {6: 12.85, 8: 20.0}


class RowQuant(NamedTuple):
    """Result of quantizing one matrix: symbols, per-row scales, and what made them."""

    q: torch.Tensor  # (rows, cols) int8
    scales: torch.Tensor  # (rows,) fp16
    method: str  # the quantizer actually used (may differ from the request after a fallback)
    bits: int


def qrange(bits: int) -> tuple[int, int]:
    """Symmetric grid for `bits`: (qmin, qmax) = (-(2^(b-1)), 2^(b-1) - 1); int6 -> (-32, 31)."""
    if not 2 <= bits <= 8:
        raise GolfError(f"quant bits={bits} is not supported; use 2..8 (symbols live in int8 containers)")
    qmax = 2 ** (bits - 1) - 1
    return -(qmax + 1), qmax


def fp16_scales(scale: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Float32 scales (rows,) -> fp16, never smaller than the input, never zero.

    Rounding up keeps qmax * s >= the intended clip, so no element inside the clip gets clamped by
    the rounding. A zero scale (an all-zero row, e.g. a zero-initialised output projection) becomes 1:
    its symbols are all 0 whatever the scale. `check=False` skips the two range checks, which read the
    values back to the host: QAT (golf/qat.py) rounds onto this grid at every training step, where a
    host sync per layer would cost time and a non-finite weight shows up as a non-finite loss anyway.
    """
    scale = scale.float()
    if check and not torch.isfinite(scale).all():
        raise GolfError("quantization scale is not finite: the weights contain inf/nan")
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    # smallest positive fp16 (a subnormal) is 2^-24; fp16 overflows above 65504
    scale = scale.clamp(min=2.0**-24)
    if check and (scale > 65504).any():
        raise GolfError("quantization scale exceeds the fp16 range (|w| > 65504*qmax): weights diverged")
    s16 = scale.to(torch.float16)
    low = s16.float() < scale
    # for positive finite fp16 values the bit pattern is monotone: +1 is the next larger value
    bumped = (s16.view(torch.int16) + 1).view(torch.float16)
    return torch.where(low, bumped, s16)


def round_rows(w: torch.Tensor, scales16: torch.Tensor, bits: int) -> torch.Tensor:
    """Round-to-nearest onto the grid: w (rows, cols) float32, scales (rows,) fp16 -> int8 symbols."""
    qmin, qmax = qrange(bits)
    s = scales16.float().unsqueeze(1)  # (rows, 1)
    return torch.clamp(torch.round(w / s), qmin, qmax).to(torch.int8)


def dequantize_rows(q: torch.Tensor, scales16: torch.Tensor) -> torch.Tensor:
    """Symbols (rows, cols) int8 and fp16 scales (rows,) -> float32 weights (rows, cols)."""
    return q.float() * scales16.float().unsqueeze(1)


def row_quantiles(abs_w: torch.Tensor, quantiles: tuple[float, ...]) -> list[torch.Tensor]:
    """Per-row quantiles of |w| (rows, cols), bit-identical to torch.quantile(abs_w, q, dim=1).

    Only the top of each row matters for clip percentiles (0.999 of a 1024-wide row is the 3rd largest
    value), so a small topk replaces a full sort: several times faster on the baseline's matrices, and
    no size limit (torch.quantile refuses inputs above 2^24 elements, an sp8192 embedding is larger).
    Bit-identical because the int8 clip must be the baseline's to the last bit: the rank is placed in
    the input's float dtype, q * (n - 1), and the two neighbours are blended with torch.lerp, as
    torch.quantile does (tests/test_quant.py compares them).
    """
    n = abs_w.shape[1]
    ranks = [torch.tensor(quantile, dtype=abs_w.dtype) * (n - 1) for quantile in quantiles]
    lowest = min(int(r.floor()) for r in ranks)  # smallest ascending rank any quantile needs
    top = abs_w.topk(n - lowest, dim=1).values  # (rows, k) descending: column j is ascending rank n-1-j
    out = []
    for rank in ranks:
        lo, hi = int(rank.floor()), int(rank.ceil())
        below, above = top[:, n - 1 - lo], top[:, n - 1 - hi]
        out.append(torch.lerp(below, above, (rank - lo).expand_as(below)))
    return out


# ---------------------------------------------------------------------------------------------------------
# The quantizers (each: w (rows, cols) float32 -> RowQuant)
# ---------------------------------------------------------------------------------------------------------


def int8_clip_scales(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline's int8 grid of each row: (clip, float32 scale = max(clip/127, 1/127)), both (rows,)."""
    (clip,) = row_quantiles(w.abs(), (INT8_CLIP_QUANTILE,))
    return clip, (clip / 127.0).clamp_min(INT8_MIN_SCALE)


def quantize_int8_baseline(w: torch.Tensor) -> RowQuant:
    """The baseline's int8, symbol for symbol: clip, round with the float32 scale, store it as nearest fp16.

    Symbols stay in [-127, 127] (the clip keeps |w/s| <= 127); -128 is never used, as in the baseline.
    """
    clip, scale = int8_clip_scales(w)
    clipped = torch.clamp(w, -clip[:, None], clip[:, None])
    q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8)
    return RowQuant(q, scale.to(torch.float16), "int8", 8)


def quantize_int8_stored_scale(w: torch.Tensor, check: bool = True) -> RowQuant:
    """int8 with the baseline's clip and floor, rounded with the fp16 scale it stores (rounded up)."""
    clip, scale = int8_clip_scales(w)
    scales16 = fp16_scales(scale, check)
    clipped = torch.clamp(w, -clip[:, None], clip[:, None])
    q = torch.clamp(torch.round(clipped / scales16.float()[:, None]), -127, 127).to(torch.int8)
    return RowQuant(q, scales16, "int8_stored_scale", 8)


def quantize_rowmax(w: torch.Tensor, bits: int, check: bool = True) -> RowQuant:
    """Plain per-row intN: s = max|w| / qmax, no clipping."""
    _, qmax = qrange(bits)
    scales = fp16_scales(w.abs().amax(dim=1) / qmax, check)
    return RowQuant(round_rows(w, scales, bits), scales, f"int{bits}", bits)


def search_clip_scales(w: torch.Tensor, bits: int, check: bool = True) -> torch.Tensor:
    """GPTQ-lite's scale search: per row, the candidate clip percentile with the lowest squared error.

    Returns fp16 scales (rows,). Also used by full GPTQ to pick its (fixed) per-row grid.
    """
    _, qmax = qrange(bits)
    clips = row_quantiles(w.abs(), GPTQ_LITE_QUANTILES)  # one (rows,) tensor per candidate
    best_err = None
    best_scales = None
    for clip in clips:
        scales = fp16_scales(clip / qmax, check)  # (rows,)
        recon = dequantize_rows(round_rows(w, scales, bits), scales)
        err = (w - recon).pow(2).sum(dim=1)  # (rows,) squared error of this candidate
        if best_err is None:
            best_err, best_scales = err, scales
        else:
            better = err < best_err  # strict: ties keep the earlier (tighter) clip
            best_err = torch.where(better, err, best_err)
            best_scales = torch.where(better, scales, best_scales)
    assert best_scales is not None
    return best_scales


def quantize_gptq_lite(w: torch.Tensor, bits: int, check: bool = True) -> RowQuant:
    """GPTQ-lite: round-to-nearest with a per-row clip chosen from five percentiles."""
    scales = search_clip_scales(w, bits, check)
    return RowQuant(round_rows(w, scales, bits), scales, "gptq_lite", bits)


def sdclip_scales(w: torch.Tensor, bits: int, k: float, check: bool = True) -> torch.Tensor:
    """SDClip's grid: clip = k * std(row), s = clip / qmax (fp16, rounded up)."""
    _, qmax = qrange(bits)
    std = w.std(dim=1, correction=0) if w.shape[1] > 1 else w.abs().squeeze(1)  # (rows,)
    return fp16_scales(k * std / qmax, check)


def quantize_sdclip(w: torch.Tensor, bits: int, k: float, check: bool = True) -> RowQuant:
    """SDClip: round-to-nearest on the k*std(row) grid; elements beyond the clip are clamped."""
    scales = sdclip_scales(w, bits, k, check)
    return RowQuant(round_rows(w, scales, bits), scales, "sdclip", bits)


def default_sdclip_k(bits: int) -> float:
    """The published k for `bits`, or a GolfError saying to set `quant.sdclip_k` explicitly."""
    if bits not in SDCLIP_DEFAULT_K:
        raise GolfError(
            f"quant.sdclip_k: no published SDClip k for int{bits} (known: int6 12.85, int8 20); "
            "set quant.sdclip_k explicitly"
        )
    return SDCLIP_DEFAULT_K[bits]
