"""Late quantization-aware training: a straight-through estimator onto the artifact's own grid.

Records switch it on late in training, once the LR scale drops below ~0.1-0.15: each linear layer then
computes with w + (q(w) - w).detach(), so the forward pass sees the weights the artifact will hold while
the gradient flows to the float weights as if q were the identity.

q is the artifact's round trip for that tensor, taken from the run's quant config
(`golf.quant.qat_round_trip`): the same method, bits and scales (per tensor class with `mixed`), rounded
to nearest; for `gptq` the same grid with plain rounding (GPTQ's error feedback needs calibration data).
A linear layer the artifact keeps in float (`quant.keep_fp16_max_numel`) gets no STE. So QAT cannot train
for a grid the artifact does not use (it used to have its own `train.qat_bits`, an int6 grid whatever the
artifact's quantizer).

Why a parametrization with a tensor switch: one record's QAT never ran because torch.compile folded a Python
bool flag into the graph at compile time. Here the switch is a 0-dim *buffer* multiplied into the weight, so
the compiled graph reads it at run time and flipping it needs no recompilation (tested with compile on).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from golf.quant import QuantConfig, qat_round_trip


class FakeQuantSTE(nn.Module):
    """Parametrization w -> w + enabled * (q(w) - w).detach(), q = the artifact's round trip."""

    def __init__(self, round_trip: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.round_trip = round_trip
        self.register_buffer("enabled", torch.zeros(()), persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = self.round_trip(w.detach()).to(w.dtype)
        return w + self.enabled.to(w.dtype) * (q - w.detach())


def attach(model: nn.Module, quant: QuantConfig) -> list[FakeQuantSTE]:
    """Put the STE on every 2-D nn.Linear weight the artifact quantizes; returns the switches (all off)."""
    switches = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.weight.ndim == 2:
            round_trip = qat_round_trip(f"{name}.weight", module.weight, quant)
            if round_trip is None:  # kept in float by the artifact: nothing to train for
                continue
            ste = FakeQuantSTE(round_trip).to(module.weight.device)
            parametrize.register_parametrization(module, "weight", ste, unsafe=True)
            switches.append(ste)
    return switches


def set_enabled(switches: list[FakeQuantSTE], on: bool) -> None:
    for s in switches:
        s.enabled.fill_(1.0 if on else 0.0)


def detach(model: nn.Module) -> None:
    """Remove the STE, leaving the float weights (the quantizer of the artifact does the real rounding)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
