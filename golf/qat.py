"""Late quantization-aware training: an int-N straight-through estimator on the linear layers.

Records switch it on late in training, once the LR scale drops below ~0.1-0.15: each linear layer then
computes with w + (q(w) - w).detach(), so the forward pass sees the per-row int6 weights that the artifact
will hold while the gradient flows to the float weights as if q were the identity.

Why a parametrization with a tensor switch: one record's QAT never ran because torch.compile folded a Python
bool flag into the graph at compile time. Here the switch is a 0-dim *buffer* multiplied into the weight, so
the compiled graph reads it at run time and flipping it needs no recompilation (tested with compile on).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def fake_quant_rows(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row symmetric int-N rounding: scale = row max / qmax, clamp to [-qmax-1, qmax] (int6: [-32, 31])."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / qmax
    return (w / scale).round().clamp(-qmax - 1, qmax) * scale


class FakeQuantSTE(nn.Module):
    """Parametrization w -> w + enabled * (q(w) - w).detach()."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        self.register_buffer("enabled", torch.zeros(()), persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.enabled.to(w.dtype) * (fake_quant_rows(w, self.bits) - w).detach()


def attach(model: nn.Module, bits: int) -> list[FakeQuantSTE]:
    """Put the STE on every 2-D nn.Linear weight; returns the switches (all off)."""
    switches = []
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.ndim == 2:
            ste = FakeQuantSTE(bits).to(module.weight.device)
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
