"""The report's sections, by name: what a study's YAML lists under `report:`, and `write_report`.

A section reads the study's frames and returns the tables (file name -> text) and figures (name -> Figure)
its data supports; it writes nothing itself. The report is the study's list of sections, in order, after
`summary` (always first: summary.md also lists the figures and the cells a partial report lacks). A section
may take options, given in the YAML as `{name: {option: value}}`, e.g.

    report: [ttt_curves, gap, slopes]
    report: [{curve: {x: model.ut_loops}}]
    report: [{ablation: {axis: bundle, reference: none}}, frontier]

Adding a section is one function and one `SECTIONS` entry here; nothing in golf.report names a study.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from golf import io as gio
from golf.errors import GolfError
from golf.report import figures as F
from golf.report import paired as P
from golf.report import tables as T
from golf.report.frame import _norm, _results_frame, curve_frame, per_epoch_frame, read_results


@dataclass
class Inputs:
    """What every section reads: the study's runs as frames, computed once."""

    study: str
    frame: pd.DataFrame  # one row per run (golf.report.frame)
    per_epoch: pd.DataFrame  # one row per (run, TTT epoch), with gains against epoch 0
    summary: pd.DataFrame  # summary_table(frame)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # learning curves (train.val_every), long form

    @property
    def ttt_runs(self) -> pd.DataFrame:
        return T._ttt_runs(self.per_epoch)

    def has_ttt(self) -> bool:
        runs = self.ttt_runs
        return not runs.empty and bool(runs["gain"].notna().any())


@dataclass
class Output:
    tables: dict[str, str] = field(default_factory=dict)  # file name in the study folder -> text
    figures: dict[str, Any] = field(default_factory=dict)  # figures/<name>.png|.svg -> matplotlib Figure


@dataclass(frozen=True)
class Section:
    build: Callable[..., Output]  # build(inputs, **options)
    files: tuple[str, ...]  # the table files it may write (an earlier report's copies are removed)
    doc: str  # one line for `golf study` errors and the README


def _bases(inp: Inputs) -> Output:
    """The base models (before TTT and quantization) against the n-gram baselines, paired by seed (bases.csv/.md)."""
    table = T.bases_table(inp.frame)
    if table.empty:
        return Output()
    return Output(tables={"bases.csv": T._csv(table), "bases.md": T._bases_md(inp.study, inp.frame, table)})


def _ttt_curves(inp: Inputs) -> Output:
    """Within-run diagnostic: each run's gain after each of its epochs against its own epoch 0, per
    configuration and epoch count, overall and on halves A and B (figure ttt_curves)."""
    fig = F._fig_ttt_curves(inp.per_epoch, inp.study) if inp.has_ttt() else None
    return Output(figures={"ttt_curves": fig} if fig is not None else {})


def _gap(inp: Inputs) -> Output:
    """Final-epoch TTT gains overall, on adapted half A and held-out half B (gap.csv/.md)."""
    if not inp.has_ttt():
        return Output()
    gap = T.gap_table(inp.per_epoch)
    return Output(tables={"gap.csv": T._csv(gap), "gap.md": T._gap_md(inp.study, inp.ttt_runs, gap)})


def _gap_units(inp: Inputs) -> Output:
    """Each unit's gains, adapted vs held-out and official, per configuration (figure gap_units)."""
    if not inp.has_ttt():
        return Output()
    runs = P.final_rows(inp.per_epoch)
    runs = runs[runs["epoch"] > 0]
    if runs.empty:
        return Output()
    return Output(figures={"gap_units": F._fig_gap_units(runs, inp.study)})


def _slopes(inp: Inputs) -> Output:
    """Gain per TTT epoch, per seed and pooled (slopes.csv/.md, figure ttt_slopes)."""
    if not inp.has_ttt():
        return Output()
    slopes = T.slope_table(inp.per_epoch)
    if slopes.empty:
        return Output()
    pe = inp.per_epoch
    trained = pe[pe["run_id"].isin(inp.ttt_runs["run_id"]) & (pe["epoch"] >= 1)]
    return Output(tables={"slopes.csv": T._csv(slopes), "slopes.md": T._slopes_md(inp.study, trained, slopes)},
                  figures={"ttt_slopes": F._fig_ttt_slopes(pe, slopes, inp.study)})


def _paired(inp: Inputs, match: list | None = None) -> Output:
    """Within-unit contrasts (memorization, official gain, illegal - legal), Holm, MDE (paired.csv/.md);
    `match` (e.g. [ttt.epochs]): keys an illegal and a legal configuration must share to be compared."""
    if match is not None and not isinstance(match, list):
        raise GolfError(f"report section paired: match must be a list of configuration keys, not {match!r}")
    table = P.paired_table(inp.per_epoch, match)
    if table.empty:
        return Output()
    return Output(tables={"paired.csv": T._csv(table), "paired.md": P.paired_md(inp.study, table)})


def _trend(inp: Inputs) -> Output:
    """Page's trend test across epoch counts run separately, blocked by unit (trend.csv/.md)."""
    table = P.trend_table(inp.per_epoch)
    if table.empty:
        return Output()
    return Output(tables={"trend.csv": T._csv(table), "trend.md": P.trend_md(inp.study, table)})


def _trend_levels(inp: Inputs, x: str, value: str = "val_bpb") -> Output:
    """Page's trend test of `value` across the levels of study column `x`, blocked by seed, two-sided
    (trend_levels.csv/.md)."""
    table = P.level_trend_table(inp.frame, x, value)
    if table.empty:
        return Output()
    return Output(tables={"trend_levels.csv": T._csv(table), "trend_levels.md": P.level_trend_md(inp.study, table, value)})


def _memorization_epochs(inp: Inputs) -> Output:
    """Per-unit memorization contrast against epoch counts run separately, seeds' settings marked
    (figure memorization_epochs)."""
    runs = P.final_rows(inp.per_epoch)
    if runs.empty or runs["epochs"].nunique() < 2 or runs["gain_adapted"].notna().sum() == 0:
        return Output()
    return Output(figures={"memorization_epochs": F._fig_memorization_epochs(runs, inp.study, P.units(runs))})


def _scale(inp: Inputs, x: str = "preset") -> Output:
    """Official gain and illegal - legal gap (probe off), memorization contrast and each half's gain (probe
    on) across the ordered levels of `x` (model scale), paired by unit: Page's trend, each step and largest -
    smallest, Holm within each measure (scale.csv/.md, figure scale)."""
    items = P.scale_values(inp.per_epoch, inp.frame, x)
    if not items:
        return Output()
    table = P.scale_table(items)
    return Output(tables={"scale.csv": T._csv(table), "scale.md": P.scale_md(inp.study, table, x)},
                  figures={"scale": F._fig_scale(items, inp.study, x)})


def _learning_curves(inp: Inputs) -> Output:
    """Validation bpb against training tokens (train.val_every), per configuration, with the count models
    of the same tokens (figure learning_curves)."""
    if inp.curves.empty:
        return Output()
    return Output(figures={"learning_curves": F._fig_learning_curves(inp.curves, inp.study)})


def _data_scale(inp: Inputs) -> Output:
    """The base models and the count models of their own tokens across training budgets, each budget its
    own run: change per doubling of tokens, margin over the trigram tested over seeds (data_scale.csv/.md,
    figure data_scale)."""
    table = T.data_scale_table(inp.frame)
    if table.empty:
        return Output()
    return Output(tables={"data_scale.csv": T._csv(table), "data_scale.md": T._data_scale_md(inp.study, inp.frame, table)},
                  figures={"data_scale": F._fig_data_scale(inp.frame, inp.study)})


def _curve(inp: Inputs, x: str, log2: bool = True) -> Output:
    """val_bpb against one numeric study column, one line per other configuration (figure curve_<leaf>)."""
    if x not in inp.frame.columns:
        return Output()
    values = {_norm(v) for v in inp.frame.loc[inp.frame["val_bpb"].notna(), x]} - {None}
    if len(values) < 2:
        return Output()
    return Output(figures={f"curve_{x.rsplit('.', 1)[-1]}": F._fig_curve(inp.frame, inp.study, x, log2)})


def _ablation(inp: Inputs, axis: str = "bundle", reference: Any = "none", name: str = "ablation",
              where: dict | None = None) -> Output:
    """Each value of `axis` against `reference` (or each value against its own: a mapping), paired by seed,
    Holm and MDE (<name>.csv/.md, figure <name>); `name` lets one study list several (e.g. loops against 1
    loop, curriculum against none); `where` keeps only the runs with the given column values."""
    table = T.ablation_table(inp.frame, axis, reference, where)
    if table.empty:
        return Output()
    return Output(tables={f"{name}.csv": T._csv(table),
                          f"{name}.md": T._ablation_md(inp.study, inp.frame, table, axis, reference, where)},
                  figures={name: F._fig_ablation(table, inp.frame, inp.study, axis)})


def _frontier(inp: Inputs) -> Output:
    """Artifact bytes against val_bpb with the legal Pareto front (figure frontier)."""
    if (inp.frame["bytes_total"].notna() & inp.frame["val_bpb"].notna()).sum() < 2:
        return Output()
    return Output(figures={"frontier": F._fig_frontier(inp.frame, inp.summary, inp.study)})


SECTIONS: dict[str, Section] = {
    "summary": Section(lambda inp: Output(), ("summary.csv", "summary.md"),
                       "val_bpb, bytes and n-gram margins per configuration (always written, first)"),
    "bases": Section(_bases, ("bases.csv", "bases.md"), _bases.__doc__),
    "ttt_curves": Section(_ttt_curves, (), _ttt_curves.__doc__),
    "gap": Section(_gap, ("gap.csv", "gap.md"), _gap.__doc__),
    "gap_units": Section(_gap_units, (), _gap_units.__doc__),
    "slopes": Section(_slopes, ("slopes.csv", "slopes.md"), _slopes.__doc__),
    "paired": Section(_paired, ("paired.csv", "paired.md"), _paired.__doc__),
    "trend": Section(_trend, ("trend.csv", "trend.md"), _trend.__doc__),
    "trend_levels": Section(_trend_levels, ("trend_levels.csv", "trend_levels.md"), _trend_levels.__doc__),
    "memorization_epochs": Section(_memorization_epochs, (), _memorization_epochs.__doc__),
    "scale": Section(_scale, ("scale.csv", "scale.md"), _scale.__doc__),
    "curve": Section(_curve, (), _curve.__doc__),
    "learning_curves": Section(_learning_curves, (), _learning_curves.__doc__),
    "data_scale": Section(_data_scale, ("data_scale.csv", "data_scale.md"), _data_scale.__doc__),
    "ablation": Section(_ablation, ("ablation.csv", "ablation.md"), _ablation.__doc__),
    "frontier": Section(_frontier, (), _frontier.__doc__),
}
TABLE_FILES = tuple(f for s in SECTIONS.values() for f in s.files)


def parse_sections(spec: Any, where: str) -> list[tuple[str, dict]]:
    """A YAML `report:` list -> [(name, options)], each name in SECTIONS with options its function takes.

    `summary` is always first (added when not listed). `false` or `[]` means no report at all."""
    if spec is False or spec == []:
        return []
    if spec is None or spec is True:
        spec = ["summary"]
    if not isinstance(spec, list):
        raise GolfError(f"{where}: `report` must be a list of section names (or false); sections: "
                        f"{', '.join(SECTIONS)}")
    out: list[tuple[str, dict]] = []
    for item in spec:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())) or {}, dict):
            name, options = next(iter(item.items()))
            options = options or {}
        else:
            raise GolfError(f"{where}: report entry {item!r} must be a section name or {{name: {{options}}}}")
        if name not in SECTIONS:
            raise GolfError(f"{where}: unknown report section {name!r}; valid: {', '.join(SECTIONS)}")
        params = inspect.signature(SECTIONS[name].build).parameters
        allowed = [p for p in params if p != "inp"]
        unknown = sorted(set(options) - set(allowed))
        missing = [p for p in allowed if params[p].default is inspect.Parameter.empty and p not in options]
        if unknown or missing:
            raise GolfError(f"{where}: report section {name} takes options {', '.join(allowed) or 'none'}"
                            f"{f'; unknown: {unknown}' if unknown else ''}{f'; missing: {missing}' if missing else ''}")
        if any(name == n and options.get("name") == o.get("name") for n, o in out):
            raise GolfError(f"{where}: report section {name} is listed twice (give the second its own `name`)")
        out.append((name, dict(options)))
    if not any(n == "summary" for n, _ in out):
        out.insert(0, ("summary", {}))
    return out


def _inputs(study_dir: Path, only: Iterable[str] | None = None) -> tuple[Inputs, list]:
    results, skipped = read_results(study_dir, only)
    if not results:
        raise GolfError(f"{study_dir / 'runs'}: no complete result.json to report on "
                        f"({len(skipped)} skipped)")
    frame = _results_frame(results)
    return Inputs(study_dir.name, frame, per_epoch_frame(results), T.summary_table(frame), curve_frame(results)), skipped


def section_tables(inputs: Inputs, sections: list[tuple[str, dict]]) -> dict[str, pd.DataFrame]:
    """The tables the study's sections write, as frames by file stem ("loops" for loops.csv), read back from
    the CSV text the report writes: what a conclusion about a study's own table (golf.study.compare) names.
    Figures are built and dropped."""
    import io

    import matplotlib.pyplot as plt

    out: dict[str, pd.DataFrame] = {}
    for name, options in sections:
        built = SECTIONS[name].build(inputs, **options)
        for fig in built.figures.values():
            plt.close(fig)
        for file, text in built.tables.items():
            if file.endswith(".csv") and text.strip():
                out[file[: -len(".csv")]] = pd.read_csv(io.StringIO(text))
    return out


def write_report(study_dir: str | os.PathLike, sections: list[tuple[str, dict]] | None = None,
                 absent: dict[str, list[str]] | None = None, only: Iterable[str] | None = None,
                 slice_text: str = "") -> list[Path]:
    """Write the study's tables and figures, section by section; return the paths written.

    `sections` is `parse_sections` of the study's `report:` list (default: the summary alone). `absent`
    ({"missing": [cell ids], "failed": [...]}, from golf.study's cell_status) names the grid's cells that
    have no result; summary.md lists them, so a partial report says what it lacks. `only` restricts the
    report to those run folders (a slice of the grid, golf study report --where), which `slice_text`
    names in summary.md.

    Tables land in `study_dir`, figures in `study_dir/figures/` as PNG and SVG. Every file is written
    atomically; the figures folder is rebuilt as a whole, and tables no section wrote this time are
    removed, so the folder always describes exactly the current runs. Raises GolfError when no run is
    readable (the reasons for each skipped file are in the message's count and in load_results).
    """
    study_dir = Path(study_dir)
    inputs, skipped = _inputs(study_dir, only)
    frame = inputs.frame
    tables: dict[str, str] = {"summary.csv": T._csv(inputs.summary)}
    figures: dict[str, Any] = {}
    for name, options in sections or [("summary", {})]:
        out = SECTIONS[name].build(inputs, **options)
        clash = sorted((set(out.tables) & set(tables) - {"summary.csv"}) | (set(out.figures) & set(figures)))
        if clash:
            raise GolfError(f"report section {name} writes {', '.join(clash)}, which an earlier section wrote; "
                            "give it another `name`")
        tables.update(out.tables)
        figures.update(out.figures)
    tables["summary.md"] = (T._summary_md(inputs.study, frame, inputs.summary, skipped, sorted(figures))
                            + T._slice_md(slice_text) + T._absent_md(absent) + T._retrained_md(frame))

    # Render before touching the folder, so a plotting error leaves the previous report intact.
    rendered = {name: F._figure_bytes(fig) for name, fig in figures.items()}
    written: list[Path] = []
    fig_dir = study_dir / "figures"
    if rendered or fig_dir.exists():  # an emptied figures folder drops figures of an earlier report
        with gio.atomic_dir(fig_dir) as tmp:
            for name in sorted(rendered):
                for ext, data in rendered[name].items():
                    (tmp / f"{name}.{ext}").write_bytes(data)
        written += [fig_dir / f"{name}.{ext}" for name in sorted(rendered) for ext in ("png", "svg")]
    for name in sorted(set(TABLE_FILES) | set(tables)):  # named sections write files of their own names
        path = study_dir / name
        if name in tables:
            gio.write_text(path, tables[name])
            written.append(path)
        else:
            path.unlink(missing_ok=True)  # a table from an earlier report that the data no longer supports
    return written
