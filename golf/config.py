"""The run configuration: one small dataclass per concern, composed into `RunConfig`.

    RunConfig
      seed, preset, name
      data:  DataConfig   which dataset directory (default: the offline default corpus)
      model: ModelConfig  (golf/model.py) the architecture and its switches
      train: TrainConfig  optimizer, schedule, EMA, QAT, batch and budget
      ttt:   TTTConfig    (golf/ttt) test-time training strategy and its hyperparameters
      quant: QuantConfig  (golf/quant) quantizer and compressor of the artifact
      eval:  EvalConfig   how validation is scored

A config is built from (lowest to highest priority) the defaults, the preset (model shape plus the run
scale that suits it), an optional YAML file, and `-s key=value` overrides with dotted keys. Any unknown key
fails with the list of valid keys (papermill and YAML would otherwise only warn or ignore). The resolved
config is plain JSON, and its hash names cached results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golf.errors import GolfError
from golf.model import ModelConfig
from golf.optim import WARMDOWN_MODES
from golf.quant import QuantConfig
from golf.ttt import TTTConfig


@dataclass
class DataConfig:
    path: str | None = None  # dataset directory; None = the offline default corpus (`golf data fetch`)
    max_val_tokens: int = 0  # 0 = the whole validation stream; >0 scores only its first N tokens (quick runs)
    # 0 = every validation document; >0 scores only the first K whole documents (the default corpus's
    # validation set is a stratified shuffle, so its first 64 sample every register). With both set, the
    # stream ends at whichever comes first.
    max_val_docs: int = 0

    def __post_init__(self):
        if self.max_val_tokens < 0:
            raise GolfError("data.max_val_tokens must be >= 0 (0 = whole validation stream)")
        if self.max_val_docs < 0:
            raise GolfError("data.max_val_docs must be >= 0 (0 = every validation document)")


@dataclass
class TrainConfig:
    max_steps: int = 20_000  # iterations; the wallclock budget may stop training earlier
    wallclock_s: float = 0.0  # 0 = no time budget; parameter-golf uses 600 s on 8xH100
    batch_tokens: int = 524_288  # tokens per optimizer step, all ranks and micro-batches together (baseline)
    seq_len: int = 1024  # training sequence length (baseline)
    # micro-batches per step and rank; 0 = the baseline's 8 // world size (8 on one GPU, 1 per rank on 8).
    # Each micro-batch is read from the stream as the baseline reads it (golf/train.py TokenStream).
    grad_accum: int = 0
    warmdown_steps: int = 1_200  # linear LR decay over the last N iterations (baseline: 1,200)
    # with a wallclock budget: "pg" = warmdown by time alone (the baseline's lr_mul); "min" = the earlier
    # of the step and time schedules (golf's own, before issue 16). See golf/optim.py lr_scale.
    warmdown_mode: str = "pg"
    bf16_embedding: bool = True  # CUDA only: the token embedding (and tied head) is a bf16 parameter (baseline)
    compile: bool = False  # torch.compile the model
    compile_backend: str = "inductor"  # torch.compile backend (tests use aot_eager: same graph capture, fast build)
    compile_warmup_steps: int = 20  # steps run to compile, then weights and optimizer state are reset (baseline: 20)
    # Muon on 2-D block matrices (baseline values)
    matrix_lr: float = 0.04
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85  # momentum warm-up start (baseline: 0.85 -> 0.95 over 500 steps)
    muon_momentum_warmup_steps: int = 500
    muon_ns_steps: int = 5  # Newton-Schulz iterations
    muon_weight_decay: float = 0.0  # decoupled; later records use 0.04-0.095
    # Adam for embeddings and scalars (baseline values)
    embed_lr: float = 0.05
    scalar_lr: float = 0.04
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 0.0  # 0 = none (baseline)
    ema_decay: float = 0.0  # 0 = off; records use 0.997 / 0.9965, seed #1127 0.9985; applied before quantization
    # 0 = off; late QAT switches on when the LR scale drops below this (records: 0.1-0.15). It trains for
    # the artifact's own grid, from the quant section (golf/qat.py).
    qat_threshold: float = 0.0
    log_every: int = 1  # write a metrics line every N steps
    # Learning curve: score the first val_tokens of the run's validation subset before the first step, every
    # val_every steps and after the last (the reference's VAL_LOSS_EVERY, on a slice), as metrics lines of
    # phase "val" and result.json `train.curve`. A diagnostic pass without gradient, outside the wallclock
    # budget, not part of val_bpb; it scores the live weights (EMA's are copied in only at the end). 0 = off.
    val_every: int = field(default=0, metadata={"omit_default": True})
    val_tokens: int = field(default=65_536, metadata={"omit_default": True})
    checkpoint: bool = True  # write the final (pre-quantization) weights as checkpoint.pt
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self):
        if self.max_steps < 0 or self.grad_accum < 0 or self.seq_len < 2 or self.batch_tokens < self.seq_len:
            raise GolfError("train: need max_steps >= 0, grad_accum >= 0 (0 = 8 // world size), seq_len >= 2, "
                            "batch_tokens >= seq_len")
        if self.warmdown_mode not in WARMDOWN_MODES:
            raise GolfError(f"train.warmdown_mode must be one of {list(WARMDOWN_MODES)}, got {self.warmdown_mode!r}")
        if self.val_every < 0 or self.val_tokens < 2:
            raise GolfError(f"train.val_every must be >= 0 (0 = no learning curve) and train.val_tokens >= 2, got "
                            f"{self.val_every} and {self.val_tokens}")
        if self.log_every < 1:
            raise GolfError(f"train.log_every must be >= 1 (a metrics line every N steps), got {self.log_every}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise GolfError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise GolfError(f"train.device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class EvalConfig:
    mode: str = "windows"  # windows: non-overlapping (baseline); sliding: overlapping windows, new tokens scored
    stride: int = 64  # sliding only: tokens advanced (and scored) per window (records: 64)
    seq_len: int = 0  # 0 = train.seq_len
    batch_seqs: int = 32  # windows per forward pass
    # which targets are official: "pg" = the baseline's range, the first ((N-1) // seq_len) * seq_len
    # targets (the tail after the last whole window is never scored); "all" = every target; "auto" = pg
    # on FineWeb data, all on any other corpus. result.json `eval.protocol` records the one used.
    protocol: str = "auto"

    def __post_init__(self):
        if self.mode not in ("windows", "sliding"):
            raise GolfError(f"eval.mode must be 'windows' or 'sliding', got {self.mode!r}")
        if self.protocol not in ("auto", "pg", "all"):
            raise GolfError(f"eval.protocol must be 'pg', 'all' or 'auto', got {self.protocol!r}")
        if self.stride < 1 or self.batch_seqs < 1 or self.seq_len < 0:
            raise GolfError("eval: stride and batch_seqs must be >= 1, seq_len >= 0")


@dataclass
class RunConfig:
    seed: int = 1337
    preset: str = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Where model.vocab_size came from, not what the run is: True when the user stated it (a YAML file or
    # -s), False when it is the preset's, which only says what the preset's original run used and which
    # run() replaces with the dataset's (golf.run.with_dataset_vocab); a stated one must match the dataset.
    # Set by build_config; not part of to_dict() and so of no hash.
    vocab_stated: bool = field(default=False, repr=False, compare=False)

    def to_dict(self, complete: bool = False) -> dict:
        """The config as plain JSON (config.json, result.json, every hash). Fields marked `omit_default`
        came after results were committed: a section's such fields are left out while all of them hold
        their defaults, so every earlier run keeps its config hash and base-model key, and a run that sets
        one records them all (train.val_every=50 records train.val_tokens too). `complete` keeps them."""
        d = dataclasses.asdict(self)
        del d["vocab_stated"]
        for name, section in SECTIONS.items():
            later = [f for f in dataclasses.fields(section) if f.metadata.get("omit_default")]
            if not complete and all(d[name][f.name] == f.default for f in later):
                for f in later:
                    del d[name][f.name]
        return d

    def hash(self, *sections: str) -> str:
        """Hash of the whole config, or of some sections (the base-model cache uses data/model/train/seed)."""
        d = self.to_dict()
        if sections:
            d = {k: d[k] for k in sections}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "ttt": TTTConfig,
            "quant": QuantConfig, "eval": EvalConfig}
TOP_LEVEL = ("seed", "preset")

# Run scale by preset family: the `tiny*` presets train in seconds on a laptop CPU.
TINY_RUN = {
    # grad_accum 1: one micro-batch per step (the baseline's 8 would make CPU steps of 4 sequences)
    "train": {"max_steps": 200, "batch_tokens": 4096, "seq_len": 128, "warmdown_steps": 60, "grad_accum": 1,
              "muon_momentum_warmup_steps": 50, "compile_warmup_steps": 0, "log_every": 10},
    "eval": {"batch_seqs": 64},
    "ttt": {"chunk_tokens": 4096, "slice_tokens": 16_385, "doc_chunk_tokens": 128},
    # The baseline keeps float tensors of <= 65,536 elements unquantized: at width 512 that spares only
    # the control vectors. At width 64 every matrix of a tiny model is that small (64x64 = 4,096, the
    # 1024x64 embedding = 65,536), so the rule would leave the whole model in fp16 and every quantizer
    # would measure nothing. 1,024 keeps the vectors (<= 128 elements) and quantizes every matrix.
    "quant": {"keep_fp16_max_numel": 1024},
}


# The CPU scale ladder (issue 14): the baseline's skeleton at widths a 2-core CPU trains in minutes, each
# with a run scale of one pass over the offline corpus's 8.5M training tokens (518 steps of 16,384 =
# 8,486,912 tokens; seq 256). Measured in README "Scale ladder": small beats the Kneser-Ney bigram of
# the same tokens by ~0.39 bpb. Matrices are quantized as at the tiny scale (at width <= 256 every matrix
# is under the baseline's 65,536-element fp16 rule).
LADDER_RUN = {
    "train": {"max_steps": 518, "batch_tokens": 16_384, "seq_len": 256, "warmdown_steps": 150, "grad_accum": 1,
              "muon_momentum_warmup_steps": 100, "compile_warmup_steps": 0, "log_every": 25},
    "eval": {"batch_seqs": 32},
    "ttt": {"chunk_tokens": 16_384, "slice_tokens": 65_537, "doc_chunk_tokens": 256},
    "quant": {"keep_fp16_max_numel": 1024},
}
RUN_SCALES = {"tiny": TINY_RUN, "small": LADDER_RUN, "medium": LADDER_RUN}


def run_scale(preset: str) -> dict | None:
    """The run scale a preset brings (by family: `tiny1127` is a tiny), or None for the full-scale presets."""
    return next((scale for family, scale in RUN_SCALES.items() if preset.startswith(family)), None)


def valid_keys() -> list[str]:
    keys = list(TOP_LEVEL)
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _merge(base: dict, update: dict, where: str = "") -> None:
    for key, value in update.items():
        path = f"{where}{key}"
        if where == "" and key not in SECTIONS and key not in TOP_LEVEL:
            raise GolfError(f"unknown config key {path!r}; valid keys: {', '.join(valid_keys())}")
        if where and key not in base:
            raise GolfError(f"unknown config key {path!r}; valid keys: {', '.join(valid_keys())}")
        if key in SECTIONS and where == "":
            if not isinstance(value, dict):
                raise GolfError(f"config key {path!r} must be a mapping")
            _merge(base[key], value, f"{key}.")
        else:
            base[key] = value


def parse_overrides(pairs: list[str]) -> dict:
    """`-s train.max_steps=30 -s seed=7` -> nested dict; values are parsed as YAML scalars/lists."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise GolfError(f"override {pair!r} must look like key=value (e.g. train.max_steps=30)")
        key, raw = pair.split("=", 1)
        try:  # JSON first: YAML 1.1 reads 1e30 as a string
            value = json.loads(raw)
        except json.JSONDecodeError:
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def build_config(preset: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | dict | None = None) -> RunConfig:
    """Defaults <- preset <- YAML file <- overrides, validated; unknown keys fail with the valid list."""
    from golf.presets import PRESETS

    layers: list[dict] = []
    if config_file is not None:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise GolfError(f"config {path}: file not found") from None
        except yaml.YAMLError as e:
            raise GolfError(f"config {path}: invalid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(loaded, dict):
            raise GolfError(f"config {path}: top level must be a mapping")
        layers.append(loaded)
    if overrides:
        layers.append(parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    # The preset may come from the file or an override; the most specific wins.
    for layer in layers:
        preset = layer.get("preset", preset)
    preset = preset or "tiny"
    if preset not in PRESETS:
        raise GolfError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")

    resolved: dict[str, Any] = {"seed": 1337, "preset": preset}
    resolved.update({name: {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                            for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()})
    _merge(resolved, {"model": PRESETS[preset]})
    scale = run_scale(preset)
    if scale:
        _merge(resolved, scale)
    for layer in layers:
        _merge(resolved, layer)
    cfg = config_from_dict(resolved)
    cfg.vocab_stated = any(isinstance(layer.get("model"), dict) and "vocab_size" in layer["model"]
                           for layer in layers)
    return cfg


def _check_types(section: str, cls, values: dict) -> None:
    """Reject values of the wrong type before they reach a dataclass (which would not check)."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        hint = hints.get(key)
        allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        allowed = tuple(typing.get_origin(a) or a for a in allowed)
        if value is None and type(None) in allowed:
            continue
        ok = any(
            (a is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (a is int and isinstance(value, int) and not isinstance(value, bool))
            or (a not in (int, float) and isinstance(a, type) and isinstance(value, a))
            for a in allowed
        )
        if not ok:
            names = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
            raise GolfError(f"config key {section}.{key} must be {names}, got {value!r}")


def _without_retired_keys(d: dict) -> dict:
    """A config written before a key was retired, read as today's: `train.qat_bits` (QAT now trains for
    the quant section's grid) is dropped where QAT was off, so it meant nothing; with QAT on it is refused,
    since that run trained for a grid today's config cannot state."""
    train = d.get("train")
    if not isinstance(train, dict) or "qat_bits" not in train:
        return d
    if train.get("qat_threshold", 0.0):
        raise GolfError(f"train.qat_bits={train['qat_bits']} is retired: QAT now trains for the artifact's grid "
                        "(quant.method / quant.bits); drop train.qat_bits and set the quant section instead")
    return {**d, "train": {k: v for k, v in train.items() if k != "qat_bits"}}


def config_from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from its `to_dict()` form (e.g. a run folder's config.json)."""
    kwargs: dict[str, Any] = {}
    d = _without_retired_keys(d)
    for key, value in d.items():
        if key in SECTIONS:
            _check_types(key, SECTIONS[key], value)
            try:
                kwargs[key] = SECTIONS[key](**value)
            except TypeError as e:
                raise GolfError(f"config section {key!r}: {e}") from e
        elif key in TOP_LEVEL:
            kwargs[key] = value
        else:
            raise GolfError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    if not isinstance(kwargs.get("seed", 0), int):
        raise GolfError(f"seed must be an integer, got {kwargs['seed']!r}")
    return RunConfig(**kwargs)
