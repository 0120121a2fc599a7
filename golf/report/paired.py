"""Paired statistics for TTT studies: contrasts within a unit, Holm within the family, MDE for every null.

The unit of replication is the base model a TTT run starts from and the documents of its halves: one
(seed, probe split) pair; a split's swapped run is averaged into its unit (`_by_unit`). Runs that share a unit share the base model, its data order and the
documents of each probe half, so every comparison here is made *within* a unit and tested over units
(golf.stats.paired_t_test), never between pooled samples (an unpaired test would count the units' shared
spread as noise, and p-values come out far too small or too large).

paired.csv / paired.md, one row per comparison, all of one family (Holm over the whole table):
    memorization       gain on adapted half A - gain on held-out half B, per configuration: < 0 means the
                       run helped the tokens it trained on more than unseen ones (the memorization signature)
    official           official val_bpb - the float base model's val_bpb, per configuration (what TTT and
                       quantization did to the score)
    vs <other>         official gain of an illegal configuration - that of a legal one, on the same units
                       (every legal configuration, whatever its own settings; the section's option
                       `match: [ttt.epochs]` pairs only configurations at the same epoch count, for a study
                       whose axis is E)
trend.csv / trend.md: where a configuration was run at several epoch counts (separate runs, each with its
own schedule), Page's L test of a monotone trend across the counts, blocked by unit, for the official gain
and for the memorization contrast (two-sided, the direction reported: more epochs can also hurt), Holm within.

Each row carries the mean difference, its 95% CI, the raw and the Holm-adjusted p, and the smallest
effect the design detects at 80% power (`mde`): a row that is not significant says "not resolved at this
power" down to that size, never "no effect".

Several splits of one seed start from one base model, so their units are not independent of each other in
the base's share of the spread. Each row therefore also tests the same differences with one number per base
model (a seed's units averaged; `n_bases`, `p_bases`, Holm over the table in `p_bases_holm`): the test a
reader who counts base models as the replicates would make. Where every base has one unit it is the unit
test itself. In the same way split k draws its halves with seed k whatever the base's seed, so the units of
one split share its documents across base models: each row also tests the differences with one number per
document split (its bases averaged; `n_splits`, `p_splits`, `p_splits_holm`), the test that counts splits as
the replicates. The design is bases x splits, crossed; a row resolved over units but not over bases or not
over splits says so in its verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from golf import stats
from golf.errors import GolfError
from golf.report.frame import (
    RESOLVED_AS,
    _groups,
    _norm,
    base_means,
    by_unit,
    family_table,
    key_columns,
    split_position,
    units,
    varying_keys,
)

ALPHA = 0.05
POWER = 0.8
# A strategy's own settings that a study may vary: an illegal configuration is compared with every legal
# one whatever these are, and an illegal_vs_legal row names the legal side's (`versus_setting`).
SETTINGS = ("ttt.lr", "ttt.slice_tokens")
# The key columns that belong to a strategy rather than to the setting it runs in: an illegal configuration is
# paired with a legal one that agrees on every other key (the same base models, protocol and split).
OWN_KEYS = ("strategy", "legal", "epochs", "ttt.strategy", "ttt.epochs", "ttt.allow_illegal", *SETTINGS)
# scale_values' measures: where the probe ran, the contrast and each half's gain; where it did not (the real
# protocol), the official gain and, for an illegal configuration, its gap to each legal one.
CONTRAST, GAIN_A, GAIN_B = "memorization (gain A - gain B)", "gain on adapted half A", "gain on held-out half B"
OFFICIAL, GAP = "official gain", "illegal - legal official gain"


def final_rows(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last per-epoch entry (epoch 0 for a run without TTT epochs)."""
    if per_epoch.empty:
        return per_epoch
    return per_epoch.sort_values(["run_id", "epoch"]).groupby("run_id", sort=True).tail(1).reset_index(drop=True)


def config_keys(frame: pd.DataFrame) -> list[str]:
    return key_columns(frame)  # replicate units are never configuration keys


_TREND_WORDS = {"increasing": "rises", "decreasing": "falls"}  # trend.md's words for a value against E


def _page_two_sided(table: list[list[float]]) -> dict[str, Any]:
    """Page's L across the columns of `table` (blocks x ordered levels), neither direction assumed: L of
    the increasing test, the direction whose one-sided permutation p is smaller, and twice that p (at most 1)."""
    up = stats.page_trend_test(table)
    down = stats.page_trend_test([[-v for v in row] for row in table])
    if up["p_value"] == down["p_value"]:  # L at its null mean (or every value tied): no direction to name
        direction = "none"
    else:
        direction = "increasing" if up["p_value"] < down["p_value"] else "decreasing"
    p_value = min(1.0, 2 * min(up["p_value"], down["p_value"]))
    return {"L": up["L"], "direction": direction, "p_value": p_value}


def _plain(value: Any) -> Any:
    """A study value as written in the YAML: 0 for a column pandas stored as float because of gaps (0.0)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _label(key: tuple, keys: list[str], shown: list[str]) -> str:
    parts = [f"{k}={_plain(_norm(v))}" for k, v in zip(keys, key) if k in shown]
    return ", ".join(parts) or "all runs"


def _paired(units_: list[tuple], a: list[float], b: list[float], split_at: int | None) -> dict[str, Any]:
    """The paired t-test of a - b over units, and the same differences tested with one value per base model
    (its splits averaged) and with one per document split (its bases averaged; `split_at`: where the split
    sits in a unit, None without one)."""
    test = stats.paired_t_test(a, b, 1 - ALPHA, POWER)
    diffs = [[x - y] for x, y in zip(a, b)]
    means = [row[0] for row in base_means(units_, diffs)]
    splits = [row[0] for row in base_means(units_, diffs, split_at)] if split_at is not None else []
    return {**test, "n_bases": len(means), "p_bases": stats.one_sample_t_test(means)["p_value"],
            "n_splits": len(splits), "p_splits": stats.one_sample_t_test(splits)["p_value"] if len(splits) >= 2 else math.nan}


def _shares_bases(table: pd.DataFrame) -> bool:
    """Whether some row's units are several per base model (probe splits): then the by-base test is shown."""
    return bool((table["n_bases"] < table["n_units"]).any())


def _shares_splits(table: pd.DataFrame) -> bool:
    """Whether some row's units are several per document split (bases) and there are at least two splits:
    then the by-split test is shown (rows of one split have none: one set of documents cannot be counted)."""
    return bool(((table["n_splits"] >= 2) & (table["n_splits"] < table["n_units"])).any())


def _by_base_cells(r) -> list[str]:
    from golf.report.tables import _fmt

    return [str(r["n_bases"]), f"{_fmt(r['p_bases'], 'p')} ({_fmt(r['p_bases_holm'], 'p')})"]


def _by_split_cells(r) -> list[str]:
    from golf.report.tables import _fmt

    if r["n_splits"] < 2:  # one document split (or none): nothing to count splits over
        return ["-", "-"]
    return [str(r["n_splits"]), f"{_fmt(r['p_splits'], 'p')} ({_fmt(r['p_splits_holm'], 'p')})"]


def _row(kind: str, comparison: str, config: str, where: dict, test: dict, versus: str = "",
         versus_setting: str = "") -> dict[str, Any]:
    """One comparison: `test` (memorization / official / illegal_vs_legal) and the configuration's key columns
    name it for conclusions.yaml (paired[test=memorization,strategy=prequant_val].p_holm); `versus` is the
    legal strategy of an illegal_vs_legal row and `versus_setting` its own settings where they are set
    (`ttt.slice_tokens=0`: the budget-matched control), so two controls of one strategy stay apart;
    `comparison` and `config` are its words for paired.md."""
    return {"test": kind, **where, "versus": versus, "versus_setting": versus_setting,
            "comparison": comparison, "config": config,
            "n_units": test["n"], "mean_diff": test["mean_diff"],
            "ci_low": test["ci_low"], "ci_high": test["ci_high"], "sd_diff": test["sd_diff"],
            "p_value": test["p_value"], "mde": test["mde"], "n_bases": test["n_bases"], "p_bases": test["p_bases"],
            "n_splits": test["n_splits"], "p_splits": test["p_splits"]}


def _versus_setting(legal: pd.DataFrame, configs: list[pd.DataFrame]) -> str:
    """The legal side's own settings, as `epochs=6; ttt.slice_tokens=0` (no commas: conclusions.yaml selects
    rows with comma-separated key=value pairs): its epoch count always, and each of
    SETTINGS whose value differs between the configurations of that strategy (two controls of one strategy,
    a default and a budget-matched one, must stay apart even where another key column determines it)."""
    strategy = _norm(legal["strategy"].iloc[0])
    same = [g for g in configs if _norm(g["strategy"].iloc[0]) == strategy]
    parts = [f"epochs={_plain(_norm(legal['epochs'].iloc[0]))}"]
    for k in SETTINGS:
        if k in legal.columns and len({_norm(g[k].iloc[0]) for g in same}) > 1:
            parts.append(f"{k}={_plain(_norm(legal[k].iloc[0]))}")
    return "; ".join(parts)


def _illegal_legal(configs: list[tuple[tuple, pd.DataFrame]], keys: list[str],
                   also: Sequence[str] = ()) -> Iterator[tuple[int, int]]:
    """Index pairs (illegal, legal) of `configs` ((key, group) as `_groups` gives them) that agree on every
    key but a strategy's own (OWN_KEYS): the same base models, protocol (probe on or off) and split; and on
    the keys in `also`, own or not (a study whose axis is the epoch count compares strategies at equal E)."""
    match = [m for m, k in enumerate(keys) if k not in OWN_KEYS or k in also]
    legal = [bool(group["legal"].iloc[0]) for _, group in configs]
    for i, (key_i, _) in enumerate(configs):
        for j, (key_l, _) in enumerate(configs):
            if not legal[i] and legal[j] and all(_norm(key_i[m]) == _norm(key_l[m]) for m in match):
                yield i, j


def _versus(legal: pd.DataFrame, configs: list[tuple[tuple, pd.DataFrame]]) -> dict[str, str]:
    """The legal side of an illegal - legal row: its strategy and its own settings (`_versus_setting`)."""
    return {"versus": str(_norm(legal["strategy"].iloc[0])),
            "versus_setting": _versus_setting(legal, [group for _, group in configs])}


def match_columns(match: Sequence[str] | None, keys: Sequence[str]) -> list[str]:
    """The configuration columns named by a paired section's `match` option (a config key such as
    ttt.epochs stands for the column that holds what runs resolved, `epochs`); a name that is not a
    configuration column of the study is an error."""
    out = []
    for name in match or ():
        column = RESOLVED_AS.get(name, name) if isinstance(name, str) else name
        if column not in keys:
            raise GolfError(f"report section paired: match {name!r} is not a configuration column of this "
                            f"study; columns: {', '.join(keys)}")
        out.append(column)
    return out


def paired_table(per_epoch: pd.DataFrame, match: Sequence[str] | None = None) -> pd.DataFrame:
    """The paired comparisons of a TTT study (see the module docstring), with Holm-adjusted p-values.
    `match`: columns an illegal and a legal configuration must also share to be compared (by default a
    strategy's own settings, epochs included, may differ: the seeds' protocols side by side)."""
    runs = final_rows(per_epoch)
    runs = runs[runs["epoch"] > 0]
    if runs.empty:
        return pd.DataFrame()
    ucols = units(runs)
    split_at = split_position(ucols)
    keys = config_keys(runs)
    also = match_columns(match, keys)
    shown = [k for k in keys if k in varying_keys(runs, keys) or k == "strategy"]
    rows: list[dict] = []
    configs = _groups(runs, keys)
    for key, group in configs:
        label = _label(key, keys, shown)
        a, b = by_unit(group, ucols, "gain_adapted"), by_unit(group, ucols, "gain_heldout")
        common = sorted(set(a) & set(b))
        if common:
            rows.append(_row("memorization", "memorization (gain A - gain B)", label, dict(zip(keys, key)),
                             _paired(common, [a[u] for u in common], [b[u] for u in common], split_at)))
        off = by_unit(group, ucols, "gain_official")
        if off:
            u = sorted(off)
            rows.append(_row("official", "official gain (vs the float base)", label, dict(zip(keys, key)),
                             _paired(u, [off[x] for x in u], [0.0] * len(u), split_at)))
    # Illegal against legal on the same units, within each configuration of the non-TTT keys.
    for i, j in _illegal_legal(configs, keys, also):
        (key_i, group_i), (key_l, group_l) = configs[i], configs[j]
        x, y = by_unit(group_i, ucols, "gain_official"), by_unit(group_l, ucols, "gain_official")
        common = sorted(set(x) & set(y))
        if common:
            rows.append(_row("illegal_vs_legal",
                             f"official gain: {_label(key_i, keys, shown)} - {_label(key_l, keys, shown)}",
                             "illegal - legal", dict(zip(keys, key_i)),
                             _paired(common, [x[u] for u in common], [y[u] for u in common], split_at),
                             **_versus(group_l, configs)))
    table = family_table(rows)
    if not table.empty:
        table["p_bases_holm"] = stats.holm(table["p_bases"].tolist())
        table["p_splits_holm"] = stats.holm(table["p_splits"].tolist())
        table["verdict"] = [_verdict(r) for _, r in table.iterrows()]
    return table


def _verdict(r) -> str:
    if r["p_holm"] is None or math.isnan(r["p_holm"]):
        return "too few units to test"
    if r["p_holm"] < ALPHA:
        short = []
        if r["n_bases"] < r["n_units"] and not r["p_bases_holm"] < ALPHA:
            short.append(f"the {r['n_bases']} base models (by-base Holm p {r['p_bases_holm']:.2g})")
        if 2 <= r["n_splits"] < r["n_units"] and not r["p_splits_holm"] < ALPHA:
            short.append(f"the {r['n_splits']} document splits (by-split Holm p {r['p_splits_holm']:.2g})")
        if short:
            return f"resolved over units, not over {' nor over '.join(short)}"
        return "resolved (Holm p < 0.05)"
    return f"not resolved at this power (MDE {r['mde']:.4f} bpb)"


def _grouped_trend(blocks: list[tuple], table: list[list[float]], test: dict, position: int | None) -> tuple[int, float]:
    """(number of groups, two-sided Page p) of the trend test with one block per group of units: the units'
    `position` member (0 the base model, `split_position` the document split; None: no such member, (0, NaN)).
    Where each group is one unit the test is the unit test itself (`test`)."""
    if position is None:
        return 0, math.nan
    grouped = base_means(blocks, table, position)
    if len(grouped) == len(blocks):
        return len(grouped), test["p_value"]
    return len(grouped), _page_two_sided(grouped)["p_value"] if len(grouped) >= 2 else math.nan


def trend_table(per_epoch: pd.DataFrame) -> pd.DataFrame:
    """Page's trend test across the epoch counts of separate runs, blocked by unit (see the module docstring)."""
    runs = final_rows(per_epoch)
    if runs.empty or runs["epochs"].nunique() < 3:
        return pd.DataFrame()
    ucols = units(runs)
    split_at = split_position(ucols)
    keys = [k for k in config_keys(runs) if k not in ("epochs", "ttt.epochs")]
    shown = [k for k in keys if k in varying_keys(runs, keys) or k == "strategy"]
    rows = []
    for key, group in _groups(runs, keys):
        counts = sorted({int(e) for e in group["epochs"]})
        if len(counts) < 3:
            continue
        group = group.assign(contrast=group["gain_adapted"] - group["gain_heldout"])
        for kind, measure, col in (("official", "official gain", "gain_official"),
                                   ("memorization", "memorization (gain A - gain B)", "contrast")):
            per = {e: by_unit(group[group["epochs"] == e], ucols, col) for e in counts}
            blocks = sorted(set.intersection(*(set(v) for v in per.values())))
            if len(blocks) < 2:
                continue
            # Two-sided: more epochs may help (the gain falls) or hurt (LoRA's held-out half); the direction
            # is reported, not assumed. "falls" = more gain, or a more negative contrast (more memorization).
            table = [[per[e][u] for e in counts] for u in blocks]
            test = _page_two_sided(table)
            n_bases, p_bases = _grouped_trend(blocks, table, test, 0)  # one block per base model
            n_splits, p_splits = _grouped_trend(blocks, table, test, split_at)  # one per document split
            # `test` and the configuration's own keys, as in paired_table: a conclusion selects a row by them
            rows.append({"measure": measure, "test": kind, **dict(zip(keys, key)),
                         "config": _label(key, keys, shown),
                         "epochs": " ".join(str(e) for e in counts), "n_units": len(blocks), "L": test["L"],
                         "direction": _TREND_WORDS.get(test["direction"], "none"),
                         "p_value": test["p_value"], "n_bases": n_bases, "p_bases": p_bases,
                         "n_splits": n_splits, "p_splits": p_splits,
                         "mean_first": sum(per[counts[0]][u] for u in blocks) / len(blocks),
                         "mean_last": sum(per[counts[-1]][u] for u in blocks) / len(blocks)})
    table = family_table(rows)
    if not table.empty:
        table["p_bases_holm"] = stats.holm(table["p_bases"].tolist())
        table["p_splits_holm"] = stats.holm(table["p_splits"].tolist())
    return table


def paired_md(study: str, table: pd.DataFrame) -> str:
    from golf.report.tables import _fmt, _md_table

    shared, crossed = _shares_bases(table), _shares_splits(table)
    headers = ["comparison", "configuration", "n units", "mean diff (bpb)", "95% CI", "p", "p (Holm)", "MDE (80%)",
               *(["n bases", "p by base (Holm)"] if shared else []),
               *(["n splits", "p by split (Holm)"] if crossed else []), "verdict"]
    rows = [[r["comparison"], r["config"], str(r["n_units"]), _fmt(r["mean_diff"], "gain"),
             f"[{_fmt(r['ci_low'], 'gain')}, {_fmt(r['ci_high'], 'gain')}]", _fmt(r["p_value"], "p"),
             _fmt(r["p_holm"], "p"), _fmt(r["mde"], "bpb"),
             *(_by_base_cells(r) if shared else []), *(_by_split_cells(r) if crossed else []), r["verdict"]]
            for _, r in table.iterrows()]
    text = f"# {study}: paired comparisons\n\n"
    text += ("Every comparison is made within a unit (a base model: seed and probe split) and tested over "
             "units with a two-sided paired t-test (n units - 1 df). Negative = lower bpb (better) for the "
             "first term. The p-values of the whole table are one family: Holm's step-down adjustment is "
             "shown beside the raw p. MDE = the smallest true difference this design detects with 80% power "
             "at alpha 0.05 (from the observed spread): a row that is not resolved is not evidence of no "
             "effect larger than that."
             + (" The splits of one seed share its base model: 'p by base' tests the same differences with "
                "one value per base model (its units averaged, n bases - 1 df; Holm over the table in "
                "brackets), the test that counts base models, not splits, as the replicates." if shared else "")
             + (" Split k is the same documents for every base model (drawn with seed k): 'p by split' tests "
                "the differences with one value per split (its bases averaged, n splits - 1 df; Holm in "
                "brackets), the test that counts document splits as the replicates. With 3 splits it has 2 df "
                "and is weak; a row resolved over units but not over splits rests on the few document sets "
                "that were drawn." if crossed else "")
             + "\n\n")
    return text + _md_table(headers, rows)


def _trend_floor(blocks: int, counts: int) -> float:
    """The smallest two-sided p `_page_two_sided` can give: 2 / (k!)^b where golf.stats.page_trend_test
    enumerates every arrangement, else 2 / (permutations + 1) from its seeded draws."""
    arrangements = math.factorial(counts) ** blocks
    drawn = stats.PAGE_PERMUTATIONS
    return 2 / arrangements if arrangements <= drawn else 2 / (drawn + 1)


def _floor_text(table: pd.DataFrame) -> str:
    """': 0.0093 for 3 blocks and 3 counts', for the by-base and by-split blocks and epoch counts of the
    table's rows."""
    floors = sorted({(int(r[col]), len(str(r["epochs"]).split())) for _, r in table.iterrows()
                     for col in ("n_bases", "n_splits") if 2 <= r[col] < r["n_units"]})
    return "" if not floors else ": " + ", ".join(
        f"{_trend_floor(b, k):.2g} for {b} blocks and {k} counts" for b, k in floors)


def trend_md(study: str, table: pd.DataFrame) -> str:
    from golf.report.tables import _fmt, _md_table

    shared, crossed = _shares_bases(table), _shares_splits(table)
    headers = ["measure", "configuration", "epoch counts", "n units", "mean at first", "mean at last",
               "direction", "Page L", "p (two-sided, permutation)", "p (Holm)",
               *(["n bases", "p by base (Holm)"] if shared else []),
               *(["n splits", "p by split (Holm)"] if crossed else [])]
    rows = [[r["measure"], r["config"], r["epochs"], str(r["n_units"]), _fmt(r["mean_first"], "gain"),
             _fmt(r["mean_last"], "gain"), r["direction"], _fmt(r["L"], "other"), _fmt(r["p_value"], "p"),
             _fmt(r["p_holm"], "p"), *(_by_base_cells(r) if shared else []),
             *(_by_split_cells(r) if crossed else [])]
            for _, r in table.iterrows()]
    text = f"# {study}: trend across epoch counts\n\n"
    text += ("Each epoch count is a separate run with its own schedule. Page's L test asks whether the gain "
             "(or the memorization contrast, gain A - gain B) moves one way as the count grows, using only "
             "the order within each unit: a curve that saturates still counts as a trend, and unit levels "
             "never mix. 'falls' = more gain with more epochs (or a more negative contrast: more "
             "memorization), 'rises' = less, 'none' = no order either way. Two-sided: twice the smaller "
             "one-sided p, over every within-unit arrangement where there are at most "
             f"{stats.PAGE_PERMUTATIONS:,}, else from {stats.PAGE_PERMUTATIONS:,} seeded within-unit "
             "permutations (so no p below about 1e-4); Holm over the table. A row "
             "that is not resolved is not evidence of no trend."
             + (" 'p by base': the same test with one block per base model (its splits averaged)."
                if shared else "")
             + (" 'p by split': one block per document split (its bases averaged). With b blocks and k "
                "epoch counts no two-sided p can fall below 2 / (k!)^b (by base or by split; below "
                f"2 / {stats.PAGE_PERMUTATIONS + 1:,} where the arrangements are drawn)"
                + _floor_text(table) + "." if crossed else "")
             + "\n\n")
    return text + _md_table(headers, rows)


def level_trend_table(frame: pd.DataFrame, x: str, value: str = "val_bpb") -> pd.DataFrame:
    """Page's L test of a monotone trend of `value` across the sorted values of study column `x`, blocked
    by seed, within each configuration of the other keys; two-sided (twice the smaller one-sided
    permutation p, at most 1), since neither direction is assumed. Holm over the table."""
    if x not in frame.columns:
        return pd.DataFrame()
    data = frame[frame[value].notna()]
    keys = [k for k in config_keys(data) if k != x]
    shown = [k for k in keys if k in varying_keys(data, keys)]
    rows = []
    for key, group in _groups(data, keys):
        levels = sorted({_norm(v) for v in group[x]} - {None})
        if len(levels) < 3:
            continue
        per = {lv: dict(zip(group.loc[group[x] == lv, "seed"], group.loc[group[x] == lv, value])) for lv in levels}
        seeds = sorted(set.intersection(*(set(v) for v in per.values())))
        if len(seeds) < 2:
            continue
        test = _page_two_sided([[float(per[lv][s]) for lv in levels] for s in seeds])
        rows.append({"config": _label(key, keys, shown), "x": x, "levels": " ".join(f"{v:g}" if isinstance(v, float)
                     else str(v) for v in levels), "n_seeds": len(seeds), "L": test["L"],
                     "direction": test["direction"], "p_value": test["p_value"],
                     "mean_first": sum(per[levels[0]][s] for s in seeds) / len(seeds),
                     "mean_last": sum(per[levels[-1]][s] for s in seeds) / len(seeds)})
    return family_table(rows)


def level_trend_md(study: str, table: pd.DataFrame, value: str = "val_bpb") -> str:
    from golf.report.tables import _fmt, _md_table

    headers = ["configuration", "levels", "n seeds", f"{value} at first", f"{value} at last", "direction",
               "Page L", "p (two-sided, permutation)", "p (Holm)"]
    rows = [[r["config"], f"{r['x']} = {r['levels']}", str(r["n_seeds"]), _fmt(r["mean_first"]),
             _fmt(r["mean_last"]), r["direction"], _fmt(r["L"], "other"), _fmt(r["p_value"], "p"),
             _fmt(r["p_holm"], "p")] for _, r in table.iterrows()]
    text = f"# {study}: trend of {value} across {table['x'].iloc[0]}\n\n"
    text += ("Page's L test of a monotone trend across the levels, blocked by seed (each seed's runs are "
             "ranked among themselves, so seed levels never mix and a curve that bends still counts), "
             "two-sided: twice the smaller one-sided p over every within-seed arrangement where there are at "
             f"most {stats.PAGE_PERMUTATIONS:,}, else from {stats.PAGE_PERMUTATIONS:,} seeded within-seed "
             "permutations. Holm over the table. With 3 seeds "
             "the smallest possible p is limited by the permutations of 3 blocks.\n\n")
    return text + _md_table(headers, rows)


def _level_order(frame: pd.DataFrame, x: str) -> list:
    """The levels of study column `x` in order: presets by their mean parameter count, anything else sorted."""
    levels = {_norm(v) for v in frame[x]} - {None}
    if x == "preset" and "params" in frame.columns:
        size = frame.groupby("preset")["params"].mean().dropna()  # a preset without a count sorts last
        return sorted(levels, key=lambda p: (float(size.get(p, math.inf)), str(p)))
    return sorted(levels, key=lambda v: (isinstance(v, str), v))


def scale_values(per_epoch: pd.DataFrame, frame: pd.DataFrame, x: str = "preset") -> list[dict]:
    """Per configuration of the keys other than `x` and per measure: the levels of `x` present, in order
    (`order`: every level of the study, for the figure's axis), and {level: {unit: value}} (`per`). Where
    the probe ran (the run's own config): the memorization contrast and the gain on each half (A adapted, B
    held out); where it did not (the real protocol): the official gain, and for each illegal configuration
    its official gain minus that of every legal one that matches it on every other key, within the unit
    (`versus` and `versus_setting` name the legal side, as in `paired_table`). The unit is (seed, probe
    split), a split's swap averaged in, as in `paired_table`: a seed fixes the training data order and a
    split the documents of each half, at every level. `series` names the configuration without `ttt.probe`
    (the measure implies it), for the figure."""
    runs = final_rows(per_epoch)
    runs = runs[runs["epoch"] > 0]
    if runs.empty or x not in runs.columns:
        return []
    order = _level_order(frame if x in frame.columns else runs, x)
    ucols = units(runs)
    keys = [k for k in config_keys(runs) if k != x]
    shown = [k for k in keys if k in varying_keys(runs, keys) or k == "strategy"]
    series_keys = [k for k in shown if k != "ttt.probe"]
    configs = _groups(runs, keys)
    out, real = [], []  # real: ((key, group), {level: {unit: official gain}}) of the real-protocol configurations
    for key, group in configs:
        levels = [lv for lv in order if (group[x].map(_norm) == lv).any()]
        if len(levels) < 2:
            continue
        group = group.assign(contrast=group["gain_adapted"] - group["gain_heldout"])
        # Where the probe ran, its official gain comes from adapting on half A only, not the protocol's (a
        # probed strategy without probe passes, lora_score_first, has no measure here).
        probed = bool(group["probed"].any())
        measures = ((CONTRAST, "contrast"), (GAIN_A, "gain_adapted"), (GAIN_B, "gain_heldout")) if probed \
            else ((OFFICIAL, "gain_official"),)
        where = dict(zip(keys, key))
        for measure, col in measures:
            per = {lv: by_unit(group[group[x].map(_norm) == lv], ucols, col) for lv in levels}
            out += _scale_item(where, _label(key, keys, shown), _label(key, keys, series_keys), measure, per, order,
                               split_position(ucols))
        if not probed:  # `per` is the official gain's
            real.append(((key, group), per))
    pairs = [config for config, _ in real]
    for i, j in _illegal_legal(pairs, keys):
        ((key_i, _), per_i), ((key_l, group_l), per_l) = real[i], real[j]
        per = {lv: {u: per_i[lv][u] - per_l[lv][u] for u in set(per_i[lv]) & set(per_l[lv])}
               for lv in per_i if lv in per_l}
        pair = f"{_label(key_i, keys, series_keys)} - {_label(key_l, keys, series_keys)}"
        out += _scale_item({**dict(zip(keys, key_i)), **_versus(group_l, configs)}, pair, pair, GAP, per, order,
                           split_position(ucols))
    return out


def _scale_item(where: dict, config: str, series: str, measure: str, per: dict, order: list,
                split_at: int | None) -> list[dict]:
    """[the item] when some two levels share at least two units (a test can be made), else []. Each test
    in `scale_table` takes the units its own levels share, so a level with a missing seed costs only the
    tests it is part of."""
    per = {lv: v for lv, v in per.items() if v}
    levels = list(per)
    if not any(len(set(per[a]) & set(per[b])) >= 2 for i, a in enumerate(levels) for b in levels[i + 1:]):
        return []
    return [{"where": {"versus": "", "versus_setting": "", **where}, "config": config, "series": series,
             "measure": measure, "levels": levels, "order": order, "per": per, "split_at": split_at}]


def _shared(per: dict, levels: list) -> list:
    """The units present at every one of `levels`, sorted."""
    return sorted(set.intersection(*(set(per[lv]) for lv in levels)))


def scale_table(items: list[dict]) -> pd.DataFrame:
    """How each measure of `scale_values` (official gain and illegal - legal gap where the probe was off;
    memorization contrast and each half's gain where it was on) changes across the levels of `x` (the base
    model's scale: presets ordered by parameters), within each configuration of the other keys (`items` =
    `scale_values(per_epoch, frame, x)`). Paired t-tests (CI, MDE) of each level against the one below it
    (`test` "small - tiny": where presets differ in run scale too, the step between two of one run scale is
    the one that isolates size) and, from 3 levels, of the largest against the smallest, plus Page's L trend
    across the ordered levels, two-sided (twice the smaller one-sided permutation p; with n units and k
    levels it is at least 2 / (k!)^n). Each test takes the units its levels share (`n_units`). Holm within
    each measure and kind of test (`p_holm`): each measure is its own question, and the trend rows, which
    few units cannot make small, do not dilute the t-tests; per-level means over each level's units in
    `means`, the smallest attainable trend p in `p_min`. Each row also repeats its test with one value (or
    block) per base model, a seed's splits averaged (`n_bases`, `p_bases`, Holm as `p_holm` in
    `p_bases_holm`), as in `paired_table`."""
    rows = []
    for item in items:
        levels, per = item["levels"], item["per"]
        means = {lv: sum(per[lv].values()) / len(per[lv]) for lv in levels}
        where = {**item["where"], "measure": item["measure"], "config": item["config"],
                 "levels": " < ".join(str(lv) for lv in levels),
                 "means": "; ".join(f"{lv} {means[lv]:+.5f}" for lv in levels)}
        blocks = _shared(per, levels)
        if len(levels) >= 3 and len(blocks) >= 2:
            table = [[per[lv][u] for lv in levels] for u in blocks]
            bases = base_means(blocks, table)  # one block per base model: its splits averaged
            splits = base_means(blocks, table, item.get("split_at")) if item.get("split_at") is not None else []
            rows.append({**where, "test": "trend", "n_units": len(blocks), **_page_two_sided(table),
                         "mean_diff": (sum(per[levels[-1]][u] - per[levels[0]][u] for u in blocks) / len(blocks)),
                         "p_min": min(1.0, 2.0 / math.factorial(len(levels)) ** len(table)),
                         "n_bases": len(bases),
                         "p_bases": _page_two_sided(bases)["p_value"] if len(bases) >= 2 else math.nan,
                         "n_splits": len(splits),
                         "p_splits": _page_two_sided(splits)["p_value"] if len(splits) >= 2 else math.nan})
        steps = list(zip(levels[1:], levels[:-1])) + ([(levels[-1], levels[0])] if len(levels) > 2 else [])
        for high, low in steps:
            shared = _shared(per, [high, low])
            if len(shared) < 2:
                continue
            t = _paired(shared, [per[high][u] for u in shared], [per[low][u] for u in shared], item.get("split_at"))
            rows.append({**where, "test": f"{high} - {low}", "n_units": len(shared), "mean_diff": t["mean_diff"],
                         "ci_low": t["ci_low"], "ci_high": t["ci_high"], "p_value": t["p_value"], "mde": t["mde"],
                         "n_bases": t["n_bases"], "p_bases": t["p_bases"],
                         "n_splits": t["n_splits"], "p_splits": t["p_splits"]})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    table["p_holm"] = table["p_bases_holm"] = table["p_splits_holm"] = math.nan
    for _, part in table.groupby([table["measure"], table["test"].eq("trend")], sort=False):
        table.loc[part.index, "p_holm"] = stats.holm(part["p_value"].tolist())
        table.loc[part.index, "p_bases_holm"] = stats.holm(part["p_bases"].tolist())
        table.loc[part.index, "p_splits_holm"] = stats.holm(part["p_splits"].tolist())
    return table


def scale_md(study: str, table: pd.DataFrame, x: str) -> str:
    from golf.report.tables import _fmt, _md_table

    shared, crossed = _shares_bases(table), _shares_splits(table)
    headers = ["measure", "configuration", "means by level", "n units", "test", "difference",
               "95% CI", "p", "p (Holm)", "MDE (80%)", *(["n bases", "p by base (Holm)"] if shared else []),
               *(["n splits", "p by split (Holm)"] if crossed else [])]
    rows = []
    for _, r in table.iterrows():
        if r["test"] == "trend":
            interval, mde = f"Page L {_fmt(r['L'], 'other')}, {r['direction']} (p >= {_fmt(r['p_min'], 'p')})", "n/a"
        else:
            interval, mde = f"[{_fmt(r['ci_low'], 'gain')}, {_fmt(r['ci_high'], 'gain')}]", _fmt(r["mde"], "bpb")
        by_base = _by_base_cells(r)
        rows.append([r["measure"], r["config"], r["means"], str(r["n_units"]), r["test"], _fmt(r["mean_diff"], "gain"),
                     interval, _fmt(r["p_value"], "p"), _fmt(r["p_holm"], "p"), mde, *(by_base if shared else []),
                     *(_by_split_cells(r) if crossed else [])])
    text = f"# {study}: TTT effects across {x}\n\n"
    text += (f"Levels of `{x}` in order ({'parameters' if x == 'preset' else 'value'}); per level, the mean over "
             "units (seed, probe split; a split's swap averaged in) of each measure. Where the probe was off (the "
             "real protocol): the official gain (official val_bpb - the float base's) and, for an illegal "
             "configuration, its official gain minus a legal one's on the same unit (the legal-illegal gap). "
             "Where it was on: the memorization contrast (gain on adapted half A - gain on held-out half B) and "
             "the gain on each half. Units are compared with themselves across levels: `trend` = Page's L "
             "across all levels, two-sided (twice the smaller one-sided permutation p, which n units and k "
             "levels cannot push below 2 / (k!)^n: shown as p >=); `high - low` = paired t-test of a level against "
             "the one below it and, from 3 levels, of the largest against the smallest, with its 95% CI and the "
             "MDE at 80% power. Holm within each "
             "measure and kind of test (each measure is one question). A row that is not significant is not "
             "resolved at this power, not evidence of no change. "
             + ("A preset fixes its run scale as well as its size (training tokens, sequence length, TTT chunk "
                "sizes: golf/config.py RUN_SCALES), so a level is the whole preset, not the parameter count "
                "alone; the step between two presets of one run scale is the one that isolates size." if x == "preset" else "")
             + (" The splits of one seed share its base model: 'p by base' repeats each test with one value "
                "per base model (its units averaged; Holm as above, in brackets)." if shared else "")
             + (" Split k is the same documents for every base model: 'p by split' repeats each test with one "
                "value per split (its bases averaged)." if crossed else "")
             + "\n\n")
    return text + _md_table(headers, rows)
