"""A study's runs as data frames: reading `runs/*/result.json`, the per-epoch frame, and grouping.

A "configuration" is the tuple of key columns: the resolved `BASE_KEYS` (preset, strategy, epochs, legal,
quant, compressor, eval mode) and the cell's own study columns, read from result.json's `study_params`
(what the notebook was given: `bundle` and every dotted key of `overrides`, named as the config names it).
Runs that share a configuration are seeds of one cell. Nothing here knows a study by name.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from golf import stats
from golf.errors import GolfError

SCHEMA = 1
BYTES_LIMIT = 16_000_000  # the challenge's decimal 16 MB cap on code + compressed model
CONFIDENCE = 0.95

# result.json field -> flat column. All must be present for a run to be read (CONTRACT.md).
FIELDS: dict[str, str] = {
    "run_id": "run_id",
    "seed": "seed",
    "model.preset": "preset",
    "ttt.strategy": "strategy",
    "ttt.epochs": "epochs",
    "ttt.legal": "legal",
    "eval.val_bpb": "val_bpb",
    "eval.val_bpb_prequant": "val_bpb_prequant",
    "eval.val_bpb_postquant": "val_bpb_postquant",
    "artifact.bytes_total": "bytes_total",
    "artifact.fits": "fits",
    "artifact.quant": "quant",
    "artifact.compressor": "compressor",
}
# Contract fields that are nice to have in the frame but not worth refusing a run over.
OPTIONAL_FIELDS: dict[str, str] = {
    "model.params": "params",
    "eval.mode": "eval_mode",
    "train.wall_s": "train_wall_s",
    "train.tokens": "train_tokens",
    "train.cache_key": "base_key",  # the trained base model's identity (golf.run.base_key)
    "train.weights_sha256": "base_weights_sha256",  # its exact weights (a retrained base keeps its key, usually not this)
    "eval.val_bpb_base": "val_bpb_base",
    # count-based models of the run's own training tokens on its scored targets (golf/baselines.py)
    "eval.baselines.unigram": "unigram",
    "eval.baselines.bigram_kn": "bigram_kn",
    "eval.baselines.trigram_kn": "trigram_kn",
    # the artifact's quantizer as configured (family and width for the frontier figure; `quant` is its label)
    "config.quant.method": "quant_method",
    "config.quant.bits": "quant_bits",
}
NUMERIC = {"val_bpb", "val_bpb_prequant", "val_bpb_postquant", "bytes_total", "params", "train_wall_s",
           "train_tokens", "val_bpb_base", "unigram", "bigram_kn", "trigram_kn"}
# The n-gram baselines the summary sets each configuration against (margin = val_bpb - baseline).
BASELINE_COLUMNS = ["bigram_kn", "trigram_kn"]

# Columns that identify a configuration (runs sharing all of them are seeds of one cell), in table order.
BASE_KEYS = ["preset", "strategy", "epochs", "legal", "quant", "compressor", "eval_mode"]
# Per-run metrics summarised over seeds in summary.csv.
SUMMARY_METRICS = ["val_bpb", "val_bpb_prequant", "val_bpb_postquant", "bytes_total"]
# The three per-epoch measurements: whole validation set, adapted half A, held-out half B.
HALVES = {
    "all": ("val_bpb", "gain", "all probed tokens (A+B)"),
    "A": ("val_bpb_adapted", "gain_adapted", "half A (adapted)"),
    "B": ("val_bpb_heldout", "gain_heldout", "half B (held out)"),
}

# A study column named like the config key a base key resolves: the base key holds what the run resolved
# (ttt.epochs -1 -> the strategy's default), so the study column would only repeat it.
RESOLVED_AS = {"preset": "preset", "ttt.strategy": "strategy", "ttt.epochs": "epochs",
               "quant.compressor": "compressor", "eval.mode": "eval_mode"}


# Overrides that change what a run records about itself, never its numbers: not study columns, so they split
# no configuration (ttt.probe_curve=false scores the probe at epochs 0 and E only, the curve's two ends).
DIAGNOSTIC_OVERRIDES = ("data.path", "ttt.probe_curve")

# Study columns that name a replicate, not a configuration: runs that differ only in these are repeats of one
# cell (the seed is a base column; a probe split and its swap choose which documents form each half).
UNIT_COLUMNS = ("seed", "ttt.probe_split", "ttt.probe_swap")


def is_study_column(name: str) -> bool:
    """Columns that come from a cell's study parameters: a dotted config key, or the override bundle."""
    return "." in name or name == "bundle"


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _lookup(obj: dict, dotted: str) -> Any:
    """obj["a"]["b"] for "a.b"; KeyError naming the dotted key when any level is missing."""
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def _as_float(value: Any, key: str) -> float:
    """A number, or NaN for null (a run may legitimately lack, e.g., a held-out score)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} is {value!r}, expected a number")
    return float(value)


def _param_value(value: Any) -> Any:
    # Study parameters become group keys, so they must be hashable scalars; lists/dicts become JSON.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def _flatten(result: dict) -> dict:
    """One flat row from one result.json; KeyError/TypeError with the reason when a field is unusable."""
    row: dict[str, Any] = {}
    for dotted, col in FIELDS.items():
        value = _lookup(result, dotted)
        row[col] = _as_float(value, dotted) if col in NUMERIC else value
    for dotted, col in OPTIONAL_FIELDS.items():
        try:
            value = _lookup(result, dotted)
        except KeyError:
            value = None
        row[col] = _as_float(value, dotted) if col in NUMERIC else value
    for col in ("legal", "fits"):
        if not isinstance(row[col], bool):
            raise TypeError(f"{col} is {row[col]!r}, expected true/false")
    params = result.get("study_params", {}) or {}
    if not isinstance(params, dict):
        raise TypeError(f"study_params is {type(params).__name__}, expected an object")
    overrides = params.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise TypeError(f"study_params.overrides is {type(overrides).__name__}, expected an object")
    if params.get("bundle") not in (None, ""):
        row["bundle"] = str(params["bundle"])
    for key, value in overrides.items():
        if key not in DIAGNOSTIC_OVERRIDES:  # e.g. where the dataset lives on this machine
            row[key] = _param_value(value)
    return row


def _flat_rows(results: Sequence[dict]) -> list[dict]:
    """`_flatten` of each result, with every study column any cell set filled in for the cells that did not
    set it: the value that run's own config had (result.json `config`). A grid that sets `ttt.probe: false`
    in one cell and leaves the default elsewhere then shows `ttt.probe=True` there, not a blank; a column that
    is not a config key (`bundle`) stays empty where unset."""
    rows = [_flatten(r) for r in results]
    columns = {c for row in rows for c in row if is_study_column(c)}
    for result, row in zip(results, rows):
        for column in sorted(columns - row.keys()):  # sorted: the same key order in every process
            try:
                row[column] = _param_value(_lookup(result.get("config") or {}, column))
            except KeyError:
                pass
    return rows


def _per_epoch(result: dict) -> list[dict]:
    """`ttt.per_epoch` as [{epoch, val_bpb, val_bpb_adapted, val_bpb_heldout}]; TypeError when malformed."""
    entries = result.get("ttt", {}).get("per_epoch") or []
    if not isinstance(entries, list):
        raise TypeError(f"ttt.per_epoch is {type(entries).__name__}, expected a list")
    rows = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or isinstance(entry.get("epoch"), bool) \
                or not isinstance(entry.get("epoch"), int):
            raise TypeError(f"ttt.per_epoch[{i}] needs an integer 'epoch'")
        row = {"epoch": entry["epoch"]}
        for col in ("val_bpb", "val_bpb_adapted", "val_bpb_heldout"):
            row[col] = _as_float(entry.get(col), f"ttt.per_epoch[{i}].{col}")
        rows.append(row)
    return rows


def read_results(study_dir: str | os.PathLike, only: Iterable[str] | None = None) -> tuple[list[dict], list[str]]:
    """Parse every `runs/*/result.json` under `study_dir` (only the run folders named in `only`, when given:
    a slice of the grid); returns (results, skipped).

    A file is skipped, with a one-line reason in `skipped`, when it cannot be read, is not complete JSON
    (a run that died mid-write or a copy cut short), is not schema 1, lacks a field the report needs,
    has a malformed `ttt.per_epoch` or a non-finite `eval.val_bpb`, or repeats a run_id already read.
    Results are in run-folder order, so reports are reproducible.
    """
    study_dir = Path(study_dir)
    runs_dir = study_dir / "runs"
    if not runs_dir.is_dir():
        raise GolfError(f"{runs_dir}: no runs folder; run the study first (golf study run NAME)")
    results: list[dict] = []
    skipped: list[str] = []
    seen: dict[str, Path] = {}
    keep = None if only is None else set(only)
    for path in sorted(runs_dir.glob("*/result.json")):
        if keep is not None and path.parent.name not in keep:
            continue
        where = path.relative_to(study_dir)  # reasons name the file as the study folder sees it
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            skipped.append(f"{where}: unreadable ({exc.__class__.__name__})")
            continue
        except json.JSONDecodeError as exc:
            skipped.append(f"{where}: not complete JSON ({exc.msg} at line {exc.lineno})")
            continue
        if not isinstance(obj, dict):
            skipped.append(f"{where}: top level is {type(obj).__name__}, expected an object")
            continue
        if obj.get("schema") != SCHEMA:
            skipped.append(f"{where}: schema {obj.get('schema')!r}, expected {SCHEMA}")
            continue
        try:
            row = _flatten(obj)
            _per_epoch(obj)
            if not math.isfinite(row["val_bpb"]):  # golf no longer writes these; an older or foreign file
                raise TypeError(f"eval.val_bpb is {row['val_bpb']}, not a finite score (a diverged run)")
        except KeyError as exc:
            skipped.append(f"{where}: missing key {exc.args[0]}")
            continue
        except TypeError as exc:
            skipped.append(f"{where}: {exc}")
            continue
        if obj["run_id"] in seen:  # a copied run folder would count one seed twice
            skipped.append(f"{where}: run_id {obj['run_id']!r} already read from {seen[obj['run_id']]}")
            continue
        seen[obj["run_id"]] = where
        results.append(obj)
    return results, skipped


def _frame(rows: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    """DataFrame with at least `columns` (in that order) followed by any study columns, sorted."""
    frame = pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if is_study_column(c) and c not in columns)
    frame = frame.reindex(columns=list(columns) + extra)
    return frame


def _results_frame(results: Sequence[dict]) -> pd.DataFrame:
    columns = list(FIELDS.values()) + list(OPTIONAL_FIELDS.values())
    return _frame(_flat_rows(results), columns)


def load_results(study_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per readable run of the study: the columns of `FIELDS`, `OPTIONAL_FIELDS` and study columns.

    Study columns hold the cell's `bundle` and each dotted key of its `overrides` (result.json's `study_params`).
    Skipped files are listed in `frame.attrs["skipped"]` and emitted as a `RuntimeWarning` each;
    a broken file never raises.
    """
    results, skipped = read_results(study_dir)
    for reason in skipped:
        warnings.warn(f"skipped {reason}", RuntimeWarning, stacklevel=2)
    frame = _results_frame(results)
    frame.attrs["skipped"] = list(skipped)
    return frame


def per_epoch_frame(results: Iterable[dict] | str | os.PathLike) -> pd.DataFrame:
    """Long frame: one row per (run, TTT epoch) from `ttt.per_epoch`, with gains relative to epoch 0.

    `results` is a sequence of parsed result.json dicts (or a study folder, read with `read_results`).
    Columns: run_id, seed, the configuration keys (strategy, legal, epochs, ...; `epochs` is the run's
    configured total, `epoch` the row's), epoch, val_bpb, val_bpb_adapted, val_bpb_heldout and
        gain          = val_bpb(epoch)         - val_bpb(epoch 0)          of the same run
        gain_adapted  = val_bpb_adapted(epoch) - val_bpb_adapted(epoch 0)
        gain_heldout  = val_bpb_heldout(epoch) - val_bpb_heldout(epoch 0)
        gain_official = the run's official val_bpb - val_bpb_base (its float base model before any TTT
                        and quantization): what TTT did to the score, quantization included; the same
                        on every row of a run, NaN when the result has no val_bpb_base
    Negative gain = TTT lowered bits per byte. A run without an epoch-0 row has NaN gains. A run whose
    TTT recorded no per-epoch points (the memorization probe off: `ttt.probe=false`, the real protocol) gets
    one row at its configured epoch count with NaN probe values, so its official gain is in every table.
    `probed`: the run's own config had the probe on (true also for a strategy without probe passes, such as
    lora_score_first, whose official number then comes from the probe's reordered stream, not the protocol's).
    """
    if isinstance(results, (str, os.PathLike)):
        results, _ = read_results(results)
    results = list(results)
    rows: list[dict] = []
    for result, base in zip(results, _flat_rows(results)):
        keep = {k: v for k, v in base.items()
                if k in ("run_id", "seed") or k in BASE_KEYS or is_study_column(k)}
        official = base["val_bpb"] - base["val_bpb_base"]  # NaN when val_bpb_base is missing
        no_probe = {"epoch": int(base["epochs"] or 0), **{v: math.nan for v, _, _ in HALVES.values()}}
        entries = _per_epoch(result) or [no_probe]
        probed = bool(((result.get("config") or {}).get("ttt") or {}).get("probe", True))  # TTTConfig default
        run_rows = [{**keep, **entry, "gain_official": official, "probed": probed} for entry in entries]
        zero = next((r for r in run_rows if r["epoch"] == 0), None)
        for row in run_rows:
            for value_col, gain_col, _ in HALVES.values():
                row[gain_col] = row[value_col] - zero[value_col] if zero is not None else math.nan
        rows.extend(sorted(run_rows, key=lambda r: r["epoch"]))
    columns = ["run_id", "seed"] + BASE_KEYS + ["epoch"]
    columns += [c for value_col, gain_col, _ in HALVES.values() for c in (value_col, gain_col)]
    return _frame(rows, columns + ["gain_official", "probed"])


def curve_frame(results: Iterable[dict]) -> pd.DataFrame:
    """Long frame of the learning curves (result.json `train.curve`, recorded with train.val_every): one row
    per (run, point) with run_id, seed, the configuration keys, step, tokens, val_bpb, and the run's
    bigram_kn / trigram_kn and val_bpb_base (for the lines a curve is read against). Empty without curves."""
    results = list(results)
    rows: list[dict] = []
    for result, base in zip(results, _flat_rows(results)):
        curve = (result.get("train") or {}).get("curve") or []
        if not isinstance(curve, list) or not curve:
            continue
        keep = {k: v for k, v in base.items() if k in ("run_id", "seed", "val_bpb_base", *BASELINE_COLUMNS)
                or k in BASE_KEYS or is_study_column(k)}
        try:  # a malformed curve drops that run's curve, as read_results drops a malformed run
            points = [{**keep, "step": int(p["step"]), "tokens": float(p["tokens"]),
                       "val_bpb": _as_float(p.get("val_bpb"), "train.curve.val_bpb")} for p in curve]
        except (KeyError, TypeError, ValueError):
            continue
        rows.extend(points)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """Group-key form of a cell: NaN and None both mean 'not set'; numpy scalars become Python ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _sort_key(key: tuple) -> tuple:
    # Numbers sort numerically, strings alphabetically, unset last; mixed columns never compare str to int.
    out = []
    for v in key:
        if v is None:
            out.append((2, 0.0, ""))
        elif isinstance(v, (bool, int, float)):
            out.append((0, float(v), ""))
        else:
            out.append((1, 0.0, str(v)))
    return tuple(out)


def key_columns(frame: pd.DataFrame) -> list[str]:
    """The configuration columns present in `frame`: BASE_KEYS, then the study columns.

    A study column for a key that a base key resolves (ttt.strategy, ttt.epochs) is left out: the base key
    holds what the run actually resolved, the override only what was asked for. So is a column that the
    resolved keys already determine (quant.method=gptq, quant.bits=6 beside quant=gptq:6): it splits no
    configuration and would only repeat a column."""
    base = [c for c in BASE_KEYS if c in frame.columns]
    params = [c for c in frame.columns
              if is_study_column(c) and RESOLVED_AS.get(c) not in base and c not in UNIT_COLUMNS]
    return base + [c for c in params if not _determined_by(frame, base, c)]


def _determined_by(frame: pd.DataFrame, keys: Sequence[str], column: str) -> bool:
    """True when `column` takes one value within every group of `keys` yet differs between groups."""
    if not keys or frame.empty or len({_norm(v) for v in frame[column]}) < 2:
        return False
    seen: dict[tuple, Any] = {}
    for key, value in zip(frame[list(keys)].itertuples(index=False, name=None), frame[column]):
        key, value = tuple(_norm(v) for v in key), _norm(value)
        if seen.setdefault(key, value) != value:
            return False
    return True


def varying_keys(frame: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """The keys that take more than one value in `frame` (the ones worth showing in a table)."""
    return [k for k in keys if len({_norm(v) for v in frame[k]}) > 1]


def _groups(frame: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(key tuple, rows) for each configuration, in a stable sorted order."""
    if frame.empty:
        return []
    tuples = [tuple(_norm(v) for v in row) for row in frame[list(keys)].itertuples(index=False, name=None)]
    index: dict[tuple, list[int]] = {}
    for pos, key in enumerate(tuples):
        index.setdefault(key, []).append(pos)
    return [(key, frame.iloc[index[key]]) for key in sorted(index, key=_sort_key)]


def whole_curves(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """The rows of the runs whose probe scored every epoch 0..E (the within-run curve); runs with
    ttt.probe_curve=false (epochs 0 and E only) are left out."""
    if per_epoch.empty:
        return per_epoch
    whole = [run for run, rows in per_epoch.groupby("run_id")
             if sorted(rows["epoch"]) == list(range(int(rows["epochs"].iloc[0]) + 1))]
    return per_epoch[per_epoch["run_id"].isin(whole)]


def units(frame: pd.DataFrame) -> list[str]:
    """The replicate columns (UNIT_COLUMNS) that `frame` has: what `by_unit` groups by."""
    return [c for c in UNIT_COLUMNS if c in frame.columns]


def by_unit(group: pd.DataFrame, cols: list[str], value: str) -> dict[tuple, float]:
    """Unit -> value. A unit is a base model and a document split: (seed, ttt.probe_split). A split run
    swapped (ttt.probe_swap) is the same unit with the halves' roles exchanged, not an independent one: its
    value is averaged with the unswapped run's, which cancels any difference in difficulty between the
    two sets of documents; a unit missing a swap that other units of `group` have is left out. With a
    ttt.probe_swap column the key ends with the swaps averaged, e.g. (42, 1, (False, True)): comparisons
    across configurations intersect keys, so they pair like with like."""
    keys = [c for c in cols if c != "ttt.probe_swap"]
    swapped = "ttt.probe_swap" in cols
    sums: dict[tuple, list[float]] = {}
    swaps: dict[tuple, set] = {}
    for _, r in group.iterrows():
        v = r[value]
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            unit = tuple(_norm(r[c]) for c in keys)
            sums.setdefault(unit, []).append(float(v))
            swaps.setdefault(unit, set()).add(_norm(r["ttt.probe_swap"]) if swapped else None)
    # A unit that lacks one of the swaps its group was run with (a partial grid) is left out: its one
    # direction keeps the difference in difficulty between the two sets of documents that the swap cancels.
    # The unit also names the swaps it averages (last element), so across configurations a unit run both
    # ways is never paired with the same split run one way only.
    every = set().union(*swaps.values()) if swaps else set()
    return {(*unit, tuple(sorted(swaps[unit], key=str))) if swapped else unit: sum(vs) / len(vs)
            for unit, vs in sums.items() if not swapped or swaps[unit] == every}


def _label(key: tuple, keys: Sequence[str], shown: Sequence[str]) -> str:
    """Legend text for a group: the strategy by itself, other varying keys as name=value."""
    parts = []
    for name, value in zip(keys, key):
        if name not in shown:
            continue
        if name == "ttt.allow_illegal" and "legal" in shown:
            continue  # the measured verdict already says it
        if name == "strategy":
            parts.append(str(value))
        elif name == "legal":
            parts.append("legal" if value else "illegal")
        else:
            parts.append(f"{name}={value}")
    return ", ".join(parts) if parts else "all runs"


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def base_means(units_: list[tuple], rows: list[list[float]], position: int = 0) -> list[list[float]]:
    """One row per base model (a unit's first member, the seed; ascending): the element-wise mean of the rows
    of its units (its probe splits). `position` groups by another member instead: `split_position`'s, the
    probe split, gives one row per document split (its seeds averaged)."""
    per_base: dict[Any, list[list[float]]] = {}
    for unit, row in zip(units_, rows):
        per_base.setdefault(unit[position], []).append(row)
    return [[sum(col) / len(col) for col in zip(*group)] for _, group in sorted(per_base.items())]


def split_position(unit_columns: Sequence[str]) -> int | None:
    """Where the probe split sits in a `by_unit` key built from `unit_columns` (None without one). Split k
    draws its halves with seed k whatever the model's seed, so the units of one split share its documents
    across base models, as the splits of one seed share its base."""
    keys = [c for c in unit_columns if c != "ttt.probe_swap"]
    return keys.index("ttt.probe_split") if "ttt.probe_split" in keys else None


def seed_means(group: pd.DataFrame, values: pd.Series) -> list[float]:
    """One value per seed of `group` (ascending seed): the mean of that seed's finite `values`.

    A seed is one base model; its several runs (probe splits, their swaps) are not independent replicates of
    a level, so statistics of levels across runs take one number per seed. A seed without a finite value
    drops out."""
    return [v for _, v in sorted(by_unit(group.assign(_value=values), ["seed"], "_value").items())]


def _seed_count(frame: pd.DataFrame) -> int:
    return int(frame["seed"].nunique())


def _seeds_text(counts: Iterable[int]) -> str:
    counts = sorted(set(counts))
    if not counts:
        return "n = 0 seeds"
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"n = {span} seed{'s' if counts[-1] != 1 else ''} per point"


# ---------------------------------------------------------------------------------------------------
# Formatting


def family_table(rows: list[dict]) -> pd.DataFrame:
    """The rows of one table of tests as a frame, with Holm's adjusted p (`p_holm`) beside each raw
    `p_value`: a report table's comparisons are one family."""
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = stats.holm(table["p_value"].tolist())
    return table
