"""`golf run`: train -> (pre-quant TTT) -> quantize -> round trip -> (post-quant TTT) -> score.

The run folder (self-describing, STYLE principle 7):

    config.json     the resolved RunConfig (vocab set from the dataset)
    metrics.jsonl   training and TTT lines, one schema: {step, phase, ...} (golf/io.py MetricsLog)
    checkpoint.pt   the trained float weights (a plain state_dict: loads with weights_only=True)
    model.golfart   the artifact: quantized, compressed, checksummed (golf/artifact.py)
    result.json     the contract's keys; written last and atomically, so its presence means "done"
    failure.json    only if the run failed (e.g. the loss diverged): what happened, at which step

Every score is computed through the token ledger of ONE validation stream, so the TTT verdict covers all
that the run did with validation tokens. Measurements other than the official score (pre-quantization,
post-quantization before TTT, the memorization probe) are *diagnostic* passes: recorded apart, never part
of `val_bpb`. The official `eval.val_bpb` is scored on the model rebuilt from the artifact file.

Base-model cache: the trained weights are stored under a key of (data, model, train, seed), so runs that
differ only in TTT, quantization or evaluation train once (`train.cached: true` in result.json).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import golf
from golf import artifact as art
from golf.config import RunConfig
from golf.data.dataset import Dataset
from golf.data.shards import BOS_ID
from golf.device import Dist, autocast, device_name, init_distributed, pick_device
from golf.errors import GolfError
from golf.evaluate import (
    diagnose,
    evaluate,
    official_tokens,
    probe_halves,
    resolve_protocol,
    validation_subset,
)
from golf.export import script_bytes
from golf.io import atomic_dir, atomic_path, file_lock, write_json
from golf.ledger import ValidationStream
from golf.model import GPT
from golf.quant import collect_hessians, dequantize_state, quantize_state_dict
from golf.train import TrainingDiverged, apply_param_dtypes, micro_batches, train

ARTIFACT_NAME = "model.golfart"


# ---------------------------------------------------------------------------------------------------------
# Where things live
# ---------------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get("GOLF_CACHE", Path.home() / ".cache" / "golf")) / "models"


def base_cached(key: str) -> bool:
    """Whether the base-model cache holds a complete entry for `key` (written atomically: both files or none)."""
    entry = cache_root() / key
    return (entry / "checkpoint.pt").exists() and (entry / "train.json").exists()


def base_lock(key: str) -> Path:
    """The lock a base-model cache entry is trained (or loaded) under: held while its weights are made."""
    return cache_root() / f".{key}.lock"


def resolve_dataset(cfg: RunConfig) -> Dataset:
    if cfg.data.path:
        return Dataset.open(cfg.data.path)
    from golf.data.sources import fetch_default

    return Dataset.open(fetch_default())


def with_dataset_vocab(cfg: RunConfig, vocab_size: int) -> RunConfig:
    """Set the model's vocabulary to the dataset's (a preset's vocab only says what its original run used).

    run() does this before hashing the config, so whoever predicts a run's config hash must too. A
    vocab_size the user stated (`cfg.vocab_stated`, set by build_config) is never replaced: a mismatch is an
    error."""
    if cfg.model.vocab_size != vocab_size and cfg.vocab_stated:
        raise GolfError(f"model.vocab_size={cfg.model.vocab_size} but the dataset's tokenizer has {vocab_size} "
                        "pieces; drop the setting (the dataset's vocabulary is used) or use a matching dataset")
    if cfg.model.vocab_size != vocab_size:
        cfg.model = type(cfg.model)(**{**cfg.model.to_dict(), "vocab_size": vocab_size})
    return cfg


def data_identity(ds: Dataset) -> dict:
    """What makes two datasets the same for training: tokenizer and the training stream's shape."""
    sizes = [p.stat().st_size for p in ds.train_shards]
    return {"name": ds.name, "tokenizer_sha256": ds.tokenizer_sha256, "train_shard_bytes": sizes}


def base_key(cfg: RunConfig, ds: Dataset) -> str:
    import hashlib

    blob = json.dumps({"data": data_identity(ds), "model": cfg.to_dict()["model"], "train": cfg.to_dict()["train"],
                       "seed": cfg.seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def clear_run_folder(out: Path) -> None:
    """Remove what a previous run left in `out` that this one writes anew: a reused folder must not show a
    previous run's result, failure, checkpoint or artifact beside this one's (metrics.jsonl is restarted by
    training or copied from the cache)."""
    for stale in ("result.json", "failure.json", "checkpoint.pt", ARTIFACT_NAME):
        (out / stale).unlink(missing_ok=True)


def git_state() -> tuple[str, bool]:
    root = Path(golf.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown", False
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", False


def weights_sha256(model: torch.nn.Module) -> str:
    """Hex sha256 of a model's weights as a run received them (in memory, before TTT and quantization): each
    state_dict entry's name, shape and values, in state_dict order, floating tensors as float32 so that one
    set of numbers has one digest whatever dtype holds it (on CUDA the embedding is bf16). Two runs with one
    digest adapted the very same numbers. The base-model cache key (data, model, train, seed) cannot tell
    that: a base retrained on another machine has the same key and slightly different weights (CPU floating
    point), and so does one retrained after a code change."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        values = tensor.detach().float() if tensor.is_floating_point() else tensor.detach()
        flat = values.cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())  # as bytes: one code path for every dtype
    return digest.hexdigest()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# ---------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------


def learning_curve(cfg: RunConfig, ds: Dataset, device: torch.device):
    """The scorer of the learning curve (train.val_every): the first train.val_tokens of the run's
    validation subset, cut to the protocol's official targets and scored in the run's evaluation windows,
    through a ledger stream of its own (diagnostic passes: no gradient, never part of val_bpb). Where the
    slice covers the subset, the curve scores exactly the targets of val_bpb_base, and its last point is
    val_bpb_base unless EMA (copied in after training) or QAT (on during it) changes the weights scored.
    Returns model -> {"val_loss", "val_bpb"}."""
    seq_len = cfg.eval.seq_len or cfg.train.seq_len
    val = validation_subset(np.asarray(ds.val_tokens), cfg.data, BOS_ID)[: cfg.train.val_tokens]
    val = official_tokens(val, resolve_protocol(cfg.eval.protocol, ds.name), seq_len)
    if val.size < 2:
        raise GolfError(f"train.val_every: the validation subset has {val.size} tokens; the curve needs at least 2")
    stream = ValidationStream(val, ds.byte_table)

    def score(model) -> dict:
        out = diagnose(model, stream, cfg.eval, seq_len, device, 1, stream.n)
        return {"val_loss": out["val_loss"], "val_bpb": out["val_bpb"]}

    return score


def train_or_load_base(cfg: RunConfig, ds: Dataset, out: Path, device: torch.device, d: Dist) -> tuple[GPT, dict]:
    """The trained float model, from the base-model cache when possible.

    The main rank holds a lock on the cache entry while it looks and trains, so two runs that need the same
    base model at once (parallel study cells) train it once: the second waits and then loads it.
    """
    key = base_key(cfg, ds)
    entry = cache_root() / key
    if not d.main:
        return _train_or_load(cfg, ds, out, device, d, key, entry)
    with file_lock(base_lock(key)):
        return _train_or_load(cfg, ds, out, device, d, key, entry)


def _train_or_load(cfg: RunConfig, ds: Dataset, out: Path, device: torch.device, d: Dist, key: str,
                   entry: Path) -> tuple[GPT, dict]:
    seed_everything(cfg.seed)
    model = GPT(cfg.model)
    if base_cached(key):
        try:
            state = torch.load(entry / "checkpoint.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
            info = json.loads((entry / "train.json").read_text())
            if not isinstance(info, dict):
                raise ValueError("train.json is not an object")
        except Exception as exc:  # torch raises a zoo of types for a damaged file; all mean the same here
            raise GolfError(f"model cache entry {entry} is damaged ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}); delete that "
                            "folder and run again to retrain it") from None
        model.to(device)
        apply_param_dtypes(model, device, cfg.train)  # as the trainer left it (a bf16 embedding on CUDA)
        if (entry / "metrics.jsonl").exists() and d.main:
            shutil.copy(entry / "metrics.jsonl", out / "metrics.jsonl")
        # The key holds no code version: which commit trained the cached weights is recorded instead
        # (entries written before this record existed say "unknown").
        trained_at = info.get("trained_at") or {"git_sha": "unknown", "dirty": None}
        return model.to(device), {**info, "trained_at": trained_at, "cached": True, "cache_key": key}

    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    git_sha, dirty = git_state()  # the code in memory is this checkout's as it is now, not after training
    try:
        res = train(model, ds, cfg, metrics_path=metrics, device=device, dist_info=d,
                    curve=learning_curve(cfg, ds, device) if cfg.train.val_every > 0 and d.main else None)
    except TrainingDiverged as e:
        if d.main:
            write_json(out / "failure.json", {"error": "diverged", "step": e.step, "loss": str(e.loss),
                                              "last_finite_loss": e.last_finite, "message": str(e)})
        raise
    info = {"steps": res.steps, "tokens": res.tokens, "wall_s": res.wall_s, "tokens_per_s": res.tokens_per_s,
            "final_train_loss": res.final_train_loss, "compile_warmup_s": res.compile_warmup_s,
            "trained_at": {"git_sha": git_sha, "dirty": dirty}, **({"curve": res.curve} if res.curve else {})}
    if d.main:
        with atomic_dir(entry) as tmp:
            torch.save(model.state_dict(), tmp / "checkpoint.pt")
            shutil.copy(metrics, tmp / "metrics.jsonl")
            write_json(tmp / "train.json", info)
    return model, {**info, "cached": False, "cache_key": key}


def source_config(source: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """`golf run --from RUN_DIR`: the folder's config.json with `-s` overrides on top; the model may not change.

    RUN_DIR is a `golf import` folder or any finished golf run folder (both hold config.json and a float
    checkpoint.pt). TTT, quantization, evaluation and data may be overridden; the architecture is fixed by
    the weights, so a model.* override that changes it is refused.
    """
    from golf.config import _merge, config_from_dict, parse_overrides

    source = Path(source)
    for name in ("config.json", "checkpoint.pt"):
        if not (source / name).is_file():
            raise GolfError(f"golf run --from {source}: no {name} there; give a golf import folder or a run "
                            "folder written with train.checkpoint=true")
    try:
        resolved = json.loads((source / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise GolfError(f"{source / 'config.json'}: invalid JSON ({e.msg})") from None
    resolved = config_from_dict(resolved).to_dict(complete=True)  # keys written before they existed take -s too
    saved = dict(resolved.get("model", {}))
    _merge(resolved, parse_overrides(overrides or []))  # unknown keys fail with the valid list
    cfg = config_from_dict(resolved)
    changed = sorted(k for k, v in cfg.model.to_dict().items() if saved.get(k) != v)
    if changed:
        raise GolfError(f"golf run --from: model.{changed[0]} cannot change; the checkpoint in {source} fixes "
                        "the architecture")
    return cfg


def load_source(source: Path, cfg: RunConfig, ds: Dataset, device: torch.device) -> tuple[GPT, dict, dict]:
    """The model of a --from folder, loaded strictly; what result.json says about where it came from; and
    the dtypes its float tensors had where they were not float32 (a reference checkpoint trained on CUDA
    holds a bf16 embedding), so that the artifact records them as the reference's export does."""
    if cfg.model.vocab_size != ds.vocab_size:
        raise GolfError(f"golf run --from {source}: the model's vocabulary is {cfg.model.vocab_size} tokens, "
                        f"the dataset {ds.directory} has {ds.vocab_size}; pass the data it was trained on")
    state = torch.load(source / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = GPT(cfg.model)
    model.load_state_dict(state, strict=True)  # into float32 parameters: bf16 and fp16 values are exact there
    origin = {"from": str(source.resolve())}
    if (source / "import.json").is_file():
        origin["import"] = json.loads((source / "import.json").read_text())
    dtypes = {k: v.dtype for k, v in state.items() if v.is_floating_point() and v.dtype != torch.float32}
    return model.to(device), origin, dtypes


def calibration_batches(ds: Dataset, cfg: RunConfig, device: torch.device):
    """GPTQ calibration from the *training* stream (never validation): its last calib_tokens tokens."""
    last = np.asarray(ds.train_tokens(len(ds.train_shards) - 1))
    T = cfg.train.seq_len
    n = min(cfg.quant.calib_tokens, (last.size - 1) // T * T)
    tokens = torch.from_numpy(last[last.size - n :].astype(np.int64)).view(-1, T)
    return [tokens[i : i + 8].to(device) for i in range(0, tokens.size(0), 8)]


def quantize_round_trip(model: GPT, cfg: RunConfig, ds: Dataset, out: Path, device: torch.device,
                        dtypes: dict | None = None) -> tuple[GPT, dict]:
    """Quantize, write the artifact, read it back, dequantize and strictly load a fresh model from it.

    `dtypes` (name -> dtype) casts those tensors before quantizing, so the artifact records the dtype the
    weights had in their source checkpoint (see load_source)."""
    hessians = None
    if cfg.quant.uses_gptq():
        model.eval()
        with torch.no_grad(), autocast(device):
            hessians = collect_hessians(model, calibration_batches(ds, cfg, device))
    # tensors keep their dtypes (a bf16 embedding is recorded as bf16 and read back through bf16, as the
    # baseline's round trip does); the quantizers compute in float32 whatever the stored dtype
    state = {k: v.detach().cpu().to((dtypes or {}).get(k, v.dtype)) for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    qs = quantize_state_dict(state, cfg.quant, hessians)
    path = out / ARTIFACT_NAME
    art.save_artifact(path, qs, cfg.quant)
    quant_s = time.perf_counter() - t0
    restored = GPT(cfg.model)
    restored.load_state_dict(dequantize_state(art.load_artifact(path)), strict=True)
    report = art.byte_report(path, script_bytes(cfg.to_dict()))  # the size of `golf export`'s train_gpt.py
    report["quant_s"] = quant_s
    return restored.to(device), report


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


def baselines_for(cfg: RunConfig, ds: Dataset, train_info: dict, val: np.ndarray, stream: ValidationStream,
                  world: int) -> dict | None:
    """n-gram baselines on the tokens this run's model consumed, scored on the targets its official pass
    scored (golf/baselines.py); cached per (data, token budget, targets) beside the base-model cache.
    None when golf did not train the model (`golf run --from` an import): its training tokens are unknown."""
    from golf.baselines import run_baselines

    if not train_info.get("steps"):
        return None
    budget = {"steps": int(train_info["steps"]), "batch_tokens": cfg.train.batch_tokens,
              "seq_len": cfg.train.seq_len, "world": world, "accum": micro_batches(cfg.train, world)}
    positions = np.flatnonzero(stream.scored > 0)
    return run_baselines(ds, budget, val, positions, data_identity(ds),
                         cache_root().parent / "baselines")


def probe_record(ttt_cfg, halves, tokens: np.ndarray, table) -> dict | None:
    """What result.json says about the probe's halves: which documents (indices into the scored validation
    documents, in their original order), how many targets and bytes each half has, and their sources."""
    if halves is None:
        return None
    from golf.metric import token_bytes

    docs_a, docs_b, split, sources = halves
    n = int(tokens.size)
    split = min(split, n)
    per_target = token_bytes(table, tokens[:-1], tokens[1:])  # target j at index j - 1
    record = {"split": ttt_cfg.probe_split, "swap": ttt_cfg.probe_swap, "first_target_b": int(split),
              "docs_a": [int(i) for i in docs_a], "docs_b": [int(i) for i in docs_b],
              "tokens_a": int(split - 1), "tokens_b": int(n - split),
              "bytes_a": int(per_target[: split - 1].sum()), "bytes_b": int(per_target[split - 1:].sum())}
    if sources is not None:
        for half, docs in (("a", docs_a), ("b", docs_b)):
            counts: dict[str, int] = {}
            for i in docs:
                counts[sources[i]] = counts.get(sources[i], 0) + 1
            record[f"sources_{half}"] = dict(sorted(counts.items()))
    return record


def run(cfg: RunConfig, out: str | Path, study_params: dict | None = None, source: str | Path | None = None) -> dict:
    """Run the whole pipeline into `out`; returns the result dict (also written as result.json).

    With `source` (golf run --from), training is skipped: the float weights come from that folder's
    checkpoint.pt (see `source_config`), and everything after training runs as usual.
    """
    from golf.ttt.context import make_context
    from golf.ttt.strategies import get_strategy

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GolfError(f"--out {out}: exists and is not a folder (a run folder is a directory)")
    ds = resolve_dataset(cfg)
    if source is None:
        with_dataset_vocab(cfg, ds.vocab_size)
    ds.val_tokens  # checks the validation ids against the vocabulary now, not after training
    strategy = get_strategy(cfg.ttt)  # refuses illegal strategies without ttt.allow_illegal before any work
    device = pick_device(cfg.train.device)
    d = init_distributed(device)
    out.mkdir(parents=True, exist_ok=True)
    clear_run_folder(out)
    if d.main:
        write_json(out / "config.json", cfg.to_dict())

    origin, dtypes = None, {}
    if source is not None:
        if d.world > 1:
            raise GolfError("golf run --from runs in one process; start it without torchrun")
        (out / "metrics.jsonl").unlink(missing_ok=True)  # TTT lines only; no training happens
        model, origin, dtypes = load_source(Path(source), cfg, ds, device)
        train_info = {"steps": 0, "tokens": 0, "wall_s": 0.0, "tokens_per_s": 0.0, "cached": False,
                      "trained_at": {"git_sha": "unknown", "dirty": None}}  # trained elsewhere: see `source`
    else:
        model, train_info = train_or_load_base(cfg, ds, out, device, d)
    if d.main and cfg.train.checkpoint:
        with atomic_path(out / "checkpoint.pt") as tmp:
            # a plain state_dict of tensors (loads with weights_only=True), in the source's dtypes if any
            torch.save({k: v.to(dtypes.get(k, v.dtype)) for k, v in model.state_dict().items()}, tmp)
    if d.world > 1:
        torch.distributed.barrier()
    if not d.main:  # evaluation, TTT and the artifact are the main rank's
        return {}
    train_info = {**train_info, "weights_sha256": weights_sha256(model)}  # the exact weights TTT starts from

    # One validation stream, one ledger, for everything the run does with validation tokens.
    val = validation_subset(np.asarray(ds.val_tokens), cfg.data, BOS_ID)
    halves = None
    if cfg.ttt.probe:  # which documents form halves A and B, and the stream in that order
        sources = ds.val_doc_sources if cfg.ttt.probe_split else None
        val, docs_a, docs_b, split = probe_halves(val, BOS_ID, sources, cfg.ttt.probe_split, cfg.ttt.probe_swap)
        halves = (docs_a, docs_b, split, sources)
    seq_len = cfg.eval.seq_len or cfg.train.seq_len
    protocol = resolve_protocol(cfg.eval.protocol, ds.name)
    scored_val = official_tokens(val, protocol, seq_len)
    stream = ValidationStream(scored_val, ds.byte_table)
    split = min(halves[2], stream.n) if halves is not None else None
    ctx = make_context(strategy, cfg, stream, ds, device, seq_len, out / "metrics.jsonl", split)  # sealed: golf/ttt/context.py

    t_eval = time.perf_counter()
    base = diagnose(model, stream, cfg.eval, seq_len, device, 1, stream.n, desc="eval base")
    ttt_out = None
    if strategy.stage == "prequant":
        ttt_out = strategy.run(model, ctx)
    prequant = base if ttt_out is None else diagnose(model, stream, cfg.eval, seq_len, device, 1, stream.n,
                                                     desc="eval prequant")

    restored, report = quantize_round_trip(model, cfg, ds, out, device, dtypes)
    postquant = None
    if strategy.stage == "postquant":
        postquant = diagnose(restored, stream, cfg.eval, seq_len, device, 1, stream.n, desc="eval postquant")
        ttt_out = strategy.run(restored, ctx)
    if not ttt_out or not ttt_out.scored:
        evaluate(restored, stream, cfg.eval, seq_len, device)
    official = {"val_loss": stream.meter.val_loss, "val_bpb": stream.meter.val_bpb}
    postquant = postquant or official
    eval_s = time.perf_counter() - t_eval
    legal, violations = stream.verdict()
    baselines = baselines_for(cfg, ds, train_info, val, stream, d.world)

    git_sha, dirty = git_state()
    result = {
        "schema": 1,
        "run_id": out.name,
        "config_hash": cfg.hash(),
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "data": {"name": ds.name, "path": str(ds.directory), "val_tokens": int(stream.n),
                 "val_bytes": int(stream.meter.bytes), "tokenizer_sha256": ds.tokenizer_sha256,
                 "val_tokens_scored": int(stream.meter.tokens), "val_tokens_available": int(val.size)},
        "model": {"preset": cfg.preset, "params": sum(p.numel() for p in model.parameters())},
        "train": train_info,
        "eval": {"val_loss": official["val_loss"], "val_bpb_base": base["val_bpb"],
                 "val_bpb_prequant": prequant["val_bpb"], "val_bpb_postquant": postquant["val_bpb"],
                 "val_bpb": official["val_bpb"], "mode": cfg.eval.mode, "protocol": protocol,
                 "stride": cfg.eval.stride if cfg.eval.mode == "sliding" else seq_len, "seq_len": seq_len,
                 "wall_s": eval_s, "baselines": baselines},
        "artifact": report,
        "ttt": {"strategy": cfg.ttt.strategy, "epochs": ttt_out.epochs if ttt_out else 0, "legal": legal,
                "violations": violations, "per_epoch": ttt_out.per_epoch if ttt_out else [],
                "probe_halves": probe_record(cfg.ttt, halves, scored_val, ds.byte_table),
                **(ttt_out.info if ttt_out else {})},
        "env": {"golf": golf.__version__, "torch": torch.__version__, "device": device_name(device),
                "git_sha": git_sha, "dirty": dirty},
    }
    if origin is not None:
        result["source"] = origin
    if study_params is not None:
        result["study_params"] = study_params
    bad = {k: v for k, v in result["eval"].items() if k.startswith("val_") and isinstance(v, float) and not math.isfinite(v)}
    if bad:  # e.g. a TTT learning rate that diverged: a score, but not one to report
        write_json(out / "failure.json", {"error": "non-finite score", **bad, "ttt": cfg.ttt.strategy})
        raise GolfError(f"run {out}: {', '.join(f'{k}={v}' for k, v in bad.items())} is not a finite score "
                        f"(ttt.strategy={cfg.ttt.strategy}; lower ttt.lr?); no result.json written, see failure.json")
    write_json(out / "result.json", result)
    return result
