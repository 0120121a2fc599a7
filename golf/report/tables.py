"""The report's tables: summary, TTT gap, memorisation slopes and paired ablations, as frames and Markdown.

Every number comes from `golf.stats`; this module groups (golf.report.frame) and formats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from golf import stats
from golf.errors import GolfError
from golf.report.frame import (
    BASELINE_COLUMNS,
    BYTES_LIMIT,
    CONFIDENCE,
    HALVES,
    SUMMARY_METRICS,
    _groups,
    _norm,
    _seed_count,
    base_means,
    by_unit,
    family_table,
    key_columns,
    seed_means,
    units,
    varying_keys,
    whole_curves,
)

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
    """A GitHub-flavoured markdown table; a `|` inside a cell is escaped, so it cannot open a column."""
    def cell(c) -> str:
        return str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _key_cells(key: tuple, keys: Sequence[str], shown: Sequence[str]) -> list[str]:
    return [_fmt(v, "other") if v is not None else "-" for k, v in zip(keys, key) if k in shown]


def _constants_line(frame: pd.DataFrame, keys: Sequence[str], shown: Sequence[str]) -> str:
    parts = [f"{k}={_fmt(_norm(frame[k].iloc[0]), 'other')}"
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
    """Per configuration: n runs, n seeds, and mean/std/CI (from `stats.mean_std_ci`) of each metric over
    seeds, a seed's runs averaged first (`seed_means`)."""
    keys = key_columns(frame)
    rows = []
    for key, group in _groups(frame, keys):
        row: dict[str, Any] = dict(zip(keys, key))
        row["n_runs"] = len(group)
        row["n_seeds"] = _seed_count(group)
        row["seeds"] = " ".join(str(s) for s in sorted(group["seed"].unique()))
        for metric in SUMMARY_METRICS:
            s = stats.mean_std_ci(seed_means(group, group[metric]), CONFIDENCE)
            for field in ("mean", "std", "ci_low", "ci_high", "half_width"):
                row[f"{metric}_{field}"] = s[field]
        row["fits_all"] = bool(group["fits"].all())
        for name in BASELINE_COLUMNS:  # per-seed margin (val_bpb - baseline): < 0 means the model beats it
            row[f"{name}_mean"] = stats.mean_std_ci(seed_means(group, group[name]), CONFIDENCE)["mean"]
            row[f"margin_{name}_mean"] = stats.mean_std_ci(seed_means(group, group["val_bpb"] - group[name]),
                                                           CONFIDENCE)["mean"]
        rows.append(row)
    return pd.DataFrame(rows)


def _summary_md(study: str, frame: pd.DataFrame, table: pd.DataFrame, skipped: list[str],
                figures: list[str]) -> str:
    keys = key_columns(frame)
    shown = varying_keys(frame, keys) or ["strategy"]
    headers = [k for k in keys if k in shown]
    several = bool((table["n_runs"] > table["n_seeds"]).any())  # probe splits: several runs per seed
    headers += ["val_bpb mean ± std", "95% CI", "n seeds", *(["n runs"] if several else []),
                "pre-quant", "post-quant", "bytes_total", "fits"]
    with_baselines = [b for b in BASELINE_COLUMNS if table[f"{b}_mean"].notna().any()]
    headers += [h for b in with_baselines for h in (b, f"vs {b}")]
    rows = []
    for _, r in table.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        val = {f: r[f"val_bpb_{f}"] for f in ("mean", "std", "ci_low", "ci_high")}
        rows.append(_key_cells(key, keys, shown) + [
            f"{_fmt(val['mean'])} ± {_fmt(val['std'])}", _ci_text(val), str(r["n_seeds"]),
            *([str(r["n_runs"])] if several else []),
            _fmt(r["val_bpb_prequant_mean"]), _fmt(r["val_bpb_postquant_mean"]),
            _fmt(r["bytes_total_mean"], "bytes"), "yes" if r["fits_all"] else "NO"]
            + [c for b in with_baselines for c in (_fmt(r[f"{b}_mean"]), _fmt(r[f"margin_{b}_mean"], "gain"))])
    text = f"# {study}: summary\n\n"
    text += (f"{len(frame)} runs read from `runs/*/result.json`"
             f"{f', {len(skipped)} skipped' if skipped else ''}. val_bpb is the official score "
             f"(round-tripped artifact, after TTT); mean ± sample std over seeds; 95% CI is the "
             f"Student-t interval of the mean (n-1 degrees of freedom, n/a for one seed)"
             + ("; a seed's runs (its probe splits and their swaps share one base model) are averaged "
                "into one value first" if several else "") + ". "
             + f"bytes_total is the mean over seeds; the limit is {BYTES_LIMIT:,} bytes."
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


# Study columns that change the base model or the targets it is scored on (everything else is TTT, the
# quantizer or the evaluation of one base).
BASE_PREFIXES = ("model.", "train.", "data.")


def _base_columns(frame: pd.DataFrame) -> list[str]:
    cols = [c for c in ("preset", "bundle") if c in frame.columns]
    return cols + [c for c in key_columns(frame) if c.startswith(BASE_PREFIXES)]


def bases_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The base models behind a study against the count models of their own training tokens.

    One row per base configuration (preset, bundle, model./train./data. study columns) and baseline:
    each run's margin = val_bpb_base (its float base model before TTT and quantization) - baseline, both on
    the targets that run scored; a seed's margin is the mean over its runs (a probe split reorders the
    stream, so runs of one base may score slightly different windows); then mean, t-CI, a one-sample
    t-test of margin = 0 over seeds (Holm over the table) and the MDE at 80% power. Empty when no run
    carries both val_bpb_base and eval.baselines.
    """
    if "val_bpb_base" not in frame.columns:
        return pd.DataFrame()
    data = frame[frame["val_bpb_base"].notna()]
    keys = _base_columns(data)
    rows = []
    for key, group in _groups(data, keys) if keys else [((), data)]:
        for name in ["unigram", *BASELINE_COLUMNS]:
            if name not in group.columns:
                continue
            # a run without eval.baselines (written before they existed, or `golf run --from`) drops out
            runs = group[group[name].notna()]
            by_seed = list(runs.groupby("seed", sort=True))
            if not by_seed:
                continue
            margins = seed_means(runs, runs["val_bpb_base"] - runs[name])
            m = stats.mean_std_ci(margins, CONFIDENCE)
            row: dict[str, Any] = dict(zip(keys, key))
            row.update(baseline=name, n_seeds=m["n"], seeds=" ".join(str(s) for s, _ in by_seed),
                       n_runs=len(runs), n_bases=int(runs["base_key"].nunique()) if "base_key" in runs else m["n"],
                       params=float(runs["params"].mean()) if "params" in runs else math.nan,
                       train_tokens=float(runs["train_tokens"].mean()) if "train_tokens" in runs else math.nan,
                       val_bpb_base=float(np.mean([g["val_bpb_base"].mean() for _, g in by_seed])),
                       baseline_bpb=float(np.mean([g[name].mean() for _, g in by_seed])),
                       margin_mean=m["mean"], margin_std=m["std"], margin_ci_low=m["ci_low"],
                       margin_ci_high=m["ci_high"], p_value=stats.one_sample_t_test(margins)["p_value"],
                       mde=stats.paired_mde(m["std"], m["n"]),
                       margins=" ".join(f"{x:+.5f}" for x in margins))
            rows.append(row)
    return family_table(rows)


# The train.* settings a data-scale grid varies with the token count (its schedule scaled to the steps, the
# in-run curve): runs that differ only in these are one configuration at several budgets.
BUDGET_KEYS = ("train.max_steps", "train.batch_tokens", "train.warmdown_steps", "train.muon_momentum_warmup_steps",
               "train.val_every", "train.val_tokens", "train.log_every")


def _budget_groups(frame: pd.DataFrame) -> tuple[list[str], list[tuple[tuple, pd.DataFrame]]]:
    """Base configurations apart from their training budget (BUDGET_KEYS), each with its runs: what
    `data_scale_table` compares across token counts. Any other study column (a learning rate, a width)
    stays a key, so two settings at one token count are never averaged into one level."""
    data = frame[frame["val_bpb_base"].notna() & frame["train_tokens"].notna()]
    keys = [k for k in _base_columns(data) if k not in BUDGET_KEYS]
    return keys, (_groups(data, keys) if keys else [((), data)])


def data_scale_table(frame: pd.DataFrame) -> pd.DataFrame:
    """How a base model and the count models of its own tokens improve as the training budget grows.

    Each budget is its own run with its own schedule (a train.max_steps grid), never a point read off one
    run's curve: a run's weights before its warmdown are not what a run of that length gives. Per base
    configuration apart from its budget and per step between consecutive token counts (and the smallest to
    the largest, where there are three or more): per seed present at both, the change of the float base's
    val_bpb_base, of the Kneser-Ney trigram's and bigram's bpb on the same targets, and of the model's margin
    over the trigram (model - trigram), each divided by the doublings of tokens between them (log2 of the
    ratio). The margin's change is tested over seeds (one-sample t, Holm over the table, MDE at 80% power):
    negative = the model pulls away from the trigram as tokens double. Empty without two token counts."""
    if not {"val_bpb_base", "train_tokens", "trigram_kn"} <= set(frame.columns):
        return pd.DataFrame()
    keys, groups = _budget_groups(frame)
    rows = []
    for key, group in groups:
        group = group[group["trigram_kn"].notna()]
        per_seed = {t: {s: g for s, g in at.groupby("seed", sort=True)}
                    for t, at in group.groupby(group["train_tokens"].round().astype(int), sort=True)}
        levels = sorted(per_seed)
        steps = list(zip(levels, levels[1:])) + ([(levels[0], levels[-1])] if len(levels) >= 3 else [])
        for lo, hi in steps:
            seeds = sorted(set(per_seed[lo]) & set(per_seed[hi]))
            if not seeds:
                continue
            doublings = math.log2(hi / lo)

            def at(tokens: int, col: str) -> list[float]:  # per seed; NaN where the results lack the column
                return [float(per_seed[tokens][s][col].mean()) if col in group.columns else math.nan for s in seeds]

            def change(col: str) -> list[float]:
                return [(b - a) / doublings for a, b in zip(at(lo, col), at(hi, col))]

            model, trigram, bigram = change("val_bpb_base"), change("trigram_kn"), change("bigram_kn")
            margin = [m - t for m, t in zip(model, trigram)]
            d = stats.mean_std_ci(margin, CONFIDENCE)
            row: dict[str, Any] = dict(zip(keys, key))
            row.update(tokens_from=lo, tokens_to=hi, doublings=doublings, n_seeds=d["n"],
                       seeds=" ".join(str(s) for s in seeds),
                       model_from=float(np.mean(at(lo, "val_bpb_base"))), model_to=float(np.mean(at(hi, "val_bpb_base"))),
                       trigram_from=float(np.mean(at(lo, "trigram_kn"))), trigram_to=float(np.mean(at(hi, "trigram_kn"))),
                       model_per_doubling=float(np.mean(model)), trigram_per_doubling=float(np.mean(trigram)),
                       bigram_per_doubling=float(np.mean(bigram)), margin_per_doubling=d["mean"],
                       margin_std=d["std"], margin_ci_low=d["ci_low"], margin_ci_high=d["ci_high"],
                       p_value=stats.one_sample_t_test(margin)["p_value"], mde=stats.paired_mde(d["std"], d["n"]),
                       changes=" ".join(f"{x:+.5f}" for x in margin))
            rows.append(row)
    return family_table(rows)


def _data_scale_md(study: str, frame: pd.DataFrame, table: pd.DataFrame) -> str:
    keys, _ = _budget_groups(frame)
    shown = varying_keys(table, keys)
    headers = [k for k in keys if k in shown] + [
        "tokens", "doublings", "n seeds", "model bpb", "trigram bpb", "model per doubling", "trigram per doubling",
        "bigram per doubling", "margin change per doubling", "95% CI", "p", "p (Holm)", "MDE (80%)",
        "per seed (ascending seed)"]
    rows = []
    for _, r in table.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        rows.append(_key_cells(key, keys, shown) + [
            f"{int(r['tokens_from']):,} -> {int(r['tokens_to']):,}", f"{r['doublings']:.2f}", str(r["n_seeds"]),
            f"{_fmt(r['model_from'])} -> {_fmt(r['model_to'])}", f"{_fmt(r['trigram_from'])} -> {_fmt(r['trigram_to'])}",
            _fmt(r["model_per_doubling"], "gain"), _fmt(r["trigram_per_doubling"], "gain"),
            _fmt(r["bigram_per_doubling"], "gain"),
            f"{_fmt(r['margin_per_doubling'], 'gain')} ± {_fmt(r['margin_std'], 'bpb')}",
            f"[{_fmt(r['margin_ci_low'], 'gain')}, {_fmt(r['margin_ci_high'], 'gain')}]",
            _fmt(r["p_value"], "p"), _fmt(r["p_holm"], "p"), _fmt(r["mde"], "bpb"), str(r["changes"])])
    text = f"# {study}: the base models and the count models as training tokens double\n\n"
    text += ("Each token count is its own run with its own schedule (not a point on one run's curve). Per step "
             "between token counts, the change per doubling of tokens (log2 of their ratio) of the float base's "
             "bpb, of the Kneser-Ney trigram's and bigram's of the same tokens on the same targets, and of the "
             "model's margin over the trigram (model - trigram), per seed and then mean ± std over seeds with a "
             "95% t-CI and a one-sample t-test (Holm over the table; MDE at 80% power). A negative margin change "
             "means the model pulls away from the trigram as data doubles; a row that is not significant is not "
             "resolved at this power. The levels themselves, with their tests against each count model, are in "
             "bases.md.\n\n")
    return text + _md_table(headers, rows)


def _bases_verdict(r) -> str:
    if r["n_seeds"] < 2:
        return "one seed: not tested"
    if math.isnan(r["p_holm"]):
        return "no spread between seeds: not tested"
    if r["p_holm"] < 0.05:
        return "beats it" if r["margin_mean"] < 0 else "worse than it"
    return f"not resolved at this power (MDE {_fmt(r['mde'], 'bpb')})"


def _bases_md(study: str, frame: pd.DataFrame, table: pd.DataFrame) -> str:
    keys = _base_columns(frame[frame["val_bpb_base"].notna()])
    shown = varying_keys(table, keys) if not table.empty else []
    headers = [k for k in keys if k in shown] + [
        "baseline", "params", "train tokens", "n seeds", "base bpb", "baseline bpb", "margin (base - baseline)",
        "95% CI", "p", "p (Holm)", "verdict", "per seed (ascending seed)"]
    rows = []
    for _, r in table.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        rows.append(_key_cells(key, keys, shown) + [
            str(r["baseline"]), _fmt(r["params"], "bytes"), _fmt(r["train_tokens"], "bytes"), str(r["n_seeds"]),
            _fmt(r["val_bpb_base"]), _fmt(r["baseline_bpb"]),
            f"{_fmt(r['margin_mean'], 'gain')} ± {_fmt(r['margin_std'], 'bpb')}",
            f"[{_fmt(r['margin_ci_low'], 'gain')}, {_fmt(r['margin_ci_high'], 'gain')}]",
            _fmt(r["p_value"], "p"), _fmt(r["p_holm"], "p"), _bases_verdict(r), str(r["margins"])])
    text = f"# {study}: the base models against count models of their own training tokens\n\n"
    text += ("base bpb = val_bpb of the float base model before TTT and quantization; baselines = add-one "
             "unigram and interpolated Kneser-Ney bigram / trigram fitted on exactly the training windows the "
             "base consumed and scored on the same targets (`golf/baselines.py`). margin < 0: the model beats "
             "the count model. Per seed, the margin is averaged over that base's runs; mean ± sample std over "
             "seeds, 95% Student-t CI, one-sample t-test of margin = 0 (n seeds - 1 df), Holm over every row "
             "of this table; MDE = the smallest margin this many seeds detect at 80% power (alpha 0.05, before "
             "Holm). The baselines are the same for every seed (same tokens, same targets), so the test is of "
             "the seeds' spread on these validation documents: another sample of documents is not sampled. "
             "Runs without `eval.baselines` are left out.\n\n")
    return text + _md_table(headers, rows)


def _slice_md(slice_text: str) -> str:
    """summary.md's note that the report covers a slice of the grid (golf study report --where)."""
    if not slice_text:
        return ""
    return (f"\n## A slice of the grid\n\nThis report covers only the cells with {slice_text}; runs of other "
            "cells in runs/ are not in any table or figure.\n")


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


def _retrained_md(frame: pd.DataFrame) -> str:
    """summary.md's list of base-model keys whose runs cannot all be said to share one set of weights: keys
    with more than one `train.weights_sha256`, and keys where some runs carry a digest and some predate it
    (those may or may not match). Empty when every key has one digest, or when no run of a key records one."""
    if not {"base_key", "base_weights_sha256"} <= set(frame.columns):
        return ""
    rows = []
    for key, runs in frame[frame["base_key"].notna()].groupby("base_key", sort=True):
        counts = runs["base_weights_sha256"].value_counts()
        unrecorded = int(runs["base_weights_sha256"].isna().sum())
        if len(counts) > 1 or (len(counts) == 1 and unrecorded):
            seeds = " ".join(str(s) for s in sorted(set(runs["seed"].dropna()))) if "seed" in runs else ""
            weights = [f"`{str(d)[:12]}` ({_n_runs(n)})" for d, n in sorted(counts.items())]
            if unrecorded:
                weights.append(f"none recorded ({_n_runs(unrecorded)}, before the digest existed)")
            rows.append([f"`{key}`", seeds, ", ".join(weights)])
    if not rows:
        return ""
    return ("\n## Base models with more than one set of weights\n\n"
            "Runs of one base-model key (data, model, train, seed) that started from different weights "
            "(`train.weights_sha256`), or of which only some record their weights: the base may have been "
            "retrained between them (on another machine, or after a code change), so comparisons across those "
            "runs may compare different weights.\n\n"
            + _md_table(["base key", "seed", "weights (sha256 prefix)"], rows))


def _n_runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _ttt_runs(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """One row per run that trained at least one TTT epoch: its final-epoch gains (A, B and overall)."""
    if per_epoch.empty:
        return per_epoch.iloc[0:0]
    last = per_epoch.sort_values(["run_id", "epoch"]).groupby("run_id", sort=True).tail(1)
    return last[last["epoch"] > 0].reset_index(drop=True)


def gap_table(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """Final-epoch TTT gains per configuration, A against B paired within each unit.

    The unit is a base model and a document split (seed, ttt.probe_split; a split's swapped run averaged
    in: `by_unit`), the replicate the study samples: runs of one unit are not independent. Per
    configuration: mean/std/CI over units of gain_official (the official score's change, see
    per_epoch_frame), gain, gain_adapted (half A) and gain_heldout (half B) at each run's final epoch;
    pvalue_adapted_vs_heldout = paired t-test of each unit's A gain against its own B gain (the two halves
    share its base model and its noise). Comparisons between configurations that share base models
    (illegal against legal) are in the `paired` section, paired by unit and Holm-corrected.
    """
    runs = _ttt_runs(per_epoch)
    keys = key_columns(runs)
    ucols = units(runs)
    rows = []
    for key, group in _groups(runs, keys):
        row: dict[str, Any] = dict(zip(keys, key))
        row["n_seeds"] = _seed_count(group)
        row["n_runs"] = len(group)
        row["epoch_final"] = int(group["epoch"].max())
        per_unit = {gain_col: by_unit(group, ucols, gain_col)
                    for gain_col in ["gain_official"] + [g for _, g, _ in HALVES.values()]}
        row["n_units"] = len(set().union(*per_unit.values()))
        for gain_col, values in per_unit.items():
            s = stats.mean_std_ci(list(values.values()), CONFIDENCE)
            for field in ("mean", "std", "ci_low", "ci_high"):
                row[f"{gain_col}_{field}"] = s[field]
        a, b = per_unit["gain_adapted"], per_unit["gain_heldout"]
        both = sorted(set(a) & set(b))
        row["pvalue_adapted_vs_heldout"] = stats.paired_t_test([a[u] for u in both], [b[u] for u in both])["p_value"]
        rows.append(row)
    return pd.DataFrame(rows)


def _gap_md(study: str, runs: pd.DataFrame, table: pd.DataFrame) -> str:
    keys = key_columns(runs)
    shown = [k for k in keys if k in ("strategy", "legal") or k in varying_keys(runs, keys)]
    headers = [k for k in keys if k in shown] + [
        "final epoch", "n seeds", "n runs", "n units", "official gain", "95% CI", "probe gain (all)", "95% CI",
        "gain A (adapted)", "95% CI A", "gain B (held out)", "95% CI B", "p A vs B (paired)"]
    rows = []
    for _, r in table.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        cells = _key_cells(key, keys, shown) + [str(r["epoch_final"]), str(r["n_seeds"]), str(r["n_runs"]),
                                                str(r["n_units"])]
        for gain_col in ("gain_official", "gain", "gain_adapted", "gain_heldout"):
            s = {f: r[f"{gain_col}_{f}"] for f in ("mean", "std", "ci_low", "ci_high")}
            mean_std = f"{_fmt(s['mean'], 'gain')} ± {_fmt(s['std'], 'bpb')}"
            cells += [mean_std, _ci_text(s, "gain")]
        cells += [_fmt(r["pvalue_adapted_vs_heldout"], "p")]
        rows.append(cells)
    text = f"# {study}: TTT gain, adapted vs held-out\n\n"
    text += ("All gains in bits per byte, negative = TTT lowered bpb. official gain = the run's official "
             "val_bpb (round-tripped artifact, after TTT) - val_bpb of its float base model before TTT "
             "and quantization. Probe gains = val_bpb(final epoch) - val_bpb(epoch 0) of the "
             "memorization probe's diagnostic passes (`ttt.per_epoch`): A = the validation half TTT "
             "adapted on, B = the held-out half no TTT gradient touched; a gain on A that B does not "
             "share is the memorisation signature. A unit is a base model and a document split (seed, "
             "probe split; a split's swapped run averaged in); mean ± sample std over units, 95% Student-t "
             "CI; p A vs B is a two-sided paired t-test of each unit's A gain against its own B gain, not "
             "corrected for the rows' number: the family-corrected tests, and every comparison between "
             "strategies on the same base models, are in `paired.md`.\n\n")
    return text + _md_table(headers, rows)


def slope_table(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """OLS fit of gain on epoch per configuration and half, over every seed's epochs >= 1.

    Epoch 0 is left out because its gain is zero by definition: those points carry no noise and would
    shrink the slope's standard error. Read with the intercept: memorisation looks like intercept ~ 0
    and a steady negative slope (each epoch buys more); generalisation that saturates looks like a
    negative intercept with a slope near zero. Only runs with a whole within-run curve (epochs 0..E) are
    fitted: a run scored at 0 and E only (ttt.probe_curve=false) would add points at its last epoch alone.
    """
    trained = whole_curves(per_epoch)
    trained = trained[trained["run_id"].isin(_ttt_runs(trained)["run_id"]) & (trained["epoch"] >= 1)]
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
    headers = [k for k in keys if k in shown] + [
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


def ablation_table(frame: pd.DataFrame, axis: str = "bundle", reference: Any = "none",
                   where: dict | None = None) -> pd.DataFrame:
    """One switch off against the full stack (`axis == reference`), paired by seed within each other configuration.

    `reference` may instead map values of `axis` to their own references ({"gptq:4": "int4", ...}): each
    listed value is compared with its reference and unlisted values are left out (quantizers against
    round-to-nearest at the same width). `where` ({column: value}) keeps only the runs with those values
    before pairing: a column that does not change val_bpb (the compressor, for one quantization) would
    otherwise repeat every comparison and inflate the Holm family. The row's `against` names its reference.

    For every configuration with `axis` != reference, each seed that also ran the full stack (same other keys)
    gives delta = val_bpb(switch off) - val_bpb(full stack), the mean over the units (probe splits, run with
    the same swaps) that both sides ran; the row carries mean ± std and the 95% t-CI of
    those deltas and a paired t-test (one-sample t on the deltas, n pairs - 1 df). delta > 0: removing the
    switch hurt, so the switch helps. Seeds share data and initialisation streams, so pairing removes the
    seed-to-seed spread that the summary's intervals carry. Empty when there is no `axis` column or no
    full-stack run. The output names the switched-off value in column `ablate`.
    """
    if axis not in frame.columns:
        return pd.DataFrame()
    data = frame[frame["val_bpb"].notna()]
    for column, value in (where or {}).items():
        if column not in data.columns:
            raise GolfError(f"ablation where: no column {column!r} in the study's results")
        data = data[[_norm(v) == _norm(value) for v in data[column]]]
        if data.empty:
            raise GolfError(f"ablation where: no scored run has {column}={value!r}")
    keys = [k for k in key_columns(data) if k != axis]
    mapped = isinstance(reference, dict)
    rows = []
    for key, group in _groups(data, keys):
        against = (dict(reference) if mapped else
                   {v: reference for v in sorted(group[axis].unique()) if v != reference})
        # Pairs are made within a unit (seed, probe split and its swaps: the same base and the same documents
        # on both sides), and a seed's unit deltas are averaged: the pairs are seeds, never runs that share a
        # base, and a unit that ran on one side only is left out rather than compared with other documents.
        ucols = units(group)
        for ablate, ref in against.items():
            full, runs = group[group[axis] == ref], group[group[axis] == ablate]
            if full.empty or runs.empty:
                continue
            full_units = {c: by_unit(full, ucols, c) for c in ("val_bpb", "bytes_total")}
            off_units = {c: by_unit(runs, ucols, c) for c in ("val_bpb", "bytes_total")}
            common = sorted(set(off_units["val_bpb"]) & set(full_units["val_bpb"]))
            seeds = sorted({u[0] for u in common})
            per_seed = base_means(common, [
                [off_units["val_bpb"][u], full_units["val_bpb"][u],
                 off_units["bytes_total"].get(u, math.nan) - full_units["bytes_total"].get(u, math.nan)]
                for u in common])  # [switch off, full stack, bytes delta] per seed, seeds ascending
            off, on, dbytes = ([row[i] for row in per_seed] for i in range(3))
            deltas = [a - b for a, b in zip(off, on)]
            d = stats.mean_std_ci(deltas, CONFIDENCE)
            row: dict[str, Any] = dict(zip(keys, key))
            row.update(ablate=ablate, **({"against": ref} if mapped else {}),
                       n_pairs=d["n"], seeds=" ".join(str(s) for s in seeds),
                       val_bpb_full=float(np.mean(on)) if deltas else math.nan,
                       val_bpb_ablated=float(np.mean(off)) if deltas else math.nan,
                       delta_mean=d["mean"], delta_std=d["std"], delta_ci_low=d["ci_low"],
                       delta_ci_high=d["ci_high"], p_value=stats.one_sample_t_test(deltas)["p_value"],
                       mde=stats.paired_mde(d["std"], d["n"]),
                       delta_bytes=float(np.mean(dbytes)) if dbytes else math.nan,
                       deltas=" ".join(f"{x:+.5f}" for x in deltas))
            rows.append(row)
    return family_table(rows)


def _ablation_md(study: str, frame: pd.DataFrame, table: pd.DataFrame, axis: str, reference: Any,
                 where: dict | None = None) -> str:
    keys = [k for k in key_columns(frame) if k != axis]
    shown = varying_keys(frame, keys)
    mapped = "against" in table.columns
    headers = [k for k in keys if k in shown] + (
        [axis, "against", "n pairs", "against bpb", f"{axis} bpb", "delta (value - against)"] if mapped else
        ["switch off", "n pairs", "full stack", "switch off bpb", "delta (off - full)"]) + [
        "95% CI", "p (paired t)", "p (Holm)", "MDE (80%)", "per seed (ascending seed)", "delta bytes"]
    rows = []
    order = table.sort_values([*[k for k in keys if k in shown], "delta_mean"], ascending=False, kind="stable")
    for _, r in order.iterrows():
        key = tuple(_norm(r[k]) for k in keys)
        rows.append(_key_cells(key, keys, shown) + [str(r["ablate"])] + ([str(r["against"])] if mapped else []) + [
            str(r["n_pairs"]), _fmt(r["val_bpb_full"]), _fmt(r["val_bpb_ablated"]),
            f"{_fmt(r['delta_mean'], 'gain')} ± {_fmt(r['delta_std'], 'bpb')}",
            f"[{_fmt(r['delta_ci_low'], 'gain')}, {_fmt(r['delta_ci_high'], 'gain')}]",
            _fmt(r["p_value"], "p"), _fmt(r["p_holm"], "p"), _fmt(r["mde"], "bpb"), str(r["deltas"]),
            f"{float(r['delta_bytes']):+,.0f}"])
    if mapped:
        pairs = ", ".join(f"{a} against {b}" for a, b in zip(table["ablate"], table["against"]))
        text = f"# {study}: each {axis} against its own reference\n\nPairs: {pairs}.\n\n"
    else:
        text = (f"# {study}: one switch off against the full stack\n\n" if axis == "bundle" else
                f"# {study}: each {axis} against {axis}={reference}\n\n")
    if where:
        text += ("Only the runs with " + ", ".join(f"{c}={v}" for c, v in where.items()) +
                 " (a column that does not change val_bpb would repeat every comparison).\n\n")
    if axis != "bundle" and not mapped:
        text += (f"Read 'switch off' below as 'this value of {axis}' and 'full stack' as `{axis}={reference}`.\n\n")
    if mapped:
        text += (f"delta = val_bpb of the row's {axis} - val_bpb of the one it is read against, paired by seed "
                 "(each seed's two runs share data order and initialisation stream). delta < 0: the row's value "
                 "is better. ")
    else:
        text += (f"delta = val_bpb with the switch off - val_bpb of the full stack (`{axis}={reference}`), paired "
                 "by seed (each seed's two runs share data order and initialisation stream). delta > 0: turning "
                 "the switch off hurt, so it helps at this scale; delta < 0: the model is better without it. ")
    text += ("Mean ± sample std over pairs, 95% Student-t CI, two-sided paired t-test (n pairs - 1 df; with 2 "
             "pairs the test has 1 df and only a large, consistent delta reaches p < 0.05). The rows are one "
             "family: Holm's adjusted p beside the raw one. MDE: the smallest true delta this many pairs detect "
             "with 80% power at alpha 0.05, from the observed spread; a row not resolved after Holm says nothing "
             "about effects smaller than that. Rows sorted by delta.\n\n")
    return text + _md_table(headers, rows)


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------
