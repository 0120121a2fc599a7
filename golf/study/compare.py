"""A fresh study run beside the committed reference, and the README's claims checked on both.

`results/NAME/conclusions.yaml` states each claim of a results README so that a program can check it; a
claim names numbers of the report's tables as TABLE[key=value,...].COLUMN. The file is a list of claims, or
a mapping {where: [KEY=VALUE, ...], claims: [...]} whose claims are about a slice of the grid (the tables
`golf study report --where` writes): they are checked on the runs of that slice only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from golf.errors import GolfError
from golf.study.runner import place, plan, read_result, slice_ids
from golf.study.spec import check_keys, resolve_root

CONCLUSIONS_FILE = "conclusions.yaml"

# A conclusion names one number of a report table: TABLE[key=value,...].COLUMN, e.g.
# gap[strategy=lora_single_pass].gain_heldout_mean. The tables are golf.report's, computed from the runs,
# plus every CSV table the study's own `report:` sections write, by file stem (loops[...], trend_levels[...]).
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


def _read_conclusions(path: Path) -> tuple[Any, list[str] | None]:
    """(the list of claims, the slice's KEY=VALUE clauses or None) of a conclusions file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GolfError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, dict):
        return raw, None
    check_keys(raw, ("where", "claims"), path.name)
    where = raw.get("where")
    if not isinstance(where, list) or not where or not all(isinstance(w, str) for w in where):
        raise GolfError(f"{path}: `where` must be a non-empty list of KEY=VALUE strings (as golf study report --where)")
    return raw.get("claims"), where


def conclusions_slice(path: Path) -> list[str] | None:
    """The KEY=VALUE clauses of the grid slice a conclusions file is about (None: the whole grid)."""
    return _read_conclusions(path)[1]


def load_conclusions(path: Path) -> list[Conclusion]:
    raw, _ = _read_conclusions(path)
    if not isinstance(raw, list) or not raw:
        raise GolfError(f"{path}: must be a non-empty list of conclusions (claim, value, op, than)")
    out = []
    for i, item in enumerate(raw):
        where = f"{path.name}[{i}]"
        if not isinstance(item, dict):
            raise GolfError(f"{where}: must be a mapping")
        check_keys(item, _CONCLUSION_KEYS, where)
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


def report_tables(study_dir: Path, sections: list[tuple[str, dict]] | None = None,
                  only: list[str] | None = None) -> dict:
    """The report's tables of a study folder, computed from its runs (as `write_report` computes them; with
    `only`, from those run folders alone, as for a slice of the grid).

    With `sections` (the study's parsed `report:` list), also every table those sections write, by file
    stem (e.g. `loops` and `trend_levels` for ut_iterations), where no table of that name is here already."""

    from golf.report import frame as F
    from golf.report import tables as T

    results, _ = F.read_results(study_dir, only)
    if not results:
        return {}
    frame = F._results_frame(results)
    tables = {"summary": T.summary_table(frame), "runs": frame}
    ablation = T.ablation_table(frame)
    if not ablation.empty:
        tables["ablation"] = ablation
    bases = T.bases_table(frame)
    if not bases.empty:
        tables["bases"] = bases
    data_scale = T.data_scale_table(frame)
    if not data_scale.empty:
        tables["data_scale"] = data_scale
    per_epoch = F.per_epoch_frame(results)
    ttt = T._ttt_runs(per_epoch)
    if not ttt.empty and ttt["gain"].notna().any():
        tables.update(gap=T.gap_table(per_epoch), slopes=T.slope_table(per_epoch))
        from golf.report import paired as P

        paired_options = next((o for n, o in sections or [] if n == "paired"), {})  # as the report builds it
        tables["paired"] = P.paired_table(per_epoch, paired_options.get("match"))
        scale = P.scale_table(P.scale_values(per_epoch, frame))
        if not scale.empty:
            tables["scale"] = scale
    if sections:  # the runs read once: the sections get the frames computed above
        from golf.report.sections import Inputs, section_tables

        inputs = Inputs(study_dir.name, frame, per_epoch, tables["summary"], F.curve_frame(results))
        for stem, table in section_tables(inputs, sections).items():
            tables.setdefault(stem, table)
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

    cells: one row per grid cell with, for fresh and reference, the official val_bpb, the official gain (val_bpb
    minus the run's own float base, val_bpb_base), the memorization contrast at the run's last probed epoch
    (gain on half A minus gain on half B, each against the run's epoch 0; None without the probe) and the
    base weights' digest (train.weights_sha256), with each number's difference (fresh - reference).
    Retraining a base on another machine moves val_bpb by the base's own shift; the gain and the contrast,
    measured within a run, show how much of that reaches what the studies report;
    conclusions: each claim of results/NAME/conclusions.yaml with its value in both and whether it holds
    (on the runs of the file's `where` slice, if it names one); fresh_complete: whether the fresh run has
    every cell those claims are about (where it has not, a claim it cannot check is n/a, not a failure).
    """
    root = resolve_root(root)
    fresh, ref = place(name), place(name, reference=True)
    if not (root / fresh.runs).is_dir():
        raise GolfError(f"study {name}: no fresh run in {fresh.runs}; run `golf study run {name}` first")
    if not (root / ref.runs).is_dir():
        raise GolfError(f"study {name}: no committed reference in {ref.runs} to compare with")
    spec, cells = plan(name, root)
    rows = []
    for cell in cells:
        a, b = read_result(root / fresh.runs / cell.id), read_result(root / ref.runs / cell.id)
        row: dict[str, Any] = {"cell": cell.id, "configuration": _configuration(cell.axes), "fresh_result": a is not None}
        for label, res in (("fresh", a), ("reference", b)):
            row[f"val_bpb_{label}"] = _get(res, "eval", "val_bpb")
            row[f"bytes_total_{label}"] = _get(res, "artifact", "bytes_total")
            row[f"legal_{label}"] = _get(res, "ttt", "legal")
            row[f"weights_sha256_{label}"] = _get(res, "train", "weights_sha256")
            for key, value in _within_run(res).items():
                row[f"{key}_{label}"] = value
        for key in _MEASURES:
            both = row[f"{key}_fresh"] is not None and row[f"{key}_reference"] is not None
            row[f"{key}_diff"] = row[f"{key}_fresh"] - row[f"{key}_reference"] if both else None
        rows.append(row)
    conclusions = []
    path = root / ref.study_dir / CONCLUSIONS_FILE
    only = slice_ids(name, root, conclusions_slice(path)) if path.is_file() else None  # the claims' slice
    claimed = set(only) if only is not None else {r["cell"] for r in rows}
    fresh_complete = all(r["fresh_result"] for r in rows if r["cell"] in claimed)
    if path.is_file():
        tables = {"fresh": report_tables(root / fresh.study_dir, spec.report, only),
                  "reference": report_tables(root / ref.study_dir, spec.report, only)}
        for c in load_conclusions(path):
            entry = {"claim": c.claim, "check": f"{c.value} {c.op} "
                     f"{'' if c.times == 1 else f'{c.times:g} x '}{c.than}{f' ± {c.tol:g}' if c.op == '~' else ''}"}
            for label, t in tables.items():
                entry[label] = check_conclusion(c, t)
            conclusions.append(entry)
    return {"study": name, "fresh": str(fresh.study_dir), "reference": str(ref.study_dir), "cells": rows,
            "by_configuration": _by_configuration(rows), "fresh_complete": fresh_complete,
            "conclusions": conclusions, "conclusions_file": str(ref.study_dir / CONCLUSIONS_FILE) if path.is_file() else None}


# The axes that pick a replicate (base model and document split), not a configuration.
_UNIT_AXES = ("seed", "ttt.probe_split", "ttt.probe_swap")
_MEASURES = ("val_bpb", "gain_official", "contrast")


def _configuration(axes: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in axes.items() if k not in _UNIT_AXES) or "all"


def _by_configuration(rows: list[dict]) -> list[dict]:
    """Per configuration (the cell's axes less the replicate ones): how many cells have both runs, and for
    each measure the mean difference (fresh - reference) and the largest |difference|."""
    out = []
    for conf in dict.fromkeys(r["configuration"] for r in rows):
        group = [r for r in rows if r["configuration"] == conf]
        entry: dict[str, Any] = {"configuration": conf, "cells": len(group)}
        for key in _MEASURES:
            diffs = [r[f"{key}_diff"] for r in group if r[f"{key}_diff"] is not None]
            entry[f"{key}_n"] = len(diffs)
            entry[f"{key}_diff_mean"] = sum(diffs) / len(diffs) if diffs else None
            entry[f"{key}_diff_max_abs"] = max(map(abs, diffs)) if diffs else None
        out.append(entry)
    return out


def _within_run(result: dict | None) -> dict[str, float | None]:
    """The run's official gain against its own float base and its memorization contrast at its last probed
    epoch (as golf.report.frame computes them); None where the result cannot give one."""
    out: dict[str, float | None] = {"gain_official": None, "contrast": None}
    if result is None:
        return out
    from golf.report.frame import per_epoch_frame

    try:
        rows = per_epoch_frame([result])
    except (KeyError, TypeError, ValueError):  # a result the report could not read either: the cell still prints
        return out
    if rows.empty:
        return out
    last = rows.sort_values("epoch").iloc[-1]
    contrast = last["gain_adapted"] - last["gain_heldout"] if int(last["epoch"]) > 0 else float("nan")
    for key, value in (("gain_official", last["gain_official"]), ("contrast", contrast)):
        out[key] = float(value) if value == value else None  # NaN: the run cannot say
    return out


def _get(result: dict | None, *keys: str) -> Any:
    node: Any = result
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
