"""Low-rank adapters (LoRA, Hu et al. 2021) installed in place on a golf GPT, for the LoRA TTT strategies.

Two seeds adapt a model at evaluation time through rank-8 adapters instead of all its weights:
#77 (per-document, score-first; legal) and #1127 (one pass over the validation stream, then score;
illegal). Both put the adapters on the attention query and value projections (`c_q`, `c_v`) of every
block and on the output head, trained with Adam (lr 0.01, betas 0.9/0.95 in #77).

Why in place rather than a wrapper module: the token ledger and `golf run` call `model(x, y,
reduction=...)` on the model object they hold. `lora_single_pass` must leave its adapters on the
dequantized model so that run.py's official pass scores with them, so the adapters become part of that
model: each targeted `nn.Linear` is swapped for a `LoRALinear` that holds the original as `.base` (the
PEFT pattern), and `remove()` puts the originals back. The model's own forward is untouched, so
`model(x, y, reduction="none")` keeps working with the adapters inside it.

The head is special. With tied embeddings (every golf preset) there is no head module: the logits are
norm(x) @ tok_emb.weight^T inside `GPT.lm_logits`, and the same matrix embeds the input, so a head
adapter can neither replace a module nor be merged into the weight. `attach_lora` therefore shadows
`lm_logits` on this one instance with a version that adds the adapter's low-rank correction to the
model's own (soft-capped) logits:

    logits = GPT.lm_logits(x) + B (A norm(x))          A (r, C), B (V, r), B starts at zero

Adding after the cap instead of before it keeps the model's head code the single source of truth; to first
order (tanh'(z/30) ~ 1 for the logits that matter) it is the same as adapting the head weight. Deleting the
instance attribute (`remove()`) restores the class method.

Initialisation: A ~ U(-1/sqrt(in), 1/sqrt(in)) from a seeded generator, B = 0, so an attached adapter
starts as the identity (the model's outputs are unchanged, bit for bit) and `reset()` returns it exactly
to that state (per-document reset in `lora_score_first`).

Targets (`ttt.lora_targets`): "qv_head" = c_q, c_v of every block + head (#77, #1127); "all" = every
nn.Linear inside the blocks (q, k, v, attention output, MLP in and out) + head.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from golf.errors import GolfError
from golf.model import rms_norm
from golf.ttt import LORA_TARGETS


class LoRALinear(nn.Module):
    """y = base(x) + B (A x): a frozen-by-caller nn.Linear plus a rank-r correction (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        self.base = base
        w = base.weight
        bound = 1.0 / math.sqrt(base.in_features)
        a = (torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound  # (r, in)
        self.lora_A = nn.Parameter(a.to(device=w.device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device))  # (out, r)
        # The initial A, kept so that reset() returns exactly to the identity adapter (not saved).
        self.register_buffer("A_init", self.lora_A.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., r) -> (..., out); under autocast both products run in bf16 like the base.
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B)

    @torch.no_grad()
    def reset(self) -> None:
        self.lora_A.copy_(self.A_init)
        self.lora_B.zero_()


class LoRAHead(nn.Module):
    """The head adapter: a rank-r map from the final normed hidden state to a logit correction."""

    def __init__(self, d_model: int, vocab_size: int, rank: int, generator: torch.Generator, device):
        super().__init__()
        bound = 1.0 / math.sqrt(d_model)
        a = (torch.rand(rank, d_model, generator=generator) * 2 - 1) * bound  # (r, C)
        self.lora_A = nn.Parameter(a.to(device))
        self.lora_B = nn.Parameter(torch.zeros(vocab_size, rank, device=device))  # (V, r)
        self.register_buffer("A_init", self.lora_A.detach().clone(), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(h, self.lora_A), self.lora_B).float()  # (B, T, V), float32 like the logits

    @torch.no_grad()
    def reset(self) -> None:
        self.lora_A.copy_(self.A_init)
        self.lora_B.zero_()


def _lm_logits_with_head_adapter(self, x: torch.Tensor) -> torch.Tensor:
    """Instance override of GPT.lm_logits: the class's logits plus the head adapter's correction."""
    return type(self).lm_logits(self, x) + self.lora_head(rms_norm(x))


@dataclass
class LoRAAdapters:
    """Handle on the adapters attached to one model: their parameters, reset, state, removal."""

    model: nn.Module
    rank: int
    targets: str
    modules: dict[str, nn.Module] = field(default_factory=dict)  # adapter name -> LoRALinear / LoRAHead
    _swapped: list[tuple[nn.Module, str, nn.Module]] = field(default_factory=list)  # (parent, attr, original)

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules.values() for p in (m.lora_A, m.lora_B)]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reset(self) -> None:
        """Every adapter back to its initial state (A as drawn, B = 0): the model's outputs are the base's."""
        for m in self.modules.values():
            m.reset()

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": getattr(m, k).detach().clone() for name, m in self.modules.items()
                for k in ("lora_A", "lora_B")}

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy adapter values from another handle's `state()` (same targets and rank)."""
        mine = {f"{name}.{k}": getattr(m, k) for name, m in self.modules.items() for k in ("lora_A", "lora_B")}
        if set(mine) != set(state):
            raise GolfError("LoRA adapters: state names differ (attach with the same ttt.lora_targets and rank)")
        for key, p in mine.items():
            p.copy_(state[key].to(p.device, p.dtype))

    def remove(self) -> None:
        """Take the adapters out: the original modules and the class's lm_logits come back."""
        for parent, attr, original in reversed(self._swapped):
            setattr(parent, attr, original)
        self._swapped.clear()
        if "lm_logits" in self.model.__dict__:
            del self.model.lm_logits
        if "head" in self.modules:
            del self.model.lora_head
        self.modules.clear()


def _target_linears(model: nn.Module, targets: str) -> list[tuple[str, nn.Module, str]]:
    """(adapter name, parent module, attribute) of each nn.Linear to adapt, in a fixed order."""
    found = []
    for b, block in enumerate(model.blocks):
        if targets == "qv_head":
            found += [(f"blocks.{b}.attn.c_q", block.attn, "c_q"), (f"blocks.{b}.attn.c_v", block.attn, "c_v")]
            continue
        for mod_name, module in block.named_modules():
            for attr, child in module.named_children():
                if isinstance(child, nn.Linear):
                    path = f"{mod_name}.{attr}" if mod_name else attr
                    found.append((f"blocks.{b}.{path}", module, attr))
    return found


def attach_lora(model: nn.Module, rank: int, targets: str = "qv_head", seed: int = 0) -> LoRAAdapters:
    """Install rank-`rank` adapters on `model` in place (see the module docstring); returns their handle.

    The adapters start as the identity, so the model computes exactly what it did before. The caller
    decides what trains: typically every base parameter frozen, `handle.parameters()` trainable.
    """
    if targets not in LORA_TARGETS:
        raise GolfError(f"ttt.lora_targets={targets!r} is unknown; valid: {', '.join(LORA_TARGETS)}")
    if rank < 1:
        raise GolfError(f"ttt.lora_rank={rank} must be >= 1")
    if not hasattr(model, "blocks") or not hasattr(model, "lm_logits"):
        raise GolfError(f"LoRA adapters need a golf GPT (blocks + lm_logits), got {type(model).__name__}")
    if "lm_logits" in model.__dict__ or any(isinstance(m, LoRALinear) for m in model.modules()):
        raise GolfError("LoRA adapters are already attached to this model; remove() them first")
    gen = torch.Generator().manual_seed(int(seed))  # adapters drawn the same way for the same seed
    handle = LoRAAdapters(model=model, rank=rank, targets=targets)
    for name, parent, attr in _target_linears(model, targets):
        original = getattr(parent, attr)
        wrapped = LoRALinear(original, rank, gen)
        setattr(parent, attr, wrapped)
        handle._swapped.append((parent, attr, original))
        handle.modules[name] = wrapped
    device = model.tok_emb.weight.device
    model.lora_head = LoRAHead(model.cfg.d_model, model.cfg.vocab_size, rank, gen, device)
    model.lm_logits = types.MethodType(_lm_logits_with_head_adapter, model)
    handle.modules["head"] = model.lora_head
    return handle
