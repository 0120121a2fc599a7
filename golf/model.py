"""The golf model zoo: one GPT whose techniques are named switches on one config.

Why one class: every record in parameter-golf is the same skeleton (the baseline `train_gpt.py` GPT) with
a handful of techniques switched on. Keeping them as switches on one `ModelConfig` means an ablation is a
one-key change, the presets (`golf/presets.py`) are short dicts, and a reader finds each technique in one
place, with a comment naming where it comes from. The defaults are the baseline exactly (17,059,912
parameters; the arithmetic is in `golf/presets.py`).

Reading order: config -> small pieces (RoPE, attention, XSA, MLP, block) -> input-side extras (BigramHash,
SmearGate, value embeddings) -> `GPT` (embed -> blocks -> logits/loss). Shapes: B batch, T time, C =
d_model, H query heads, Hkv key/value heads, D head dim, V vocab.

Training state that changes the forward pass lives on the model as plain attributes the trainer drives
through `set_progress(frac)`: `recurrence_active` (depth recurrence) and `attn_window` (Universal
Transformer curriculum). A freshly built model is in its end-of-training state (progress 1.0), so an
evaluator that only loads weights gets the model that was trained; the trainer calls `set_progress(0.0)`
before its first step.

dtype: parameters are float32; the code is dtype-agnostic (CPU float32, CUDA under bf16 autocast). Logits
and losses always come back float32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from golf.data.shards import BOS_ID
from golf.errors import GolfError

# flash-attn is optional (pyproject extra `gpu`): used only for CUDA bf16/fp16 tensors, SDPA otherwise.
try:
    from flash_attn import flash_attn_func as _flash_attn_func
except (ImportError, OSError):  # not installed, or installed without matching CUDA libraries
    _flash_attn_func = None

# SDPA learned grouped-query attention (`enable_gqa`) in torch 2.5; older torch repeats K/V by hand.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


# MLP nonlinearities by name (the config stores the name). Both are squared so the MLP stays a
# "ReLU^2" family member; the leaky one lets negative pre-activations carry gradient.
def relu2(x: torch.Tensor, slope: float) -> torch.Tensor:
    return F.relu(x).square()  # baseline (modded-nanogpt's ReLU^2); slope unused


def leaky_relu2(x: torch.Tensor, slope: float) -> torch.Tensor:
    return F.leaky_relu(x, slope).square()  # records: LeakyReLU(0.5)^2, -0.002..-0.003 bpb


ACTIVATIONS = {"relu2": relu2, "leaky_relu2": leaky_relu2}

# Universal Transformer curriculum: the first local attention window, doubled stage by stage.
UT_FIRST_WINDOW = 16


# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Every architectural choice of the GPT. Defaults = the parameter-golf baseline."""

    # --- the baseline skeleton ---
    n_layer: int = 9  # physical blocks (ignored when ut_loops > 0: one shared block)
    d_model: int = 512  # residual stream width
    n_head: int = 8  # query heads; head dim = d_model / n_head = 64
    n_kv_head: int = 4  # key/value heads (GQA): each serves n_head / n_kv_head query heads
    mlp_mult: float = 2.0  # MLP hidden = int(mlp_mult * d_model)
    activation: str = "relu2"  # a key of ACTIVATIONS
    leaky_slope: float = 0.5  # negative slope of leaky_relu2
    vocab_size: int = 1024  # the trainer overrides it from the dataset
    tie_embeddings: bool = True  # output head = token embedding (saves V*C parameters)
    tied_embed_init_std: float = 0.005  # small init: the tied matrix is also the output head
    logit_softcap: float = 30.0  # logits <- cap * tanh(logits / cap); 0 = off
    qk_norm: bool = True  # weightless RMSNorm on q and k per head
    q_gain_init: float = 1.5  # learned per-head gain on q (sets attention temperature); 0 = no gain
    rope_base: float = 10000.0
    rope_dims: int | None = None  # rotated dims per head; None = all; 16 = partial RoPE
    unet_skips: bool = True  # first half's outputs added (learned per-dim weights) to the second half
    resid_mix: bool = True  # each block mixes the stream with x0 (the embedding) by learned (2, C)
    block_scales: bool = True  # learned per-dim scales on attention and MLP outputs
    # --- techniques from the records (off by default) ---
    xsa_last_n: int = 0  # exclusive self-attention in the last n physical layers
    smear_gate: bool = False  # blend each token's embedding with the previous token's
    bigram_buckets: int = 0  # BigramHash buckets; 0 = off
    bigram_dim: int = 128  # BigramHash embedding width (projected to d_model)
    ve_dim: int = 0  # value embedding width; 0 = off
    ve_layers: list[int] = field(default_factory=list)  # physical layers whose V gets the value embedding
    ln_scale: bool = False  # normed block input times 1/sqrt(layer_index + 1)
    parallel_from: int | None = None  # layers >= this run attention and MLP in parallel
    recur_start: int | None = None  # depth recurrence: layers [recur_start, recur_end) run again
    recur_end: int | None = None
    recur_repeats: int = 1  # extra passes over the recurrent range
    recur_at_frac: float = 0.35  # training progress at which recurrence switches on
    ut_loops: int = 0  # Universal Transformer: one shared block looped this many times; 0 = off
    ut_curriculum_frac: float = 0.5  # local-window attention until this training progress
    # --- data facts the model needs ---
    max_seq_len: int = 1024
    bos_id: int = BOS_ID  # every document starts with BOS (SmearGate does not smear into it); golf/data/shards.py

    def __post_init__(self):
        self._check_types()

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise GolfError(f"model: {message}")

        for name in (
            "n_layer",
            "d_model",
            "n_head",
            "n_kv_head",
            "vocab_size",
            "max_seq_len",
            "recur_repeats",
        ):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        need(
            self.d_model % self.n_head == 0,
            f"d_model={self.d_model} must be divisible by n_head={self.n_head}; change one of them",
        )
        need(
            self.n_head % self.n_kv_head == 0,
            f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head} (GQA groups)",
        )
        need(self.mlp_hidden >= 1, f"mlp_mult={self.mlp_mult} gives an empty MLP; use a positive value")
        need(
            self.activation in ACTIVATIONS,
            f"activation={self.activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}",
        )
        need(self.tied_embed_init_std > 0, "tied_embed_init_std must be > 0")
        need(self.logit_softcap >= 0, "logit_softcap must be >= 0 (0 turns it off)")
        need(self.q_gain_init >= 0, "q_gain_init must be >= 0 (0 turns the gain off)")
        need(self.rope_base > 0, "rope_base must be > 0")
        if self.rope_dims is not None:
            need(
                self.rope_dims >= 2 and self.rope_dims % 2 == 0 and self.rope_dims <= self.head_dim,
                f"rope_dims={self.rope_dims} must be even and in [2, head_dim={self.head_dim}]; "
                "use None to rotate all dims",
            )
        else:
            need(
                self.head_dim % 2 == 0, f"head_dim={self.head_dim} is odd; RoPE needs it even (set rope_dims)"
            )
        n_phys = self.n_physical
        where = f"the {n_phys} physical layer(s)" + (
            " (ut_loops > 0 has one shared block)" if self.ut_loops else ""
        )
        need(
            0 <= self.xsa_last_n <= n_phys, f"xsa_last_n={self.xsa_last_n} must be in [0, {n_phys}], {where}"
        )
        need(
            self.bigram_buckets == 0 or self.bigram_buckets >= 2,
            f"bigram_buckets={self.bigram_buckets} must be 0 (off) or >= 2",
        )
        need(self.bigram_dim >= 1, "bigram_dim must be >= 1")
        need(self.ve_dim >= 0, "ve_dim must be >= 0 (0 turns value embeddings off)")
        need(
            bool(self.ve_dim) == bool(self.ve_layers),
            "ve_dim and ve_layers go together: set both (e.g. ve_dim=128, ve_layers=[9, 10]) or neither",
        )
        need(
            all(0 <= i < n_phys for i in self.ve_layers) and len(set(self.ve_layers)) == len(self.ve_layers),
            f"ve_layers={self.ve_layers} must be distinct indices of {where}",
        )
        if self.parallel_from is not None:
            need(0 <= self.parallel_from < n_phys, f"parallel_from={self.parallel_from} must index {where}")
        need(
            (self.recur_start is None) == (self.recur_end is None),
            "set both recur_start and recur_end (layers [start, end) re-run) or neither",
        )
        if self.recur_start is not None:
            need(not self.ut_loops, "depth recurrence (recur_*) and ut_loops exclude each other; pick one")
            need(
                0 <= self.recur_start < self.recur_end <= self.n_layer,
                f"recurrence range [{self.recur_start}, {self.recur_end}) must be non-empty and inside "
                f"[0, n_layer={self.n_layer}]",
            )
        need(0.0 <= self.recur_at_frac <= 1.0, "recur_at_frac must be in [0, 1]")
        need(self.ut_loops >= 0, "ut_loops must be >= 0 (0 = off)")
        need(0.0 <= self.ut_curriculum_frac <= 1.0, "ut_curriculum_frac must be in [0, 1]")
        need(0 <= self.bos_id < self.vocab_size, f"bos_id={self.bos_id} must be a token id below vocab_size")

    def _check_types(self):
        """Reject values of the wrong type early (configs arrive from YAML and the command line)."""
        for f in fields(self):
            value, ann = getattr(self, f.name), str(f.type)
            optional = ann.endswith("| None")
            if value is None and optional:
                continue
            base = ann.split("|")[0].strip()
            if base == "float" and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
                continue
            if (
                base == "list[int]"
                and isinstance(value, (list, tuple))
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ):
                setattr(self, f.name, list(value))
                continue
            expected = {"int": int, "float": float, "bool": bool, "str": str}.get(base)
            ok = expected is not None and isinstance(value, expected)
            if ok and expected is int and isinstance(value, bool):
                ok = False
            if not ok:
                raise GolfError(f"model.{f.name}={value!r} must be of type {ann}")

    # Derived sizes: one place, so layers and parameter arithmetic agree.
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.d_model)

    @property
    def n_physical(self) -> int:
        return 1 if self.ut_loops else self.n_layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Weightless RMSNorm over the last dim (the baseline has no norm gains at all)."""
    return F.rms_norm(x, (x.size(-1),))


# ----------------------------------------------------------------------------------------------------
# Rotary position embedding (RoFormer, Su et al. 2021); partial RoPE from the records (16 of 64 dims)
# ----------------------------------------------------------------------------------------------------


class Rotary(nn.Module):
    """cos/sin tables for the first `rot_dims` dims of each head; the rest carry no position signal."""

    def __init__(self, rot_dims: int, base: float):
        super().__init__()
        # Frequencies span the rotated dims only, so partial RoPE keeps the full range of wavelengths.
        # Written 1 / base^(i/r) as in the baseline, so the float32 tables are bit-identical to its.
        inv_freq = 1.0 / (base ** (torch.arange(0, rot_dims, 2, dtype=torch.float32) / rot_dims))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # not a parameter, not saved

    def forward(self, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(T, device=device, dtype=torch.float32)
        angles = torch.outer(t, self.inv_freq.to(device))  # (T, rot_dims/2)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + r/2) of the first r = 2*cos.size(-1) dims of x (B, T, H, D) by -position*freq.

    The sign is the baseline's (train_gpt.py `apply_rotary_emb`: x1 cos + x2 sin, x2 cos - x1 sin), i.e. a
    rotation by -theta. Trained from scratch either sign works equally well, but only this one reads a
    reference checkpoint correctly (tests/test_parity.py compares logits with the reference script).
    """
    half = cos.size(-1)
    r = 2 * half
    c, s = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)  # (1, T, 1, r/2)
    x1, x2 = x[..., :half], x[..., half:r]
    rotated = torch.cat((x1 * c + x2 * s, x2 * c - x1 * s), dim=-1)
    return rotated if r == x.size(-1) else torch.cat((rotated, x[..., r:]), dim=-1)


# ----------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------


def local_causal_mask(T: int, window: int, device: torch.device) -> torch.Tensor:
    """(T, T) bool, True where query i may see key j: j <= i and i - j < window."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (i - j < window)


def causal_attention(q, k, v, window: int | None = None) -> torch.Tensor:
    """Causal attention, optionally limited to the last `window` keys. q (B,T,H,D), k/v (B,T,Hkv,D)."""
    T, H = q.size(1), q.size(2)
    if _flash_attn_func is not None and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        # flash-attn takes (B, T, heads, D), handles GQA itself; window_size = (keys to the left, right).
        left = -1 if window is None or window >= T else window - 1
        return _flash_attn_func(q, k, v, causal=True, window_size=(left, 0))
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, D)
    gqa = {}
    if k.size(1) != H:
        if _SDPA_HAS_GQA:
            gqa = {"enable_gqa": True}
        else:  # query head h reads kv head h // group, like enable_gqa
            k, v = (t.repeat_interleave(H // t.size(1), dim=1) for t in (k, v))
    if window is None or window >= T:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
    else:
        mask = local_causal_mask(T, window, q.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)
    return y.transpose(1, 2)  # (B, T, H, D)


def exclusive_self_attention(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA (parameter-golf records): drop from each head's output its part along the token's own value.

    y (B,T,H,D) attention output, v (B,T,Hkv,D) values. With GQA a query head h uses kv head
    h // (H/Hkv), so y is viewed as (B,T,Hkv,group,D) and each group shares one value direction.
    Attention tends to copy a token's own value back; removing it makes the layer spend its output on
    other tokens' information. No parameters.
    """
    B, T, H, D = y.shape
    n_kv = v.size(2)
    y = y.reshape(B, T, n_kv, H // n_kv, D)
    v_hat = F.normalize(v, dim=-1).unsqueeze(3)  # (B, T, Hkv, 1, D)
    y = y - (y * v_hat).sum(-1, keepdim=True) * v_hat  # y <- y - (y . v_hat) v_hat
    return y.reshape(B, T, H, D)


class CausalSelfAttention(nn.Module):
    """Baseline attention: GQA, RMSNorm on q/k, RoPE, learned per-head q gain, zero-init output."""

    def __init__(self, cfg: ModelConfig, xsa: bool):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.qk_norm, self.xsa = cfg.qk_norm, xsa
        self.c_q = nn.Linear(cfg.d_model, cfg.n_head * cfg.head_dim, bias=False)
        self.c_k = nn.Linear(cfg.d_model, cfg.kv_dim, bias=False)
        self.c_v = nn.Linear(cfg.d_model, cfg.kv_dim, bias=False)
        self.proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)
        nn.init.zeros_(self.proj.weight)  # every block starts as the identity on the residual stream
        # With q and k unit-RMS, q_gain alone sets how sharp attention can be (baseline init 1.5).
        self.q_gain = nn.Parameter(torch.full((cfg.n_head,), cfg.q_gain_init)) if cfg.q_gain_init else None

    def forward(self, x, rope, ve=None, window=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:  # value embeddings: token identity injected straight into V
            v = v + ve.view(B, T, self.n_kv_head, self.head_dim).to(v.dtype)
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if self.q_gain is not None:
            q = q * self.q_gain.to(q.dtype)[:, None]  # (H, 1) broadcasts over (B, T, H, D)
        q, k = q.to(v.dtype), k.to(v.dtype)  # norms may run in float32 under autocast
        y = causal_attention(q, k, v, window)  # (B, T, H, D)
        if self.xsa:
            y = exclusive_self_attention(y, v)
        return self.proj(y.reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    """fc -> squared (leaky) ReLU -> zero-init proj; no biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.act, self.slope = ACTIVATIONS[cfg.activation], cfg.leaky_slope

    def forward(self, x):
        return self.proj(self.act(self.fc(x), self.slope))


def _scaled(y: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    return y if scale is None else y * scale.to(y.dtype)


class Block(nn.Module):
    """One transformer block: (resid_mix) -> attention -> MLP, sequential or parallel residuals."""

    def __init__(self, cfg: ModelConfig, layer: int, own_mix: bool):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, xsa=layer >= cfg.n_physical - cfg.xsa_last_n)
        self.mlp = MLP(cfg)
        C = cfg.d_model
        # Per-dim output scales (baseline): the optimiser can turn a branch up or down per channel.
        self.attn_scale = nn.Parameter(torch.ones(C)) if cfg.block_scales else None
        self.mlp_scale = nn.Parameter(torch.ones(C)) if cfg.block_scales else None
        # resid_mix (baseline): x <- m0 * x + m1 * x0, init (1, 0); lets each block re-read the embedding.
        # Universal Transformer blocks get one mix per iteration from the GPT instead (own_mix False).
        mix_init = torch.stack((torch.ones(C), torch.zeros(C)))
        self.resid_mix = nn.Parameter(mix_init) if own_mix else None
        # Parallel residuals (records, from layer 7): attention and MLP both read the same normed input.
        self.parallel = cfg.parallel_from is not None and layer >= cfg.parallel_from

    def forward(self, x, x0, rope, ln_mult=1.0, mix=None, film=None, ve=None, window=None):
        """x, x0 (B, T, C). `mix`/`film` override the block's own mix / add an affine on its normed input."""
        mix = self.resid_mix if mix is None else mix
        if mix is not None:
            mix = mix.to(x.dtype)
            x = mix[0] * x + mix[1] * x0

        def norm(t):
            h = rms_norm(t) * ln_mult  # LN scale: ln_mult = 1/sqrt(layer + 1), else 1
            if film is not None:  # UT per-iteration scale and shift, (C,) each
                h = h * film[0].to(h.dtype) + film[1].to(h.dtype)
            return h

        h = norm(x)
        a = _scaled(self.attn(h, rope, ve, window), self.attn_scale)
        if self.parallel:
            return x + a + _scaled(self.mlp(h), self.mlp_scale)
        x = x + a
        return x + _scaled(self.mlp(norm(x)), self.mlp_scale)


# ----------------------------------------------------------------------------------------------------
# Input-side extras
# ----------------------------------------------------------------------------------------------------


class BigramHash(nn.Module):
    """BigramHash (parameter-golf records): a hashed (previous, current) token-pair embedding.

    bucket = ((36313 * cur) XOR (27191 * prev)) mod (B - 1); position 0 has no previous token and uses
    bucket B - 1. Embedding (B, dim) -> zero-init projection to d_model -> learned scalar (init 0.05),
    added to the token embedding. Zero-init projection: the model starts exactly as without it.
    """

    def __init__(self, buckets: int, dim: int, d_model: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)  # PyTorch default init N(0, 1)
        self.proj = nn.Linear(dim, d_model, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def bucket_ids(self, idx: torch.Tensor) -> torch.Tensor:
        cur, prev = idx[:, 1:].long(), idx[:, :-1].long()  # (B, T-1) each
        pair = torch.bitwise_xor(36313 * cur, 27191 * prev) % (self.buckets - 1)
        first = torch.full_like(idx[:, :1], self.buckets - 1, dtype=torch.long)
        return torch.cat((first, pair), dim=1)  # (B, T)

    def forward(self, idx):
        return self.scale * self.proj(self.embed(self.bucket_ids(idx)))  # (B, T, C)


class SmearGate(nn.Module):
    """SmearGate (parameter-golf records): x_t <- (1 - g) x_t + g x_{t-1}, g = sigmoid(learned per-dim).

    A cheap one-token look-back before any attention. BOS fix: a position whose input id is BOS (a
    document start) takes nothing from the previous document; position 0 has no previous token either.
    The gate logit starts at 0 (g = 0.5).
    """

    def __init__(self, d_model: int, bos_id: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(d_model))
        self.bos_id = bos_id

    def forward(self, x, idx):
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # (B, T, C): x_{t-1}, zeros at t = 0
        open_ = idx != self.bos_id  # (B, T): False at document starts
        open_[:, 0] = False
        g = torch.sigmoid(self.gate).to(x.dtype) * open_.unsqueeze(-1).to(x.dtype)  # (B, T, C)
        return x + g * (prev - x)


class ValueEmbedding(nn.Module):
    """Value embeddings (records; seed #1550 uses dim 44): one token table shared by all `ve_layers`,
    projected to the KV width and added to V, with a learned scale per layer (init 1). The projection
    starts at zero so the model starts as without it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.ve_dim)  # PyTorch default init N(0, 1)
        self.proj = nn.Linear(cfg.ve_dim, cfg.kv_dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.scales = nn.Parameter(torch.ones(len(cfg.ve_layers)))
        self.slot = {layer: i for i, layer in enumerate(cfg.ve_layers)}  # physical layer -> scale index

    def forward(self, idx):
        return self.proj(self.embed(idx))  # (B, T, kv_dim), scaled per layer by the GPT


def curriculum_window(frac: float, curriculum_frac: float, max_seq_len: int) -> int | None:
    """UT sparse-to-dense curriculum (seeds #1193/#1554): the attention window at training progress frac.

    Windows double from UT_FIRST_WINDOW (16, 32, ...) while below max_seq_len, each stage lasting an
    equal share of [0, curriculum_frac); from curriculum_frac on, None = dense causal. Powers of two
    keep the number of distinct shapes small (one torch.compile guard per stage).
    """
    windows = []
    w = UT_FIRST_WINDOW
    while w < max_seq_len:
        windows.append(w)
        w *= 2
    if not windows or frac >= curriculum_frac:
        return None
    return windows[min(int(frac / curriculum_frac * len(windows)), len(windows) - 1)]


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


class GPT(nn.Module):
    """embed (+BigramHash, RMSNorm, SmearGate) -> blocks (U-Net, recurrence or UT loop) -> tied head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise GolfError(f"GPT needs a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        C, V = cfg.d_model, cfg.vocab_size
        self.tok_emb = nn.Embedding(V, C)
        if cfg.tie_embeddings:  # small init: the same matrix produces the logits
            nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, C) if cfg.bigram_buckets else None
        self.smear = SmearGate(C, cfg.bos_id) if cfg.smear_gate else None
        self.ve = ValueEmbedding(cfg) if cfg.ve_dim else None
        self.rotary = Rotary(cfg.rope_dims or cfg.head_dim, cfg.rope_base)

        ut = cfg.ut_loops > 0
        self.blocks = nn.ModuleList(
            Block(cfg, layer, own_mix=cfg.resid_mix and not ut) for layer in range(cfg.n_physical)
        )
        if ut:
            # Universal Transformer (Dehghani et al. 2019; parameter-golf seeds #1193/#1554): the loop
            # index is told to the shared block by a per-iteration affine (scale, shift) on its normed
            # input -- a learned depth embedding -- and a per-iteration resid_mix.
            L = cfg.ut_loops
            self.ut_scale = nn.Parameter(torch.ones(L, C))
            self.ut_shift = nn.Parameter(torch.zeros(L, C))
            mix_init = torch.stack((torch.ones(L, C), torch.zeros(L, C)), dim=1)  # (L, 2, C)
            self.ut_mix = nn.Parameter(mix_init) if cfg.resid_mix else None

        # U-Net skips over the sequence of block calls: the first half pushes, the second half pops
        # (LIFO) and adds skip_weights[j] * skip. Depth recurrence changes the sequence, so size the
        # weights for the longest one; the shorter sequence uses the first ones.
        n_skip = (
            max(len(self.layer_sequence(active)) // 2 for active in (False, True)) if cfg.unet_skips else 0
        )
        self.skip_weights = nn.Parameter(torch.ones(n_skip, C)) if n_skip else None

        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(C, V, bias=False)
            nn.init.zeros_(self.lm_head.weight)  # baseline: the untied head starts at zero
        self.set_progress(1.0)  # end-of-training state; the trainer calls set_progress(0.0) first

    # --- training-state switches -------------------------------------------------------------------

    def set_progress(self, frac: float) -> None:
        """Training progress in [0, 1]: switches depth recurrence on and sets the UT attention window."""
        cfg = self.cfg
        self.progress = min(max(float(frac), 0.0), 1.0)
        # Depth recurrence (records; #1493 stack: layers 3-5 looped, on at ~35% of training). A plain
        # bool the trainer may also set directly.
        self.recurrence_active = cfg.recur_start is not None and self.progress >= cfg.recur_at_frac
        # UT curriculum: local causal window while progress < ut_curriculum_frac; None = dense.
        self.attn_window = (
            curriculum_window(self.progress, cfg.ut_curriculum_frac, cfg.max_seq_len)
            if cfg.ut_loops
            else None
        )

    def layer_sequence(self, recurrence_active: bool | None = None) -> list[int]:
        """Physical block index of each block call, in order (virtual depth = its length)."""
        cfg = self.cfg
        if cfg.ut_loops:
            return [0] * cfg.ut_loops
        seq = list(range(cfg.n_layer))
        active = self.recurrence_active if recurrence_active is None else recurrence_active
        if cfg.recur_start is None or not active:
            return seq
        # e.g. 11 layers, [3, 6), 1 repeat: 0 1 2 3 4 5 | 3 4 5 | 6 7 8 9 10 (14 virtual layers)
        again = list(range(cfg.recur_start, cfg.recur_end)) * cfg.recur_repeats
        return seq[: cfg.recur_end] + again + seq[cfg.recur_end :]

    # --- forward -----------------------------------------------------------------------------------

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> x0 (B, T, C), the stream every block can re-read through resid_mix."""
        x = self.tok_emb(idx)
        if self.bigram is not None:
            x = x + self.bigram(idx).to(x.dtype)
        x = rms_norm(x)
        if self.smear is not None:
            x = self.smear(x, idx)
        return x

    def transform(self, x0: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Run the block sequence over x0 (B, T, C); idx feeds the value embeddings."""
        cfg = self.cfg
        rope = self.rotary(idx.size(1), idx.device)
        ve = self.ve(idx) if self.ve is not None else None  # (B, T, kv_dim), shared by its layers
        seq = self.layer_sequence()
        n_enc = len(seq) // 2 if self.skip_weights is not None else len(seq)
        skips: list[torch.Tensor] = []
        x = x0
        for step, layer in enumerate(seq):
            if step >= n_enc and skips:  # decoder half: add the mirrored encoder output
                x = x + self.skip_weights[step - n_enc].to(x.dtype) * skips.pop()
            if cfg.ut_loops:  # depth = loop iteration
                depth, film = step, (self.ut_scale[step], self.ut_shift[step])
                mix = self.ut_mix[step] if self.ut_mix is not None else None
            else:  # depth = physical layer, so a re-run layer behaves as in its first pass
                depth, film, mix = layer, None, None
            layer_ve = None
            if ve is not None and layer in self.ve.slot:
                layer_ve = ve * self.ve.scales[self.ve.slot[layer]].to(ve.dtype)
            # LN scale (records): damp deeper blocks' inputs by 1/sqrt(depth + 1).
            ln_mult = 1.0 / math.sqrt(depth + 1) if cfg.ln_scale else 1.0
            x = self.blocks[layer](
                x, x0, rope, ln_mult=ln_mult, mix=mix, film=film, ve=layer_ve, window=self.attn_window
            )
            if step < n_enc and self.skip_weights is not None:
                skips.append(x)
        return x

    def lm_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final weightless RMSNorm -> head -> float32 -> softcap. (B, T, C) -> (B, T, V)."""
        head = self.tok_emb.weight if self.cfg.tie_embeddings else self.lm_head.weight
        logits = F.linear(rms_norm(x), head).float()
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits  # bounded logits (baseline: 30)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        """idx (B, T) token ids. targets None -> logits (B, T, V) float32; else the cross-entropy loss:
        a float32 scalar ("mean", "sum") or per-token (B, T) ("none")."""
        if idx.dim() != 2:
            raise GolfError(f"model input must be (batch, time) token ids, got shape {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.cfg.max_seq_len:
            raise GolfError(f"sequence length {T} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        logits = self.lm_logits(self.transform(self.embed(idx), idx))
        if targets is None:
            return logits
        if reduction not in ("mean", "sum", "none"):
            raise GolfError(f"reduction={reduction!r} must be 'mean', 'sum' or 'none'")
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T).long(), reduction=reduction)
        return loss.view(B, T) if reduction == "none" else loss

    # --- bookkeeping -------------------------------------------------------------------------------

    def num_params(self) -> int:
        """Distinct parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by optimiser role, decided by the owning module's type, not by name patterns.

        matrix: weights of every nn.Linear except an untied lm_head -- the block matrices (Muon in the
                baseline) plus the BigramHash and value-embedding projections: dense 2-D maps of the
                same kind, which an orthogonalising optimiser handles as well as block matrices.
        embed:  nn.Embedding tables (token, bigram, value) and the untied lm_head (Adam, embedding lr).
        scalar: everything else -- q gains, block scales, resid_mix, skip weights, SmearGate gate,
                bigram/VE scales, UT per-iteration tensors (Adam, scalar lr).
        """
        role: dict[int, str] = {}
        for mod_name, module in self.named_modules():
            if isinstance(module, nn.Embedding) or (isinstance(module, nn.Linear) and mod_name == "lm_head"):
                role[id(module.weight)] = "embed"
            elif isinstance(module, nn.Linear):
                role[id(module.weight)] = "matrix"
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "embed": [], "scalar": []}
        for name, p in self.named_parameters():
            groups[role.get(id(p), "scalar")].append((name, p))
        return groups
