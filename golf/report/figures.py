"""The report's figures, drawn on pyplot-free Agg figures so that a notebook's backend is never switched."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from golf import stats
from golf.report.frame import (
    BYTES_LIMIT,
    CONFIDENCE,
    HALVES,
    _finite,
    _groups,
    _label,
    _norm,
    _seeds_text,
    by_unit,
    key_columns,
    units,
    varying_keys,
    whole_curves,
)
from golf.report.tables import _budget_groups, _fmt, _ttt_runs


def _new_figure(ncols: int = 1, width_per_col: float = 5.0, height: float = 4.0, nrows: int = 1):
    """A pyplot-free Figure on the Agg canvas: no global backend switch, safe inside notebooks. `height` is a
    row's; the axes come row by row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_per_col * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
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


def _shared_base_note(runs: pd.DataFrame) -> str:
    """A caption's warning where several probe splits share one seed's base model (and, with several seeds,
    each split its documents across the bases): a band over units then treats them as independent and is
    narrower than one over base models or over splits (paired.md tests all three)."""
    if "ttt.probe_split" not in runs or runs.groupby("seed")["ttt.probe_split"].nunique().max() < 2:
        return ""
    if runs["seed"].nunique() < 2:
        return "; the splits share one base model, so the band is narrower than one over bases"
    return ("; a seed's splits share its base model and a split its documents across seeds, so the band is "
            "narrower than one over bases or splits")


def _fig_ttt_curves(per_epoch: pd.DataFrame, study: str):
    """The within-run diagnostic: each run's gain after each of its own epochs against its own epoch 0, one
    panel per measured half. A unit's runs (a split and its swap) are averaged first; lines are the mean over
    units with its 95% t-band, one colour per configuration and, where runs of several epoch counts are
    shown, one line style per count (solid = the longest). An E-epoch run's point at epoch e < E is not what
    an e-epoch run gives (its schedule spans E epochs): that comparison is the separate runs' (paired, trend,
    memorization_epochs). Runs whose probe skipped the curve (ttt.probe_curve=false: epochs 0 and E only)
    are left out, and the caption counts them; None when no run has a curve."""
    trained = per_epoch[per_epoch["run_id"].isin(_ttt_runs(per_epoch)["run_id"])]
    whole = whole_curves(trained)
    left_out = trained["run_id"].nunique() - whole["run_id"].nunique()
    trained = whole
    halves = [h for h, (col, _, _) in HALVES.items() if trained[col].notna().any()]
    if not halves:
        return None
    keys = key_columns(trained)
    shown = varying_keys(trained, keys) or ["strategy"]
    ucols = units(trained)
    counts = sorted({int(e) for e in trained["epochs"].dropna()}) if "epochs" in trained else []
    styles = dict(zip(reversed(counts), ["-", "--", "-.", ":"] * len(counts)))
    colour_keys = [k for k in keys if k != "epochs"]
    colour_groups = [key for key, _ in _groups(trained, colour_keys)]
    colour_of = dict(zip(colour_groups, _color_cycle(len(colour_groups))))
    groups = _groups(trained, keys)
    fig, axes = _new_figure(len(halves), height=4.6)
    n_units = []
    for ax, half in zip(axes, halves):
        _, gain_col, title = HALVES[half]
        for key, group in groups:
            row = dict(zip(keys, key))
            colour = colour_of[tuple(row[k] for k in colour_keys)]
            xs, means, lows, highs = [], [], [], []
            for epoch, at in sorted(group.groupby("epoch"), key=lambda kv: kv[0]):
                s = stats.mean_std_ci(list(by_unit(at, ucols, gain_col).values()), CONFIDENCE)
                if s["n"] == 0:
                    continue
                n_units.append(s["n"])
                xs.append(epoch)
                means.append(s["mean"])
                lows.append(s["ci_low"] if s["n"] > 1 else s["mean"])
                highs.append(s["ci_high"] if s["n"] > 1 else s["mean"])
            if not xs:
                continue
            style = styles.get(int(row["epochs"]), "-") if "epochs" in row else "-"
            ax.plot(xs, means, marker="o", markersize=3, color=colour, linestyle=style,
                    label=_label(key, keys, shown))
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.12, linewidth=0)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(title)
        ax.set_xlabel("epoch within the run")
        _integer_ticks(ax)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gain vs the run's own epoch 0 (bpb)\n< 0: TTT lowered bpb")
    handles, labels = axes[0].get_legend_handles_labels()  # one legend for all panels, below them
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))), fontsize="small")
    fig.suptitle(f"{study}: within-run diagnostic, gain after each epoch of a run (mean over units with 95% "
                 f"t-band, {_seeds_text(n_units).replace('seed', 'unit')}{_shared_base_note(trained)})\n"
                 "the point at epoch e of an E-epoch run is not an e-epoch run: its schedule spans E epochs"
                 + (f"; {left_out} run{'s' if left_out != 1 else ''} scored before and after TTT only "
                    "not drawn" if left_out else ""),
                 fontsize="medium")
    return fig


def _fig_ttt_slopes(per_epoch: pd.DataFrame, table: pd.DataFrame, study: str):
    """Per-seed gains vs epoch with the fitted OLS lines, one panel per half that has a fit (runs with a whole
    within-run curve only, as slope_table)."""
    trained = whole_curves(per_epoch)
    trained = trained[trained["run_id"].isin(_ttt_runs(trained)["run_id"]) & (trained["epoch"] >= 1)]
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


def _fig_curve(frame: pd.DataFrame, study: str, x: str, log2: bool = True):
    """val_bpb against the numeric study column `x` (e.g. model.ut_loops), one line per other configuration.

    With `log2` (for counts that double) the axis is log2 with a tick at every value run; each run is a
    faint dot beside its line's mean and 95% CI (with two seeds the t-interval is wide: the dots show what
    it rests on). Lines are nudged sideways by a few percent so their bars do not hide each other.
    """
    data = frame[frame[x].notna() & frame["val_bpb"].notna()]
    keys = [k for k in key_columns(data) if k != x]
    shown = varying_keys(data, keys)
    groups = _groups(data, keys)
    fig, (ax,) = _new_figure(1, 6.5, 4.0 + 0.22 * len(groups))  # the legend goes below the axes
    counts = []
    for i, (color, (key, group)) in enumerate(zip(_color_cycle(len(groups)), groups)):
        nudge = 1.04 ** (i - (len(groups) - 1) / 2) if log2 else 1.0
        pts = []
        for loops, at in group.groupby(x):
            s = stats.mean_std_ci(_finite(at["val_bpb"]), CONFIDENCE)
            counts.append(s["n"])
            pts.append((float(loops), s["mean"], s["half_width"]))
            ax.scatter([float(loops) * nudge] * len(at), at["val_bpb"], color=color, s=12, alpha=0.4)
        pts.sort()
        xs, means, hws = (np.array(v, dtype=float) for v in zip(*pts))
        ax.errorbar(xs * nudge, means, yerr=np.nan_to_num(hws, nan=0.0), marker="o", capsize=3, color=color,
                    label=_label(key, keys, shown) if shown else "val_bpb")
    values = sorted({float(v) for v in data[x]})
    if log2:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set_xlabel(f"{x}{' (log scale)' if log2 else ''}")
    ax.set_ylabel("val_bpb (bits per byte)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize="small")
    ax.set_title(f"{study}: val_bpb vs {x}\nmean ± 95% t-CI, dots = runs ({_seeds_text(counts)})")
    return fig


def _fig_ablation(table: pd.DataFrame, frame: pd.DataFrame, study: str, axis: str):
    """Paired delta (switch off - full stack) per switch, one panel per configuration of the other keys."""
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in key_columns(frame) if k != axis]
    shown = varying_keys(frame, keys)
    mapped = "against" in table.columns  # each value against its own reference (ablation_table)
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
        ax.set_yticks(ys, [f"{a} - {b}" for a, b in zip(group["ablate"], group["against"])] if mapped
                      else [str(a) for a in group["ablate"]])
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_xlabel(f"delta val_bpb ({axis} - its reference)" if mapped else "delta val_bpb (switch off - full stack)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(_label(key, keys, shown) if shown else "full stack")
    if mapped:
        fig.suptitle(f"{study}: each {axis} against its own reference, paired by seed\nbar = mean, whiskers = "
                     f"95% t-CI, dots = seeds\nblue: better than its reference, red: worse\n({_seeds_text(counts)})",
                     fontsize=9)
        return fig
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


def _quant_family(row) -> tuple[str, str]:
    """(family, bits) of a run's quantizer from its config: ('int', '4') for int4, ('gptq', '6') for gptq at 6
    bits, (method, '') for a mixed plan (its widths differ by tensor class)."""
    method, bits = row.get("quant_method"), row.get("quant_bits")
    if not isinstance(method, str):
        return str(row.get("quant")), ""
    family = "int" if method.startswith("int") else method  # int4..int8: the row-absmax grids by width
    return family, ("" if bits is None or (isinstance(bits, float) and math.isnan(bits)) else f"{int(bits)}")


def _fig_frontier(frame: pd.DataFrame, summary: pd.DataFrame, study: str):
    """Artifact bytes vs val_bpb: runs as dots, configuration means as markers, the Pareto front.

    Colour is the quantizer family, the marker the compressor, and the number beside each mean its bit
    width, so a 40-configuration grid stays readable. The frontier is drawn through legal configurations
    only: an illegal TTT score is not an achievable point (illegal means are drawn hollow). The 16 MB limit
    is drawn when it lies within reach of the data; otherwise the axis is in kB and the label says so.
    """
    data = frame[frame["bytes_total"].notna() & frame["val_bpb"].notna()]
    means = summary[summary["bytes_total_mean"].notna() & summary["val_bpb_mean"].notna()]
    family_of = {str(r["quant"]): _quant_family(r) for _, r in data.iterrows()}  # label -> (family, bits)
    families = sorted({fam for fam, _ in family_of.values()})
    compressors = sorted({str(c) for c in data["compressor"]})
    colors = dict(zip(families, _color_cycle(len(families))))
    markers = dict(zip(compressors, "osD^vP*hX"))
    largest = float(data["bytes_total"].max()) if not data.empty else 0.0
    show_limit = largest > BYTES_LIMIT / 4
    unit, unit_name = (1e6, "MB = 10^6 bytes") if show_limit else (1e3, "kB = 10^3 bytes")
    fig, (ax,) = _new_figure(1, 7.5, 5.5)
    for _, r in data.iterrows():
        fam = family_of[str(r["quant"])][0]
        ax.scatter([r["bytes_total"] / unit], [r["val_bpb"]], color=colors[fam], s=10, alpha=0.3,
                   marker=markers[str(r["compressor"])], linewidths=0)
    for _, r in means.iterrows():
        fam, bits = family_of[str(r["quant"])]
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


def _fig_memorization_epochs(runs: pd.DataFrame, study: str, units: list[str]):
    """Per unit (seed, split; a split and its swap averaged), the memorization contrast (gain on adapted A
    minus gain on held-out B) of separate runs at each epoch count, one panel per strategy; thin lines are
    units, the thick line their mean with its 95% t-interval; a dashed line marks the strategy's published
    epoch setting (golf.ttt.STRATEGIES, the seeds' own)."""
    from golf.ttt import STRATEGIES

    data = runs.assign(contrast=runs["gain_adapted"] - runs["gain_heldout"]).dropna(subset=["contrast"])
    strategies = sorted(data["strategy"].unique())
    fig, axes = _new_figure(max(1, len(strategies)), 4.2, 3.8)
    counts = []
    for ax, strategy in zip(axes, strategies):
        part = data[data["strategy"] == strategy]
        # unit -> epochs -> contrast, as the paired tables take units (a unit missing a swap left out)
        per_unit: dict[tuple, dict[float, float]] = {}
        for e, at in part.groupby("epochs"):
            for unit, value in by_unit(at, units, "contrast").items():
                per_unit.setdefault(unit, {})[float(e)] = value
        for line in per_unit.values():
            ax.plot(sorted(line), [line[e] for e in sorted(line)], color="grey", alpha=0.35, linewidth=0.8)
        xs, means, hws = [], [], []
        for e in sorted({e for line in per_unit.values() for e in line}):
            s = stats.mean_std_ci([line[e] for line in per_unit.values() if e in line], CONFIDENCE)
            xs.append(float(e))
            means.append(s["mean"])
            hws.append(s["half_width"])
            counts.append(s["n"])
        ax.errorbar(xs, means, yerr=np.nan_to_num(np.array(hws, dtype=float), nan=0.0), marker="o", capsize=3,
                    color="tab:red", linewidth=2, label="mean over units, 95% CI")
        # E = 0 is the base itself: no run of its own, a contrast of 0 by definition
        ax.plot([0.0], [0.0], marker="o", markerfacecolor="white", color="tab:red", linestyle="none",
                label="E = 0: the base (0 by definition)")
        seed_epochs = STRATEGIES[strategy].epochs if strategy in STRATEGIES else None
        if seed_epochs:
            ax.axvline(seed_epochs, color="black", linestyle="--", linewidth=1, label="published setting")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xscale("symlog", base=2, linthresh=1)
        ticks = sorted({0.0, *xs})
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.minorticks_off()
        ax.set_xlabel("TTT epochs (separate runs)")
        ax.set_title(f"{strategy} (published: {seed_epochs} epoch{'s' if seed_epochs != 1 else ''})"
                     if seed_epochs else strategy)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gain on A - gain on B (bpb)\n< 0: adapted documents gain more")
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{study}: memorization contrast vs epochs\ngrey = units (seed, split), "
                 f"{_seeds_text(counts).replace('seed', 'unit')}{_shared_base_note(data)}", fontsize="medium")
    return fig


def _fig_gap_units(runs: pd.DataFrame, study: str):
    """Every unit's paired numbers, one x position per configuration (a run's final epoch; a unit is a seed
    and a probe split, its swap averaged in). Left, the configurations with the probe: each unit's gain on
    adapted half A joined to its gain on held-out half B, the means with their 95% t-intervals. Right, every
    configuration's official gain (probe off: the real protocol), units as dots, the mean with its interval."""
    keys = key_columns(runs)
    shown = [k for k in keys if k in varying_keys(runs, keys) or k == "strategy"]
    ucols = units(runs)
    groups = _groups(runs, keys)

    def paired_halves(group):  # unit -> (gain A, gain B) where the unit has both
        a, b = by_unit(group, ucols, "gain_adapted"), by_unit(group, ucols, "gain_heldout")
        return {u: (a[u], b[u]) for u in sorted(set(a) & set(b))}

    probed = [(k, pairs) for k, g in groups if (pairs := paired_halves(g))]
    fig, (left, right) = _new_figure(2, max(4.0, 1.3 * max(len(probed), len(groups)) + 1.5), 4.6)
    counts: list[int] = []

    def mean_bar(ax, x, values, color):
        s = stats.mean_std_ci(values, CONFIDENCE)
        ax.errorbar([x], [s["mean"]], yerr=[[np.nan_to_num(s["half_width"])], [np.nan_to_num(s["half_width"])]],
                    marker="o", color=color, capsize=4, linewidth=2, zorder=3)
        counts.append(s["n"])

    for i, (key, pairs) in enumerate(probed):
        for gain_a, gain_b in pairs.values():
            left.plot([i - 0.18, i + 0.18], [gain_a, gain_b], color="grey", alpha=0.5, linewidth=0.8)
        mean_bar(left, i - 0.18, [p[0] for p in pairs.values()], "tab:red")
        mean_bar(left, i + 0.18, [p[1] for p in pairs.values()], "tab:blue")
    left.set_xticks(range(len(probed)), [_label(k, keys, shown) for k, _ in probed], rotation=20, ha="right",
                    fontsize="small")
    left.set_xlim(-0.6, max(1, len(probed)) - 0.4)
    left.plot([], [], color="tab:red", marker="o", label="A: adapted on (mean, 95% CI)")
    left.plot([], [], color="tab:blue", marker="o", label="B: held out")
    left.plot([], [], color="grey", label="one unit: A joined to B")
    left.set_title("probe: gain on adapted vs held-out documents", fontsize="medium")
    left.set_ylabel("TTT gain (bpb), < 0 = lower bpb")
    for i, (key, group) in enumerate(groups):
        off = by_unit(group, ucols, "gain_official")
        values = [off[u] for u in sorted(off)]
        if not values:  # no float-base score in these results (written before eval.val_bpb_base): no gain
            continue
        spread = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
        right.scatter([i + d for d in spread], values, color="grey", alpha=0.6, s=12)
        mean_bar(right, i, values, "black")
    right.set_xticks(range(len(groups)), [_label(k, keys, shown) for k, _ in groups], rotation=20, ha="right",
                     fontsize="small")
    right.set_xlim(-0.6, max(1, len(groups)) - 0.4)
    right.set_title("official gain (after TTT and quantization - float base)", fontsize="medium")
    for ax in (left, right):
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.grid(alpha=0.3, axis="y")
    left.legend(fontsize="small")
    fig.suptitle(f"{study}: paired gains per unit (seed, split), {_seeds_text(counts).replace('seed', 'unit')}",
                 fontsize="medium")
    return fig


def _fig_scale(items: list[dict], study: str, x: str):
    """Each measure of golf.report.paired.scale_values against the ordered levels of `x` (model scale), one
    panel per measure (up to three a row), one line per configuration in one style across the panels (its
    `series`; past ten, the colours repeat dashed with square markers): the mean over the level's units with
    its 95% t-interval, each unit's value a faint dot."""
    measures = list(dict.fromkeys(item["measure"] for item in items))
    present = {lv for item in items for lv in item["levels"]}
    levels = [lv for lv in items[0]["order"] if lv in present]
    ncols = min(3, len(measures))
    nrows = -(-len(measures) // ncols)
    fig, axes = _new_figure(ncols, 5.2, 3.9, nrows)
    series = list(dict.fromkeys(item["series"] for item in items))
    colors = _color_cycle(len(series))
    style = {name: {"color": colors[i], "linestyle": "-" if i < 10 else "--", "marker": "o" if i < 10 else "s"}
             for i, name in enumerate(series)}
    counts, handles = [], {}
    for ax, measure in zip(axes, measures):
        part = [item for item in items if item["measure"] == measure]
        for j, item in enumerate(part):
            xs = [levels.index(lv) + 0.06 * (j - (len(part) - 1) / 2) for lv in item["levels"]]
            values = [list(item["per"][lv].values()) for lv in item["levels"]]
            stats_at = [stats.mean_std_ci(v, CONFIDENCE) for v in values]
            counts += [s["n"] for s in stats_at]
            look = style[item["series"]]
            for xi, v in zip(xs, values):
                ax.scatter([xi] * len(v), v, color=look["color"], alpha=0.3, s=12)
            handles[item["series"]] = ax.errorbar(
                xs, [s["mean"] for s in stats_at],
                yerr=np.nan_to_num(np.array([s["half_width"] for s in stats_at], dtype=float), nan=0.0),
                capsize=3, **look)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
        ax.set_xlabel(f"{x} (in order of size)")
        meaning = ("adapted documents gain more" if "A - gain B" in measure else
                   "the illegal one gains more" if "illegal - legal" in measure else "lower bpb")
        ax.set_ylabel(f"{measure} (bpb)\n< 0: {meaning}", fontsize="small")
        ax.grid(alpha=0.3)
    for ax in axes[len(measures):]:
        ax.set_axis_off()
    fig.legend([handles[k] for k in series], series, loc="outside lower center", ncols=2, fontsize="small")
    fig.suptitle(f"{study}: TTT effects across {x}; mean over units (seed, split), 95% CI; dots = units\n"
                 f"{_seeds_text(counts).replace('seed', 'unit')}", fontsize="medium")
    return fig


def _fig_learning_curves(curves: pd.DataFrame, study: str):
    """Learning curves: validation bpb of the live model against training tokens, one colour per
    configuration (faint lines = seeds, thick = their mean at each step), with the configuration's
    Kneser-Ney bigram and trigram of its own training tokens as dashed and dotted lines. The curve scores
    the first train.val_tokens of the validation subset: where that is the whole subset, its last point is
    val_bpb_base and the count models are on the same targets; otherwise they are a guide."""
    keys = key_columns(curves)
    shown = varying_keys(curves, keys)
    groups = _groups(curves, keys)
    fig, (ax,) = _new_figure(1, 7.0, 4.6)
    counts = []
    for color, (key, group) in zip(_color_cycle(len(groups)), groups):
        label = _label(key, keys, shown) if shown else "val_bpb"
        for _, run in group.groupby("run_id"):
            run = run.sort_values("tokens")
            ax.plot(run["tokens"] / 1e6, run["val_bpb"], color=color, alpha=0.3, linewidth=0.8)
        mean = group.groupby("tokens")["val_bpb"].mean().sort_index()
        counts.append(int(group["seed"].nunique()))
        ax.plot(mean.index / 1e6, mean.values, color=color, linewidth=2, marker="o", markersize=3, label=label)
        for col, style in (("bigram_kn", "--"), ("trigram_kn", ":")):
            level = group[col].dropna() if col in group else pd.Series(dtype=float)
            if not level.empty:
                ax.axhline(float(level.mean()), color=color, linestyle=style, linewidth=1)
    ax.plot([], [], color="grey", linestyle="--", label="bigram (KN) of the same tokens")
    ax.plot([], [], color="grey", linestyle=":", label="trigram (KN) of the same tokens")
    lines = [c for c in ("bigram_kn", "trigram_kn") if c in curves and curves[c].notna().any()]
    low = min([float(curves["val_bpb"].min())] + [float(curves[c].min()) for c in lines])
    ax.set_ylim(low - 0.1, min(float(curves["val_bpb"].max()), low + 2.5) + 0.05)  # step 0 is ~log2(vocab)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation bpb (slice, live weights)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{study}: learning curves ({_seeds_text(counts)})")
    return fig


def _fig_data_scale(frame: pd.DataFrame, study: str):
    """val_bpb_base against training tokens (log2), one colour per base configuration apart from its budget:
    each token count is its own run (dots = seeds, line = their mean ± 95% t-CI), with the Kneser-Ney
    trigram (dotted) and bigram (dashed) of each run's own tokens on the same targets, which improve with
    the tokens too."""
    keys, groups = _budget_groups(frame)
    shown = varying_keys(frame, keys)
    fig, (ax,) = _new_figure(1, 7.0, 4.6)
    counts, ticks = [], set()
    for color, (key, group) in zip(_color_cycle(len(groups)), groups):
        pts = []
        for tokens, at in group.groupby(group["train_tokens"].round().astype(int), sort=True):
            per_seed = at.groupby("seed")["val_bpb_base"].mean()
            s = stats.mean_std_ci(_finite(per_seed), CONFIDENCE)
            counts.append(s["n"])
            ticks.add(int(tokens))
            ax.scatter([tokens / 1e6] * len(per_seed), per_seed, color=color, s=12, alpha=0.4)
            pts.append((tokens / 1e6, s["mean"], s["half_width"], at["trigram_kn"].mean(),
                        at["bigram_kn"].mean() if "bigram_kn" in at else math.nan))
        xs, means, hws, tri, bi = (np.array(v, dtype=float) for v in zip(*pts))
        ax.errorbar(xs, means, yerr=np.nan_to_num(hws, nan=0.0), marker="o", capsize=3, color=color,
                    label=_label(key, keys, shown) if shown else "val_bpb_base")
        ax.plot(xs, tri, color=color, linestyle=":", marker="^", markersize=4, linewidth=1)
        ax.plot(xs, bi, color=color, linestyle="--", marker="x", markersize=4, linewidth=1)  # a lone budget: the marker
    ax.plot([], [], color="grey", linestyle=":", marker="^", label="trigram (KN) of the same tokens")
    ax.plot([], [], color="grey", linestyle="--", marker="x", label="bigram (KN) of the same tokens")
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set_xticks([t / 1e6 for t in sorted(ticks)], [f"{t / 1e6:.2g}" for t in sorted(ticks)])
    ax.set_xlabel("training tokens (millions, log scale): one run per budget")
    ax.set_ylabel("validation bpb of the float base")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{study}: base models and count models against training tokens\n"
                 f"mean ± 95% t-CI, dots = seeds ({_seeds_text(counts)})")
    return fig
