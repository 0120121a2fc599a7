"""A cell whose run another study already made: the same config hash, reused instead of run again.

Two studies often hold the same run: `ttt_scale`'s small-preset cells are `ttt_gap_small`'s probe-off and
split-1 cells, configuration for configuration. A cell's result depends on its run config alone (the
notebook only calls `run_cell` and shows the result), and the config hash covers every field, the dataset's
path and vocabulary included, so a finished run with the same hash is the run this cell would make.

Where a source may come from: only the same kind of folder. A `--reference` run reuses other studies'
committed results (`results/*/runs/`), a work run only other work runs (`work/*/runs/`), so a fresh clone
still recomputes every number it compares against the reference. A source made from a dirty tree is never
reused. Reuse, like the cache of a study's own cells, trusts the hash across commits: result.json keeps the
source's `env.git_sha`.

How, without a notebook parameter (which would change every cell id): before executing the cell's notebook
the runner writes `runs/<id>/reuse.json` naming the source; `run_cell` finds it, checks both hashes against
the cell's own config, copies the source's files and writes result.json last with this cell's `run_id` and
`study_params` and `reused_from` (the source folder, relative to the project root). The notebook then shows
that result like any other; a failure leaves no result.json, as a failed run does.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from golf.errors import GolfError
from golf.io import file_lock, write_json

REUSE_FILE = "reuse.json"
_NOT_COPIED = {REUSE_FILE, "result.json", "error.txt", ".lock"}  # result.json is rewritten, last
_GIT_SHA = re.compile(r"[0-9a-f]{40}")


def index_sources(root: Path, kind_dir: Path, exclude: str) -> dict[str, Path]:
    """config hash -> run folder (relative to `root`) of every finished, clean run under `kind_dir`/*/runs/,
    other than study `exclude`'s own. Folders are read in sorted order; the first run of a hash wins."""
    found: dict[str, Path] = {}
    base = root / kind_dir
    if not base.is_dir():
        return found
    for study_dir in sorted(p for p in base.iterdir() if p.is_dir() and p.name != exclude):
        for result_file in sorted((study_dir / "runs").glob("*/result.json")):
            try:
                result = json.loads(result_file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(result, dict) or not isinstance(result.get("config_hash"), str):
                continue
            env = result.get("env") or {}
            if env.get("dirty") is not False or not _GIT_SHA.fullmatch(str(env.get("git_sha"))):
                continue  # a dirty tree's run, or one whose tree is unknown (no git): never propagated
            found.setdefault(result["config_hash"], result_file.parent.relative_to(root))
    return found


def mark(run_dir: Path, source: Path, config_hash: str) -> None:
    """Tell the cell's `run_cell` to install `source` (relative to the project root) instead of running."""
    write_json(run_dir / REUSE_FILE, {"from": str(source), "config_hash": config_hash})


def install(out: Path, config_hash: str, study_params: dict) -> dict | None:
    """If `out` holds a reuse marker: copy its source run into `out` and return the result; else None.

    `config_hash` is the cell's own (its config with the dataset's vocabulary, as run() computes it); the
    marker's and the source result's must equal it. Paths are relative to the working directory, which is
    the project root when the runner executes a notebook."""
    from golf.run import clear_run_folder

    marker_path = out / REUSE_FILE
    if not marker_path.is_file():
        return None
    clear_run_folder(out)  # an earlier run's result must not survive a reuse that fails below
    marker = json.loads(marker_path.read_text())
    source = Path(marker["from"])
    with file_lock(source / ".lock", blocking=False) as free:  # the source is not being re-run meanwhile
        if not free:
            raise GolfError(f"{marker_path}: its source {source} is running now; run this cell again later")
        try:
            result = json.loads((source / "result.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GolfError(f"{marker_path}: its source {source}/result.json cannot be read ({e})") from None
        if not (marker["config_hash"] == result.get("config_hash") == config_hash):
            raise GolfError(f"{marker_path}: the source {source} has config hash {result.get('config_hash')}, "
                            f"this cell {config_hash}: not the same run")
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name not in _NOT_COPIED and not path.name.endswith(".tmp"):
                shutil.copy2(path, out / path.name)
    origin = result.get("reused_from") or str(source)  # a reused source names the run that was made
    result.update(run_id=out.name, study_params=study_params, reused_from=origin)
    write_json(out / "result.json", result)  # atomic and last: the cell is done only now
    marker_path.unlink()
    return result
