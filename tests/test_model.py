"""Model zoo tests: parameter counts, shapes, causality of every switch, and each technique's contract.

Everything runs at tiny dims on CPU. Blocks start as the identity (zero-init output projections), which
would make causality tests pass trivially, so `_randomized` perturbs every parameter first.
"""

import pytest
import torch

from golf.config import build_config
from golf.errors import GolfError
from golf.model import (
    GPT,
    ModelConfig,
    apply_rotary,
    curriculum_window,
    exclusive_self_attention,
)
from golf.presets import PRESETS

TINY = {"n_layer": 2, "d_model": 32, "n_head": 4, "n_kv_head": 2, "vocab_size": 64, "max_seq_len": 64}
T = 24  # test sequence length


def _randomized(cfg: ModelConfig, seed: int = 0) -> GPT:
    """A model whose every parameter is perturbed, so every branch actually influences the output."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _tokens(cfg: ModelConfig, B: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    idx[:, 0] = cfg.bos_id
    idx[0, 9] = cfg.bos_id  # a document boundary mid-sequence
    return idx


# --- presets and parameter counts ------------------------------------------------------------------


def test_baseline_has_exactly_the_record_parameter_count():
    with torch.device("meta"):
        model = GPT(build_config("baseline").model)
    assert model.num_params() == 17_059_912


def test_seed1554_lands_within_one_percent_of_the_seed():
    with torch.device("meta"):
        model = GPT(build_config("seed1554").model)
    assert abs(model.num_params() - 4_546_568) / 4_546_568 < 0.01


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_groups_each_parameter_once(name):
    cfg = build_config(name).model
    tiny = name.startswith("tiny")
    if tiny:
        model = GPT(cfg)
    else:
        with torch.device("meta"):  # big presets: count without allocating
            model = GPT(cfg)
    groups = model.param_groups()
    assert set(groups) == {"matrix", "embed", "scalar"}
    seen = [id(p) for group in groups.values() for _, p in group]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    assert sum(p.numel() for group in groups.values() for _, p in group) == model.num_params()
    assert all(p.ndim == 2 and name.startswith(("blocks.", "bigram.", "ve.")) for name, p in groups["matrix"])
    assert "tok_emb.weight" in dict(groups["embed"])
    if tiny:
        idx = torch.randint(0, cfg.vocab_size, (2, 32))
        model.set_progress(0.4)
        logits = model(idx)
        assert logits.shape == (2, 32, cfg.vocab_size) and logits.dtype == torch.float32
        loss = model(idx, idx)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss)


def test_baseline_groups_put_block_linears_in_matrix():
    with torch.device("meta"):
        groups = GPT(build_config("baseline").model).param_groups()
    assert len(groups["matrix"]) == 9 * 6  # c_q, c_k, c_v, attn.proj, mlp.fc, mlp.proj per block
    assert [n for n, _ in groups["embed"]] == ["tok_emb.weight"]
    assert "blocks.0.resid_mix" in dict(groups["scalar"]) and "skip_weights" in dict(groups["scalar"])


def test_preset_vocab_is_overridable_and_unknowns_are_named():
    assert build_config("seed1550", overrides=["model.vocab_size=1024"]).model.vocab_size == 1024
    with pytest.raises(GolfError, match="unknown preset 'nope'.*baseline"):
        build_config("nope")
    with pytest.raises(GolfError, match="unknown config key 'model.n_layers'.*model.n_layer"):
        build_config("tiny", overrides=["model.n_layers=3"])
    assert set(PRESETS) >= {"baseline", "tiny", "seed1127", "seed1550", "seed1554"}


# --- causality of every switch ---------------------------------------------------------------------

SWITCHES = {
    "baseline_tiny": {},
    "no_unet_no_mix_no_scales": {"unet_skips": False, "resid_mix": False, "block_scales": False},
    "untied_no_softcap": {"tie_embeddings": False, "logit_softcap": 0.0},
    "no_qk_norm_no_gain": {"qk_norm": False, "q_gain_init": 0.0},
    "leaky": {"activation": "leaky_relu2"},
    "xsa": {"xsa_last_n": 2},
    "smear_gate": {"smear_gate": True},
    "bigram_hash": {"bigram_buckets": 37, "bigram_dim": 8},
    "partial_rope": {"rope_dims": 4},
    "ln_scale": {"ln_scale": True},
    "value_embeddings": {"ve_dim": 8, "ve_layers": [1]},
    "parallel_residuals": {"parallel_from": 1},
    "recurrence": {"n_layer": 4, "recur_start": 1, "recur_end": 3, "recur_repeats": 2},
    "universal_transformer": {"ut_loops": 3},
    "everything": {
        "n_layer": 4,
        "xsa_last_n": 4,
        "smear_gate": True,
        "bigram_buckets": 37,
        "bigram_dim": 8,
        "rope_dims": 4,
        "ln_scale": True,
        "ve_dim": 8,
        "ve_layers": [2, 3],
        "parallel_from": 3,
        "recur_start": 1,
        "recur_end": 3,
        "activation": "leaky_relu2",
    },
}


@pytest.mark.parametrize("progress", [0.1, 1.0])  # UT curriculum mid-way / recurrence off, then on
@pytest.mark.parametrize("switch", list(SWITCHES))
def test_changing_a_future_token_leaves_past_logits_unchanged(switch, progress):
    cfg = ModelConfig(**{**TINY, **SWITCHES[switch]})
    model = _randomized(cfg)
    model.set_progress(progress)
    if switch == "universal_transformer" and progress < 1:
        assert model.attn_window is not None and model.attn_window < T  # the local-window path
    idx = _tokens(cfg)
    with torch.no_grad():
        base = model(idx)
        for t in (0, 8, 15):  # change token t + 1 (8 -> 9 also flips a BOS into a normal token)
            changed = idx.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 7) % cfg.vocab_size
            out = model(changed)
            assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0), (switch, t)
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-4), (switch, t)


def test_recurrence_switches_on_with_progress():
    cfg = ModelConfig(**{**TINY, "n_layer": 4, "recur_start": 1, "recur_end": 3, "recur_at_frac": 0.35})
    model = _randomized(cfg)
    idx = _tokens(cfg)
    model.set_progress(0.3)
    assert not model.recurrence_active and model.layer_sequence() == [0, 1, 2, 3]
    with torch.no_grad():
        off = model(idx)
    model.set_progress(0.35)
    assert model.recurrence_active and model.layer_sequence() == [0, 1, 2, 1, 2, 3]
    with torch.no_grad():
        on = model(idx)
    assert not torch.allclose(on, off, atol=1e-4)
    model.recurrence_active = False  # the plain attribute works too
    with torch.no_grad():
        assert torch.equal(model(idx), off)
    # skip weights sized for the longer (recurrent) sequence: 6 calls -> 3 skips
    assert model.skip_weights.shape == (3, cfg.d_model)


def test_unet_skips_pair_mirrored_layers():
    """Decoder step j adds skip_weights[j] times the output of encoder step n_enc - 1 - j (LIFO)."""
    model = _randomized(ModelConfig(**{**TINY, "n_layer": 4}))
    with torch.no_grad():
        model.skip_weights.copy_(torch.tensor([[1.0], [0.5]]).expand(2, TINY["d_model"]))
    inputs, outputs = {}, {}

    def record(i):
        def hook(module, args, out):  # returns None: the output is left as it is
            inputs[i], outputs[i] = args[0], out

        return hook

    for i, block in enumerate(model.blocks):
        block.register_forward_hook(record(i))
    with torch.no_grad():
        model(_tokens(model.cfg))
    assert torch.allclose(inputs[2], outputs[1] + 1.0 * outputs[1])
    assert torch.allclose(inputs[3], outputs[2] + 0.5 * outputs[0])


# --- Universal Transformer curriculum --------------------------------------------------------------


def test_curriculum_window_grows_from_16_to_dense():
    windows = [curriculum_window(f / 100, 0.5, 1024) for f in range(101)]
    assert windows[0] == 16 and windows[49] == 512 and windows[50] is None and windows[100] is None
    sized = [w for w in windows if w is not None]
    assert sized == sorted(sized) and set(sized) == {16, 32, 64, 128, 256, 512}


def test_ut_window_limits_what_a_single_loop_can_see():
    cfg = ModelConfig(**{**TINY, "ut_loops": 1, "max_seq_len": 64})
    model = _randomized(cfg)
    model.set_progress(0.0)
    w = model.attn_window
    assert w == 16 and T > w
    idx = _tokens(cfg)
    changed = idx.clone()
    changed[:, 3] = (changed[:, 3] + 5) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
        assert torch.equal(a[:, 3 + w :], b[:, 3 + w :])  # outside the window: untouched
        assert not torch.allclose(a[:, 3 + w - 1], b[:, 3 + w - 1])  # last position inside: affected
        model.set_progress(1.0)
        assert model.attn_window is None
        a, b = model(idx), model(changed)
        assert not torch.allclose(a[:, 3 + w :], b[:, 3 + w :])  # dense: everything after sees it


# --- techniques ------------------------------------------------------------------------------------


def test_smear_gate_does_not_smear_into_bos():
    cfg = ModelConfig(**{**TINY, "smear_gate": True})
    model = _randomized(cfg)
    idx = _tokens(cfg)
    assert idx[0, 9] == cfg.bos_id and idx[0, 5] != cfg.bos_id
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 3) % cfg.vocab_size  # the token before the BOS at 9
    changed[0, 4] = (changed[0, 4] + 3) % cfg.vocab_size  # the token before an ordinary token at 5
    if changed[0, 8] == cfg.bos_id or changed[0, 4] == cfg.bos_id:
        pytest.skip("perturbation hit the BOS id")
    with torch.no_grad():
        a, b = model.embed(idx), model.embed(changed)
    assert torch.equal(a[0, 9], b[0, 9])  # BOS: unchanged by the previous document
    assert not torch.allclose(a[0, 5], b[0, 5])  # ordinary token: smeared with its predecessor


def test_bigram_buckets_follow_the_hash():
    cfg = ModelConfig(**{**TINY, "bigram_buckets": 10, "bigram_dim": 4})
    model = GPT(cfg)
    idx = torch.tensor([[5, 3, 63]])
    ids = model.bigram.bucket_ids(idx)
    assert ids.tolist() == [[9, ((36313 * 3) ^ (27191 * 5)) % 9, ((36313 * 63) ^ (27191 * 3)) % 9]]
    assert model.bigram.scale.item() == pytest.approx(0.05)
    with torch.no_grad():  # zero-init projection: a fresh model is unaffected by the bigram
        assert torch.equal(model.bigram(idx), torch.zeros(1, 3, cfg.d_model))


def test_xsa_output_is_orthogonal_to_own_value():
    y, v = torch.randn(2, 5, 4, 8), torch.randn(2, 5, 2, 8)
    out = exclusive_self_attention(y, v)
    v_hat = torch.nn.functional.normalize(v.repeat_interleave(2, dim=2), dim=-1)
    assert (out * v_hat).sum(-1).abs().max() < 1e-5
    assert (y * v_hat).sum(-1).abs().max() > 1e-2  # the input was not already orthogonal


@pytest.mark.parametrize("xsa", [True, False])
def test_xsa_inside_the_model(xsa):
    """Capture the last layer's values and its pre-projection output through hooks."""
    cfg = ModelConfig(**{**TINY, "xsa_last_n": 1 if xsa else 0})
    model = _randomized(cfg)
    attn = model.blocks[-1].attn
    seen = {}
    attn.c_v.register_forward_hook(lambda m, i, o: seen.__setitem__("v", o))
    attn.proj.register_forward_hook(lambda m, i, o: seen.__setitem__("y", i[0]))
    with torch.no_grad():
        model(_tokens(cfg))
    B = seen["v"].size(0)
    v = seen["v"].view(B, T, cfg.n_kv_head, cfg.head_dim).repeat_interleave(2, dim=2)
    y = seen["y"].view(B, T, cfg.n_head, cfg.head_dim)
    dots = (y * torch.nn.functional.normalize(v, dim=-1)).sum(-1).abs().max()
    assert (dots < 1e-5) if xsa else (dots > 1e-3)
    assert not model.blocks[0].attn.xsa  # only the last layer


def test_partial_rope_rotates_only_the_first_dims():
    x = torch.randn(1, 6, 2, 16)
    model = GPT(ModelConfig(**{**TINY, "rope_dims": 4}))
    cos, sin = model.rotary(6, x.device)
    out = apply_rotary(x, cos, sin)
    assert torch.equal(out[..., 4:], x[..., 4:])
    assert torch.allclose(out[:, 0], x[:, 0]) and not torch.allclose(out[:, 1:, :, :4], x[:, 1:, :, :4])
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation


@pytest.mark.parametrize("parallel", [False, True])
def test_block_residual_order(parallel):
    """Sequential: x + a(n(x)), then + m(n(x')). Parallel residuals: both branches read n(x)."""
    cfg = ModelConfig(**{**TINY, "parallel_from": 0 if parallel else None, "resid_mix": False})
    block = _randomized(cfg).blocks[1]
    x = torch.randn(2, T, cfg.d_model)
    rope = GPT(cfg).rotary(T, x.device)
    norm = torch.nn.functional.rms_norm
    with torch.no_grad():
        a = block.attn_scale * block.attn(norm(x, (cfg.d_model,)), rope)
        if parallel:
            expected = x + a + block.mlp_scale * block.mlp(norm(x, (cfg.d_model,)))
        else:
            expected = x + a + block.mlp_scale * block.mlp(norm(x + a, (cfg.d_model,)))
        assert torch.allclose(block(x, x, rope), expected, atol=1e-5)


@pytest.mark.parametrize("ut", [False, True])
def test_ln_scale_damps_block_inputs_by_depth(ut):
    cfg = ModelConfig(**{**TINY, "n_layer": 3, "ln_scale": True, "ut_loops": 3 if ut else 0})
    model = GPT(cfg)
    rms = []
    for block in model.blocks:
        block.attn.register_forward_pre_hook(lambda m, a: rms.append(a[0].square().mean().sqrt().item()))
    with torch.no_grad():
        model(_tokens(cfg))
    assert rms == pytest.approx([1.0, 1 / 2**0.5, 1 / 3**0.5], rel=1e-3)


def test_ut_iteration_scale_and_shift_reach_the_shared_block():
    cfg = ModelConfig(**{**TINY, "ut_loops": 3})
    model = GPT(cfg)
    with torch.no_grad():
        model.ut_scale[1].zero_()
        model.ut_shift[1].fill_(3.0)
    seen = []
    model.blocks[0].attn.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        model(_tokens(cfg))
    assert len(seen) == 3 and torch.equal(seen[1], torch.full_like(seen[1], 3.0))
    assert not torch.equal(seen[0], seen[1])


def test_value_embeddings_feed_their_layers():
    cfg = ModelConfig(**{**TINY, "ve_dim": 8, "ve_layers": [1]})
    model = _randomized(cfg)
    idx = _tokens(cfg)
    with torch.no_grad():
        with_ve = model(idx)
        model.ve.scales.zero_()
        without = model(idx)
        model.blocks[1].attn.c_v.weight.zero_()  # V of layer 1 is now the value embedding alone...
        model.ve.scales.fill_(1.0)
        only_ve = model(idx)
        model.ve.proj.weight.zero_()  # ...and now nothing
        nothing = model(idx)
    assert not torch.allclose(with_ve, without, atol=1e-4)
    assert not torch.allclose(only_ve, nothing, atol=1e-4)


def test_fresh_model_blocks_start_as_identity():
    """Zero-init output projections (baseline): a fresh model's logits ignore every block."""
    cfg = ModelConfig(**TINY)
    model = GPT(cfg)
    idx = _tokens(cfg)
    with torch.no_grad():
        direct = model.lm_logits(model.embed(idx))
        assert torch.allclose(model(idx), direct, atol=1e-6)


# --- losses and dtypes -----------------------------------------------------------------------------


def test_per_token_loss_matches_mean_loss():
    cfg = ModelConfig(**{**TINY, **SWITCHES["everything"]})
    model = _randomized(cfg)
    idx = _tokens(cfg)
    targets = torch.roll(idx, -1, dims=1)
    with torch.no_grad():
        per_token = model(idx, targets, reduction="none")
        mean = model(idx, targets)
    assert per_token.shape == idx.shape and per_token.dtype == torch.float32
    assert torch.allclose(per_token.mean(), mean, atol=1e-6)
    logits = model(idx)
    assert logits.abs().max() <= cfg.logit_softcap


def test_bf16_autocast_runs_and_returns_float32():
    cfg = ModelConfig(**{**TINY, **SWITCHES["everything"], "ut_loops": 0})
    model = _randomized(cfg)
    idx = _tokens(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)
        loss = model(idx, idx)
    loss.backward()
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32 and torch.isfinite(loss)
    with torch.no_grad():
        assert (logits - model(idx)).abs().max() < 0.5  # bf16 agrees with float32, roughly


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_matches_cpu_float32():
    cfg = ModelConfig(**{**TINY, **SWITCHES["everything"]})
    model = _randomized(cfg)
    idx = _tokens(cfg)
    with torch.no_grad():
        ref = model(idx, idx)
        model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = model(idx.cuda(), idx.cuda())
    assert abs(got.item() - ref.item()) < 0.05


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"d_model": 30}, "d_model=30 must be divisible by n_head=4"),
        ({"n_kv_head": 3}, "n_head=4 must be a multiple of n_kv_head=3"),
        ({"rope_dims": 3}, "rope_dims=3 must be even"),
        ({"rope_dims": 10}, r"rope_dims=10 .* head_dim=8"),
        ({"recur_start": 1}, "set both recur_start and recur_end"),
        ({"recur_start": 1, "recur_end": 3}, r"recurrence range \[1, 3\) .* n_layer=2"),
        ({"recur_start": 1, "recur_end": 1}, "must be non-empty"),
        ({"ut_loops": 2, "recur_start": 0, "recur_end": 1}, "exclude each other"),
        ({"ve_dim": 8}, "ve_dim and ve_layers go together"),
        ({"ve_dim": 8, "ve_layers": [2]}, r"ve_layers=\[2\] must be distinct indices"),
        ({"xsa_last_n": 3}, r"xsa_last_n=3 must be in \[0, 2\]"),
        ({"ut_loops": 4, "xsa_last_n": 2}, "one shared block"),
        ({"parallel_from": 5}, "parallel_from=5"),
        ({"activation": "gelu"}, "activation='gelu' is unknown"),
        ({"bigram_buckets": 1}, "bigram_buckets=1"),
        ({"mlp_mult": 0.0}, "empty MLP"),
        ({"n_layer": "3"}, "n_layer='3' must be of type int"),
        ({"bos_id": 64}, "bos_id=64"),
    ],
)
def test_invalid_configs_say_what_to_change(overrides, message):
    with pytest.raises(GolfError, match=message):
        ModelConfig(**{**TINY, **overrides})


def test_bad_inputs_raise_golf_errors():
    cfg = ModelConfig(**{**TINY, "max_seq_len": 16})
    model = GPT(cfg)
    with pytest.raises(GolfError, match="exceeds model.max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(GolfError, match="reduction='avg'"):
        idx = torch.zeros(1, 4, dtype=torch.long)
        model(idx, idx, reduction="avg")
    with pytest.raises(GolfError, match="needs a ModelConfig"):
        GPT({"n_layer": 2})


def test_each_preset_family_brings_its_run_scale():
    """tiny* presets train on the tiny scale, small and medium one pass over the 8.5M-token default corpus,
    the full-size presets keep the baseline's own training config."""
    from golf.config import LADDER_RUN, TINY_RUN, build_config

    assert build_config("tiny1127").train.batch_tokens == TINY_RUN["train"]["batch_tokens"]
    for name in ("small", "medium"):
        cfg = build_config(name)
        assert cfg.train.max_steps * cfg.train.batch_tokens == 518 * 16_384 == 8_486_912
        assert cfg.train.seq_len == LADDER_RUN["train"]["seq_len"] == cfg.model.max_seq_len
        assert cfg.quant.keep_fp16_max_numel < cfg.model.d_model ** 2  # every matrix is quantized
    base = build_config("baseline")
    assert (base.train.batch_tokens, base.train.seq_len) == (524_288, 1024)
