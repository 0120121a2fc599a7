"""A study file, `studies/NAME.yaml`: its schema, checked in full before anything runs.

    description: what question the study answers (one line)
    scale: what it is sized for, e.g. "CPU, 2 cores, ~15 min"
    notebook: ttt_epochs                # notebooks/ttt_epochs.ipynb
    preset: tiny                        # the cells' preset (or an axis)
    overrides: {train.max_steps: 800}   # dotted config keys every cell sets
    axes: {ttt.strategy: [a, b]}        # the grid: cartesian product of the axes ...
    seeds: [1337, 42, 7]                # ... times the seeds
    grids: [{notebook, preset, bundle, overrides, axes}, ...]   # instead of axes: a union of grids, each
                                        # over the shared values (e.g. one with ttt.allow_illegal: true)
    data_build: {input: [tests/fixtures/text], vocab_size: 512, val_docs: 4}   # optional
    report: [ttt_curves, gap, slopes]   # golf.report sections, after the summary; false: no report

An axis is `preset`, `bundle` (golf.presets.BUNDLES) or any config key (`golf run -s` takes the same
keys); a key is stated once per grid, either fixed in `overrides` or as an axis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from golf.errors import GolfError

STUDIES_DIR = "studies"
NOTEBOOKS_DIR = "notebooks"
STUDY_KEYS = ("description", "scale", "notebook", "preset", "bundle", "overrides", "axes", "grids", "seeds",
              "data_build", "report")
GRID_KEYS = ("notebook", "preset", "bundle", "overrides", "axes")
CELL_AXES = ("preset", "bundle")  # axes that are cell parameters of their own; every other axis is a config key


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
    preset: str
    bundle: str
    overrides: dict[str, Any]  # dotted config key -> value, fixed for every cell of the grid
    axes: dict[str, list]  # "preset", "bundle" or a dotted config key -> values


@dataclass
class Study:
    name: str
    description: str
    scale: str
    grids: list[Grid]
    seeds: list[int]
    data_build: DataBuild | None = None
    report: list[tuple[str, dict]] = field(default_factory=list)  # golf.report sections; [] = no report


def resolve_root(root: str | Path | None) -> Path:
    root = Path(root) if root is not None else Path.cwd()
    if not (root / STUDIES_DIR).is_dir():
        raise GolfError(f"{root}: no {STUDIES_DIR}/ folder here; run from the project root or pass --project")
    return root.resolve()


def list_studies(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / STUDIES_DIR).glob("*.yaml"))


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise GolfError(f"{where} must be a mapping of names to values")
    return value


def check_keys(d: dict, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise GolfError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")


def _config_key(key: str, where: str) -> None:
    from golf.config import valid_keys

    if key in ("preset", "seed"):
        raise GolfError(f"{where}: {key!r} is the cell's own parameter, not an override"
                        + (" (use `seeds:`)" if key == "seed" else " (set `preset:` or make it an axis)"))
    if key not in valid_keys():
        raise GolfError(f"{where}: {key!r} is not a config key; valid: {', '.join(valid_keys())}")


def _grid(raw: dict, shared: dict, where: str) -> Grid:
    notebook = raw.get("notebook", shared.get("notebook"))
    if not isinstance(notebook, str) or not notebook:
        raise GolfError(f"{where}: needs `notebook` (a name in {NOTEBOOKS_DIR}/, without .ipynb)")
    overrides = {**_mapping(shared.get("overrides"), "overrides"), **_mapping(raw.get("overrides"), f"{where}.overrides")}
    for key in overrides:
        _config_key(key, f"{where}.overrides")
    axes = _mapping(raw.get("axes"), f"{where}.axes")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GolfError(f"{where}.axes.{name} must be a non-empty list of values")
        if name not in CELL_AXES:
            _config_key(name, f"{where}.axes")
        if name in overrides:
            raise GolfError(f"{where}: {name!r} is both a fixed override and an axis; keep one")
        if name in CELL_AXES and name in raw:
            raise GolfError(f"{where}: {name!r} is both fixed and an axis; keep one")
    values = {}
    for name, default in (("preset", "tiny"), ("bundle", "none")):
        value = raw.get(name, shared.get(name, default))
        if not isinstance(value, str) or not value:
            raise GolfError(f"{where}: `{name}` must be a name, got {value!r}")
        values[name] = value
    return Grid(notebook, values["preset"], values["bundle"], overrides, axes)


def load_study(name: str, root: Path) -> Study:
    """Parse and check `studies/NAME.yaml`; unknown keys and malformed values fail with one line."""
    from golf.report.sections import parse_sections

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
    check_keys(raw, STUDY_KEYS, where)
    for key in ("description", "scale"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise GolfError(f"{where}: `{key}` must be a non-empty string")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds):
        raise GolfError(f"{where}: `seeds` must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise GolfError(f"{where}: `seeds` repeats a seed")
    shared = {k: raw[k] for k in ("notebook", "preset", "bundle", "overrides") if k in raw}
    if "grids" in raw:
        if "axes" in raw:
            raise GolfError(f"{where}: use either `axes` or `grids` (each grid has its own axes), not both")
        if not isinstance(raw["grids"], list) or not raw["grids"]:
            raise GolfError(f"{where}: `grids` must be a non-empty list")
        grids = []
        for i, g in enumerate(raw["grids"]):
            if not isinstance(g, dict):
                raise GolfError(f"{where}.grids[{i}] must be a mapping")
            check_keys(g, GRID_KEYS, f"{where}.grids[{i}]")
            grids.append(_grid(g, shared, f"{where}.grids[{i}]"))
    else:
        grids = [_grid({k: raw[k] for k in GRID_KEYS if k in raw}, {}, where)]
    data_build = None
    if raw.get("data_build") is not None:
        spec = _mapping(raw["data_build"], f"{where}.data_build")
        check_keys(spec, tuple(f.name for f in dataclasses.fields(DataBuild)), f"{where}.data_build")
        data_build = DataBuild(**spec)
        if any("data.path" in g.overrides or "data.path" in g.axes for g in grids):
            raise GolfError(f"{where}: `data.path` is set by data_build; drop the override")
    report = parse_sections(raw.get("report"), where)
    return Study(name, raw["description"].strip(), raw["scale"].strip(), grids, list(seeds), data_build, report)
