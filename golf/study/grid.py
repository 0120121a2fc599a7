"""A study's grid: cells (axes product x seeds, per grid), their ids, and shards.

Cell ids are `[<notebook>-]<readable axis values>-s<seed>-<8 hex>` (the notebook named only in studies
that mix notebooks), the hex a hash of the notebook and the cell's four parameters (preset, seed, bundle,
overrides) as the study declares them. `--shard i/N` takes cell k of the id-sorted grid when k mod N = i,
so shards on several machines (or the tasks of a Slurm array) cover the grid exactly once. `--where KEY=VALUE`
runs the cells whose axis KEY (or `seed`) has that value: the cheap slice of a long grid first (e.g.
`--where ttt.epochs=1`), one seed before the others; the cells and their ids are those of the whole grid.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from golf.errors import GolfError
from golf.study.spec import Study


@dataclass
class Cell:
    id: str
    notebook: str
    params: dict  # the cell parameters: preset, seed, bundle, overrides (dotted key -> value)
    axes: dict = field(default_factory=dict)  # the grid's values for this cell (axis name -> value)


def _slug(name: str, value: Any) -> str:
    """Readable id piece, named by the key's last part: strings as they are, numbers with their name,
    booleans as name / no_name."""
    name = name.rsplit(".", 1)[-1]
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
    """`[<notebook>-]<axis values>-s<seed>-<hash8>`; the hash covers the notebook and every cell parameter.

    `named` puts the notebook first, for studies that mix notebooks (smoke). A data_build dataset is not
    part of the id: when its text changes, the config hash (its path names the content) changes, so the
    cell re-runs in its same folder instead of leaving a stale one behind.
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
                params = {"preset": axes.get("preset", grid.preset), "seed": seed,
                          "bundle": axes.get("bundle", grid.bundle),
                          "overrides": {**grid.overrides, **{k: v for k, v in axes.items() if "." in k}}}
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


def parse_where(clauses: list[str] | None, study: Study) -> dict[str, list]:
    """["KEY=VALUE", ...] -> {KEY: [values]}: KEY an axis of one of the study's grids, or `seed`; VALUE read
    as a YAML scalar (1, 0.5, true, prequant_val). A key given twice takes either value."""
    keys = {"seed"} | {k for g in study.grids for k in g.axes}
    where: dict[str, list] = {}
    for clause in clauses or []:
        key, sep, text = str(clause).partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise GolfError(f"--where {clause!r} must look like KEY=VALUE (e.g. ttt.epochs=1, seed=1337)")
        if key not in keys:
            raise GolfError(f"--where {clause!r}: {key} is not an axis of study {study.name} "
                            f"(its axes: {', '.join(sorted(keys))})")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise GolfError(f"--where {clause!r}: {text!r} is not a YAML scalar") from None
        where.setdefault(key, []).append(value)
    return where


_MISSING = object()


def _value(cell: Cell, key: str) -> Any:
    """The cell's value of `key`: seed, preset and bundle are cell parameters, a dotted key an override
    (where expand put each axis value)."""
    return cell.params.get(key, cell.params["overrides"].get(key, _MISSING))


def _same(a: Any, b: Any) -> bool:
    """Equal as YAML values: 1 matches 1 and 1.0, but a boolean only a boolean (true is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def select_cells(cells: list[Cell], where: dict[str, list]) -> list[Cell]:
    """The cells that match every key of `where` (any of its values); a value no cell has is an error."""
    for key, values in where.items():
        present = [_value(c, key) for c in cells]
        for v in values:
            if not any(_same(v, p) for p in present):
                have = {repr(p): p for p in present if p is not _MISSING}
                shown = sorted(have, key=lambda r: (type(have[r]).__name__,
                                                    have[r] if isinstance(have[r], (int, float, str)) else r))
                raise GolfError(f"--where {key}={v!r}: no cell has it (values: {', '.join(shown)})")
    return [c for c in cells if all(any(_same(v, _value(c, k)) for v in vs) for k, vs in where.items())]
