"""Quantizers: error bounds per scheme, routing rules, GPTQ against plain rounding, on a real tiny model.

The model is a bigram language model (token embedding -> residual MLP -> output head) trained for a few
seconds on a synthetic order-1 Markov chain with peaked transitions, so its loss has a known floor and
quantization damage shows up as a measurable loss increase.
"""

from __future__ import annotations

import bisect
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golf.errors import GolfError
from golf.quant import (
    QUANTIZERS,
    QuantConfig,
    classify_param,
    collect_hessians,
    dequantize_state,
    hessian_weighted_error,
    quantize_state_dict,
)
from golf.quant.rowwise import (
    GPTQ_LITE_QUANTILES,
    INT8_CLIP_QUANTILE,
    fp16_scales,
    qrange,
    quantize_gptq_lite,
    quantize_int8_baseline,
    quantize_rowmax,
    quantize_sdclip,
    row_quantiles,
)

VOCAB, DIM, HIDDEN = 32, 64, 256


class TinyLM(nn.Module):
    """Bigram LM: next-token logits from the current token through a residual ReLU MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, DIM)
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(DIM, HIDDEN)
        self.mlp.proj = nn.Linear(HIDDEN, DIM)
        self.out_gain = nn.Parameter(torch.ones(DIM))
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok_emb(x)  # (N, D)
        h = h + self.mlp.proj(F.relu(self.mlp.fc(h)))
        return self.lm_head(h * self.out_gain)  # (N, V)


def markov_tokens(n: int, seed: int) -> torch.Tensor:
    """n tokens of an order-1 Markov chain whose rows put most mass on a few successors."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(VOCAB, VOCAB, generator=g) ** 8
    cdf = (probs / probs.sum(1, keepdim=True)).cumsum(1).tolist()
    rng = random.Random(seed)
    toks = [0]
    for _ in range(n - 1):
        toks.append(min(bisect.bisect_left(cdf[toks[-1]], rng.random()), VOCAB - 1))
    return torch.tensor(toks)


@pytest.fixture(scope="module")
def trained():
    """(model, inputs, targets), trained 150 full-batch Adam steps (about a second)."""
    torch.manual_seed(0)
    toks = markov_tokens(8001, seed=0)
    x, y = toks[:-1], toks[1:]
    model = TinyLM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x, y


def loss_with(state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    m = TinyLM()
    m.load_state_dict(state)
    with torch.no_grad():
        return F.cross_entropy(m(x), y).item()


def heavy_tailed(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Student-t(4) weights with per-row scale spread: outliers like trained matrices have."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, cols, generator=g)
    chi = torch.randn(rows, cols, 4, generator=g).pow(2).sum(-1)
    row_scale = torch.exp(0.3 * torch.randn(rows, 1, generator=g))
    return 0.02 * row_scale * z / torch.sqrt(chi / 4)


# ---------------------------------------------------------------------------------------------------------
# Error bounds of the per-row grids
# ---------------------------------------------------------------------------------------------------------


def assert_within_half_step(w: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bits: int) -> None:
    """Every element equals clamp(w, +-qmax*s) to within s/2, and symbols stay in range."""
    qmin, qmax = qrange(bits)
    assert q.dtype == torch.int8 and scales.dtype == torch.float16
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    s = scales.float().unsqueeze(1)
    deq = q.float() * s
    target = torch.maximum(torch.minimum(w, qmax * s), qmin * s)  # the clip the grid can represent
    slack = s / 2 * (1 + 1e-5) + 1e-12  # float32 rounding of w/s
    assert bool(((target - deq).abs() <= slack).all())


@pytest.mark.parametrize("bits", [4, 5, 6, 7])
def test_rowmax_intn_has_no_clipping_and_half_step_error(bits):
    w = heavy_tailed(48, 200, seed=bits)
    r = quantize_rowmax(w, bits)
    assert r.method == f"int{bits}" and r.bits == bits
    qmax = qrange(bits)[1]
    # scale stored in fp16, never below rowmax/qmax, so nothing is clipped
    assert bool((r.scales.float() >= w.abs().amax(1) / qmax).all())
    assert bool(
        (
            (w - r.q.float() * r.scales.float().unsqueeze(1)).abs()
            <= r.scales.float().unsqueeze(1) / 2 * (1 + 1e-5)
        ).all()
    )
    assert_within_half_step(w, r.q, r.scales, bits)


def test_int6_uses_the_records_grid():
    w = heavy_tailed(8, 64)
    r = quantize_rowmax(w, 6)
    assert qrange(6) == (-32, 31)
    # the row max lands on +-31 exactly (scale = rowmax/31, rounded up in fp16 by at most one ulp)
    assert int(r.q.abs().amax()) == 31


def test_int8_baseline_clips_at_the_percentile():
    # rows from far below to far above the 1/127 floor (clip 0.02 .. 20): both regimes of the baseline
    w = heavy_tailed(32, 512, seed=1) * torch.logspace(0, 3, 32).unsqueeze(1)
    r = quantize_int8_baseline(w)
    clip = torch.quantile(w.abs(), INT8_CLIP_QUANTILE, dim=1)
    scale = torch.clamp(clip / 127, min=1 / 127)
    floored = clip < 1.0
    assert 0 < int(floored.sum()) < 32  # the test covers rows on each side of the floor
    # stored: the float32 scale rounded to the *nearest* fp16 (the baseline's storage)
    assert torch.equal(r.scales, scale.to(torch.float16))
    assert int(r.q.min()) >= -127 and int(r.q.max()) <= 127
    # rounded with the float32 scale: every clipped element within s/2 of q * s (float32 s, not fp16)
    target = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
    assert bool(((target - r.q.float() * scale[:, None]).abs() <= scale[:, None] / 2 * (1 + 1e-5)).all())
    # a floored row uses the grid k/127 whatever its own range: its symbols are round(127 w)
    assert torch.equal(r.q[floored].float(), torch.round(127 * target[floored]).clamp(-127, 127))


def test_int8_stored_scale_rounds_with_what_it_stores():
    w = heavy_tailed(32, 512, seed=1) * torch.logspace(0, 3, 32).unsqueeze(1)
    r = QUANTIZERS["int8_stored_scale"]("w", w, 8, QuantConfig(method="int8_stored_scale"), None)
    base = quantize_int8_baseline(w)
    # same clip and floor, scale rounded up instead of to nearest: at most one fp16 ulp above
    assert bool((r.scales.float() >= base.scales.float()).all())
    assert bool((r.scales.float() <= base.scales.float() * (1 + 2**-10)).all())
    assert_within_half_step(torch.clamp(w, -127 * r.scales.float()[:, None], 127 * r.scales.float()[:, None]),
                            r.q, r.scales, 8)


def test_row_quantiles_match_torch_quantile():
    w = heavy_tailed(20, 1000, seed=4).abs()
    quantiles = (*GPTQ_LITE_QUANTILES, INT8_CLIP_QUANTILE, 0.5)
    for q, got in zip(quantiles, row_quantiles(w, quantiles)):
        # bit-identical: the int8 clip must be the baseline's (torch.quantile) to the last bit
        assert torch.equal(got, torch.quantile(w, q, dim=1)), q


def test_gptq_lite_never_worse_than_rowmax_per_row():
    w = heavy_tailed(64, 256, seed=2)
    lite = quantize_gptq_lite(w, 4)
    plain = quantize_rowmax(w, 4)
    err_lite = (w - lite.q.float() * lite.scales.float().unsqueeze(1)).pow(2).sum(1)
    err_plain = (w - plain.q.float() * plain.scales.float().unsqueeze(1)).pow(2).sum(1)
    assert 1.0 in GPTQ_LITE_QUANTILES  # rowmax is one of its candidates...
    assert bool((err_lite <= err_plain + 1e-12).all())  # ...so per row it can only improve
    assert float(err_lite.sum()) < 0.95 * float(err_plain.sum())  # and on heavy tails it clips profitably
    assert_within_half_step(w, lite.q, lite.scales, 4)


def test_sdclip_scale_follows_row_std():
    w = heavy_tailed(16, 512, seed=3)
    r = quantize_sdclip(w, 6, 12.85)
    expected = 12.85 * w.std(dim=1, correction=0) / 31
    ratio = r.scales.float() / expected
    assert bool((ratio >= 1).all()) and bool((ratio < 1 + 2e-3).all())
    assert_within_half_step(w, r.q, r.scales, 6)
    # the point of SDClip: a coarser grid, so fewer distinct symbols than rowmax int6 (lower entropy)
    assert r.q.unique().numel() < quantize_rowmax(w, 6).q.unique().numel()


def test_sdclip_needs_k_outside_published_widths():
    w = heavy_tailed(4, 64)
    cfg = QuantConfig(method="sdclip", bits=5, keep_fp16_max_numel=0)
    with pytest.raises(GolfError, match="sdclip_k"):
        quantize_state_dict({"w": w}, cfg)
    qs = quantize_state_dict(
        {"w": w}, QuantConfig(method="sdclip", bits=5, sdclip_k=8.0, keep_fp16_max_numel=0)
    )
    assert qs.records[0].kind == "int5"


def test_fp16_scales_round_up_and_handle_zero_rows():
    s = torch.tensor([0.0, 1e-9, 0.1234567, 3.0])
    s16 = fp16_scales(s)
    assert s16.dtype == torch.float16
    assert bool((s16.float() >= torch.where(s > 0, s, torch.ones_like(s))).all())
    assert float(s16[0]) == 1.0  # an all-zero row (zero-initialised projection) gets a harmless scale
    w = torch.zeros(3, 16)
    r = quantize_rowmax(w, 6)
    assert int(r.q.abs().max()) == 0


# ---------------------------------------------------------------------------------------------------------
# Routing, config, state dict level
# ---------------------------------------------------------------------------------------------------------


def test_classify_param_on_baseline_names():
    assert classify_param("tok_emb.weight") == "embed"
    assert classify_param("lm_head.weight") == "embed"
    assert classify_param("bigram.embed.weight") == "embed"
    assert classify_param("blocks.3.attn.c_q.weight") == "attn"
    assert classify_param("blocks.3.attn.proj.weight") == "attn"
    assert classify_param("layers.0.self_attention.q_proj.weight") == "attn"
    assert classify_param("blocks.3.mlp.fc.weight") == "mlp"
    assert classify_param("blocks.3.mlp.proj.weight") == "mlp"
    assert classify_param("layers.0.ffn.down_proj.weight") == "mlp"
    assert classify_param("skip_weights") == "other"


def test_config_validation_messages():
    with pytest.raises(GolfError, match="unknown"):
        QuantConfig(method="int9")
    with pytest.raises(GolfError, match="contradicts"):
        QuantConfig(method="int6", bits=8)
    with pytest.raises(GolfError, match="mixed"):
        QuantConfig(method="mixed")
    with pytest.raises(GolfError, match="only used with method=mixed"):
        QuantConfig(method="int8", mixed={"attn": "int6"})
    with pytest.raises(GolfError, match="not a tensor class"):
        QuantConfig(method="mixed", mixed={"attention": "int6"})
    with pytest.raises(GolfError, match="compressor"):
        QuantConfig(compressor="gzip")
    with pytest.raises(GolfError, match="valid keys"):
        QuantConfig.from_dict({"method": "int8", "bitz": 6})
    assert QuantConfig(method="gptq").bits == 6
    assert QuantConfig.from_dict(QuantConfig(method="int5").to_dict()) == QuantConfig(method="int5")
    assert QuantConfig(method="mixed", mixed={"attn": "gptq:5"}).label() == (
        "mixed(attn=gptq:5,mlp=int8,embed=int8,other=int8)"
    )


def test_storage_rules_small_control_raw_and_alias():
    torch.manual_seed(0)
    emb = nn.Embedding(40, 32)
    head = nn.Linear(32, 40, bias=False)
    head.weight = emb.weight  # tied: state_dict lists the tensor twice
    sd = {
        "tok_emb.weight": emb.weight.data,
        "blocks.0.resid_mix": torch.rand(2, 8),  # 2-D but a control knob: fp32
        "blocks.0.small.weight": torch.randn(4, 8),  # small matrix: fp16
        "blocks.0.norm.bias": torch.randn(8),  # vector: fp32
        "step": torch.tensor([7, -3], dtype=torch.int64),  # integer buffer: raw, bit-exact
        "lm_head.weight": head.weight.data,
    }
    qs = quantize_state_dict(sd, QuantConfig(method="int8", keep_fp16_max_numel=64))
    kinds = {r.name: r.kind for r in qs.records}
    assert kinds == {
        "tok_emb.weight": "int8",
        "blocks.0.resid_mix": "fp32",
        "blocks.0.small.weight": "fp16",
        "blocks.0.norm.bias": "fp32",
        "step": "raw",
        "lm_head.weight": "alias",
    }
    assert qs.record("lm_head.weight").alias_of == "tok_emb.weight"
    deq = dequantize_state(qs)
    assert list(deq) == list(sd)
    assert torch.equal(deq["step"], sd["step"])
    assert torch.equal(deq["blocks.0.resid_mix"], sd["blocks.0.resid_mix"])
    assert torch.equal(deq["lm_head.weight"], deq["tok_emb.weight"])
    assert qs.nbytes() < sum(t.numel() * t.element_size() for t in sd.values())


def test_non_finite_weights_are_refused():
    with pytest.raises(GolfError, match="inf/nan"):
        quantize_state_dict(
            {"w": torch.tensor([[1.0, float("nan")]] * 4)}, QuantConfig(keep_fp16_max_numel=0)
        )


def test_mixed_uses_the_plan_per_class(trained):
    model, _, _ = trained
    cfg = QuantConfig(method="mixed", mixed={"mlp": "int5", "embed": "int8"}, keep_fp16_max_numel=256)
    qs = quantize_state_dict(model.state_dict(), cfg)
    kinds = {r.name: r.kind for r in qs.records}
    assert kinds["tok_emb.weight"] == "int8" and kinds["lm_head.weight"] == "int8"
    assert kinds["mlp.fc.weight"] == "int5" and kinds["mlp.proj.weight"] == "int5"
    assert kinds["mlp.fc.bias"] == "fp32" and kinds["out_gain"] == "fp32"


# ---------------------------------------------------------------------------------------------------------
# On the trained model
# ---------------------------------------------------------------------------------------------------------


def test_int8_barely_changes_the_loss(trained):
    model, x, y = trained
    sd = model.state_dict()
    base = loss_with(sd, x, y)
    # it learned the chain: within 0.02 nats of the data's own bigram entropy (uniform would be 3.47)
    counts = torch.zeros(VOCAB, VOCAB).index_put_((x, y), torch.ones(len(x)), accumulate=True)
    cond = counts / counts.sum(1, keepdim=True).clamp(min=1)
    floor = float(-(counts * cond.clamp(min=1e-30).log()).sum() / counts.sum())
    assert base < floor + 0.02
    # keep_fp16_max_numel=256: every matrix of this small model is quantized, only vectors stay float
    int8 = loss_with(
        dequantize_state(quantize_state_dict(sd, QuantConfig(method="int8", keep_fp16_max_numel=256))), x, y
    )
    int4 = loss_with(
        dequantize_state(quantize_state_dict(sd, QuantConfig(method="int4", keep_fp16_max_numel=256))), x, y
    )
    # tolerance: int8 may cost at most 0.002 nats (0.1%); int4 must cost visibly more (the test can fail)
    assert abs(int8 - base) < 2e-3
    assert int4 - base > 5 * abs(int8 - base)


def test_collect_hessians_matches_manual_gram(trained):
    model, x, _ = trained
    batches = [x[:300], x[300:700]]
    hs = collect_hessians(model, batches)
    assert set(hs) == {"mlp.fc.weight", "mlp.proj.weight", "lm_head.weight"}  # the nn.Linear weights
    with torch.no_grad():
        inp = model.tok_emb(torch.cat(batches)).double()  # (N, D): what mlp.fc sees
    manual = inp.T @ inp / inp.shape[0]
    assert hs["mlp.fc.weight"].dtype == torch.float64
    torch.testing.assert_close(hs["mlp.fc.weight"], manual, rtol=1e-9, atol=1e-12)
    assert model.training  # collect_hessians restores the mode it found


def test_gptq_beats_rounding_on_the_trained_model(trained):
    model, x, y = trained
    sd = model.state_dict()
    hs = collect_hessians(model, [x[i : i + 2000] for i in range(0, 8000, 2000)])
    base = loss_with(sd, x, y)
    cfg_rtn = QuantConfig(method="int4", keep_fp16_max_numel=256)
    cfg_gptq = QuantConfig(method="gptq", bits=4, gptq_scales="rowmax", keep_fp16_max_numel=256)
    rtn = dequantize_state(quantize_state_dict(sd, cfg_rtn))
    qs = quantize_state_dict(sd, cfg_gptq, hs)
    gptq = dequantize_state(qs)
    # the embedding is not an nn.Linear input: it falls back to gptq_lite, and says so
    assert qs.notes == ["tok_emb.weight: gptq fell back to gptq_lite (no Hessian for this tensor)"]
    for name in hs:
        assert hessian_weighted_error(sd[name], gptq[name], hs[name]) < hessian_weighted_error(
            sd[name], rtn[name], hs[name]
        )
    assert loss_with(gptq, x, y) - base < 0.7 * (loss_with(rtn, x, y) - base)


def test_gptq_beats_rounding_on_correlated_inputs():
    """Same rowmax grid, same bits: only GPTQ's error propagation differs."""
    g = torch.Generator().manual_seed(5)
    cols, rows, n = 96, 40, 4000
    # correlated inputs: a few strong shared directions plus weak independent noise
    mix = torch.randn(8, cols, generator=g)
    X = torch.randn(n, 8, generator=g) @ mix + 0.1 * torch.randn(n, cols, generator=g)  # (n, cols)
    layer = nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        layer.weight.copy_(heavy_tailed(rows, cols, seed=6))
    hs = collect_hessians(layer, [X[:2000], X[2000:]])
    assert set(hs) == {"weight"}
    sd = {"weight": layer.weight.detach()}
    for bits in (3, 4, 6):
        rtn = dequantize_state(
            quantize_state_dict(sd, QuantConfig(method="gptq_lite", bits=bits, keep_fp16_max_numel=0))
        )
        cfg = QuantConfig(
            method="gptq", bits=bits, gptq_scales="search", gptq_block=32, keep_fp16_max_numel=0
        )
        gq = dequantize_state(quantize_state_dict(sd, cfg, hs))
        e_rtn = hessian_weighted_error(sd["weight"], rtn["weight"], hs["weight"])
        e_gptq = hessian_weighted_error(sd["weight"], gq["weight"], hs["weight"])
        assert e_gptq < 0.5 * e_rtn, (bits, e_gptq, e_rtn)


def test_gptq_handles_dead_inputs():
    """An input that is always zero (a dead ReLU unit) has H_jj = 0: its weights become 0, the rest work."""
    g = torch.Generator().manual_seed(7)
    X = torch.randn(500, 4, generator=g) @ torch.randn(4, 16, generator=g)  # correlated inputs
    X += 0.1 * torch.randn(500, 16, generator=g)
    X[:, 3] = 0.0
    hessian = X.double().T @ X.double() / 500
    w = heavy_tailed(8, 16, seed=8)
    qs = quantize_state_dict(
        {"w": w}, QuantConfig(method="gptq", bits=4, keep_fp16_max_numel=0), {"w": hessian}
    )
    q = qs.records[0].data
    assert int(q[:, 3].abs().max()) == 0
    deq = dequantize_state(qs)["w"]
    assert torch.isfinite(deq).all()
    rtn = dequantize_state(
        quantize_state_dict({"w": w}, QuantConfig(method="gptq_lite", bits=4, keep_fp16_max_numel=0))
    )
    assert hessian_weighted_error(w, deq, hessian) < hessian_weighted_error(w, rtn["w"], hessian)


def test_gptq_without_hessians_is_an_error(trained):
    model, _, _ = trained
    with pytest.raises(GolfError, match="collect_hessians"):
        quantize_state_dict(model.state_dict(), QuantConfig(method="gptq"))
    with pytest.raises(GolfError, match="Hessian shape"):
        quantize_state_dict(
            {"mlp.fc.weight": model.mlp.fc.weight.detach()},
            QuantConfig(method="gptq", keep_fp16_max_numel=0),
            {"mlp.fc.weight": torch.eye(3)},
        )


@pytest.mark.parametrize("quant", [{"method": "int8"}, {"method": "int6"}, {"method": "gptq_lite", "bits": 5},
                                   {"method": "sdclip", "bits": 6}, {"method": "gptq", "gptq_scales": "rowmax"}],
                         ids=lambda q: q["method"])
def test_qat_round_trip_needs_no_host_sync(quant):
    """QAT applies the artifact's round trip at every training step (golf/qat.py), so it must not read
    values back to the host: it compiles to one graph (fullgraph: a data-dependent branch such as a range
    check would break it), gives the same weights compiled and eager; the artifact's own checked scale
    rounding does break the graph, so the test can tell."""
    from golf.quant import qat_round_trip
    from golf.quant.rowwise import fp16_scales

    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    round_trip = qat_round_trip("blocks.0.attn.c_q.weight", w, QuantConfig(**quant, keep_fp16_max_numel=0))
    assert torch.equal(torch.compile(round_trip, fullgraph=True, backend="eager")(w), round_trip(w))
    torch._dynamo.reset()
    with pytest.raises(Exception, match="(?i)data.dependent|graph break|unsupported"):
        torch.compile(lambda s: fp16_scales(s), fullgraph=True, backend="eager")(w.abs().amax(dim=1))
    torch._dynamo.reset()
