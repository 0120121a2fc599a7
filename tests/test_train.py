"""The trainer: falling loss for every preset, golden losses, determinism, QAT under compile, faults, DDP."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golf.config import build_config
from golf.data.dataset import Dataset
from golf.errors import GolfError
from golf.model import GPT
from golf.optim import lr_scale, muon_momentum, newton_schulz
from golf.train import train

GOLDEN = Path(__file__).parent / "golden" / "tiny_losses.json"
SMALL = ["train.batch_tokens=2048", "train.seq_len=64", "train.log_every=1", "model.vocab_size=512"]


def _train(tiny_dataset, tmp_path, preset="tiny", extra=(), steps=20):
    cfg = build_config(
        preset=preset, overrides=SMALL + [f"train.max_steps={steps}", "train.warmdown_steps=10", *extra]
    )
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.model)
    metrics = tmp_path / f"{preset}_metrics.jsonl"
    metrics.unlink(missing_ok=True)
    train(model, Dataset.open(tiny_dataset), cfg, metrics_path=metrics, device=torch.device("cpu"))
    return [json.loads(line)["train_loss"] for line in metrics.read_text().splitlines()]


@pytest.mark.parametrize("preset", ["tiny", "tiny1127", "tiny1550", "tiny1554"])
def test_every_tiny_preset_trains_with_falling_loss(tiny_dataset, tmp_path, preset):
    losses = _train(tiny_dataset, tmp_path, preset)
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5, losses


def test_golden_losses_and_determinism(tiny_dataset, tmp_path):
    """First 20 steps of the seeded tiny model; regenerate with GOLF_UPDATE_GOLDEN=1 after an intended change."""
    losses = _train(tiny_dataset, tmp_path)
    assert _train(tiny_dataset, tmp_path) == losses  # bit-identical on CPU for a given seed
    if os.environ.get("GOLF_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"overrides": SMALL, "losses": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert losses == pytest.approx(golden, abs=2e-4)


def test_qat_is_active_under_torch_compile(tiny_dataset, tmp_path):
    """Late QAT on from step 0 (threshold above any LR scale): the compiled run must follow the eager QAT
    run, not the run without QAT (a compile that folded the switch away would match the latter)."""
    on = ["train.qat_threshold=2.0"]
    eager_qat = _train(tiny_dataset, tmp_path, extra=on, steps=6)
    no_qat = _train(tiny_dataset, tmp_path, steps=6)
    compiled_qat = _train(
        tiny_dataset,
        tmp_path,
        extra=on + ["train.compile=true", "train.compile_backend=aot_eager", "train.compile_warmup_steps=2"],
        steps=6,
    )
    assert compiled_qat == pytest.approx(eager_qat, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(compiled_qat[1:], no_qat[1:])) > 1e-3


QAT_GRIDS = [
    {"method": "int8"}, {"method": "int8_stored_scale"}, {"method": "int6"}, {"method": "int4"},
    {"method": "gptq_lite", "bits": 5}, {"method": "sdclip", "bits": 6},
    {"method": "mixed", "mixed": {"attn": "int6", "mlp": "sdclip:6", "other": "gptq_lite:5"}},
    {"method": "gptq", "gptq_scales": "rowmax"}, {"method": "gptq", "gptq_scales": "search"},
]


@pytest.mark.parametrize("quant", QAT_GRIDS, ids=lambda q: "-".join(str(v) for v in q.values()))
def test_qat_trains_for_the_artifacts_grid(tiny_dataset, tmp_path, quant):
    """With QAT on, every quantized linear layer computes with exactly the weights the artifact reads back
    (the quantizer's own output, dequantized), for each method and per tensor class under `mixed`. For
    gptq, whose symbols come from error feedback on calibration data, QAT's weights lie on the artifact's
    grid: the same per-row scales, integer symbols."""
    from golf import qat
    from golf.quant import QuantConfig, collect_hessians, dequantize_state, quantize_state_dict

    qcfg = QuantConfig(**quant, keep_fp16_max_numel=1024)  # the tiny presets' rule: every matrix quantized
    cfg = build_config("tiny", overrides=SMALL + ["train.max_steps=3"])
    torch.manual_seed(0)
    model = GPT(cfg.model)
    train(model, Dataset.open(tiny_dataset), cfg, device=torch.device("cpu"))  # trained, not initial weights
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hessians = None
    if qcfg.uses_gptq():
        tokens = torch.from_numpy(Dataset.open(tiny_dataset).train_tokens(0)[: 8 * 64].astype("int64")).view(8, 64)
        hessians = collect_hessians(model, [tokens])
    qs = quantize_state_dict(state, qcfg, hessians)
    artifact = dequantize_state(qs)
    switches = qat.attach(model, qcfg)
    qat.set_enabled(switches, True)
    linears = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(switches) == len(linears) > 0
    for name, module in linears.items():
        seen = module.weight.detach()  # through the parametrization: what the forward pass computes with
        record = qs.record(name)
        assert record.is_int
        if record.method == "gptq":
            symbols = seen / record.scales.float()[:, None]
            assert torch.equal(symbols, symbols.round()), name
            assert symbols.abs().max() <= 2 ** (record.bits - 1), name
        else:
            assert torch.equal(seen, artifact[name]), (name, record.method)
    qat.detach(model)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in linears)


def test_qat_skips_what_the_artifact_keeps_in_float():
    """At the baseline's keep-in-float rule every tiny matrix (<= 65,536 elements) is stored fp16: QAT has
    nothing to train for and attaches nothing; a retired train.qat_bits is read only where QAT was off."""
    from golf import qat
    from golf.config import config_from_dict
    from golf.quant import QuantConfig

    model = GPT(build_config("tiny").model)
    assert qat.attach(model, QuantConfig()) == []
    old = build_config("tiny").to_dict()
    old["train"]["qat_bits"] = 6
    assert config_from_dict(old).to_dict() == build_config("tiny").to_dict()
    old["train"]["qat_threshold"] = 0.15
    with pytest.raises(GolfError, match="qat_bits=6 is retired"):
        config_from_dict(old)


def test_lr_schedule_and_momentum_warmup():
    assert lr_scale(0, 100, 20) == 1.0 and lr_scale(80, 100, 20) == 1.0
    assert lr_scale(90, 100, 20) == pytest.approx(0.5) and lr_scale(100, 100, 20) == 0.0
    # by wallclock: 10 steps took 5 s of a 10 s budget -> 10 steps remain; warmdown 20 -> scale 0.5
    assert lr_scale(10, 10_000, 20, elapsed_s=5.0, wallclock_s=10.0) == pytest.approx(0.5)
    cfg = build_config("baseline").train
    assert muon_momentum(0, cfg) == pytest.approx(0.85) and muon_momentum(250, cfg) == pytest.approx(0.90)
    assert muon_momentum(10_000, cfg) == pytest.approx(0.95)


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    g = torch.randn(64, 32) @ torch.diag(torch.logspace(-1, 0, 32))  # condition number ~ 20-40
    before = torch.linalg.svdvals(g)
    s = torch.linalg.svdvals(newton_schulz(g, steps=5))
    assert before.max() / before.min() > 10
    assert s.min() > 0.6 and s.max() < 1.25  # the quintic's band around 1 (it trades exactness for speed)


def test_config_errors_name_the_key():
    with pytest.raises(GolfError, match=r"unknown config key 'train.max_stepz'.*train\.max_steps"):
        build_config("tiny", overrides=["train.max_stepz=3"])
    with pytest.raises(GolfError, match="train.max_steps must be int"):
        build_config("tiny", overrides=["train.max_steps=abc"])
    with pytest.raises(GolfError, match="unknown preset"):
        build_config("nope")
    with pytest.raises(GolfError, match="head"):
        build_config("tiny", overrides=["model.n_head=3"])
    with pytest.raises(GolfError, match="kv"):
        build_config("tiny", overrides=["model.n_kv_head=3"])
    with pytest.raises(GolfError, match="recur"):
        build_config("tiny", overrides=["model.recur_start=1", "model.recur_end=9"])


def test_diverged_run_stops_and_says_so(tiny_dataset, tmp_path, monkeypatch):
    from golf.run import run

    monkeypatch.setenv("GOLF_CACHE", str(tmp_path / "cache"))
    cfg = build_config(
        "tiny",
        overrides=SMALL
        + [
            "train.max_steps=10",
            f"data.path={tiny_dataset}",
            "train.embed_lr=1e30",
            "train.scalar_lr=1e30",
            "train.matrix_lr=1e30",
        ],
    )
    with pytest.raises(GolfError, match="diverged"):
        run(cfg, tmp_path / "run")
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert failure["error"] == "diverged" and failure["step"] >= 1
    assert failure["last_finite_loss"] is not None and math.isfinite(failure["last_finite_loss"])
    assert not (tmp_path / "run" / "result.json").exists()


def test_two_gloo_processes_match_one_with_double_accumulation(tiny_dataset, tmp_path):
    """torchrun, 2 CPU processes x 1 micro-batch vs 1 process x 2 micro-batches: same tokens, same loss
    trajectory. Tolerance 1e-4: DDP averages gradients in a different float order than accumulation.
    Both run under a time budget far from reached (the ranks share the main rank's clock, broadcast each
    step) with a learning curve that only the main rank scores: neither may split or stall the ranks."""
    env = {**os.environ, "GOLF_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    common = [
        "--preset",
        "tiny",
        "--data",
        str(tiny_dataset),
        "-s",
        "train.max_steps=6",
        "-s",
        "train.warmdown_steps=3",
        "-s",
        "train.batch_tokens=2048",
        "-s",
        "train.seq_len=64",
        "-s",
        "train.log_every=1",
        "-s",
        "data.max_val_tokens=2000",
        "-s",
        "train.wallclock_s=3600",
        "-s",
        "train.val_every=3",
    ]
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "golf",
            "run",
            *common,
            "-s",
            "train.grad_accum=2",
            "--out",
            str(tmp_path / "one"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "golf",
            "run",
            *common,
            "-s",
            "seed=1337",
            "-s",
            "train.grad_accum=1",
            "--out",
            str(tmp_path / "two"),
        ],
        env={**env, "GOLF_CACHE": str(tmp_path / "cache2")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    def loss(d):
        lines = [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        return [x["train_loss"] for x in lines if x["phase"] == "train"]

    assert len(loss("one")) == 6
    assert loss("two") == pytest.approx(loss("one"), abs=1e-4)
    curves = [json.loads((tmp_path / d / "result.json").read_text())["train"]["curve"] for d in ("one", "two")]
    assert [p["step"] for p in curves[1]] == [0, 3, 6]
    assert [p["val_bpb"] for p in curves[1]] == pytest.approx([p["val_bpb"] for p in curves[0]], abs=1e-4)


def test_learning_curve_scores_held_out_tokens_without_touching_training(tiny_dataset, tmp_path):
    """train.val_every: points before the first step, every N steps and after the last; the same weights as
    a run without it (the curve is a no-gradient pass that consumes no randomness); each point is the
    validation slice's bpb, checked against an independent evaluation of the final model."""
    from golf.evaluate import diagnose, validation_subset
    from golf.ledger import ValidationStream
    from golf.run import learning_curve

    ds = Dataset.open(tiny_dataset)
    base = SMALL + ["train.max_steps=13", "train.warmdown_steps=5"]
    results, models = [], []
    for extra in ([], ["train.val_every=5", "train.val_tokens=3000"]):
        cfg = build_config(preset="tiny", overrides=base + extra)
        torch.manual_seed(cfg.seed)
        model = GPT(cfg.model)
        curve = learning_curve(cfg, ds, torch.device("cpu")) if extra else None
        metrics = tmp_path / f"m{len(extra)}.jsonl"
        results.append(train(model, ds, cfg, metrics_path=metrics, device=torch.device("cpu"), curve=curve))
        models.append(model)
    plain, curved = results
    assert plain.curve == [] and [p["step"] for p in curved.curve] == [0, 5, 10, 13]
    assert [p["tokens"] for p in curved.curve] == [0, 5 * 2048, 10 * 2048, 13 * 2048]
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
    assert plain.final_train_loss == curved.final_train_loss
    assert curved.curve[-1]["val_bpb"] < curved.curve[0]["val_bpb"] - 1.0  # from ~9 bits (uniform over 512)
    lines = [json.loads(x) for x in (tmp_path / "m2.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["phase"] == "val"] == [0, 5, 10, 13]
    # The last point is the final model on the first 3,000 validation tokens, in the run's eval windows.
    val = validation_subset(ds.val_tokens, cfg.data, 1)[:3000]
    again = diagnose(models[1], ValidationStream(val, ds.byte_table), cfg.eval, cfg.train.seq_len,
                     torch.device("cpu"), 1, val.size)
    assert curved.curve[-1]["val_bpb"] == pytest.approx(again["val_bpb"], rel=1e-12)


def test_curve_settings_stay_out_of_the_config_until_set():
    """Fields added after results were committed leave every earlier hash alone while at their defaults."""
    from golf.config import config_from_dict

    cfg = build_config(preset="tiny")
    assert "val_every" not in cfg.to_dict()["train"] and "val_tokens" not in cfg.to_dict()["train"]
    on = build_config(preset="tiny", overrides=["train.val_every=50"])
    assert on.to_dict()["train"]["val_every"] == 50 and on.to_dict()["train"]["val_tokens"] == 65_536
    assert cfg.to_dict(complete=True)["train"]["val_every"] == 0
    assert on.hash() != cfg.hash() and on.hash("train") != cfg.hash("train")
    assert config_from_dict(on.to_dict()).hash() == on.hash() and config_from_dict(cfg.to_dict()).train.val_every == 0
    with pytest.raises(GolfError, match="train.val_every"):
        build_config(preset="tiny", overrides=["train.val_every=-1"])


def test_run_from_a_folder_written_before_the_curve_settings_takes_them(tmp_path):
    from golf.run import source_config

    (tmp_path / "config.json").write_text(json.dumps(build_config(preset="tiny").to_dict()))  # no val_* keys
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert source_config(tmp_path, ["train.val_every=5"]).train.val_every == 5
