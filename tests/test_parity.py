"""Parity with the challenge's own baseline, ../shared/reference/train_gpt.py (unchanged; skipped if absent).

Each test runs the reference's own functions (imported without running its main(), which needs CUDA) next
to golf's on the same inputs: logits of the same weights, int8 symbols/scales/bytes of the same state
dict, one Muon step, the LR schedule, byte tables, the validation token range, the training stream, the
CUDA parameter dtypes, and a reference checkpoint and int8 artifact made here by the reference's code,
imported with `golf import` and scored by `golf run --from` against the reference's `eval_val`.
"""

from __future__ import annotations

import ast
import io
import json
import math
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from golf.cli import main as golf_main
from golf.config import build_config, config_from_dict
from golf.data.dataset import Dataset
from golf.evaluate import official_tokens, resolve_protocol
from golf.model import GPT, ModelConfig
from golf.optim import Muon, lr_scale
from golf.pgformat import load_script_definitions, read_pg_file
from golf.quant import QuantConfig, dequantize_state, quantize_state_dict
from golf.run import weights_sha256
from golf.train import TokenStream, apply_param_dtypes

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "train_gpt.py"
# A small model the reference accepts (its GPT takes these as arguments; its env vars set the same).
SMALL = dict(num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2)
VOCAB = 512  # the tiny test dataset's


@pytest.fixture(scope="module")
def ref():
    if not REFERENCE.is_file():
        pytest.skip(f"reference script not found at {REFERENCE}")
    return load_script_definitions(REFERENCE)


def ref_gpt(ref, vocab=VOCAB, tie=True, **shape):
    dims = {**SMALL, **shape}
    torch.manual_seed(0)  # its nn.Linear init draws from the global generator: seeded, so runs repeat
    return ref.GPT(vocab_size=vocab, tie_embeddings=tie, tied_embed_init_std=0.005, logit_softcap=30.0,
                   rope_base=10000.0, qk_gain_init=1.5, **dims)


def golf_gpt(vocab=VOCAB, tie=True, num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=num_layers, d_model=model_dim, n_head=num_heads, n_kv_head=num_kv_heads,
                           mlp_mult=float(mlp_mult), vocab_size=vocab, tie_embeddings=tie, max_seq_len=1024))


def non_initial(model, seed=0, row_scales=False):
    """Random weights nowhere near init (zero-init projections, unit gains and the mix all moved).

    row_scales: each row of a matrix gets its own magnitude, 10^U(-2.5, 0.7), so int8 rows fall on both
    sides of the baseline's 1/127 scale floor (clip below and above 1.0).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            if row_scales and p.dim() == 2 and p.numel() > 4096:
                noise *= 10 ** (torch.rand(p.shape[0], 1, generator=g) * 3.2 - 2.5)
            else:
                noise *= 0.1
            p.add_(noise)
    return model


def ref_logits(ref, model, x, y):
    """The reference's loss and the exact float32 logits it hands to cross_entropy (captured, not recomputed)."""
    seen = {}
    real = ref.F

    class Capture(types.SimpleNamespace):
        def __getattr__(self, name):
            return getattr(real, name)

        def cross_entropy(self, logits, targets, **kw):
            seen["logits"] = logits
            return real.cross_entropy(logits, targets, **kw)

    ref.F = Capture()
    try:
        loss = model(x, y)
    finally:
        ref.F = real
    return loss, seen["logits"]


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_same_weights_same_logits(ref, tie):
    golf = non_initial(golf_gpt(tie=tie), seed=1)
    theirs = ref_gpt(ref, tie=tie)
    theirs.load_state_dict(golf.state_dict(), strict=True)  # same names and shapes, nothing left over
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, VOCAB, (2, 128), generator=g)
    y = torch.randint(0, VOCAB, (2, 128), generator=g)
    with torch.no_grad():
        loss, logits = ref_logits(ref, theirs, x, y)
        mine = golf(x)
    diff = (mine.reshape(-1, VOCAB) - logits).abs().max().item()
    print(f"parity: max |logit diff| = {diff:.3g} (tie={tie})")
    assert diff <= 1e-5
    assert golf(x, y).item() == pytest.approx(loss.item(), abs=1e-6)


def test_cuda_parameter_dtypes_are_the_references(ref):
    """On CUDA the reference casts the model to bf16 and puts linears and control tensors back to fp32."""
    theirs = ref_gpt(ref).bfloat16()  # train_gpt.py main(): the three steps after building the GPT
    for module in theirs.modules():
        if isinstance(module, ref.CastedLinear):
            module.float()
    ref.restore_low_dim_params_to_fp32(theirs)
    mine = golf_gpt()
    cfg = build_config("baseline").train
    apply_param_dtypes(mine, torch.device("cuda"), cfg)  # only decides by the device type; no GPU used
    assert {k: v.dtype for k, v in mine.state_dict().items()} == {k: v.dtype for k, v in theirs.state_dict().items()}
    assert mine.tok_emb.weight.dtype == torch.bfloat16
    cpu = golf_gpt()
    apply_param_dtypes(cpu, torch.device("cpu"), cfg)  # CPU keeps float32 (no bf16 autocast there)
    assert {v.dtype for v in cpu.state_dict().values()} == {torch.float32}


# ---------------------------------------------------------------------------------------------------------
# int8 export
# ---------------------------------------------------------------------------------------------------------


def test_int8_symbols_scales_and_bytes_match(ref, tmp_path):
    # 256 wide, vocab 1024: the embedding and MLP matrices are over the 65,536-element keep-float limit
    # (quantized), attention matrices and control tensors under it (kept), as in the baseline's export
    from golf.artifact import save_artifact

    model = non_initial(golf_gpt(vocab=1024, num_layers=2, model_dim=256), seed=3, row_scales=True)
    state = model.state_dict()
    obj, _ = ref.quantize_state_dict_int8(state)
    cfg = QuantConfig(method="int8", compressor="zlib")
    qs = quantize_state_dict(state, cfg)
    records = {r.name: r for r in qs.records}

    assert sorted(n for n, r in records.items() if r.is_int) == sorted(obj["quantized"])
    mismatched = floored = rows = 0
    for name, q in obj["quantized"].items():
        r = records[name]
        mismatched += int((r.data != q).sum())
        assert torch.equal(r.scales, obj["scales"][name]), name
        floored += int((obj["scales"][name].float() <= 1 / 127 * (1 + 2**-10)).sum())
        rows += q.shape[0]
    assert mismatched == 0
    assert 0 < floored < rows  # rows on both sides of the scale floor were compared
    for name, t in obj["passthrough"].items():  # kept tensors: same storage dtype, same values
        assert torch.equal(records[name].data, t), name
    ours = dequantize_state(qs)
    for name, t in ref.dequantize_state_dict_int8(obj).items():
        assert torch.equal(ours[name], t.float()), name

    buf = io.BytesIO()
    torch.save(obj, buf)
    ref_bytes = len(zlib.compress(buf.getvalue(), level=9))
    golf_bytes = save_artifact(tmp_path / "m.golfart", qs, cfg)
    print(f"parity: int8 symbol mismatches {mismatched} of {sum(q.numel() for q in obj['quantized'].values())}; "
          f"int8+zlib bytes golf {golf_bytes} / reference {ref_bytes} = {golf_bytes / ref_bytes:.4f}")
    assert abs(golf_bytes / ref_bytes - 1) < 0.01


# ---------------------------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------------------------


def test_optimizer_split_and_one_muon_step_match(ref, tiny_dataset):
    """Muon on the same matrices (the reference's split rule), the CUDA path's bf16 Newton-Schulz: bit-equal."""
    golf = non_initial(golf_gpt(), seed=4)
    theirs = ref_gpt(ref)
    theirs.load_state_dict(golf.state_dict())
    # the reference's rule (train_gpt.py main): block matrices that are not control tensors go to Muon
    ref_matrices = [n for n, p in theirs.blocks.named_parameters()
                    if p.ndim == 2 and not any(pat in n for pat in ref.CONTROL_TENSOR_NAME_PATTERNS)]
    golf_matrices = [n.removeprefix("blocks.") for n, _ in golf.param_groups()["matrix"]]
    assert golf_matrices == ref_matrices

    tokens = torch.from_numpy(Dataset.open(tiny_dataset).train_tokens(0)[: 4 * 128 + 1].astype(np.int64))
    x, y = tokens[:-1].view(4, 128), tokens[1:].view(4, 128)
    mine_p = [p for _, p in golf.param_groups()["matrix"]]
    ref_p = [dict(theirs.blocks.named_parameters())[n] for n in ref_matrices]
    mine_opt = Muon(mine_p, lr=0.04, momentum=0.9, ns_steps=5, ns_dtype=torch.bfloat16)
    ref_opt = ref.Muon(ref_p, lr=0.04, momentum=0.9, backend_steps=5)
    for _ in range(2):  # the second step also exercises the momentum buffer
        golf.zero_grad()
        theirs.zero_grad()
        golf(x, y).backward()
        theirs(x, y).backward()
        mine_opt.step()
        ref_opt.step()
    for a, b in zip(mine_p, ref_p):
        assert torch.equal(a, b)


def _reference_lr_mul(ref, iterations: int, warmdown_iters: int, max_wallclock_seconds: float):
    """The reference's lr_mul, a closure inside main(): compiled from its source with the values it closes over."""
    tree = ast.parse(REFERENCE.read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    fn = next(n for n in ast.walk(main) if isinstance(n, ast.FunctionDef) and n.name == "lr_mul")
    scope = {"args": types.SimpleNamespace(iterations=iterations, warmdown_iters=warmdown_iters),
             "max_wallclock_ms": 1000.0 * max_wallclock_seconds if max_wallclock_seconds > 0 else None}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(REFERENCE), "exec"), scope)
    return scope["lr_mul"]


def test_lr_schedule_matches_reference(ref):
    by_steps = _reference_lr_mul(ref, 100, 20, 0.0)
    for step in range(100):
        assert lr_scale(step, 100, 20) == pytest.approx(by_steps(step, 0.0), abs=1e-12)
    # with a wallclock budget: by time alone, whatever max_steps says (600 s, 1,200 warmdown steps)
    by_time = _reference_lr_mul(ref, 20_000, 1200, 600.0)
    for step, elapsed_s in [(0, 0.0), (1, 0.05), (1000, 100.0), (5000, 500.0), (5500, 550.0), (5999, 599.9),
                            (6000, 600.0), (7000, 650.0)]:
        want = by_time(step, 1000.0 * elapsed_s)
        assert lr_scale(step, 20_000, 1200, elapsed_s, 600.0, "pg") == pytest.approx(want, rel=1e-9, abs=1e-12)
    # golf's own "min" differs where the step budget ends first: 100 steps, 20 warmdown, time to spare
    assert lr_scale(90, 100, 20, 9.0, 600.0, "min") == pytest.approx(0.5)
    assert lr_scale(90, 100, 20, 9.0, 600.0, "pg") == _reference_lr_mul(ref, 100, 20, 600.0)(90, 9000.0) == 1.0


# ---------------------------------------------------------------------------------------------------------
# Data: byte tables, validation range, training stream
# ---------------------------------------------------------------------------------------------------------


def test_byte_tables_and_validation_range_match(ref, tiny_dataset):
    ds = Dataset.open(tiny_dataset)
    base, space, boundary = ref.build_sentencepiece_luts(ds.tokenizer, ds.vocab_size, torch.device("cpu"))
    assert np.array_equal(ds.byte_table.base_bytes, base.numpy().astype(np.int64))
    assert np.array_equal(ds.byte_table.has_space, space.numpy())
    assert np.array_equal(ds.byte_table.is_boundary, boundary.numpy())
    for seq_len in (64, 128, 1024):
        theirs = ref.load_validation_tokens(str(tiny_dataset / f"{ds.name}_val_*.bin"), seq_len)
        mine = official_tokens(np.asarray(ds.val_tokens), "pg", seq_len)
        assert np.array_equal(mine, theirs.numpy().astype(mine.dtype)), seq_len
        assert official_tokens(np.asarray(ds.val_tokens), "all", seq_len).size == ds.val_tokens.size
    assert resolve_protocol("auto", "fineweb") == "pg" and resolve_protocol("auto", ds.name) == "all"


@pytest.mark.parametrize("world,accum", [(1, 8), (2, 4)])
def test_training_stream_reads_like_the_reference(ref, tiny_dataset, world, accum):
    """Micro-batches as the reference's DistributedTokenLoader cuts them, across a shard boundary."""
    ds = Dataset.open(tiny_dataset)
    assert len(ds.train_shards) > 1
    seq_len, batch_tokens = 64, 8 * 2 * 64  # 8 micro-batches of 2 sequences per step in all
    loaders = [ref.DistributedTokenLoader(str(tiny_dataset / f"{ds.name}_train_*.bin"), r, world,
                                          torch.device("cpu")) for r in range(world)]
    mine = TokenStream(ds)
    steps = ds.train_tokens(0).size // (8 * (2 * 64 + 1)) + 2  # past the end of the first shard
    for _ in range(steps):
        parts = torch.from_numpy(mine.next_step(batch_tokens, seq_len, world, accum))
        for m in range(accum):
            for r, loader in enumerate(loaders):
                x, y = loader.next_batch(batch_tokens, seq_len, accum)
                part = parts[m * world + r]
                assert torch.equal(part[:, :-1], x) and torch.equal(part[:, 1:], y)


def test_baseline_defaults_are_the_references():
    """8 micro-batches per step in all (8 // world per rank), warmdown by time, bf16 embedding on CUDA."""
    from golf.errors import GolfError
    from golf.train import micro_batches

    tc = build_config("baseline").train
    assert (tc.grad_accum, tc.warmdown_mode, tc.bf16_embedding) == (0, "pg", True)
    assert [micro_batches(tc, w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]  # train_gpt.py: 8 // WORLD_SIZE
    with pytest.raises(GolfError, match="does not divide 8"):
        micro_batches(tc, 3)
    assert micro_batches(build_config("tiny").train, 2) == 1  # the CPU presets keep one micro-batch


# ---------------------------------------------------------------------------------------------------------
# golf import -> golf run --from, scored against the reference's eval_val
# ---------------------------------------------------------------------------------------------------------


def _ref_eval(ref, model, ds: Dataset, directory: Path, seq_len: int) -> tuple[float, float, int]:
    """The reference's eval_val on the dataset's validation shards: (val_loss, val_bpb, targets scored)."""
    args = ref.Hyperparameters()
    args.train_seq_len, args.val_batch_size = seq_len, 16 * seq_len
    val = ref.load_validation_tokens(str(directory / f"{ds.name}_val_*.bin"), seq_len)
    luts = ref.build_sentencepiece_luts(ds.tokenizer, ds.vocab_size, torch.device("cpu"))
    with pytest.warns(UserWarning, match="CUDA"):  # its autocast(device_type="cuda") is a no-op on CPU
        loss, bpb = ref.eval_val(args, model, 0, 1, torch.device("cpu"), 1, val, *luts)
    return loss, bpb, val.numel() - 1


def _golf(*argv) -> int:
    return golf_main([str(a) for a in argv])


@pytest.fixture(scope="module")
def reference_files(ref, tiny_dataset, tmp_path_factory):
    """final_model.pt and final_model.int8.ptz written by the reference's own code, and its scores of them."""
    out = tmp_path_factory.mktemp("pg")
    model = non_initial(ref_gpt(ref), seed=5, row_scales=True)
    with torch.no_grad():  # moderate weights, so the scores are those of a model, not of noise
        for p in model.parameters():
            p.mul_(0.15)
    ds = Dataset.open(tiny_dataset)
    # as train_gpt.py saves it after CUDA training: the token embedding a bf16 tensor, the rest float32
    state = model.state_dict()
    state["tok_emb.weight"] = state["tok_emb.weight"].bfloat16()
    model.load_state_dict(state)  # the reference model evaluated below holds exactly these values
    torch.save(state, out / "final_model.pt")
    old = ref.INT8_KEEP_FLOAT_MAX_NUMEL
    ref.INT8_KEEP_FLOAT_MAX_NUMEL = 1024  # quantize this small model's matrices too (the baseline's are large)
    try:
        obj, _ = ref.quantize_state_dict_int8(state)
    finally:
        ref.INT8_KEEP_FLOAT_MAX_NUMEL = old
    buf = io.BytesIO()
    torch.save(obj, buf)
    (out / "final_model.int8.ptz").write_bytes(zlib.compress(buf.getvalue(), level=9))
    scores = {"float": _ref_eval(ref, model, ds, tiny_dataset, 128)}
    blob = (out / "final_model.int8.ptz").read_bytes()
    model.load_state_dict(ref.dequantize_state_dict_int8(torch.load(io.BytesIO(zlib.decompress(blob)))), strict=True)
    scores["int8"] = _ref_eval(ref, model, ds, tiny_dataset, 128)
    return out, scores


# what `golf run --from` is told: the reference's protocol and window length, its int8 with the same
# keep-float limit as the artifact above, no TTT
RUN_FROM = ["-s", "eval.protocol=pg", "-s", "eval.seq_len=128", "-s", "quant.keep_fp16_max_numel=1024"]


def test_imported_checkpoint_scores_as_in_the_reference(reference_files, tiny_dataset, tmp_path):
    pg, scores = reference_files
    assert _golf("import", pg / "final_model.pt", "--data", tiny_dataset, "--out", tmp_path / "imp") == 0
    info = json.loads((tmp_path / "imp" / "import.json").read_text())
    assert info["format"] == "pg_state_dict" and info["model"]["n_layer"] == 3
    assert info["dtypes"] == ["bfloat16", "float32"]
    assert _golf("run", "--from", tmp_path / "imp", *RUN_FROM, "--out", tmp_path / "run") == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    loss, bpb, targets = scores["float"]
    print(f"parity: val_bpb float golf {result['eval']['val_bpb_base']:.8f} reference {bpb:.8f}; "
          f"int8 round trip golf {result['eval']['val_bpb']:.8f} reference {scores['int8'][1]:.8f}")
    assert result["eval"]["protocol"] == "pg" and result["data"]["val_tokens_scored"] == targets
    assert result["eval"]["val_bpb_base"] == pytest.approx(bpb, abs=1e-6)
    # golf's int8 of the same weights is the reference's symbol for symbol: the same round-trip score
    assert result["eval"]["val_bpb"] == pytest.approx(scores["int8"][1], abs=1e-6)
    assert result["eval"]["val_loss"] == pytest.approx(scores["int8"][0], abs=1e-6)
    assert result["ttt"]["legal"] and result["train"]["steps"] == 0
    assert result["train"]["trained_at"] == {"git_sha": "unknown", "dirty": None}  # trained by the reference
    # the digest is that of the imported weights, and the same whether the embedding is held as the reference
    # trained it (bf16 on CUDA) or as golf's CPU model holds it (float32, exact)
    imported = GPT(config_from_dict(result["config"]).model)
    imported.load_state_dict(torch.load(tmp_path / "imp" / "checkpoint.pt", weights_only=True))
    assert weights_sha256(imported) == result["train"]["weights_sha256"]
    imported.tok_emb.to(torch.bfloat16)
    assert weights_sha256(imported) == result["train"]["weights_sha256"]
    assert result["source"]["import"]["sha256"] == info["sha256"]
    ptz = (pg / "final_model.int8.ptz").stat().st_size
    assert abs(result["artifact"]["bytes_model"] / ptz - 1) < 0.05  # containers differ; small model


def test_imported_int8_artifact_scores_as_in_the_reference(reference_files, tiny_dataset, tmp_path):
    pg, scores = reference_files
    assert _golf("import", pg / "final_model.int8.ptz", "--data", tiny_dataset, "--out", tmp_path / "imp") == 0
    assert json.loads((tmp_path / "imp" / "import.json").read_text())["format"] == "pg_int8_zlib"
    assert _golf("run", "--from", tmp_path / "imp", *RUN_FROM, "--out", tmp_path / "run") == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["eval"]["val_bpb_base"] == pytest.approx(scores["int8"][1], abs=1e-6)
    # re-quantizing the reference's dequantized int8 weights with golf's int8 gives them back
    assert result["eval"]["val_bpb"] == pytest.approx(scores["int8"][1], abs=1e-6)


def test_ttt_on_an_imported_model_goes_through_the_ledger(reference_files, tiny_dataset, tmp_path):
    pg, _ = reference_files
    assert _golf("import", pg / "final_model.int8.ptz", "--data", tiny_dataset, "--out", tmp_path / "imp") == 0
    assert _golf("run", "--from", tmp_path / "imp", *RUN_FROM, "-s", "ttt.strategy=score_first",
                 "-s", "ttt.epochs=1", "-s", "ttt.chunk_tokens=4096", "-s", "data.max_val_tokens=12289",
                 "--out", tmp_path / "ttt") == 0
    result = json.loads((tmp_path / "ttt" / "result.json").read_text())
    assert result["ttt"]["strategy"] == "score_first" and result["ttt"]["legal"] is True
    assert len(result["ttt"]["per_epoch"]) == 2  # the memorization probe ran: epochs 0 and 1
    assert math.isfinite(result["eval"]["val_bpb"])
    # an illegal strategy is still refused without allow_illegal, imported model or not
    assert _golf("run", "--from", tmp_path / "imp", "-s", "ttt.strategy=prequant_val", "--out", tmp_path / "x") == 2


def test_import_refuses_what_it_cannot_read(reference_files, tiny_dataset, tmp_path, capsys, monkeypatch):
    pg, _ = reference_files
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "noise.pt").write_bytes(b"\x01\x02not a checkpoint")
    (bad / "golf.golfart").write_bytes(b"GOLFART\x01" + bytes(60))
    (bad / "text.ptz").write_bytes(zlib.compress(b"hello"))
    buf = io.BytesIO()
    torch.save({"tok_emb.weight": torch.zeros(4, 4), "step": 3}, buf)  # a non-tensor entry
    (bad / "mixed.pt").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    torch.save({"__quant_format__": "int4_something", "quantized": {}}, buf)
    (bad / "other_format.ptz").write_bytes(zlib.compress(buf.getvalue()))
    buf = io.BytesIO()
    torch.save(types.SimpleNamespace(a=1), buf)  # unpickling it needs code: weights_only refuses
    (bad / "object.pt").write_bytes(buf.getvalue())
    cases = {"noise.pt": "neither a torch.save", "golf.golfart": "golf artifact", "text.ptz": "not a torch.save",
             "mixed.pt": "not a tensor", "other_format.ptz": "int4_something", "object.pt": "weights_only"}
    for name, message in cases.items():
        assert _golf("import", bad / name, "--out", tmp_path / name) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("golf: error:") and message in err and err.count("\n") == 1, (name, err)
        assert not (tmp_path / name).exists()  # nothing half-written
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "result.json").write_text("{}")  # somebody's run folder: never replaced by an import
    assert _golf("import", pg / "final_model.pt", "--out", taken) == 2
    assert "not an earlier golf import" in capsys.readouterr().err and (taken / "result.json").exists()
    monkeypatch.setattr("golf.pgformat.MAX_DECOMPRESSED_BYTES", 1000)  # a bounded inflate: no zlib bomb
    assert _golf("import", pg / "final_model.int8.ptz", "--out", tmp_path / "bomb") == 2
    assert "more than 1000 bytes" in capsys.readouterr().err
    # a valid file, but the wrong dataset, or an override of what the weights fix
    other = tmp_path / "vocab"
    assert _golf("import", pg / "final_model.pt", "--out", other, "-s", "model.n_layer=4") == 2
    assert "fixes model." in capsys.readouterr().err
    assert _golf("import", pg / "final_model.pt", "--out", other) == 0
    assert _golf("run", "--from", other, "-s", "model.n_layer=4", "--out", tmp_path / "r") == 2
    assert "model.n_layer cannot change" in capsys.readouterr().err
    state, info = read_pg_file(pg / "final_model.pt")
    assert info["format"] == "pg_state_dict" and set(state) == set(golf_gpt().state_dict())
