"""Post-training quantization of any state_dict: the config, the registry, and the two entry points.

`quantize_state_dict(state_dict, cfg, hessians)` turns a dict of tensors into a `QuantizedState`;
`dequantize_state(qs)` turns it back into float32 tensors ready for `load_state_dict`. Nothing here
knows about golf's model: tensors are routed by name, shape and dtype only, so any `nn.Module` works.

Which tensors are quantized (the baseline's rules, made explicit):
1. Non-float tensors (integer buffers) are stored bit-exactly ("raw").
2. Float tensors with at most `keep_fp16_max_numel` elements (65,536, as in the baseline) are kept in
   float: fp32 when they are "control" parameters, fp16 otherwise. Control = fewer than 2 dims (gains,
   scales, norms, biases: every vector) or a name containing one of `CONTROL_PATTERNS` (resid_mix,
   skip_weights, q_gain, attn_scale, ... are 2-D in the baseline but still control knobs). They are a
   few kilobytes in total and the model is very sensitive to them.
3. Larger float 1-D tensors are kept fp16 (none exist in golf's models; quantizing a lone vector with
   one scale would be a poor trade).
4. Everything else (2-D and up) is quantized per row by the configured method, rows = shape[0].
Tied weights appear under two names in `state_dict()`; the second is stored as an alias, not twice.

Methods (`QUANTIZERS`, name -> callable(name, w2d, bits, cfg, hessian) -> RowQuant): the baseline's
`int8` (symbol for symbol; tests/test_parity.py checks it against train_gpt.py); `int8_stored_scale` (its
clip and floor, rounded with the stored fp16 scale); `int4`..`int7` (rowmax grids); `gptq_lite`; `gptq` (needs Hessians from `collect_hessians`;
a tensor without one falls back to gptq_lite, recorded in `QuantizedState.notes`); `sdclip`; and
`mixed`, which picks a method and bit width per tensor class (attn / mlp / embed / other) from
`QuantConfig.mixed`, e.g. {"attn": "gptq:6", "mlp": "gptq:5", "embed": "sdclip:8"}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from golf.compress import COMPRESSORS
from golf.errors import GolfError
from golf.progress import Progress
from golf.quant.gptq import _one_cpu_thread, collect_hessians, gptq_quantize, hessian_weighted_error
from golf.quant.rowwise import (
    RowQuant,
    default_sdclip_k,
    dequantize_rows,
    fp16_scales,
    qrange,
    quantize_gptq_lite,
    quantize_int8_baseline,
    quantize_int8_stored_scale,
    quantize_rowmax,
    quantize_sdclip,
    round_rows,
    sdclip_scales,
    search_clip_scales,
)
from golf.quant.state import DTYPES, QuantizedState, TensorRecord, dtype_name

__all__ = [
    "QUANTIZERS",
    "TENSOR_CLASSES",
    "QuantConfig",
    "QuantizedState",
    "TensorRecord",
    "classify_param",
    "collect_hessians",
    "dequantize_state",
    "hessian_weighted_error",
    "qat_round_trip",
    "quantize_state_dict",
]

# Tensor classes for `mixed`; a class missing from the mapping uses MIXED_DEFAULT.
TENSOR_CLASSES = ("attn", "mlp", "embed", "other")
MIXED_DEFAULT = "int8"
# Small tensors whose names contain one of these are kept fp32 (the baseline's control tensors).
CONTROL_PATTERNS = ("scale", "gain", "mix", "skip", "gate", "lambda")
# Grid choices for full GPTQ's fixed per-row scales.
GPTQ_SCALES = ("rowmax", "search", "sdclip")
# Methods whose bit width is fixed by their name.
_FIXED_BITS = {"int8": 8, "int8_stored_scale": 8, "int7": 7, "int6": 6, "int5": 5, "int4": 4}
# Methods that take `bits` (default 6, the records' width for matrices).
_FREE_BITS = ("gptq", "gptq_lite", "sdclip")
_DEFAULT_FREE_BITS = 6


@dataclass
class QuantConfig:
    """How to quantize and compress the artifact. Validated on construction."""

    method: str = "int8"  # a QUANTIZERS name; "int8" is the baseline
    bits: int | None = None  # width for gptq / gptq_lite / sdclip (default 6); implied by intN names
    mixed: dict[str, str] | None = None  # method="mixed": class -> "method" or "method:bits"
    compressor: str = "zlib"  # zlib-9 (baseline) | zstd-22 | lzma-9e | brotli-11
    shuffle: bool = False  # byte-shuffle fp16/fp32 buffers before compression (records: 2-byte shuffle)
    gptq_block: int = 128  # GPTQ lazy-batch block width (columns)
    gptq_damp: float = 0.01  # GPTQ damping, as a fraction of mean(diag H)
    gptq_scales: str = "search"  # GPTQ's fixed grid: "rowmax" | "search" (gptq_lite's clip) | "sdclip"
    sdclip_k: float | None = None  # SDClip k (clip = k*std(row)); None: 12.85 for int6, 20 for int8
    calib_tokens: int = 131_072  # training tokens the caller feeds collect_hessians (128 x 1024)
    keep_fp16_max_numel: int = 65_536  # float tensors this small are kept in float, not quantized

    def __post_init__(self) -> None:
        if self.method not in QUANTIZERS:
            raise GolfError(f"quant.method={self.method!r} is unknown; choose one of {sorted(QUANTIZERS)}")
        if self.method in _FIXED_BITS:
            implied = _FIXED_BITS[self.method]
            if self.bits not in (None, implied):
                raise GolfError(f"quant.bits={self.bits} contradicts quant.method={self.method}; drop bits")
            self.bits = implied
        elif self.method in _FREE_BITS:
            self.bits = _DEFAULT_FREE_BITS if self.bits is None else int(self.bits)
            qrange(self.bits)  # raises GolfError outside 2..8
        elif self.bits is not None:  # mixed
            raise GolfError("quant.bits is not used with method=mixed; put bits in quant.mixed values")
        if self.method == "mixed":
            if not self.mixed:
                raise GolfError(
                    'quant.mixed is required with method=mixed, e.g. {"attn": "int6", "mlp": "int5"}'
                )
            self.mixed = {str(k): str(v) for k, v in dict(self.mixed).items()}
            for cls, spec in self.mixed.items():
                if cls not in TENSOR_CLASSES:
                    raise GolfError(
                        f"quant.mixed key {cls!r} is not a tensor class; use {list(TENSOR_CLASSES)}"
                    )
                _parse_method_spec(spec, f"quant.mixed.{cls}")
        elif self.mixed:
            raise GolfError("quant.mixed is only used with method=mixed; set method=mixed or drop mixed")
        if self.compressor not in COMPRESSORS:
            raise GolfError(
                f"quant.compressor={self.compressor!r} is unknown; choose one of {sorted(COMPRESSORS)}"
            )
        if not isinstance(self.shuffle, bool):
            raise GolfError(f"quant.shuffle must be true or false, got {self.shuffle!r}")
        if int(self.gptq_block) < 1:
            raise GolfError(f"quant.gptq_block={self.gptq_block} must be a positive number of columns (128)")
        if not 0 < float(self.gptq_damp) < 1:
            raise GolfError(f"quant.gptq_damp={self.gptq_damp} must be in (0, 1); the usual value is 0.01")
        if self.gptq_scales not in GPTQ_SCALES:
            raise GolfError(
                f"quant.gptq_scales={self.gptq_scales!r} is unknown; choose one of {list(GPTQ_SCALES)}"
            )
        if self.sdclip_k is not None and not float(self.sdclip_k) > 0:
            raise GolfError(f"quant.sdclip_k={self.sdclip_k} must be positive (12.85 for int6, 20 for int8)")
        if int(self.calib_tokens) < 1:
            raise GolfError(f"quant.calib_tokens={self.calib_tokens} must be a positive token count")
        if int(self.keep_fp16_max_numel) < 0:
            raise GolfError(
                f"quant.keep_fp16_max_numel={self.keep_fp16_max_numel} must be >= 0 (0 keeps none)"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantConfig:
        """Build from a plain dict, rejecting unknown keys with the list of valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise GolfError(f"quant: unknown key(s) {unknown}; valid keys: {valid}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def mixed_plan(self) -> dict[str, tuple[str, int]]:
        """method=mixed: class -> (method, bits) for every class, defaults filled in."""
        assert self.mixed is not None
        return {
            cls: _parse_method_spec(self.mixed.get(cls, MIXED_DEFAULT), f"quant.mixed.{cls}")
            for cls in TENSOR_CLASSES
        }

    def label(self) -> str:
        """Short scheme name for reports: "int8", "gptq:6", "mixed(attn=int6,mlp=int5,...)"."""
        if self.method in _FIXED_BITS:
            return self.method
        if self.method == "mixed":
            plan = self.mixed_plan()
            parts = [f"{cls}={_spec_label(*plan[cls])}" for cls in TENSOR_CLASSES]
            return f"mixed({','.join(parts)})"
        return f"{self.method}:{self.bits}"

    def uses_gptq(self) -> bool:
        if self.method == "mixed":
            return any(m == "gptq" for m, _ in self.mixed_plan().values())
        return self.method == "gptq"


def _parse_method_spec(spec: str, where: str) -> tuple[str, int]:
    """ "int6" -> ("int6", 6); "gptq:5" -> ("gptq", 5); "gptq" -> ("gptq", 6)."""
    method, _, bits_text = spec.partition(":")
    if method not in QUANTIZERS or method == "mixed":
        valid = sorted(k for k in QUANTIZERS if k != "mixed")
        raise GolfError(f"{where}={spec!r}: method {method!r} is unknown; use one of {valid}")
    if method in _FIXED_BITS:
        if bits_text and int(bits_text) != _FIXED_BITS[method]:
            raise GolfError(f"{where}={spec!r}: {method} is always {_FIXED_BITS[method]} bits")
        return method, _FIXED_BITS[method]
    try:
        bits = int(bits_text) if bits_text else _DEFAULT_FREE_BITS
    except ValueError:
        raise GolfError(f"{where}={spec!r}: bits after ':' must be an integer, e.g. 'gptq:6'") from None
    qrange(bits)
    return method, bits


def _spec_label(method: str, bits: int) -> str:
    return method if method in _FIXED_BITS else f"{method}:{bits}"


# ---------------------------------------------------------------------------------------------------------
# Tensor classes (for `mixed`) and the keep-in-float policy
# ---------------------------------------------------------------------------------------------------------

_EMBED_HINTS = ("emb", "wte", "lm_head")
_MLP_HINTS = ("mlp", "ffn", "feed_forward")
_MLP_PARTS = {"fc", "c_fc", "w1", "w2", "w3", "up_proj", "down_proj", "gate_proj"}
_ATTN_HINTS = ("attn", "attention")
_ATTN_PARTS = {"q", "k", "v", "c_q", "c_k", "c_v", "qkv", "q_proj", "k_proj", "v_proj", "o_proj", "out_proj"}


def classify_param(name: str) -> str:
    """'attn' | 'mlp' | 'embed' | 'other' from a state_dict name alone.

    Embeddings first ("emb", "wte", "lm_head": token, value and bigram embeddings and the output head),
    then MLP ("mlp"/"ffn" anywhere, or a fc/up/down/gate module), then attention ("attn" anywhere, or a
    q/k/v/qkv/o projection module). A bare "proj" is classified by its parent ("blocks.0.attn.proj").
    """
    low = name.lower()
    parts = set(low.split("."))
    if any(h in low for h in _EMBED_HINTS):
        return "embed"
    if any(h in low for h in _MLP_HINTS) or parts & _MLP_PARTS:
        return "mlp"
    if any(h in low for h in _ATTN_HINTS) or parts & _ATTN_PARTS:
        return "attn"
    return "other"


def _storage_kind(name: str, t: torch.Tensor, cfg: QuantConfig) -> str:
    """'raw' | 'fp32' | 'fp16' | 'quant' for one tensor (the rules in the module docstring)."""
    if not t.is_floating_point():
        return "raw"
    if t.numel() <= cfg.keep_fp16_max_numel:
        control = t.dim() < 2 or any(p in name.lower() for p in CONTROL_PATTERNS)
        return "fp32" if control else "fp16"
    if t.dim() < 2:
        return "fp16"
    return "quant"


# ---------------------------------------------------------------------------------------------------------
# The registry: name -> callable(name, w (rows, cols) float32, bits, cfg, hessian or None) -> RowQuant
# ---------------------------------------------------------------------------------------------------------


def _q_int8(
    name: str, w: torch.Tensor, bits: int, cfg: QuantConfig, hessian: torch.Tensor | None
) -> RowQuant:
    return quantize_int8_baseline(w)


def _q_int8_stored_scale(
    name: str, w: torch.Tensor, bits: int, cfg: QuantConfig, hessian: torch.Tensor | None
) -> RowQuant:
    return quantize_int8_stored_scale(w)


def _q_rowmax(
    name: str, w: torch.Tensor, bits: int, cfg: QuantConfig, hessian: torch.Tensor | None
) -> RowQuant:
    return quantize_rowmax(w, bits)


def _q_gptq_lite(
    name: str, w: torch.Tensor, bits: int, cfg: QuantConfig, hessian: torch.Tensor | None
) -> RowQuant:
    return quantize_gptq_lite(w, bits)


def _q_sdclip(
    name: str, w: torch.Tensor, bits: int, cfg: QuantConfig, hessian: torch.Tensor | None
) -> RowQuant:
    k = cfg.sdclip_k if cfg.sdclip_k is not None else default_sdclip_k(bits)
    return quantize_sdclip(w, bits, k)


def _gptq_grid(w: torch.Tensor, bits: int, cfg: QuantConfig, check: bool = True) -> torch.Tensor:
    """Full GPTQ's fixed per-row fp16 scales (`quant.gptq_scales`); GPTQ then chooses the symbols."""
    if cfg.gptq_scales == "rowmax":
        return fp16_scales(w.abs().amax(dim=1) / qrange(bits)[1], check)
    if cfg.gptq_scales == "sdclip":
        k = cfg.sdclip_k if cfg.sdclip_k is not None else default_sdclip_k(bits)
        return sdclip_scales(w, bits, k, check)
    return search_clip_scales(w, bits, check)


def _q_gptq(
    name: str, w: torch.Tensor, bits: int, cfg: QuantConfig, hessian: torch.Tensor | None
) -> RowQuant:
    if hessian is None:
        # no calibration statistics for this tensor (e.g. an embedding, which is not an nn.Linear input)
        return quantize_gptq_lite(w, bits)
    scales = _gptq_grid(w, bits, cfg)
    q = gptq_quantize(w, hessian, scales, bits, block=cfg.gptq_block, damp=cfg.gptq_damp, name=name)
    return RowQuant(q, scales, "gptq", bits)


def _q_mixed(
    name: str, w: torch.Tensor, bits: int, cfg: QuantConfig, hessian: torch.Tensor | None
) -> RowQuant:
    method, sub_bits = cfg.mixed_plan()[classify_param(name)]
    return QUANTIZERS[method](name, w, sub_bits, cfg, hessian)


QUANTIZERS: dict[str, Callable[..., RowQuant]] = {
    "int8": _q_int8,
    "int8_stored_scale": _q_int8_stored_scale,
    "int7": _q_rowmax,
    "int6": _q_rowmax,
    "int5": _q_rowmax,
    "int4": _q_rowmax,
    "gptq_lite": _q_gptq_lite,
    "gptq": _q_gptq,
    "sdclip": _q_sdclip,
    "mixed": _q_mixed,
}


# ---------------------------------------------------------------------------------------------------------
# QAT's view of the artifact: the same grid, round to nearest, at every training step
# ---------------------------------------------------------------------------------------------------------


def _nearest_on_grid(method: str, w: torch.Tensor, bits: int, cfg: QuantConfig) -> RowQuant:
    """`method`'s symbols and scales for w (rows, cols), rounded to nearest, with no host sync (the range
    checks are left to the quantizer of the artifact). Equal to the quantizer for every method but gptq,
    whose symbols come from its error feedback: there QAT trains for gptq's grid with plain rounding."""
    if method == "int8":
        return quantize_int8_baseline(w)
    if method == "int8_stored_scale":
        return quantize_int8_stored_scale(w, check=False)
    if method in ("int4", "int5", "int6", "int7"):
        return quantize_rowmax(w, bits, check=False)
    if method == "gptq_lite":
        return quantize_gptq_lite(w, bits, check=False)
    if method == "sdclip":
        k = cfg.sdclip_k if cfg.sdclip_k is not None else default_sdclip_k(bits)
        return quantize_sdclip(w, bits, k, check=False)
    if method == "gptq":
        scales = _gptq_grid(w, bits, cfg, check=False)
        return RowQuant(round_rows(w, scales, bits), scales, "gptq", bits)
    raise GolfError(f"QAT: no grid for quant.method={method!r}")


def qat_round_trip(name: str, weight: torch.Tensor, cfg: QuantConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the artifact will do to tensor `name`, as a function QAT applies at every step (golf/qat.py):
    w -> the weights read back from the artifact, or None when the artifact keeps that tensor in float
    (nothing to train for). The method and bits are the artifact's for this tensor, so with `mixed` each
    tensor class trains for its own grid, and QAT can never train for a grid the artifact does not use."""
    if _storage_kind(name, weight, cfg) != "quant":
        return None
    method, bits = cfg.mixed_plan()[classify_param(name)] if cfg.method == "mixed" else (cfg.method, cfg.bits)

    def round_trip(w: torch.Tensor) -> torch.Tensor:
        rq = _nearest_on_grid(method, w.float().reshape(w.shape[0], -1), bits, cfg)
        return dequantize_rows(rq.q, rq.scales).reshape(w.shape)

    return round_trip


# ---------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------


def _alias_key(t: torch.Tensor) -> tuple:
    """Identity of a tensor's memory: two state_dict entries with the same key are the same weight."""
    return (
        t.device.type,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


def quantize_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    cfg: QuantConfig,
    hessians: Mapping[str, torch.Tensor] | None = None,
) -> QuantizedState:
    """Quantize every tensor of `state_dict` per `cfg` (see the module docstring for the routing).

    `hessians` (from `collect_hessians`, keyed by state_dict name) is required when any tensor uses
    `gptq`; tensors without an entry fall back to gptq_lite and are listed in the result's `notes`.
    """
    if cfg.uses_gptq() and hessians is None:
        raise GolfError(
            f"quant.method={cfg.label()} needs Hessians: "
            "pass hessians=collect_hessians(model, training batches)"
        )
    # one CPU thread: quantization is many small ops, and on a shared CPU OpenMP's spinning workers made
    # the baseline's int8 pass 40x slower with 2 threads than with 1 (4.8 s vs 0.11 s, measured)
    with _one_cpu_thread():
        return _quantize_all(state_dict, cfg, hessians or {})


def _quantize_all(
    state_dict: Mapping[str, torch.Tensor], cfg: QuantConfig, hessians: Mapping[str, torch.Tensor]
) -> QuantizedState:
    # group names that share memory (tied weights); the first name stores the data
    groups: dict[tuple, list[str]] = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise GolfError(f"state_dict[{name!r}] is a {type(t).__name__}, not a tensor")
        groups.setdefault(_alias_key(t), []).append(name)
    primary = {name: names[0] for names in groups.values() for name in names}

    records: list[TensorRecord] = []
    notes: list[str] = []
    # GPTQ takes seconds a layer at baseline size; the other quantizers milliseconds, which need no bar
    bar = Progress(f"quantize {cfg.label()}", len(state_dict), "tensor", enabled=cfg.uses_gptq())
    for name, t in state_dict.items():
        bar.update(1)
        shape, dtype = tuple(t.shape), dtype_name(t.dtype)
        if primary[name] != name:
            records.append(TensorRecord(name, "alias", shape, dtype, alias_of=primary[name]))
            continue
        kind = _storage_kind(name, t, cfg)
        if kind == "raw":
            records.append(TensorRecord(name, "raw", shape, dtype, data=t.detach().cpu().contiguous()))
            continue
        w = t.detach().cpu().float()
        if not torch.isfinite(w).all():
            raise GolfError(f"state_dict[{name!r}] contains inf/nan; refusing to quantize a diverged model")
        if kind in ("fp16", "fp32"):
            data = w.to(torch.float16 if kind == "fp16" else torch.float32).contiguous()
            records.append(TensorRecord(name, kind, shape, dtype, data=data))
            continue
        # kind == "quant": per row over the flattened trailing dims
        w2d = w.reshape(shape[0], -1)  # (rows, cols)
        group = groups[_alias_key(t)]
        hessian = next((hessians[n] for n in group if n in hessians), None)
        result = QUANTIZERS[cfg.method](name, w2d, cfg.bits, cfg, hessian)
        requested = cfg.mixed_plan()[classify_param(name)][0] if cfg.method == "mixed" else cfg.method
        if result.method != requested:
            notes.append(f"{name}: {requested} fell back to {result.method} (no Hessian for this tensor)")
        records.append(
            TensorRecord(
                name,
                f"int{result.bits}",
                shape,
                dtype,
                bits=result.bits,
                method=result.method,
                data=result.q.contiguous(),
                scales=result.scales.contiguous(),
            )
        )
    bar.close()
    return QuantizedState(records=records, label=cfg.label(), config=cfg.to_dict(), notes=notes)


def dequantize_state(qs: QuantizedState) -> dict[str, torch.Tensor]:
    """Float32 tensors (integer buffers in their own dtype) in state_dict order, for `load_state_dict`.

    A float tensor whose original dtype was narrower (a bf16 embedding) is read back through that dtype,
    as the baseline's dequantizer casts to the recorded dtype: the values are the ones it would load.
    """
    out: dict[str, torch.Tensor] = {}
    for r in qs.records:
        if r.kind == "alias":
            continue
        assert r.data is not None
        if r.kind == "raw":
            out[r.name] = r.data.reshape(r.shape).clone()
            continue
        if r.is_int:
            assert r.scales is not None
            w = dequantize_rows(r.data, r.scales).reshape(r.shape)
        else:
            w = r.data.float().reshape(r.shape)
        if r.dtype in ("bfloat16", "float16"):
            w = w.to(DTYPES[r.dtype]).float()
        out[r.name] = w
    # aliases point at their stored tensor, then restore the original key order
    for r in qs.records:
        if r.kind == "alias":
            if r.alias_of not in out:
                raise GolfError(f"tensor {r.name}: alias of {r.alias_of!r}, which is not stored")
            out[r.name] = out[r.alias_of]
    return {r.name: out[r.name] for r in qs.records}
