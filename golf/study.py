"""Papermill studies: a YAML grid of notebook parameters -> executed notebooks -> result folders.

Why notebooks at all: a study cell is something a researcher also wants to open, re-run with other
parameters and look at (papermill's model, as in microsoft/recommenders). Why so thin: every notebook in
`notebooks/` only lists its parameters, calls `run_cell` (this module) and shows the result. The logic
that turns parameters into a run config lives here, once, so the study runner can compute the very same
config hash *without* executing the notebook, which is what makes a study cached and resumable.

A study, `studies/NAME.yaml`:

    description: what question the study answers (one line)
    scale: what it is sized for, e.g. "CPU, 2 cores, ~15 min"
    notebook: ttt_epochs            # notebooks/ttt_epochs.ipynb
    parameters: {preset: tiny}      # fixed notebook parameters
    axes: {strategy: [a, b]}        # the grid: cartesian product of the axes ...
    seeds: [1337, 42, 7]            # ... times the seeds (each cell gets parameter `seed`)
    grids: [{notebook, parameters, axes}, ...]   # instead of axes: a union of grids, each with its
                                    # own notebook, axes and parameters (over the shared ones; e.g. smoke)
    data_build: {input: [tests/fixtures/text], vocab_size: 512, val_docs: 4}   # optional
    report: true                    # execute notebooks/report.ipynb once the grid is complete

Layout under the project root (CONTRACT.md). The committed results are the *reference*: a study run
computes into a work folder of its own and never counts a committed result as done, so a fresh clone really
recomputes every cell; `golf study compare NAME` then puts the two side by side. `--reference` runs (or
reports) in place of the committed results, which is how they are made.

    work/NAME/runs/<id>/                this machine's run of each cell (`out`): result.json, or error.txt
    work/NAME/papermill/<id>.ipynb      its executed notebook (kept when it fails)
    work/NAME/summary.*, figures/       the report of this run (golf.report.write_report)
    results/NAME/...                    the committed reference: runs/<id>/, summary.*, figures/, README.md,
                                        conclusions.yaml (the README's claims, checked by compare)
    papermill_runs/NAME/<id>.ipynb      the reference's executed notebooks

Cell ids are `[<notebook>-]<readable axis values>-s<seed>-<8 hex>` (the notebook named only in studies
that mix notebooks), the hex a hash of the notebook and the parameters as the study declares them (so
editing an unrelated notebook default does not orphan finished runs). `--shard i/N` takes cell k of the
id-sorted grid when k mod N = i, so shards on several machines cover the grid exactly once.
A cell is *done* when its result.json parses and carries the config hash that the cell's parameters
produce today; run() writes result.json atomically and last, so an interrupted run never looks done and a
re-run completes exactly what is missing. Training is shared through run()'s base-model cache
($GOLF_CACHE): cells that differ only in TTT, quantization or evaluation train once.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import json
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golf.errors import GolfError
from golf.io import write_text
from golf.progress import STATUS_ENV, Progress, watch_status

STUDIES_DIR = "studies"
NOTEBOOKS_DIR = "notebooks"
RESULTS_DIR = "results"
EXECUTED_DIR = "papermill_runs"
WORK_DIR = "work"  # this machine's study runs (git-ignored); results/ holds the committed reference
CONCLUSIONS_FILE = "conclusions.yaml"
KERNEL = "python3"
REPORT_NOTEBOOK = "report"
ERROR_FILE = "error.txt"


# ---------------------------------------------------------------------------------------------------
# Notebook parameters -> run config
# ---------------------------------------------------------------------------------------------------

# Parameters that map one to one onto a config key. The notebooks use these names, so a study YAML reads
# like the notebook it drives, and the report gets `p_<name>` columns named after them.
PARAM_KEYS: dict[str, str] = {
    "seed": "seed",
    "preset": "preset",
    "max_steps": "train.max_steps",  # training steps of the base model
    "max_val_tokens": "data.max_val_tokens",  # score only the first N validation tokens (0 = all)
    "strategy": "ttt.strategy",
    "allow_illegal": "ttt.allow_illegal",
    "epochs": "ttt.epochs",
    "ttt_lr": "ttt.lr",
    "ut_loops": "model.ut_loops",
    "compressor": "quant.compressor",
    "ema_decay": "train.ema_decay",
}
# Parameters with a little logic (see cell_config): the dataset, the UT curriculum switch, the quantizer
# family x bit width, the architecture ablation, and free dotted overrides for anything else.
SPECIAL_PARAMS = ("data", "ut_curriculum", "quant_method", "bits", "ablate", "overrides")
CELL_PARAMS = tuple(PARAM_KEYS) + SPECIAL_PARAMS

# Quantizer families for a bits x method grid. `int` is the row-absmax grid at `bits` (int4..int7;
# int8 is the baseline's int8 quantizer); the others take the width as `quant.bits`.
QUANT_METHODS = ("int", "gptq_lite", "gptq", "sdclip")

# Architecture ablations: each switches ONE technique of a seed stack off (tiny1550 / tiny1127 carry the
# seeds' switches at CPU scale). "none" is the full stack, the reference every other cell is read against.
ABLATIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "xsa": {"model.xsa_last_n": 0},  # exclusive self-attention (records #1127, #1493)
    "partial_rope": {"model.rope_dims": None},  # rotate every head dim instead of 16/64
    "smear_gate": {"model.smear_gate": False},  # previous-token embedding blend (#1127)
    "bigram_hash": {"model.bigram_buckets": 0},  # hashed bigram embedding (#1127)
    "ema": {"train.ema_decay": 0.0},  # weight EMA before quantization (records 0.997 / 0.9985)
    "leaky_relu2": {"model.activation": "relu2"},  # back to the baseline's ReLU^2
    "parallel_residuals": {"model.parallel_from": None},  # attention and MLP in sequence again (#1493)
    "recurrence": {"model.recur_start": None, "model.recur_end": None},  # depth recurrence (#1493)
    "value_embeddings": {"model.ve_dim": 0, "model.ve_layers": []},  # VE on the last layers (#1493)
    "ln_scale": {"model.ln_scale": False},  # 1/sqrt(layer+1) on the normed block input
}


def _nest(dotted: dict[str, Any]) -> dict:
    """{"train.max_steps": 5, "seed": 1} -> {"train": {"max_steps": 5}, "seed": 1}."""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _dotted(cfg, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def cell_config(**params: Any):
    """The RunConfig of one notebook cell, from the notebook's parameters (all but `out`).

    Unknown parameters fail with the valid list. A parameter left out keeps the preset's value; the
    named parameters win over `overrides`, and an `overrides` key that a named parameter also sets fails
    (one value per key, stated once).
    """
    from golf.config import build_config

    unknown = sorted(set(params) - set(CELL_PARAMS))
    if unknown:
        raise GolfError(f"unknown cell parameter(s) {', '.join(unknown)}; valid: {', '.join(CELL_PARAMS)}")
    dotted: dict[str, Any] = {}
    for name, key in PARAM_KEYS.items():
        if name in params and params[name] is not None:
            dotted[key] = params[name]
    if params.get("data"):
        dotted["data.path"] = str(params["data"])

    if params.get("ut_curriculum") is False:
        dotted["model.ut_curriculum_frac"] = 0.0  # off: dense attention from step 0 (on = the preset's frac)

    method, bits = params.get("quant_method"), params.get("bits")
    if method is not None:
        if method not in QUANT_METHODS:
            raise GolfError(f"quant_method {method!r} is unknown; valid: {', '.join(QUANT_METHODS)}")
        if method == "int":
            if bits not in (4, 5, 6, 7, 8):
                raise GolfError(f"quant_method 'int' needs bits in 4..8, got {bits!r}")
            dotted["quant.method"] = f"int{bits}"
        else:
            dotted["quant.method"] = method
            if bits is not None:
                dotted["quant.bits"] = bits
    elif bits is not None:
        raise GolfError(f"bits={bits} needs quant_method ({', '.join(QUANT_METHODS)})")

    extra = params.get("overrides") or {}
    if not isinstance(extra, dict):
        raise GolfError(f"overrides must be a mapping of dotted config keys, got {extra!r}")
    clash = sorted(set(extra) & set(dotted))
    if clash:
        raise GolfError(f"overrides set {', '.join(clash)}, which a named notebook parameter already sets")
    layers = {**extra, **dotted}

    ablate = params.get("ablate") or "none"
    if ablate not in ABLATIONS:
        raise GolfError(f"ablate {ablate!r} is unknown; valid: {', '.join(ABLATIONS)}")
    full = build_config(overrides=_nest(layers))
    if ablate == "none":
        return full
    # An ablation of a switch the stack does not have would silently measure nothing: refuse it.
    if all(_dotted(full, key) == value for key, value in ABLATIONS[ablate].items()):
        have = [name for name, keys in ABLATIONS.items()
                if name != "none" and any(_dotted(full, k) != v for k, v in keys.items())]
        raise GolfError(f"ablate {ablate!r}: already off in preset {full.preset!r} with these parameters; "
                        f"switches on here: {', '.join(have) or 'none'}")
    return build_config(overrides=_nest({**layers, **ABLATIONS[ablate]}))


def run_cell(out: str | Path, **params: Any) -> dict:
    """Build the cell's config, run it into `out` and return the result dict (also result.json).

    `params` (every notebook parameter but `out`) are stored as result.json's `study_params`, which the
    report turns into `p_<name>` columns to group runs by.
    """
    from golf.run import run

    cfg = cell_config(**params)
    return run(cfg, out, study_params=dict(params))


# ---------------------------------------------------------------------------------------------------
# Inline views of one cell's result (what a notebook shows; the study tables come from golf.report)
# ---------------------------------------------------------------------------------------------------


def result_table(result: dict):
    """One-row DataFrame of the cell's headline numbers, with its study parameters."""
    import pandas as pd

    e, a, t = result["eval"], result["artifact"], result["ttt"]
    row = {**{k: v for k, v in (result.get("study_params") or {}).items() if k != "data"},
           "val_bpb": e["val_bpb"], "val_bpb_prequant": e["val_bpb_prequant"],
           "val_bpb_postquant": e["val_bpb_postquant"], "bytes_total": a["bytes_total"], "fits": a["fits"],
           "quant": a["quant"], "compressor": a["compressor"], "params": result["model"]["params"],
           "ttt_legal": t["legal"], "train_wall_s": result["train"]["wall_s"],
           "train_cached": result["train"].get("cached", False)}
    return pd.DataFrame([row])


def epoch_table(result: dict):
    """`ttt.per_epoch` as a DataFrame with gains against epoch 0 (negative = TTT lowered bpb)."""
    import pandas as pd

    frame = pd.DataFrame(result["ttt"]["per_epoch"])
    if frame.empty:
        return frame
    first = frame.index[frame["epoch"] == 0]
    for col, gain in (("val_bpb", "gain"), ("val_bpb_adapted", "gain_adapted"), ("val_bpb_heldout", "gain_heldout")):
        if col in frame:
            values = pd.to_numeric(frame[col], errors="coerce")  # null (no held-out half) -> NaN
            frame[gain] = values - (values[first[0]] if len(first) else float("nan"))
    return frame


def plot_ttt_epochs(result: dict):
    """val_bpb by TTT epoch for one cell: all tokens, adapted half A, held-out half B (the memorization probe)."""
    import matplotlib.pyplot as plt

    frame = epoch_table(result)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = {"val_bpb": "all val tokens", "val_bpb_adapted": "half A (adapted)",
              "val_bpb_heldout": "half B (held out)"}
    for col, label in labels.items():
        if col in frame and frame[col].notna().any():
            ax.plot(frame["epoch"], frame[col].astype(float), marker="o", label=label)
    t = result["ttt"]
    ax.set_xlabel("TTT epoch")
    ax.set_ylabel("val_bpb (bits per byte)")
    ax.set_title(f"{t['strategy']} ({'legal' if t['legal'] else 'illegal'}), seed {result['seed']}")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def probe_gap(result: dict):
    """One row: the final epoch's gain on all tokens, on adapted half A, on held-out half B, and A - B.

    A negative gain is an improvement. `gap_A_minus_B` < 0 means TTT helped the tokens it trained on more
    than the held-out ones: the signature of memorization (golf.report tests it across seeds).
    """
    import pandas as pd

    frame = epoch_table(result)
    t = result["ttt"]
    row = {"strategy": t["strategy"], "legal": t["legal"], "epochs": t["epochs"], "seed": result["seed"]}
    last = frame.iloc[-1] if not frame.empty else {}
    for gain in ("gain", "gain_adapted", "gain_heldout"):
        row[gain] = float(last[gain]) if gain in last else float("nan")
    row["gap_A_minus_B"] = row["gain_adapted"] - row["gain_heldout"]
    return pd.DataFrame([row])


def plot_train_loss(out: str | Path):
    """Training loss by step, read from the run folder's metrics.jsonl."""
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    points = [(m["step"], m["train_loss"]) for m in lines if "train_loss" in m]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in points], [v for _, v in points], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (nats per token)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def ablation_table(params: dict):
    """The config keys the cell's ablation changes, with the full stack's value and the ablated one."""
    import pandas as pd

    ablate = params.get("ablate") or "none"
    full = cell_config(**{**params, "ablate": "none"})
    cut = cell_config(**params)
    rows = [{"ablate": ablate, "key": key, "full_stack": _dotted(full, key), "this_cell": _dotted(cut, key)}
            for key in ABLATIONS.get(ablate, {})]
    return pd.DataFrame(rows, columns=["ablate", "key", "full_stack", "this_cell"])


# ---------------------------------------------------------------------------------------------------
# Study files
# ---------------------------------------------------------------------------------------------------


@dataclass
class DataBuild:
    """A dataset the study builds from committed text (golf data build), cached by content."""

    input: list[str]  # files or folders, relative to the project root
    vocab_size: int = 512  # tokenizer vocabulary (the fixture corpus is too small for 1024)
    val_docs: int = 4  # the first K documents are validation
    name: str = "study"  # shard / tokenizer prefix
    shard_tokens: int = 40_000  # several train shards even for a small corpus (calibration uses the last)

    def __post_init__(self):
        if not self.input or not all(isinstance(p, str) for p in self.input):
            raise GolfError("data_build.input must be a non-empty list of paths (relative to the project root)")
        for key in ("vocab_size", "val_docs", "shard_tokens"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise GolfError(f"data_build.{key} must be a positive integer")


@dataclass
class Grid:
    notebook: str
    parameters: dict
    axes: dict[str, list]


@dataclass
class Study:
    name: str
    description: str
    scale: str
    grids: list[Grid]
    seeds: list[int]
    data_build: DataBuild | None = None
    report: bool = True


@dataclass
class Cell:
    id: str
    notebook: str
    params: dict  # the parameters the study declares (seed included), without `out`
    axes: dict = field(default_factory=dict)  # the subset of params that come from the grid


STUDY_KEYS = ("description", "scale", "notebook", "parameters", "axes", "grids", "seeds", "data_build", "report")
GRID_KEYS = ("notebook", "parameters", "axes")
RESERVED = ("out", "seed")  # set by the runner: the run folder and the seed of each cell


def resolve_root(root: str | Path | None) -> Path:
    root = Path(root) if root is not None else Path.cwd()
    if not (root / STUDIES_DIR).is_dir():
        raise GolfError(f"{root}: no {STUDIES_DIR}/ folder here; run from the project root or pass --root")
    return root.resolve()


def list_studies(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / STUDIES_DIR).glob("*.yaml"))


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise GolfError(f"{where} must be a mapping of names to values")
    return value


def _check_keys(d: dict, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise GolfError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")


def _grid(raw: dict, shared: dict, default_notebook: str | None, where: str) -> Grid:
    notebook = raw.get("notebook", default_notebook)
    if not isinstance(notebook, str) or not notebook:
        raise GolfError(f"{where}: needs `notebook` (a name in {NOTEBOOKS_DIR}/, without .ipynb)")
    params = {**shared, **_mapping(raw.get("parameters"), f"{where}.parameters")}
    axes = _mapping(raw.get("axes"), f"{where}.axes")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GolfError(f"{where}.axes.{name} must be a non-empty list of values")
        if name in params:
            raise GolfError(f"{where}: {name!r} is both a fixed parameter and an axis; keep one")
    for name in RESERVED:
        if name in params or name in axes:
            raise GolfError(f"{where}: parameter {name!r} is set by golf study (use `seeds:` for seeds)")
    return Grid(notebook, params, axes)


def load_study(name: str, root: Path) -> Study:
    """Parse and check `studies/NAME.yaml`; unknown keys and malformed values fail with one line."""
    path = root / STUDIES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise GolfError(f"unknown study {name!r}; studies in {root / STUDIES_DIR}: "
                        f"{', '.join(list_studies(root)) or 'none'}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GolfError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, dict):
        raise GolfError(f"{path}: top level must be a mapping")
    where = f"{STUDIES_DIR}/{name}.yaml"
    _check_keys(raw, STUDY_KEYS, where)
    for key in ("description", "scale"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise GolfError(f"{where}: `{key}` must be a non-empty string")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds):
        raise GolfError(f"{where}: `seeds` must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise GolfError(f"{where}: `seeds` repeats a seed")
    shared = _mapping(raw.get("parameters"), f"{where}.parameters")
    if "grids" in raw:
        if "axes" in raw:
            raise GolfError(f"{where}: use either `axes` or `grids` (each grid has its own axes), not both")
        if not isinstance(raw["grids"], list) or not raw["grids"]:
            raise GolfError(f"{where}: `grids` must be a non-empty list")
        grids = []
        for i, g in enumerate(raw["grids"]):
            if not isinstance(g, dict):
                raise GolfError(f"{where}.grids[{i}] must be a mapping")
            _check_keys(g, GRID_KEYS, f"{where}.grids[{i}]")
            grids.append(_grid(g, shared, raw.get("notebook"), f"{where}.grids[{i}]"))
    else:
        grids = [_grid(raw, {}, raw.get("notebook"), where)]
    data_build = None
    if raw.get("data_build") is not None:
        spec = _mapping(raw["data_build"], f"{where}.data_build")
        _check_keys(spec, tuple(f.name for f in dataclasses.fields(DataBuild)), f"{where}.data_build")
        data_build = DataBuild(**spec)
        if any("data" in g.parameters or "data" in g.axes for g in grids):
            raise GolfError(f"{where}: `data` is set by data_build; drop the parameter")
    report = raw.get("report", True)
    if not isinstance(report, bool):
        raise GolfError(f"{where}: `report` must be true or false")
    return Study(name, raw["description"].strip(), raw["scale"].strip(), grids, list(seeds), data_build, report)


# ---------------------------------------------------------------------------------------------------
# Grid expansion, ids, shards
# ---------------------------------------------------------------------------------------------------


def _slug(name: str, value: Any) -> str:
    """Readable id piece: strings as they are, numbers with their name, booleans as name / no_name."""
    if isinstance(value, bool):
        text = name if value else f"no_{name}"
    elif isinstance(value, (int, float)):
        text = f"{name}{value}"
    elif isinstance(value, str):
        text = value or f"{name}_default"
    else:
        text = name
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_.")


def cell_id(notebook: str, params: dict, axes: dict, named: bool = False) -> str:
    """`[<notebook>-]<axis values>-s<seed>-<hash8>`; the hash covers the notebook and every declared parameter.

    `named` puts the notebook first, for studies that mix notebooks (smoke).

    A data_build dataset is not part of the id: when its text changes, the config hash (its path names
    the content) changes, so the cell re-runs in its same folder instead of leaving a stale one behind.
    """
    blob = json.dumps({"notebook": notebook, "parameters": params},
                      sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    readable = "-".join(s for s in ([notebook] if named else []) + [_slug(k, v) for k, v in axes.items()] if s)[:60]
    parts = [p for p in (readable, f"s{params['seed']}", digest) if p]
    return "-".join(parts)


def expand(study: Study) -> list[Cell]:
    """Every cell of the study (axes product x seeds for each grid), sorted by id; ids are unique."""
    cells: dict[str, Cell] = {}
    named = len({g.notebook for g in study.grids}) > 1
    for grid in study.grids:
        names = list(grid.axes)
        for values in itertools.product(*(grid.axes[n] for n in names)):
            axes = dict(zip(names, values))
            for seed in study.seeds:
                params = {**grid.parameters, **axes, "seed": seed}
                cid = cell_id(grid.notebook, params, axes, named)
                if cid in cells:
                    raise GolfError(f"study {study.name}: two cells with the same parameters ({cid}); "
                                    "an axis repeats a value")
                cells[cid] = Cell(cid, grid.notebook, params, axes)
    return [cells[k] for k in sorted(cells)]


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """"i/N" -> (i, N) with 0 <= i < N; None = the whole grid."""
    if shard is None:
        return None
    if isinstance(shard, tuple):
        i, n = shard
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
        if not m:
            raise GolfError(f"--shard {shard!r} must look like i/N (e.g. 0/4), 0 <= i < N")
        i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise GolfError(f"--shard {i}/{n}: need N >= 1 and 0 <= i < N")
    return i, n


def shard_cells(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """Cell k of the id-sorted grid belongs to shard k mod N: disjoint shards that cover the grid."""
    if shard is None:
        return cells
    i, n = shard
    return [c for k, c in enumerate(sorted(cells, key=lambda c: c.id)) if k % n == i]


# ---------------------------------------------------------------------------------------------------
# Validation against the notebooks (papermill only warns about unknown parameters; we refuse them)
# ---------------------------------------------------------------------------------------------------

_PY_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,),
             "list": (list,)}


def notebook_path(root: Path, notebook: str) -> Path:
    path = root / NOTEBOOKS_DIR / f"{notebook}.ipynb"
    if not path.is_file():
        have = sorted(p.stem for p in (root / NOTEBOOKS_DIR).glob("*.ipynb"))
        raise GolfError(f"notebook {notebook!r} not found in {root / NOTEBOOKS_DIR}; have: {', '.join(have) or 'none'}")
    return path


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The notebook's `parameters` cell as papermill reads it: name -> {type, default (a Python value)}."""
    import papermill

    found = papermill.inspect_notebook(str(path))
    if not found:
        raise GolfError(f"{path}: no cell tagged `parameters`")
    # papermill skips (with a log line) any assignment it cannot parse, e.g. one whose comment holds "=";
    # such a parameter would be silently unsettable, so compare with what Python sees in the cell.
    import nbformat

    cell = next(c for c in nbformat.read(str(path), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = []
    for node in ast.parse(cell.source).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        assigned += [t.id for t in targets if isinstance(t, ast.Name)]
    missed = [name for name in assigned if name not in found]
    if missed:
        raise GolfError(f"{path}: papermill cannot read parameter(s) {', '.join(missed)}; "
                        "write `name: type = literal  # comment` with no '=' in the comment")
    params = {}
    for name, info in found.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as e:
            raise GolfError(f"{path}: parameter {name} default {info['default']!r} is not a literal") from e
        params[name] = {"type": info["inferred_type_name"], "default": default}
    return params


def check_parameters(notebook: str, declared: dict, spec: dict[str, dict], where: str) -> None:
    """Every declared parameter must exist in the notebook, with a value of the annotated type."""
    unknown = sorted(set(declared) - set(spec))
    if unknown:
        raise GolfError(f"{where}: notebook {notebook} has no parameter(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(spec)}")
    for name, value in declared.items():
        allowed = _PY_TYPES.get(spec[name]["type"])
        bad_bool = isinstance(value, bool) and bool not in (allowed or ())
        if allowed and (not isinstance(value, allowed) or bad_bool):
            raise GolfError(f"{where}: parameter {name} of notebook {notebook} must be {spec[name]['type']}, "
                            f"got {value!r}")


def _cell_kwargs(cell: Cell, spec: dict[str, dict], data_path: str | None) -> dict:
    """What cell_config receives for a cell: notebook defaults, overridden by the study's parameters."""
    full = {name: info["default"] for name, info in spec.items() if name != "out"}
    full.update(cell.params)
    if data_path is not None:
        full["data"] = data_path
    return full


def _plan(name: str, root: Path) -> tuple[Study, list[Cell], dict[str, dict]]:
    """plan(), also returning each notebook's parameter spec (name -> {type, default})."""
    study = load_study(name, root)
    cells = expand(study)
    specs = {nb: notebook_parameters(notebook_path(root, nb)) for nb in sorted({c.notebook for c in cells})}
    for nb, spec in specs.items():
        for needed in ("out", "seed") + (("data",) if study.data_build else ()):
            if needed not in spec:
                raise GolfError(f"notebook {nb} has no `{needed}` parameter, which golf study sets")
    if study.report:
        report = notebook_parameters(notebook_path(root, REPORT_NOTEBOOK))
        if set(report) != {"name", "root", "reference"}:
            raise GolfError(f"notebook {REPORT_NOTEBOOK} must take exactly the parameters name, root and reference")
    from golf.ttt.strategies import get_strategy

    for cell in cells:
        where = f"study {name}, cell {cell.id}"
        check_parameters(cell.notebook, cell.params, specs[cell.notebook], where)
        try:
            cfg = cell_config(**_cell_kwargs(cell, specs[cell.notebook], None))
            get_strategy(cfg.ttt)  # refuses illegal strategies without allow_illegal, before any work
        except GolfError as e:
            raise GolfError(f"{where}: {e}") from None
    return study, cells, specs


def plan(name: str, root: str | Path | None = None) -> tuple[Study, list[Cell]]:
    """Load, expand and check a study without running or building anything.

    Checks every cell's parameters against its notebook (names and types) and builds every cell's run
    config, so a typo or an invalid value fails before the first notebook starts.
    """
    study, cells, _ = _plan(name, resolve_root(root))
    return study, cells


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------


def build_study_data(spec: DataBuild, root: Path) -> Path:
    """Build (or find) the study's dataset, named by a hash of its text and settings; returns its folder."""
    from golf.data.build import build_dataset, iter_input_files
    from golf.data.sources import data_root, load_complete_manifest, writable_root

    files = iter_input_files([root / p for p in spec.input])
    h = hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
    for f in files:  # content, not paths: the same text built anywhere is the same dataset
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    identity = h.hexdigest()[:16]
    out = data_root() / "datasets" / f"{spec.name}_{identity}"
    if load_complete_manifest(out) is None:
        writable_root(data_root())
        build_dataset([root / p for p in spec.input], spec.vocab_size, out, val_docs=spec.val_docs,
                      name=spec.name, shard_tokens=spec.shard_tokens)
    return out


class _Expected:
    """The config hash a cell's result.json must carry: cell_config + the dataset's vocabulary (as run())."""

    def __init__(self):
        self.vocab: dict[str | None, int] = {}

    def hash(self, kwargs: dict) -> str:
        cfg = cell_config(**kwargs)
        from golf.run import resolve_dataset, with_dataset_vocab

        if cfg.data.path not in self.vocab:
            self.vocab[cfg.data.path] = resolve_dataset(cfg).vocab_size
        return with_dataset_vocab(cfg, self.vocab[cfg.data.path]).hash()


def read_result(run_dir: Path) -> dict | None:
    """run_dir/result.json if it is complete JSON (an object), else None.

    run() writes it atomically, so a killed run leaves no result.json at all; the temporary files a killed
    writer may leave (`.result.json.*.tmp`) are never looked at, and a damaged file counts as missing.
    """
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) else None


def _check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise GolfError(f"Jupyter kernel {KERNEL!r} not found; install it with "
                        "`python -m ipykernel install --user`") from None


def execute(notebook: Path, output: Path, parameters: dict, cwd: Path) -> None:
    """Execute one notebook with papermill (kernel python3, working directory = the project root)."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    # The kernel's own log (a warning about unencrypted local TCP on every start, an error line when it
    # is shut down mid-interrupt) would interleave with the progress bar; failures of the notebook's code
    # still surface as PapermillExecutionError with the cell's traceback.
    # The kernel inherits the environment: GOLF_PROGRESS_STATUS sends golf's own progress (training steps,
    # evaluation windows) to a status file instead of the executed notebook; run_study shows it.
    saved = os.environ.get(STATUS_ENV)
    os.environ[STATUS_ENV] = str(status_file(output))
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
                                   cwd=str(cwd), progress_bar=False, log_output=False,
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    finally:
        if saved is None:
            os.environ.pop(STATUS_ENV, None)
        else:
            os.environ[STATUS_ENV] = saved


def status_file(executed: Path) -> Path:
    """Where the kernel executing `executed` (the output notebook) writes its latest progress line."""
    return executed.with_name(f".{executed.stem}.status")


def _failure_text(exc: BaseException) -> str:
    import papermill

    if isinstance(exc, papermill.PapermillExecutionError):
        # The kernel-side traceback, ANSI colours stripped, is what the user needs to read.
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(exc.traceback))
        return f"{exc.ename}: {exc.evalue}\n\ncell {exc.exec_count}:\n{tb}\n"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@dataclass(frozen=True)
class Place:
    """Where one study's cells and report live, relative to the project root (see the module docstring)."""

    study_dir: Path  # runs/<id>/ and the report: summary.*, figures/
    executed_dir: Path  # the executed notebooks
    reference: bool  # the committed results (results/, papermill_runs/) rather than a work folder

    @property
    def runs(self) -> Path:
        return self.study_dir / "runs"


def place(name: str, reference: bool = False) -> Place:
    if reference:
        return Place(Path(RESULTS_DIR) / name, Path(EXECUTED_DIR) / name, True)
    return Place(Path(WORK_DIR) / name, Path(WORK_DIR) / name / "papermill", False)


def run_study(name: str, shard: str | tuple[int, int] | None = None, root: str | Path | None = None,
              reference: bool = False) -> dict:
    """Run every missing cell of study NAME (or of one shard); returns {"done", "cached", "failed"}.

    Cells run into the work folder `work/NAME/` (or, with `reference`, into the committed `results/NAME/`).
    done: cells executed now that wrote their result; cached: cells whose result already existed *in that
    folder* with the same config hash; failed: cells whose notebook raised or wrote no result (their
    executed notebook and `error.txt` are kept; the other cells go on), plus the report notebook if it
    failed (`cell_status` lists which).
    """
    root = resolve_root(root)
    shard_ix = parse_shard(shard)
    study, grid, specs = _plan(name, root)  # everything checked before anything is built or run
    _check_kernel()
    data_path = None
    if study.data_build is not None:
        data_path = str(build_study_data(study.data_build, root))
    cells = shard_cells(grid, shard_ix)
    where = place(name, reference)
    results_dir = root / where.study_dir
    executed_dir = root / where.executed_dir
    expected = _Expected()
    summary = {"done": 0, "cached": 0, "failed": 0}

    desc = f"study {name}" + (f" shard {shard_ix[0]}/{shard_ix[1]}" if shard_ix else "")
    with Progress(desc, total=len(cells), unit="cell") as bar:
        for cell in cells:
            run_rel = where.runs / cell.id  # relative: executed notebooks stay portable
            run_dir = root / run_rel
            kwargs = _cell_kwargs(cell, specs[cell.notebook], data_path)
            previous = read_result(run_dir)  # the dataset is opened (for the hash) only when a result exists
            if previous is not None and previous.get("config_hash") == expected.hash(kwargs):
                summary["cached"] += 1
                bar.update(1, **summary, last=cell.id)
                continue
            parameters = {**cell.params, "out": str(run_rel)}
            if data_path is not None:
                parameters["data"] = data_path
            try:
                output = executed_dir / f"{cell.id}.ipynb"
                with watch_status(bar, status_file(output)):  # the cell's own steps, beside the cell count
                    execute(notebook_path(root, cell.notebook), output, parameters, root)
                result = read_result(run_dir)
                if result is None or result.get("config_hash") != expected.hash(kwargs):
                    raise RuntimeError(f"notebook {cell.notebook} finished without writing {run_rel}/result.json "
                                       "with the expected config hash")
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one failing cell must not stop the others
                if getattr(exc, "ename", None) == "KeyboardInterrupt":  # Ctrl-C that reached the kernel too
                    raise KeyboardInterrupt from exc
                write_text(run_dir / ERROR_FILE, f"cell {cell.id} (notebook {cell.notebook})\n"
                                                 f"executed notebook: {where.executed_dir}/{cell.id}.ipynb\n\n"
                                                 + _failure_text(exc))
                summary["failed"] += 1
            else:
                (run_dir / ERROR_FILE).unlink(missing_ok=True)  # an earlier failure of this cell is now stale
                summary["done"] += 1
            bar.update(1, **summary, last=cell.id)

    # The report notebook runs once the whole grid is complete, and only when something changed (or it
    # never ran), so a fully cached re-run executes nothing.
    report_nb = executed_dir / f"{REPORT_NOTEBOOK}.ipynb"
    if (study.report and shard_ix is None and summary["failed"] == 0
            and (summary["done"] or not report_nb.exists())):
        try:
            execute(notebook_path(root, REPORT_NOTEBOOK), report_nb,
                    {"name": name, "root": ".", "reference": reference}, root)
            (executed_dir / f"{REPORT_NOTEBOOK}.{ERROR_FILE}").unlink(missing_ok=True)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 (a broken report is recorded, not raised: the cells are done)
            write_text(executed_dir / f"{REPORT_NOTEBOOK}.{ERROR_FILE}", _failure_text(exc))
            summary["failed"] += 1
    _warn_strays(results_dir, {c.id for c in grid})
    return summary


def _warn_strays(results_dir: Path, ids: set[str]) -> None:
    """Run folders that are no cell of the study (an older grid) are left alone but named: the report reads them."""
    runs = results_dir / "runs"
    if not runs.is_dir():
        return
    strays = sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in ids and not p.name.startswith("."))
    if strays:
        print(f"golf study: {len(strays)} run folder(s) in {runs} are not cells of the current study "
              f"(e.g. {strays[0]}); the report includes them until they are deleted", file=sys.stderr)


def cell_status(name: str, root: Path, where: Place) -> dict[str, list[str]]:
    """The grid's cell ids by state in `where`: done (a readable result.json), failed (error.txt, no result),
    missing (neither: never run, interrupted, or a damaged result)."""
    _, cells = plan(name, root)
    status: dict[str, list[str]] = {"done": [], "failed": [], "missing": []}
    for cell in cells:
        run_dir = root / where.runs / cell.id
        state = ("done" if read_result(run_dir) is not None
                 else "failed" if (run_dir / ERROR_FILE).is_file() else "missing")
        status[state].append(cell.id)
    return status


def _absent_text(status: dict[str, list[str]]) -> str:
    parts = [f"{len(status[k])} {k} ({', '.join(status[k][:3])}{', ...' if len(status[k]) > 3 else ''})"
             for k in ("missing", "failed") if status[k]]
    return " and ".join(parts)


def report_study(name: str, root: str | Path | None = None, reference: bool = False,
                 partial: bool = False) -> list[Path]:
    """Aggregate the study's runs into tables and figures (golf.report); returns the paths written.

    Reads `work/NAME/runs` (or, with `reference`, the committed `results/NAME/runs`). A grid with cells
    missing or failed is refused, leaving the previous report and its figures as they are, unless
    `partial`: then the report covers the cells that are there and lists the absent ones (summary.md,
    and a warning on stderr).
    """
    from golf.report import write_report

    root = resolve_root(root)
    where = place(name, reference)
    study_dir = root / where.study_dir
    if not (root / where.runs).is_dir():
        other = place(name, not reference)
        hint = (f"; {other.runs} has runs (pass {'--reference' if other.reference else 'no --reference'})"
                if (root / other.runs).is_dir() else f" (run `golf study run {name}` first)")
        raise GolfError(f"study {name!r} has no runs in {study_dir / 'runs'}{hint}")
    status = cell_status(name, root, where)
    absent = status["missing"] + status["failed"]
    if absent and not partial:
        raise GolfError(f"study {name} in {where.study_dir} is incomplete: {_absent_text(status)} of "
                        f"{sum(map(len, status.values()))} cells; the report was left as it was. Run "
                        f"`golf study run {name}` to complete it, or pass --partial to report on what is there")
    if absent:
        print(f"golf study: partial report of {name}: {_absent_text(status)}", file=sys.stderr)
    return write_report(study_dir, absent={"missing": status["missing"], "failed": status["failed"]})


# ---------------------------------------------------------------------------------------------------
# Comparing a fresh run with the committed reference
# ---------------------------------------------------------------------------------------------------

# A conclusion names one number of a report table: TABLE[key=value,...].COLUMN, e.g.
# gap[strategy=lora_single_pass].gain_heldout_mean. The tables are golf.report's, computed from the runs.
_REF = re.compile(r"(?P<table>[a-z_]+)(?:\[(?P<where>[^\]]*)\])?\.(?P<column>[A-Za-z0-9_]+)")
_OPS = ("<", ">", "~", "==")
_CONCLUSION_KEYS = ("claim", "value", "op", "than", "times", "tol")


@dataclass
class Conclusion:
    """One claim of a results README, stated so that a program can check it:

        - claim: single-pass LoRA loses on the held-out half
          value: gap[strategy=lora_single_pass].gain_heldout_mean
          op: ">"                      # <, >, == or ~ (within `tol`)
          than: 0                      # a number, true/false, or another TABLE[...].COLUMN
          times: 1                     # optional factor on `than` ("A gains more than 2x B")
          tol: 0.003                   # for ~ only
    """

    claim: str
    value: str
    op: str
    than: Any
    times: float = 1.0
    tol: float = 0.0


def load_conclusions(path: Path) -> list[Conclusion]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GolfError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, list) or not raw:
        raise GolfError(f"{path}: must be a non-empty list of conclusions (claim, value, op, than)")
    out = []
    for i, item in enumerate(raw):
        where = f"{path.name}[{i}]"
        if not isinstance(item, dict):
            raise GolfError(f"{where}: must be a mapping")
        _check_keys(item, _CONCLUSION_KEYS, where)
        for key in ("claim", "value", "op"):
            if not isinstance(item.get(key), str):
                raise GolfError(f"{where}: `{key}` must be a string")
        if "than" not in item:
            raise GolfError(f"{where}: needs `than` (a number, true/false or TABLE[...].COLUMN)")
        if item["op"] not in _OPS:
            raise GolfError(f"{where}: op {item['op']!r} is unknown; valid: {', '.join(_OPS)}")
        for ref in [item["value"]] + ([item["than"]] if isinstance(item["than"], str) else []):
            if not _REF.fullmatch(ref):
                raise GolfError(f"{where}: {ref!r} is not TABLE[key=value,...].COLUMN")
        out.append(Conclusion(item["claim"], item["value"], item["op"], item["than"],
                              float(item.get("times", 1.0)), float(item.get("tol", 0.0))))
    return out


def report_tables(study_dir: Path) -> dict:
    """The report's tables of a study folder, computed from its runs (as `write_report` computes them)."""
    import pandas as pd

    from golf import report

    results, _ = report.read_results(study_dir)
    if not results:
        return {}
    frame = report._results_frame(results)
    tables = {"summary": report.summary_table(frame), "runs": frame}
    per_epoch = report.per_epoch_frame(results)
    ttt = report._ttt_runs(per_epoch)
    if not ttt.empty and ttt["gain"].notna().any():
        gap, pooled = report.gap_table(per_epoch)
        tables.update(gap=gap, pooled=pd.DataFrame([pooled]), slopes=report.slope_table(per_epoch))
    return tables


def _lookup_ref(tables: dict, ref: str) -> tuple[Any, str | None]:
    """(value, None) or (None, why it has no value) for TABLE[key=value,...].COLUMN."""
    m = _REF.fullmatch(ref)
    table = tables.get(m["table"])
    if table is None:
        return None, f"no {m['table']} table"
    if m["column"] not in table.columns:
        return None, f"{m['table']} has no column {m['column']}"
    rows = table
    for pair in filter(None, (m["where"] or "").split(",")):
        key, _, want = pair.partition("=")
        key = key.strip()
        if key not in rows.columns:
            return None, f"{m['table']} has no column {key}"
        rows = rows[rows[key].map(lambda v: str(v)) == want.strip()]
    if len(rows) != 1:
        return None, f"{len(rows)} rows match {ref}"
    value = rows[m["column"]].iloc[0]
    return (value.item() if hasattr(value, "item") else value), None


def check_conclusion(c: Conclusion, tables: dict) -> dict:
    """{value, than, holds (True / False / None when a number is missing), why}."""
    value, why = _lookup_ref(tables, c.value)
    than, why_than = _lookup_ref(tables, c.than) if isinstance(c.than, str) else (c.than, None)
    out = {"value": value, "than": than, "holds": None, "why": why or why_than}
    if out["why"] is not None:
        return out
    if c.op == "==":
        out["holds"] = bool(value == than)
        return out
    try:
        v, t = float(value), float(than) * c.times
    except (TypeError, ValueError):
        out["why"] = f"{value!r} or {than!r} is not a number"
        return out
    if v != v or t != t:  # NaN: the runs cannot say
        out["why"] = "not a number (too few seeds?)"
        return out
    out["holds"] = bool({"<": v < t, ">": v > t, "~": abs(v - t) <= c.tol}[c.op])
    return out


def compare_study(name: str, root: str | Path | None = None) -> dict:
    """This machine's run (work/NAME) beside the committed reference (results/NAME).

    cells: one row per grid cell with both official val_bpb values and their difference (fresh - reference);
    conclusions: each claim of results/NAME/conclusions.yaml with its value in both and whether it holds.
    """
    root = resolve_root(root)
    fresh, ref = place(name), place(name, reference=True)
    if not (root / fresh.runs).is_dir():
        raise GolfError(f"study {name}: no fresh run in {fresh.runs}; run `golf study run {name}` first")
    if not (root / ref.runs).is_dir():
        raise GolfError(f"study {name}: no committed reference in {ref.runs} to compare with")
    _, cells = plan(name, root)
    rows = []
    for cell in cells:
        a, b = read_result(root / fresh.runs / cell.id), read_result(root / ref.runs / cell.id)
        row: dict[str, Any] = {"cell": cell.id}
        for label, res in (("fresh", a), ("reference", b)):
            row[f"val_bpb_{label}"] = _get(res, "eval", "val_bpb")
            row[f"bytes_total_{label}"] = _get(res, "artifact", "bytes_total")
            row[f"legal_{label}"] = _get(res, "ttt", "legal")
        both = row["val_bpb_fresh"] is not None and row["val_bpb_reference"] is not None
        row["val_bpb_diff"] = row["val_bpb_fresh"] - row["val_bpb_reference"] if both else None
        rows.append(row)
    conclusions = []
    path = root / ref.study_dir / CONCLUSIONS_FILE
    if path.is_file():
        tables = {"fresh": report_tables(root / fresh.study_dir), "reference": report_tables(root / ref.study_dir)}
        for c in load_conclusions(path):
            entry = {"claim": c.claim, "check": f"{c.value} {c.op} "
                     f"{'' if c.times == 1 else f'{c.times:g} x '}{c.than}{f' ± {c.tol:g}' if c.op == '~' else ''}"}
            for label, t in tables.items():
                entry[label] = check_conclusion(c, t)
            conclusions.append(entry)
    return {"study": name, "fresh": str(fresh.study_dir), "reference": str(ref.study_dir), "cells": rows,
            "conclusions": conclusions, "conclusions_file": str(ref.study_dir / CONCLUSIONS_FILE) if path.is_file() else None}


def _get(result: dict | None, *keys: str) -> Any:
    node: Any = result
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
