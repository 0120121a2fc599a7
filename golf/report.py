"""Turn a study's `result.json` files into tables and figures with seeds, intervals and p-values.

Why it reads only `results/<STUDY>/runs/*/result.json`: those files are the self-describing record each run
writes (STYLE principle 7). Logs, notebooks and metrics streams are never scraped, so a report can be rebuilt
at any time from the committed runs, and a half-written or foreign file is skipped with a reason instead of
silently poisoning an average.

What it writes into the study folder (each only when the data supports it):
    summary.csv / summary.md   one row per configuration: val_bpb mean, std, 95% t-interval, n seeds
    gap.csv / gap.md           TTT gain (final epoch minus epoch 0) overall, on the adapted half A and the
                               held-out half B, with Welch p-values for A vs B and legal vs illegal
    slopes.csv / slopes.md     OLS slope of the gain per epoch, per configuration and half
    figures/<name>.png|.svg    ttt_epochs, ttt_slopes, ut_curve, frontier

Why the gap and the slopes: the open question behind golf's TTT study is whether test-time training on
validation tokens generalises or memorises. Memorisation shows as a gain on the tokens trained on (A) that
does not transfer to the held-out ones (B), and as a gain that keeps growing linearly with epochs instead
of saturating. Every number in the tables comes from `golf.stats`; this module only groups and formats.

A "configuration" is the tuple of key columns (preset, strategy, epochs, legal, quant, compressor, eval
mode and every notebook parameter `p_*` except `p_seed`); runs that share it are seeds of one cell.
Tables show only the key columns that vary inside the study and state the constant ones once.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from golf import io as gio
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
    "eval.val_bpb_base": "val_bpb_base",
    # count-based models of the run's own training tokens on its scored targets (golf/baselines.py)
    "eval.baselines.unigram": "unigram",
    "eval.baselines.bigram_kn": "bigram_kn",
    "eval.baselines.trigram_kn": "trigram_kn",
}
NUMERIC = {"val_bpb", "val_bpb_prequant", "val_bpb_postquant", "bytes_total", "params", "train_wall_s",
           "val_bpb_base", "unigram", "bigram_kn", "trigram_kn"}
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

TABLE_FILES = ["summary.csv", "summary.md", "gap.csv", "gap.md", "slopes.csv", "slopes.md", "ablation.csv",
               "ablation.md"]
ABLATE = "p_ablate"  # the architecture notebook's switch; "none" is the full stack each ablation is read against


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
    # Notebook parameters become group keys, so they must be hashable scalars; lists/dicts become JSON.
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
    for name, value in params.items():
        row[f"p_{name}"] = _param_value(value)
    return row


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


def read_results(study_dir: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Parse every `runs/*/result.json` under `study_dir`; returns (results, skipped).

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
    for path in sorted(runs_dir.glob("*/result.json")):
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
    """DataFrame with at least `columns` (in that order) followed by any p_* columns, sorted."""
    frame = pd.DataFrame(rows)
    extra = sorted(c for c in frame.columns if c.startswith("p_") and c not in columns)
    frame = frame.reindex(columns=list(columns) + extra)
    return frame


def _results_frame(results: Sequence[dict]) -> pd.DataFrame:
    columns = list(FIELDS.values()) + list(OPTIONAL_FIELDS.values())
    return _frame([_flatten(r) for r in results], columns)


def load_results(study_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per readable run of the study: the columns of `FIELDS`, `OPTIONAL_FIELDS` and `p_*`.

    `p_<name>` holds the study's notebook parameter `<name>` from result.json's `study_params`.
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
    Negative gain = TTT lowered bits per byte. A run without an epoch-0 row has NaN gains.
    """
    if isinstance(results, (str, os.PathLike)):
        results, _ = read_results(results)
    rows: list[dict] = []
    for result in results:
        base = _flatten(result)
        keep = {k: v for k, v in base.items()
                if k in ("run_id", "seed") or k in BASE_KEYS or k.startswith("p_")}
        official = base["val_bpb"] - base["val_bpb_base"]  # NaN when val_bpb_base is missing
        run_rows = [{**keep, **entry, "gain_official": official} for entry in _per_epoch(result)]
        zero = next((r for r in run_rows if r["epoch"] == 0), None)
        for row in run_rows:
            for value_col, gain_col, _ in HALVES.values():
                row[gain_col] = row[value_col] - zero[value_col] if zero is not None else math.nan
        rows.extend(sorted(run_rows, key=lambda r: r["epoch"]))
    columns = ["run_id", "seed"] + BASE_KEYS + ["epoch"]
    columns += [c for value_col, gain_col, _ in HALVES.values() for c in (value_col, gain_col)]
    return _frame(rows, columns + ["gain_official"])


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
    """The configuration columns present in `frame`: BASE_KEYS then p_* (p_seed excluded: it is the seed).

    A notebook parameter named like a base key (p_strategy, p_epochs, p_preset) is left out: the base key
    holds what the run actually resolved, the parameter only what was asked for. So is a parameter that the
    resolved keys already determine (quant_method=int, bits=4 beside quant=int4): it splits no configuration
    and would only repeat a column."""
    base = [c for c in BASE_KEYS if c in frame.columns]
    params = [c for c in frame.columns
              if c.startswith("p_") and c != "p_seed" and c.removeprefix("p_") not in base]
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


def _label(key: tuple, keys: Sequence[str], shown: Sequence[str]) -> str:
    """Legend text for a group: the strategy by itself, other varying keys as name=value."""
    parts = []
    for name, value in zip(keys, key):
        if name not in shown:
            continue
        if name == "p_allow_illegal" and "legal" in shown:
            continue  # the measured verdict already says it
        if name == "strategy":
            parts.append(str(value))
        elif name == "legal":
            parts.append("legal" if value else "illegal")
        else:
            parts.append(f"{name.removeprefix('p_')}={value}")
    return ", ".join(parts) if parts else "all runs"


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


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
# ---------------------------------------------------------------------------------------------------


def _fmt(value: Any, kind: str = "bpb") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if kind == "bpb":
        return f"{value:.5f}"
    if kind == "gain":
        return f"{value:+.5f}"
    if kind == "p":
        return "0" if value == 0 else f"{value:.3g}"
    if kind == "bytes":
        return f"{value:,.0f}"
    if kind == "int" or value.is_integer():  # pandas turns int columns with gaps into floats: 16384.0
        return f"{value:.0f}"
    return f"{value:.4g}"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _key_cells(key: tuple, keys: Sequence[str], shown: Sequence[str]) -> list[str]:
    return [_fmt(v, "other") if v is not None else "-" for k, v in zip(keys, key) if k in shown]


def _constants_line(frame: pd.DataFrame, keys: Sequence[str], shown: Sequence[str]) -> str:
    parts = [f"{k.removeprefix('p_')}={_fmt(_norm(frame[k].iloc[0]), 'other')}"
             for k in keys if k not in shown and not frame.empty and _norm(frame[k].iloc[0]) not in (None, "")]
    return ("Common to all rows: " + ", ".join(parts) + ".\n") if parts else ""


def _ci_text(s: dict, kind: str = "bpb") -> str:
    return f"[{_fmt(s['ci_low'], kind)}, {_fmt(s['ci_high'], kind)}]"


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: n runs, n seeds, and mean/std/CI (from `stats.mean_std_ci`) of each metric."""
    keys = key_columns(frame)
    rows = []
    for key, group in _groups(frame, keys):
        row: dict[str, Any] = dict(zip(keys, key))
        row["n_runs"] = len(group)
        row["n_seeds"] = _seed_count(group)
        row["seeds"] = " ".join(str(s) for s in sorted(group["seed"].unique()))
        for metric in SUMMARY_METRICS:
            s = stats.mean_std_ci(_finite(group[metric]), CONFIDENCE)
            for field in ("mean", "std", "ci_low", "ci_high", "half_width"):
                row[f"{metric}_{field}"] = s[field]
        row["fits_all"] = bool(group["fits"].all())
        for name in BASELINE_COLUMNS:  # per-seed margin (val_bpb - baseline): < 0 means the model beats it
            row[f"{name}_mean"] = stats.mean_std_ci(_finite(group[name]), CONFIDENCE)["mean"]
            row[f"margin_{name}_mean"] = stats.mean_std_ci(_finite(group["val_bpb"] - group[name]), CONFIDENCE)["mean"]
        rows.append(row)
    return pd.DataFrame(rows)


def _summary_md(study: str, frame: pd.DataFrame, table: pd.DataFrame, skipped: list[str],
                figures: list[str]) -> str:
    keys = key_columns(frame)
    shown = varying_keys(frame, keys) or ["strategy"]
    headers = [k.removeprefix("p_") for k in keys if k in shown]
    headers += ["val_bpb mean ± std", "95% CI", "n seeds", "pre-quant", "post-quant", "bytes_total", "fits"]
    with_baselines = [b for b in BASELINE_COLUMNS if table[f"{b}_mean"].notna().any()]
    headers += [h for b in with_baselines for h in (b, f"vs {b}")]
    rows = []
    for _, r in table.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        val = {f: r[f"val_bpb_{f}"] for f in ("mean", "std", "ci_low", "ci_high")}
        rows.append(_key_cells(key, keys, shown) + [
            f"{_fmt(val['mean'])} ± {_fmt(val['std'])}", _ci_text(val), str(r["n_seeds"]),
            _fmt(r["val_bpb_prequant_mean"]), _fmt(r["val_bpb_postquant_mean"]),
            _fmt(r["bytes_total_mean"], "bytes"), "yes" if r["fits_all"] else "NO"]
            + [c for b in with_baselines for c in (_fmt(r[f"{b}_mean"]), _fmt(r[f"margin_{b}_mean"], "gain"))])
    text = f"# {study}: summary\n\n"
    text += (f"{len(frame)} runs read from `runs/*/result.json`"
             f"{f', {len(skipped)} skipped' if skipped else ''}. val_bpb is the official score "
             f"(round-tripped artifact, after TTT); mean ± sample std over seeds; 95% CI is the "
             f"Student-t interval of the mean (n-1 degrees of freedom, n/a for one seed). "
             f"bytes_total is the mean over seeds; the limit is {BYTES_LIMIT:,} bytes."
             + (" bigram_kn / trigram_kn: interpolated Kneser-Ney count models fitted on the training tokens"
                " the run's model consumed and scored on its scored targets (`golf/baselines.py`); 'vs' is"
                " the mean per-seed margin val_bpb - baseline (negative: the model beats it)."
                if with_baselines else "") + "\n\n")
    text += _constants_line(frame, keys, shown)
    text += "\n" + _md_table(headers, rows)
    if figures:
        text += "\n## Figures\n\n" + "".join(f"- `figures/{name}.png` (`.svg`)\n" for name in figures)
    if skipped:
        text += "\n## Skipped files\n\n" + "".join(f"- {reason}\n" for reason in skipped)
    return text


def _absent_md(absent: dict[str, list[str]] | None) -> str:
    """summary.md's list of the grid's cells this report lacks (empty for a complete grid)."""
    if not absent or not any(absent.values()):
        return ""
    text = "\n## Cells not in this report (partial report)\n\n"
    for state, why in (("missing", "no result.json: not run yet, interrupted, or damaged"),
                       ("failed", "the notebook failed: see runs/<id>/error.txt")):
        if absent.get(state):
            text += f"{len(absent[state])} {state} ({why}):\n\n" + "".join(f"- `{cid}`\n" for cid in absent[state]) + "\n"
    return text


def _ttt_runs(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """One row per run that trained at least one TTT epoch: its final-epoch gains (A, B and overall)."""
    if per_epoch.empty:
        return per_epoch.iloc[0:0]
    last = per_epoch.sort_values(["run_id", "epoch"]).groupby("run_id", sort=True).tail(1)
    return last[last["epoch"] > 0].reset_index(drop=True)


def gap_table(per_epoch: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Final-epoch TTT gains per configuration, and the pooled legal-vs-illegal Welch test.

    Per configuration: mean/std/CI of gain_official (the official score's change, see per_epoch_frame),
    gain, gain_adapted (half A) and gain_heldout (half B) at each run's final epoch;
    pvalue_adapted_vs_heldout = Welch test of the A gains against the B gains; pvalue_legal_vs_illegal =
    Welch test of this configuration's gains against those of every run of the opposite legality, on
    the official gain when every run has one (the seeds' legal-vs-illegal claim is about the official
    score), else on the probe's overall gain (`legal_vs_illegal_on` says which).
    """
    runs = _ttt_runs(per_epoch)
    on = "gain_official" if runs["gain_official"].notna().all() else "gain"
    keys = key_columns(runs)
    rows = []
    for key, group in _groups(runs, keys):
        row: dict[str, Any] = dict(zip(keys, key))
        row["n_seeds"] = _seed_count(group)
        row["epoch_final"] = int(group["epoch"].max())
        for gain_col in ["gain_official"] + [g for _, g, _ in HALVES.values()]:
            s = stats.mean_std_ci(_finite(group[gain_col]), CONFIDENCE)
            for field in ("mean", "std", "ci_low", "ci_high"):
                row[f"{gain_col}_{field}"] = s[field]
        ab = stats.welch_t_test(_finite(group["gain_adapted"]), _finite(group["gain_heldout"]))
        row["pvalue_adapted_vs_heldout"] = ab["p_value"]
        others = runs[runs["legal"] != group["legal"].iloc[0]]
        li = stats.welch_t_test(_finite(group[on]), _finite(others[on]))
        row["pvalue_legal_vs_illegal"] = li["p_value"]
        row["legal_vs_illegal_on"] = on
        rows.append(row)
    legal = runs["legal"].astype(bool)
    pooled = stats.welch_t_test(_finite(runs.loc[legal, on]), _finite(runs.loc[~legal, on]))
    return pd.DataFrame(rows), {**pooled, "on": on}


def _gap_md(study: str, runs: pd.DataFrame, table: pd.DataFrame, pooled: dict) -> str:
    keys = key_columns(runs)
    shown = [k for k in keys if k in ("strategy", "legal") or k in varying_keys(runs, keys)]
    headers = [k.removeprefix("p_") for k in keys if k in shown] + [
        "final epoch", "n seeds", "official gain", "95% CI", "probe gain (all)", "95% CI",
        "gain A (adapted)", "95% CI A", "gain B (held out)", "95% CI B", "p A vs B", "p legal vs illegal"]
    rows = []
    for _, r in table.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        cells = _key_cells(key, keys, shown) + [str(r["epoch_final"]), str(r["n_seeds"])]
        for gain_col in ("gain_official", "gain", "gain_adapted", "gain_heldout"):
            s = {f: r[f"{gain_col}_{f}"] for f in ("mean", "std", "ci_low", "ci_high")}
            mean_std = f"{_fmt(s['mean'], 'gain')} ± {_fmt(s['std'], 'bpb')}"
            cells += [mean_std, _ci_text(s, "gain")]
        cells += [_fmt(r["pvalue_adapted_vs_heldout"], "p"), _fmt(r["pvalue_legal_vs_illegal"], "p")]
        rows.append(cells)
    text = f"# {study}: TTT gain, adapted vs held-out\n\n"
    text += ("All gains in bits per byte, negative = TTT lowered bpb. official gain = the run's official "
             "val_bpb (round-tripped artifact, after TTT) - val_bpb of its float base model before TTT "
             "and quantization. Probe gains = val_bpb(final epoch) - val_bpb(epoch 0) of the "
             "memorization probe's diagnostic passes (`ttt.per_epoch`): A = the validation half TTT "
             "adapted on, B = the held-out half no TTT gradient touched; a gain on A that B does not "
             "share is the memorisation signature. Mean ± sample std over seeds, 95% Student-t CI; "
             "p-values are two-sided Welch t-tests (A vs B within the row; the row's "
             f"{'official' if pooled['on'] == 'gain_official' else 'probe (all)'} gain vs every run of "
             "the opposite legality).\n\n")
    text += _md_table(headers, rows)
    n_legal = pooled["n_a"]
    n_illegal = pooled["n_b"]
    what = "official" if pooled["on"] == "gain_official" else "probe (all)"
    text += (f"\nPooled: legal runs (n = {n_legal}) vs illegal runs (n = {n_illegal}): mean {what} gain difference "
             f"{_fmt(pooled['mean_diff'], 'gain')} bpb, Welch t = {_fmt(pooled['t'], 'other')}, "
             f"df = {_fmt(pooled['df'], 'other')}, p = {_fmt(pooled['p_value'], 'p')}.\n")
    return text


def slope_table(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """OLS fit of gain on epoch per configuration and half, over every seed's epochs >= 1.

    Epoch 0 is left out because its gain is zero by definition: those points carry no noise and would
    shrink the slope's standard error. Read with the intercept: memorisation looks like intercept ~ 0
    and a steady negative slope (each epoch buys more); generalisation that saturates looks like a
    negative intercept with a slope near zero.
    """
    trained = per_epoch[per_epoch["run_id"].isin(_ttt_runs(per_epoch)["run_id"]) & (per_epoch["epoch"] >= 1)]
    keys = key_columns(trained)
    rows = []
    for key, group in _groups(trained, keys):
        for half, (_, gain_col, _) in HALVES.items():
            pts = group[["epoch", gain_col]].dropna()
            if pts["epoch"].nunique() < 2 or len(pts) < 3:
                continue  # a slope needs two distinct epochs and one residual degree of freedom
            fit = stats.linear_fit(pts["epoch"].to_numpy(float), pts[gain_col].to_numpy(float), CONFIDENCE)
            row: dict[str, Any] = dict(zip(keys, key))
            row.update(half=half, n_points=len(pts), n_seeds=int(group.loc[pts.index, "seed"].nunique()))
            for field in ("slope", "slope_se", "slope_ci_low", "slope_ci_high", "intercept", "r2", "p_value"):
                row[field] = fit[field]
            # The pooled fit treats every (seed, epoch) point as independent, but the epochs of one run
            # share its noise, so its p-value is optimistic. The seeds are the independent replicates:
            # one slope per seed, then their mean, CI and a one-sample t-test of slope = 0.
            per_seed = []
            for _, run in group.loc[pts.index].groupby("seed"):
                run_pts = run[["epoch", gain_col]].dropna()
                if run_pts["epoch"].nunique() >= 2:
                    per_seed.append(stats.linear_fit(run_pts["epoch"].to_numpy(float),
                                                     run_pts[gain_col].to_numpy(float))["slope"])
            seed_ci = stats.mean_std_ci(per_seed, CONFIDENCE)
            row.update(seed_slope_mean=seed_ci["mean"], seed_slope_std=seed_ci["std"],
                       seed_slope_ci_low=seed_ci["ci_low"], seed_slope_ci_high=seed_ci["ci_high"],
                       seed_slope_p_value=stats.one_sample_t_test(per_seed)["p_value"])
            rows.append(row)
    return pd.DataFrame(rows)


def _slopes_md(study: str, trained: pd.DataFrame, table: pd.DataFrame) -> str:
    keys = key_columns(trained)
    shown = [k for k in keys if k in ("strategy", "legal") or k in varying_keys(trained, keys)]
    headers = [k.removeprefix("p_") for k in keys if k in shown] + [
        "half", "n seeds", "slope per seed (bpb/epoch)", "95% CI", "p (slope≠0)",
        "pooled OLS slope", "intercept", "R²", "points"]
    rows = []
    for _, r in table.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        rows.append(_key_cells(key, keys, shown) + [
            HALVES[r["half"]][2], str(r["n_seeds"]),
            f"{_fmt(r['seed_slope_mean'], 'gain')} ± {_fmt(r['seed_slope_std'], 'bpb')}",
            f"[{_fmt(r['seed_slope_ci_low'], 'gain')}, {_fmt(r['seed_slope_ci_high'], 'gain')}]",
            _fmt(r["seed_slope_p_value"], "p"), _fmt(r["slope"], "gain"), _fmt(r["intercept"], "gain"),
            _fmt(r["r2"], "other"), str(r["n_points"])])
    text = f"# {study}: memorisation slope (gain vs TTT epoch)\n\n"
    text += ("Each seed's run gives one least-squares slope of gain against epoch over its epochs >= 1 "
             "(epoch 0 is zero by definition and left out); the table shows their mean ± sample std, the "
             "95% Student-t CI over seeds and a two-sided one-sample t-test of slope = 0 (n seeds - 1 df): "
             "the seeds are the independent replicates. The pooled OLS fit over all points (drawn in "
             "`figures/ttt_slopes`) gives the intercept and R²; its own p-value (in slopes.csv) treats "
             "the epochs of one run as independent and is optimistic. A steady slope with intercept near "
             "0 = gain grows with each epoch (memorisation signature); a slope near 0 with a negative "
             "intercept = saturation.\n\n")
    return text + _md_table(headers, rows)


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One switch off against the full stack (`ablate=none`), paired by seed within each other configuration.

    For every configuration with ablate != none, each seed that also ran the full stack (same other keys)
    gives delta = val_bpb(switch off) - val_bpb(full stack); the row carries mean ± std and the 95% t-CI of
    those deltas and a paired t-test (one-sample t on the deltas, n pairs - 1 df). delta > 0: removing the
    switch hurt, so the switch helps. Seeds share data and initialisation streams, so pairing removes the
    seed-to-seed spread that the summary's intervals carry. Empty when there is no `ablate` column or no
    full-stack run.
    """
    if ABLATE not in frame.columns:
        return pd.DataFrame()
    data = frame[frame["val_bpb"].notna()]
    keys = [k for k in key_columns(data) if k != ABLATE]
    rows = []
    for key, group in _groups(data, keys):
        full = group[group[ABLATE] == "none"]
        if full.empty:
            continue
        full_by_seed = dict(zip(full["seed"], full["val_bpb"]))
        full_bytes = dict(zip(full["seed"], full["bytes_total"]))
        for ablate, runs in group[group[ABLATE] != "none"].groupby(ABLATE, sort=True):
            paired = runs[runs["seed"].isin(full_by_seed)].sort_values("seed")  # deltas listed in seed order
            deltas = [float(v) - float(full_by_seed[s]) for s, v in zip(paired["seed"], paired["val_bpb"])]
            dbytes = [float(b) - float(full_bytes[s]) for s, b in zip(paired["seed"], paired["bytes_total"])]
            d = stats.mean_std_ci(deltas, CONFIDENCE)
            row: dict[str, Any] = dict(zip(keys, key))
            row.update(ablate=ablate, n_pairs=d["n"], seeds=" ".join(str(s) for s in sorted(paired["seed"])),
                       val_bpb_full=float(np.mean([full_by_seed[s] for s in paired["seed"]])) if deltas else math.nan,
                       val_bpb_ablated=float(paired["val_bpb"].mean()) if deltas else math.nan,
                       delta_mean=d["mean"], delta_std=d["std"], delta_ci_low=d["ci_low"],
                       delta_ci_high=d["ci_high"], p_value=stats.one_sample_t_test(deltas)["p_value"],
                       delta_bytes=float(np.mean(dbytes)) if dbytes else math.nan,
                       deltas=" ".join(f"{x:+.5f}" for x in deltas))
            rows.append(row)
    return pd.DataFrame(rows)


def _ablation_md(study: str, frame: pd.DataFrame, table: pd.DataFrame) -> str:
    keys = [k for k in key_columns(frame) if k != ABLATE]
    shown = varying_keys(frame, keys)
    headers = [k.removeprefix("p_") for k in keys if k in shown] + [
        "switch off", "n pairs", "full stack", "switch off bpb", "delta (off - full)", "95% CI",
        "p (paired t)", "per seed (ascending seed)", "delta bytes"]
    rows = []
    order = table.sort_values([*[k for k in keys if k in shown], "delta_mean"], ascending=False, kind="stable")
    for _, r in order.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        rows.append(_key_cells(key, keys, shown) + [
            str(r["ablate"]), str(r["n_pairs"]), _fmt(r["val_bpb_full"]), _fmt(r["val_bpb_ablated"]),
            f"{_fmt(r['delta_mean'], 'gain')} ± {_fmt(r['delta_std'], 'bpb')}",
            f"[{_fmt(r['delta_ci_low'], 'gain')}, {_fmt(r['delta_ci_high'], 'gain')}]",
            _fmt(r["p_value"], "p"), str(r["deltas"]), f"{float(r['delta_bytes']):+,.0f}"])
    text = f"# {study}: one switch off against the full stack\n\n"
    text += ("delta = val_bpb with the switch off - val_bpb of the full stack (`ablate=none`), paired by seed "
             "(each seed's two runs share data order and initialisation stream). delta > 0: turning the "
             "switch off hurt, so it helps at this scale; delta < 0: the model is better without it. Mean ± "
             "sample std over pairs, 95% Student-t CI, two-sided paired t-test (n pairs - 1 df; with 2 pairs "
             "the test has 1 df and only a large, consistent delta reaches p < 0.05). Rows sorted by delta.\n\n")
    return text + _md_table(headers, rows)


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------


def _new_figure(ncols: int = 1, width_per_col: float = 5.0, height: float = 4.0):
    """A pyplot-free Figure on the Agg canvas: no global backend switch, safe inside notebooks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_per_col * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _integer_ticks(ax) -> None:
    # Epochs and loop counts are whole numbers; never label 0.5 epochs.
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _figure_bytes(fig) -> dict[str, bytes]:
    """PNG and SVG renderings; SVG with a fixed id salt and no date so reruns give identical files."""
    import matplotlib

    out = {}
    with matplotlib.rc_context({"svg.hashsalt": "golf-report"}):
        for ext in ("png", "svg"):
            buf = io.BytesIO()
            meta = {"Date": None} if ext == "svg" else {}
            fig.savefig(buf, format=ext, dpi=150, metadata=meta)
            out[ext] = buf.getvalue()
    return out


def _color_cycle(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _fig_ttt_epochs(per_epoch: pd.DataFrame, study: str):
    """val_bpb vs TTT epoch: one panel per measured half, mean line and 95% t-band over seeds per group."""
    trained = per_epoch[per_epoch["run_id"].isin(_ttt_runs(per_epoch)["run_id"])]
    halves = [h for h, (col, _, _) in HALVES.items() if trained[col].notna().any()]
    keys = key_columns(trained)
    shown = varying_keys(trained, keys) or ["strategy"]
    groups = _groups(trained, keys)
    fig, axes = _new_figure(len(halves), height=4.6)
    counts = []
    for ax, half in zip(axes, halves):
        col, _, title = HALVES[half]
        for color, (key, group) in zip(_color_cycle(len(groups)), groups):
            xs, means, lows, highs = [], [], [], []
            for epoch, at in sorted(group.groupby("epoch"), key=lambda kv: kv[0]):
                s = stats.mean_std_ci(_finite(at[col]), CONFIDENCE)
                if s["n"] == 0:
                    continue
                counts.append(s["n"])
                xs.append(epoch)
                means.append(s["mean"])
                lows.append(s["ci_low"])
                highs.append(s["ci_high"])
            if not xs:
                continue
            ax.plot(xs, means, marker="o", color=color, label=_label(key, keys, shown))
            ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("TTT epoch")
        _integer_ticks(ax)
        ax.set_ylabel("val_bpb (bits per byte)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend for all panels, below them
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))), fontsize="small")
    fig.suptitle(f"{study}: val_bpb vs TTT epoch, mean with 95% t-CI band ({_seeds_text(counts)})")
    return fig


def _fig_ttt_slopes(per_epoch: pd.DataFrame, table: pd.DataFrame, study: str):
    """Per-seed gains vs epoch with the fitted OLS lines, one panel per half that has a fit."""
    trained = per_epoch[per_epoch["run_id"].isin(_ttt_runs(per_epoch)["run_id"]) & (per_epoch["epoch"] >= 1)]
    halves = [h for h in HALVES if (table["half"] == h).any()]
    keys = key_columns(trained)
    shown = varying_keys(trained, keys) or ["strategy"]
    groups = _groups(trained, keys)
    fig, axes = _new_figure(len(halves), height=5.2)
    for ax, half in zip(axes, halves):
        _, gain_col, title = HALVES[half]
        for color, (key, group) in zip(_color_cycle(len(groups)), groups):
            match = table[(table["half"] == half)]
            for k, v in zip(keys, key):
                match = match[[_norm(x) == v for x in match[k]]]
            if match.empty:
                continue
            fit = match.iloc[0]
            ax.scatter(group["epoch"], group[gain_col], color=color, s=14, alpha=0.6)
            xs = np.array([group["epoch"].min(), group["epoch"].max()], dtype=float)
            ax.plot(xs, fit["intercept"] + fit["slope"] * xs, color=color,
                    label=f"{_label(key, keys, shown)}: {fit['slope']:+.4f}/epoch "
                          f"(p={_fmt(fit['seed_slope_p_value'], 'p')} over seeds)")
        ax.axhline(0.0, color="gray", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("TTT epoch")
        _integer_ticks(ax)
        ax.set_ylabel("gain vs epoch 0 (bits per byte)")
        ax.grid(alpha=0.3)
        # below the panel: the slopes differ per half, and inside the axes the legend hides the points
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15))
    seeds = [int(s) for s in table["n_seeds"]]
    fig.suptitle(f"{study}: TTT gain vs epoch with OLS fit ({_seeds_text(seeds).replace('point', 'line')})")
    return fig


def _fig_ut_curve(frame: pd.DataFrame, study: str):
    """val_bpb vs Universal-Transformer loop count, one line per curriculum setting (and other keys).

    Loop counts double, so the axis is log2 with a tick at every count run; each run is a faint dot beside
    its line's mean and 95% CI (with two seeds the t-interval is wide: the dots show what it rests on).
    Lines are nudged sideways by a few percent so their bars do not hide each other.
    """
    data = frame[frame["p_ut_loops"].notna() & frame["val_bpb"].notna()]
    keys = [k for k in key_columns(data) if k != "p_ut_loops"]
    shown = varying_keys(data, keys)
    groups = _groups(data, keys)
    fig, (ax,) = _new_figure(1, 6.5)
    counts = []
    for i, (color, (key, group)) in enumerate(zip(_color_cycle(len(groups)), groups)):
        nudge = 1.04 ** (i - (len(groups) - 1) / 2)
        pts = []
        for loops, at in group.groupby("p_ut_loops"):
            s = stats.mean_std_ci(_finite(at["val_bpb"]), CONFIDENCE)
            counts.append(s["n"])
            pts.append((float(loops), s["mean"], s["half_width"]))
            ax.scatter([float(loops) * nudge] * len(at), at["val_bpb"], color=color, s=12, alpha=0.4)
        pts.sort()
        xs, means, hws = (np.array(v, dtype=float) for v in zip(*pts))
        ax.errorbar(xs * nudge, means, yerr=np.nan_to_num(hws, nan=0.0), marker="o", capsize=3, color=color,
                    label=_label(key, keys, shown) if shown else "val_bpb")
    loops = sorted({float(v) for v in data["p_ut_loops"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(loops, [f"{v:g}" for v in loops])
    ax.minorticks_off()
    ax.set_xlabel("UT loops (iterations of the shared block, log scale)")
    ax.set_ylabel("val_bpb (bits per byte)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{study}: val_bpb vs UT loops\nmean ± 95% t-CI, dots = runs ({_seeds_text(counts)})")
    return fig


def _fig_ablation(table: pd.DataFrame, frame: pd.DataFrame, study: str):
    """Paired delta (switch off - full stack) per switch, one panel per configuration of the other keys."""
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in key_columns(frame) if k != ABLATE]
    shown = varying_keys(frame, keys)
    panels = _groups(table, keys)
    fig, axes = _new_figure(len(panels), 4.6, 0.9 + 0.42 * max(len(g) for _, g in panels))
    counts = []
    for ax, (key, group) in zip(axes, panels):
        group = group.sort_values("delta_mean", kind="stable")
        ys = np.arange(len(group))
        means = group["delta_mean"].to_numpy(dtype=float)
        hw = (group["delta_ci_high"] - group["delta_mean"]).to_numpy(dtype=float)
        colors = ["tab:red" if m > 0 else "tab:blue" for m in means]
        ax.barh(ys, means, color=colors, alpha=0.35)
        ax.errorbar(means, ys, xerr=np.nan_to_num(hw, nan=0.0), fmt="none", ecolor="black", capsize=3)
        for y, text in zip(ys, group["deltas"]):
            xs = [float(v) for v in str(text).split()]
            ax.scatter(xs, [y] * len(xs), color="black", s=10, zorder=3)
        counts += [int(n) for n in group["n_pairs"]]
        ax.set_yticks(ys, [str(a) for a in group["ablate"]])
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_xlabel("delta val_bpb (switch off - full stack)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(_label(key, keys, shown) if shown else "full stack")
    fig.suptitle(f"{study}: one switch off, paired by seed; bar = mean, whiskers = 95% t-CI, dots = seeds\n"
                 f"red: the switch helps here, blue: the model is better without it ({_seeds_text(counts)})")
    return fig


def _pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (bytes, bpb), both lower-is-better, sorted by bytes."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_bpb = [], math.inf
    for i in order:
        if points[i][1] < best_bpb:  # strictly better bpb than every smaller-or-equal artifact so far
            front.append(i)
            best_bpb = points[i][1]
    return front


def _quant_family(label: str) -> tuple[str, str]:
    """('int', '4') for "int4", ('gptq', '6') for "gptq:6", (label, '') for anything else (mixed plans).

    Reads the labels `QuantConfig.label` writes; parsed here rather than through golf.quant so that the
    report stays free of torch.
    """
    m = re.fullmatch(r"(?:(int)|([a-z_]+):)(\d+)", label)
    return (m.group(1) or m.group(2), m.group(3)) if m else (label, "")


def _fig_frontier(frame: pd.DataFrame, summary: pd.DataFrame, study: str):
    """Artifact bytes vs val_bpb: runs as dots, configuration means as markers, the Pareto front.

    Colour is the quantizer family, the marker the compressor, and the number beside each mean its bit
    width, so a 40-configuration grid stays readable. The frontier is drawn through legal configurations
    only: an illegal TTT score is not an achievable point (illegal means are drawn hollow). The 16 MB limit
    is drawn when it lies within reach of the data; otherwise the axis is in kB and the label says so.
    """
    data = frame[frame["bytes_total"].notna() & frame["val_bpb"].notna()]
    means = summary[summary["bytes_total_mean"].notna() & summary["val_bpb_mean"].notna()]
    families = sorted({_quant_family(str(q))[0] for q in data["quant"]})
    compressors = sorted({str(c) for c in data["compressor"]})
    colors = dict(zip(families, _color_cycle(len(families))))
    markers = dict(zip(compressors, "osD^vP*hX"))
    largest = float(data["bytes_total"].max()) if not data.empty else 0.0
    show_limit = largest > BYTES_LIMIT / 4
    unit, unit_name = (1e6, "MB = 10^6 bytes") if show_limit else (1e3, "kB = 10^3 bytes")
    fig, (ax,) = _new_figure(1, 7.5, 5.5)
    for _, r in data.iterrows():
        fam = _quant_family(str(r["quant"]))[0]
        ax.scatter([r["bytes_total"] / unit], [r["val_bpb"]], color=colors[fam], s=10, alpha=0.3,
                   marker=markers[str(r["compressor"])], linewidths=0)
    for _, r in means.iterrows():
        fam, bits = _quant_family(str(r["quant"]))
        legal = bool(r["legal"])
        x, y = r["bytes_total_mean"] / unit, r["val_bpb_mean"]
        ax.scatter([x], [y], marker=markers[str(r["compressor"])], s=55, zorder=3,
                   color=colors[fam] if legal else "white", edgecolor=colors[fam] if not legal else "black")
        if bits:
            ax.annotate(bits, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    handles, labels = [], []
    for fam in families:
        handles.append(ax.scatter([], [], color=colors[fam], s=55, edgecolor="black"))
        labels.append(f"quantizer {fam}")
    for comp in compressors:
        handles.append(ax.scatter([], [], color="grey", marker=markers[comp], s=55, edgecolor="black"))
        labels.append(f"compressor {comp}")
    if not means["legal"].astype(bool).all():
        handles.append(ax.scatter([], [], color="white", s=55, edgecolor="black"))
        labels.append("illegal TTT (mean, hollow)")
    legal_means = means[means["legal"].astype(bool)]
    pts = list(zip(legal_means["bytes_total_mean"], legal_means["val_bpb_mean"]))
    front = _pareto(pts)
    if front:
        (line,) = ax.plot([pts[i][0] / unit for i in front], [pts[i][1] for i in front], color="black",
                          linestyle="--", linewidth=1, drawstyle="steps-post")
        handles.append(line)
        labels.append("Pareto frontier (legal config means)")
    if show_limit:
        handles.append(ax.axvline(BYTES_LIMIT / unit, color="red", linewidth=1.2))
        labels.append(f"limit {BYTES_LIMIT:,} bytes")
        xlabel = f"bytes_total ({unit_name}, code + compressed model)"
    else:
        xlabel = (f"bytes_total ({unit_name}): code + compressed model\n"
                  f"(the {BYTES_LIMIT:,}-byte limit is far off this scale)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val_bpb (bits per byte)")
    ax.grid(alpha=0.3)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))),
               fontsize="small")
    counts = [int(n) for n in means["n_seeds"]]
    ax.set_title(f"{study}: artifact size vs score; numbers = bits\n"
                 f"faint = runs, outlined = config means ({_seeds_text(counts)})")
    return fig


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def write_report(study_dir: str | os.PathLike, absent: dict[str, list[str]] | None = None) -> list[Path]:
    """Write the study's tables (and figures its data supports); return the paths written.

    `absent` ({"missing": [cell ids], "failed": [...]}, from golf.study.cell_status) names the grid's cells
    that have no result; summary.md lists them, so a partial report says what it lacks.

    Tables land in `study_dir`, figures in `study_dir/figures/` as PNG and SVG. Every file is written
    atomically; the figures folder is rebuilt as a whole, and tables the data no longer supports are
    removed, so the folder always describes exactly the current runs. Raises GolfError when no run is
    readable (the reasons for each skipped file are in the message's count and in load_results).
    """
    study_dir = Path(study_dir)
    study = study_dir.name
    results, skipped = read_results(study_dir)
    if not results:
        raise GolfError(f"{study_dir / 'runs'}: no complete result.json to report on "
                        f"({len(skipped)} skipped)")
    frame = _results_frame(results)
    per_epoch = per_epoch_frame(results)
    written: list[Path] = []
    tables: dict[str, str] = {}
    figures: dict[str, Any] = {}

    summary = summary_table(frame)
    tables["summary.csv"] = _csv(summary)

    # TTT tables and figures need at least one run with an epoch > 0 that has an epoch-0 baseline.
    ttt_runs = _ttt_runs(per_epoch)
    if not ttt_runs.empty and ttt_runs["gain"].notna().any():
        figures["ttt_epochs"] = _fig_ttt_epochs(per_epoch, study)
        gap, pooled = gap_table(per_epoch)
        tables["gap.csv"] = _csv(gap)
        tables["gap.md"] = _gap_md(study, ttt_runs, gap, pooled)
        slopes = slope_table(per_epoch)
        if not slopes.empty:
            trained = per_epoch[per_epoch["run_id"].isin(ttt_runs["run_id"]) & (per_epoch["epoch"] >= 1)]
            tables["slopes.csv"] = _csv(slopes)
            tables["slopes.md"] = _slopes_md(study, trained, slopes)
            figures["ttt_slopes"] = _fig_ttt_slopes(per_epoch, slopes, study)

    if "p_ut_loops" in frame.columns:
        loops = {_norm(v) for v in frame.loc[frame["val_bpb"].notna(), "p_ut_loops"]} - {None}
        if len(loops) >= 2:
            figures["ut_curve"] = _fig_ut_curve(frame, study)

    ablation = ablation_table(frame)
    if not ablation.empty:
        tables["ablation.csv"] = _csv(ablation)
        tables["ablation.md"] = _ablation_md(study, frame, ablation)
        figures["ablation"] = _fig_ablation(ablation, frame, study)

    if (frame["bytes_total"].notna() & frame["val_bpb"].notna()).sum() >= 2:
        figures["frontier"] = _fig_frontier(frame, summary, study)

    tables["summary.md"] = _summary_md(study, frame, summary, skipped, sorted(figures)) + _absent_md(absent)

    # Render before touching the folder, so a plotting error leaves the previous report intact.
    rendered = {name: _figure_bytes(fig) for name, fig in figures.items()}
    fig_dir = study_dir / "figures"
    if rendered or fig_dir.exists():  # an emptied figures folder drops figures of an earlier report
        with gio.atomic_dir(fig_dir) as tmp:
            for name in sorted(rendered):
                for ext, data in rendered[name].items():
                    (tmp / f"{name}.{ext}").write_bytes(data)
        written += [fig_dir / f"{name}.{ext}" for name in sorted(rendered) for ext in ("png", "svg")]
    for name in TABLE_FILES:
        path = study_dir / name
        if name in tables:
            gio.write_text(path, tables[name])
            written.append(path)
        else:
            path.unlink(missing_ok=True)  # a table from an earlier report that the data no longer supports
    return written
