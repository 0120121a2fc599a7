"""`golf run` end to end on the tiny preset: the run folder, the contract's result keys, the round trip."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CONTRACT_KEYS = {
    "": {
        "schema",
        "run_id",
        "config_hash",
        "config",
        "seed",
        "data",
        "model",
        "train",
        "eval",
        "artifact",
        "ttt",
        "env",
    },
    "data": {"name", "val_tokens", "val_bytes", "tokenizer_sha256"},
    "model": {"preset", "params"},
    "train": {"steps", "tokens", "wall_s", "tokens_per_s"},
    "eval": {"val_loss", "val_bpb_prequant", "val_bpb_postquant", "val_bpb", "mode", "stride", "baselines"},
    "artifact": {"bytes_model", "bytes_code", "bytes_total", "limit", "fits", "quant", "compressor", "path"},
    "ttt": {"strategy", "epochs", "legal", "violations", "per_epoch"},
    "env": {"golf", "torch", "device", "git_sha", "dirty"},
}


TINY_TRAIN = ["-s", "train.max_steps=12", "-s", "train.batch_tokens=2048", "-s", "train.seq_len=64"]


def golf_run(tiny_dataset, out, *args, timeout=600):
    """`python -m golf run --preset tiny --data DATA ARGS --out OUT`, captured."""
    cmd = [sys.executable, "-m", "golf", "run", "--preset", "tiny", "--data", str(tiny_dataset), *args]
    return subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    proc = golf_run(tiny_dataset, out, *TINY_TRAIN, "-s", "quant.compressor=zstd", "-s", "train.val_every=6")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("val_bpb:")
    return out


def test_result_has_every_contract_key(run_dir):
    result = json.loads((run_dir / "result.json").read_text())
    for section, keys in CONTRACT_KEYS.items():
        have = set(result if section == "" else result[section])
        assert keys <= have, (section, keys - have)
    assert result["schema"] == 1 and result["artifact"]["limit"] == 16_000_000
    assert result["ttt"] == {**result["ttt"], "strategy": "none", "legal": True, "violations": []}
    assert result["eval"]["mode"] == "windows"
    assert result["eval"]["protocol"] == "all"  # eval.protocol=auto on a corpus that is not FineWeb
    # every validation token after the first was scored, and val_bytes is the manifest's byte count
    manifest = json.loads((Path(result["data"]["path"]) / "manifest.json").read_text())
    assert result["data"]["val_tokens_scored"] == manifest["val"]["tokens"] - 1
    assert result["data"]["val_bytes"] == manifest["val"]["bytes"]


def test_baselines_are_fitted_on_the_runs_own_tokens(run_dir, tiny_dataset):
    """eval.baselines is what golf.baselines gives for the run's training budget and scored targets, and
    it is cached: a second computation reads the cache entry the run wrote."""
    import numpy as np

    from golf.baselines import BASELINES, NGramModel, consumed_training_windows
    from golf.data.dataset import Dataset

    result = json.loads((run_dir / "result.json").read_text())
    got = result["eval"]["baselines"]
    assert set(got) == set(BASELINES)
    ds = Dataset.open(tiny_dataset)
    tr = result["config"]["train"]
    windows = consumed_training_windows(ds, result["train"]["steps"], tr["batch_tokens"], tr["seq_len"])
    assert windows.size // (tr["seq_len"] + 1) * tr["seq_len"] == result["train"]["tokens"]
    val = np.asarray(ds.val_tokens)
    want = NGramModel(windows, ds.vocab_size, tr["seq_len"] + 1).score(val, np.arange(1, val.size), ds.byte_table)
    assert got == pytest.approx(want, rel=1e-12)
    assert got["trigram_kn"] < got["bigram_kn"] < got["unigram"]


def test_byte_counts_are_file_sizes(run_dir):
    result = json.loads((run_dir / "result.json").read_text())
    a = result["artifact"]
    assert a["bytes_model"] == (run_dir / "model.golfart").stat().st_size
    assert a["bytes_total"] == a["bytes_model"] + a["bytes_code"] and a["fits"] is True
    assert a["compressor"] == "zstd"


def test_official_score_comes_from_the_artifact(run_dir, tiny_dataset):
    """Rebuild the model from the artifact file alone and score it again: the same val_bpb to float noise."""
    from golf.artifact import load_artifact
    from golf.config import config_from_dict
    from golf.data.dataset import Dataset
    from golf.evaluate import evaluate
    from golf.ledger import ValidationStream
    from golf.model import GPT
    from golf.quant import dequantize_state

    result = json.loads((run_dir / "result.json").read_text())
    cfg = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    model = GPT(cfg.model)
    model.load_state_dict(dequantize_state(load_artifact(run_dir / "model.golfart")), strict=True)
    ds = Dataset.open(tiny_dataset)
    stream = ValidationStream(ds.val_tokens, ds.byte_table)
    again = evaluate(model, stream, cfg.eval, cfg.train.seq_len, torch.device("cpu"))
    assert again["val_bpb"] == pytest.approx(result["eval"]["val_bpb"], abs=1e-6)
    assert result["eval"]["val_bpb_postquant"] == result["eval"]["val_bpb"]
    # quantization changed the weights: the float checkpoint scores differently (but close, int8)
    assert result["eval"]["val_bpb_prequant"] != result["eval"]["val_bpb"]
    assert abs(result["eval"]["val_bpb_prequant"] - result["eval"]["val_bpb"]) < 0.05


def test_checkpoint_loads_with_weights_only_and_metrics_lines(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if "train_loss" in x]
    assert train_lines[-1]["step"] == 12 and {"lr_scale", "tokens_per_s", "step_ms"} <= set(train_lines[-1])
    # one schema (golf.io.MetricsLog): every line says its phase and step; the loss lines are training's
    assert all(isinstance(x["step"], int) and x["phase"] in ("train", "val", "ttt", "ttt_probe") for x in lines)
    assert {x["phase"] for x in train_lines} == {"train"}
    # the learning curve (train.val_every=6): in metrics.jsonl and in result.json, before, at 6 and after 12
    curve = json.loads((run_dir / "result.json").read_text())["train"]["curve"]
    assert [p["step"] for p in curve] == [x["step"] for x in lines if x["phase"] == "val"] == [0, 6, 12]
    assert curve[-1]["val_bpb"] < curve[0]["val_bpb"] and curve[-1]["tokens"] == 12 * 2048


def test_artifact_inspect_json(run_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "golf", "artifact", "inspect", str(run_dir / "model.golfart"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["bytes_model"] == (run_dir / "model.golfart").stat().st_size
    # the tiny run scale quantizes every matrix (the baseline's 65,536-element fp16 rule would spare them all)
    matrices = [t for t in report["tensors"]
                if len(t["shape"]) == 2 and t["shape"][0] * t["shape"][1] > 1024 and t["alias_of"] is None]
    assert matrices and all(t["bits"] == 8 for t in matrices), [(t["name"], t["kind"]) for t in matrices]

    # without --json: a per-tensor table, largest first, then the totals
    proc = subprocess.run([sys.executable, "-m", "golf", "artifact", "inspect", str(run_dir / "model.golfart")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    largest = max(report["tensors"], key=lambda t: t["bytes_compressed_alone"])
    assert lines[0].startswith("tensor") and lines[1].startswith(largest["name"] + " ")
    assert f"bytes_model: {report['bytes_model']}" in lines


def test_second_run_with_other_quant_reuses_the_base(run_dir, tiny_dataset, tmp_path):
    out = tmp_path / "int4"
    proc = golf_run(
        tiny_dataset, out, *TINY_TRAIN, "-s", "quant.method=int4", "-s", "quant.compressor=brotli",
        "-s", "train.val_every=6", "--json")  # the curve setting is part of the base model's key
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    first = json.loads((run_dir / "result.json").read_text())
    assert result["train"]["cached"] is True and result["train"]["cache_key"] == first["train"]["cache_key"]
    assert result["eval"]["val_bpb_prequant"] == first["eval"]["val_bpb_prequant"]  # the same trained weights
    assert result["train"]["curve"] == first["train"]["curve"]  # the cached base brings its curve
    # Which commit trained the weights travels with them (the cache key holds no code version).
    env = first["env"]
    assert first["train"]["trained_at"] == {"git_sha": env["git_sha"], "dirty": env["dirty"]}
    assert result["train"]["trained_at"] == first["train"]["trained_at"]
    assert result["train"]["weights_sha256"] == first["train"]["weights_sha256"]  # and which weights they are
    # An entry written before the record existed is reused and says it does not know.
    entry = Path(os.environ["GOLF_CACHE"]) / "models" / first["train"]["cache_key"]
    info = json.loads((entry / "train.json").read_text())
    (entry / "train.json").write_text(json.dumps({k: v for k, v in info.items() if k != "trained_at"}))
    try:
        proc = golf_run(tiny_dataset, tmp_path / "old_entry", *TINY_TRAIN, "-s", "quant.method=int4",
                        "-s", "train.val_every=6", "--json")
    finally:
        (entry / "train.json").write_text(json.dumps(info))
    assert proc.returncode == 0, proc.stderr
    old = json.loads(proc.stdout)["train"]
    assert old["cached"] is True and old["trained_at"] == {"git_sha": "unknown", "dirty": None}
    # int4 + brotli is smaller. (Not int6: on these briefly trained small weights int8's 1/127 scale floor
    # is a coarser grid than int6's rowmax/31, so the int8 artifact is the smaller of those two.)
    assert result["artifact"]["bytes_model"] < first["artifact"]["bytes_model"]


def test_weights_digest_names_the_exact_weights(run_dir):
    from golf.config import config_from_dict
    from golf.model import GPT
    from golf.run import weights_sha256

    result = json.loads((run_dir / "result.json").read_text())
    digest = result["train"]["weights_sha256"]
    assert len(digest) == 64 and int(digest, 16) >= 0
    model = GPT(config_from_dict(result["config"]).model)
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True))  # the run's own float weights
    assert weights_sha256(model) == digest
    with torch.no_grad():  # the smallest change a float32 weight can take still changes it
        weight = next(model.parameters())
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(float("inf")))
    assert weights_sha256(model) != digest
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True))
    model.to(torch.bfloat16)  # rounding to bf16 changes the values, so the digest
    rounded = weights_sha256(model)
    assert rounded != digest
    model.float()  # the same rounded values held as float32 (CUDA's bf16 embedding, saved and reloaded): same digest
    assert weights_sha256(model) == rounded


def test_bad_input_fails_cleanly(tmp_path, tiny_dataset):
    for args, message in [
        (["-s", "ttt.strategy=prequant_val"], "allow_illegal"),
        (["-s", "model.n_head=3"], "head"),
        (["-s", "eval.mode=bogus"], "eval.mode"),
    ]:
        out = tmp_path / "bad"
        proc = golf_run(tiny_dataset, out, *args, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not (out / "result.json").exists()


def test_max_val_docs_keeps_whole_documents(tiny_dataset):
    import numpy as np

    from golf.config import DataConfig
    from golf.data.dataset import Dataset
    from golf.errors import GolfError
    from golf.evaluate import validation_subset

    ds = Dataset.open(tiny_dataset)
    full = np.asarray(ds.val_tokens)

    def validation_tokens(ds, data_cfg, bos_id):
        return validation_subset(full, data_cfg, bos_id)

    starts = np.flatnonzero(full == 1)
    assert starts.size == 4 and starts[0] == 0
    two = validation_tokens(ds, DataConfig(max_val_docs=2), 1)
    assert two.size == starts[2] and np.flatnonzero(two == 1).size == 2
    assert validation_tokens(ds, DataConfig(max_val_docs=9), 1).size == full.size
    assert validation_tokens(ds, DataConfig(max_val_docs=2, max_val_tokens=5), 1).size == 5
    with pytest.raises(GolfError, match="max_val_docs"):
        DataConfig(max_val_docs=-1)


def test_learning_curves_section_draws_a_real_runs_curve(run_dir, tmp_path):
    from golf.report import parse_sections, write_report
    from golf.report.frame import curve_frame

    result = json.loads((run_dir / "result.json").read_text())
    study = tmp_path / "ladder"
    (study / "runs" / "tiny").mkdir(parents=True)
    (study / "runs" / "tiny" / "result.json").write_text(json.dumps(result))
    curves = curve_frame([result])
    assert curves["step"].tolist() == [0, 6, 12] and curves["bigram_kn"].notna().all()
    assert curves["val_bpb"].tolist() == [p["val_bpb"] for p in result["train"]["curve"]]
    written = write_report(study, parse_sections(["learning_curves"], "test"))
    assert study / "figures" / "learning_curves.png" in written
    result["train"]["curve"] = [{"step": "x"}]  # a malformed curve drops that run's curve, not the report
    assert curve_frame([result]).empty
