"""What a quantized model is: an ordered list of per-tensor records.

Kept separate from the quantizers so that the artifact reader (`golf.artifact`) can rebuild a
`QuantizedState` from a file without touching any quantization code, and so that a submission's loader
needs only this module plus `dequantize_state`.

Record kinds:
- `int2` ... `int8`: per-row symmetric integers in an int8 container, `data` (rows, cols) int8 and
  `scales` (rows,) fp16; the weight is `data * scales[:, None]` reshaped to `shape`.
- `fp16`, `fp32`: a float tensor kept as is (small tensors and control scalars/vectors).
- `raw`: a non-float tensor (an integer buffer) stored bit-exactly in its own dtype.
- `alias`: a second state_dict name for a tensor stored under `alias_of` (tied weights appear twice
  in `state_dict()`; storing them twice would cost bytes for nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from golf.errors import GolfError

# dtypes a record may carry, by the name written into the artifact header. Little-endian on disk.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def dtype_name(dtype: torch.dtype) -> str:
    """'torch.float16' -> 'float16', rejecting dtypes the artifact cannot store."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise GolfError(f"dtype {dtype} cannot be stored in an artifact; supported: {sorted(DTYPES)}")
    return name


def int_kinds() -> tuple[str, ...]:
    return tuple(f"int{b}" for b in range(2, 9))


@dataclass
class TensorRecord:
    """One state_dict entry after quantization (see the module docstring for the kinds)."""

    name: str  # state_dict key
    kind: str  # "int2".."int8" | "fp16" | "fp32" | "raw" | "alias"
    shape: tuple[int, ...]  # original shape
    dtype: str  # original dtype name, e.g. "float32" or "bfloat16"
    bits: int | None = None  # quantization bits for int kinds, else None
    method: str | None = None  # quantizer that produced it ("int8", "gptq", "gptq_lite", ...)
    data: torch.Tensor | None = None  # int8 (rows, cols) | fp16 | fp32 | raw dtype; None for aliases
    scales: torch.Tensor | None = None  # (rows,) fp16 for int kinds
    alias_of: str | None = None  # for kind "alias": the name holding the data

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        valid = int_kinds() + ("fp16", "fp32", "raw", "alias")
        if self.kind not in valid:
            raise GolfError(f"tensor {self.name}: record kind {self.kind!r} is not one of {list(valid)}")

    @property
    def is_int(self) -> bool:
        return self.kind.startswith("int")

    def nbytes(self) -> int:
        """Raw bytes this record stores (data + scales), before any compression."""
        total = 0
        for t in (self.data, self.scales):
            if t is not None:
                total += t.numel() * t.element_size()
        return total


@dataclass
class QuantizedState:
    """A quantized state_dict: records in state_dict order plus how they were made.

    `config` is the `QuantConfig` as a plain dict (so the artifact can carry it without pickle);
    `label` is the short human-readable scheme name used in reports (e.g. "int8", "gptq:6").
    `notes` lists per-tensor deviations from the config (e.g. a gptq tensor without a Hessian that fell
    back to gptq_lite) so they are never silent.
    """

    records: list[TensorRecord]
    label: str
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, name: str) -> TensorRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise GolfError(f"quantized state has no tensor {name!r}")

    def nbytes(self) -> int:
        return sum(r.nbytes() for r in self.records)
