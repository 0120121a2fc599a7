"""Running a study: plan (check everything first), run the missing cells (in parallel, locked), report.

Layout under the project root (CONTRACT.md). The committed results are the *reference*: a study run
computes into a work folder of its own and never counts a committed result as done, so a fresh clone really
recomputes every cell; `golf study compare NAME` then puts the two side by side. `--reference` runs (or
reports) in place of the committed results, which is how they are made.

    work/NAME/runs/<id>/                this machine's run of each cell (`out`): result.json, or error.txt
    work/NAME/papermill/<id>.ipynb      its executed notebook (kept when it fails)
    work/NAME/summary.*, figures/       the report of this run (golf.report.write_report)
    results/NAME/...                    the committed reference: runs/<id>/, summary.*, figures/, README.md,
                                        conclusions.yaml (the README's claims, checked by compare)
    papermill_runs/NAME/<id>.ipynb      the reference's executed notebooks

A cell is *done* when its result.json parses and carries the config hash that the cell's parameters
produce today; run() writes result.json atomically and last, so an interrupted run never looks done and a
re-run completes exactly what is missing. A cell runs under a lock (`runs/<id>/.lock`, golf.io.file_lock),
so two `golf study run` processes on one study (two terminals, or the tasks of a Slurm array without
`--shard`) never run a cell twice: the second skips a locked cell and counts it `busy`. Training is
shared through run()'s base-model cache ($GOLF_CACHE, locked per entry): cells that differ only in TTT,
quantization or evaluation train once, and a cell whose very run (config hash) another study of the same
kind of folder already holds installs it instead of running (golf.study.reuse).

`--jobs N` runs N cells at once, each in its own worker process and kernel: with GPUs, worker k sees only
GPU k mod (number of GPUs); on CPUs the cores are split between the workers (OMP_NUM_THREADS). A free worker
takes the next cell whose base model is not being trained (`next_cell`: by a running cell, or by anyone who
holds its cache lock), so a worker does not sit on that lock while cells of a cached base could run; when
every remaining cell needs a base in training, the next one starts and waits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from golf.errors import GolfError
from golf.io import file_lock, write_text
from golf.progress import Progress, watch_status
from golf.study import notebooks as nb
from golf.study import reuse
from golf.study.cells import cell_config
from golf.study.grid import Cell, expand, parse_shard, parse_where, select_cells, shard_cells
from golf.study.spec import DataBuild, Study, load_study, resolve_root

RESULTS_DIR = "results"
EXECUTED_DIR = "papermill_runs"
WORK_DIR = "work"  # this machine's study runs (git-ignored); results/ holds the committed reference
ERROR_FILE = "error.txt"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Place:
    """Where one study's cells and report live, relative to the project root (see the module docstring)."""

    study_dir: Path  # runs/<id>/ and the report: summary.*, figures/
    executed_dir: Path  # the executed notebooks
    reference: bool  # the committed results (results/, papermill_runs/) rather than a work folder

    @property
    def runs(self) -> Path:
        return self.study_dir / "runs"


def place(name: str, reference: bool = False) -> Place:
    if reference:
        return Place(Path(RESULTS_DIR) / name, Path(EXECUTED_DIR) / name, True)
    return Place(Path(WORK_DIR) / name, Path(WORK_DIR) / name / "papermill", False)


# ---------------------------------------------------------------------------------------------------
# Planning: everything checked before anything is built or run
# ---------------------------------------------------------------------------------------------------


def plan(name: str, root: str | Path | None = None) -> tuple[Study, list[Cell]]:
    """Load, expand and check a study without running or building anything.

    Checks that every notebook takes exactly the cell parameters, and builds every cell's run config (so a
    typo, an unknown key or an invalid value fails before the first notebook starts), including the TTT
    strategy's refusal to train on validation tokens without `ttt.allow_illegal`.
    """
    from golf.ttt.strategies import get_strategy

    root = resolve_root(root)
    study = load_study(name, root)
    cells = expand(study)
    for notebook in sorted({c.notebook for c in cells}):
        nb.check_notebook(nb.notebook_path(root, notebook), nb.NOTEBOOK_PARAMS)
    if study.report:
        nb.check_notebook(nb.notebook_path(root, nb.REPORT_NOTEBOOK), nb.REPORT_PARAMS)
    for cell in cells:
        try:
            cfg = cell_config(**cell.params)
            get_strategy(cfg.ttt)  # refuses illegal strategies without allow_illegal, before any work
        except GolfError as e:
            raise GolfError(f"study {name}, cell {cell.id}: {e}") from None
    return study, cells


def build_study_data(spec: DataBuild, root: Path) -> Path:
    """Build (or find) the study's dataset, named by a hash of its text and settings; returns its folder."""
    from golf.data.build import build_dataset, iter_input_files
    from golf.data.store import data_root, load_complete_manifest, writable_root

    files = iter_input_files([root / p for p in spec.input])
    h = hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
    for f in files:  # content, not paths: the same text built anywhere is the same dataset
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    identity = h.hexdigest()[:16]
    out = data_root() / "datasets" / f"{spec.name}_{identity}"
    with file_lock(data_root() / "datasets" / f".{spec.name}_{identity}.lock"):
        if load_complete_manifest(out) is None:
            writable_root(data_root())
            build_dataset([root / p for p in spec.input], spec.vocab_size, out, val_docs=spec.val_docs,
                          name=spec.name, shard_tokens=spec.shard_tokens)
    return out


def _with_data(params: dict, data_path: str | None) -> dict:
    """A cell's parameters with the study-built dataset, if any, as the `data.path` override."""
    if data_path is None:
        return params
    return {**params, "overrides": {**params["overrides"], "data.path": data_path}}


class _Expected:
    """What run() will make of a cell's parameters: the config hash its result.json must carry (cell_config
    + the dataset's vocabulary, as run()) and the key of the base model it trains or loads."""

    def __init__(self):
        self.datasets: dict = {}
        self.bases: dict[str, str] = {}

    def _config(self, params: dict):
        from golf.run import resolve_dataset, with_dataset_vocab

        cfg = cell_config(**params)
        if cfg.data.path not in self.datasets:
            self.datasets[cfg.data.path] = resolve_dataset(cfg)
        ds = self.datasets[cfg.data.path]
        return with_dataset_vocab(cfg, ds.vocab_size), ds

    def hash(self, params: dict) -> str:
        return self._config(params)[0].hash()

    def base(self, cell: Cell, params: dict) -> str:
        from golf.run import base_key

        if cell.id not in self.bases:
            self.bases[cell.id] = base_key(*self._config(params))
        return self.bases[cell.id]


def base_in_training(base: str, claimed: set[str]) -> bool:
    """Whether a base model is being trained: not cached, and claimed by a running cell of ours (started,
    maybe not yet at the lock) or locked by anyone (another `golf study run`, another study)."""
    from golf.run import base_cached, base_lock  # torch is imported only once cells run

    if base_cached(base):
        return False
    if base in claimed:
        return True
    with file_lock(base_lock(base), blocking=False) as free:
        return not free


def next_cell(pending: list[Cell], base_of, waits) -> int:
    """The index in `pending` of the cell to start next: the first whose base model is not being trained
    (`waits(base)`: a cell that needs one would sit on its cache lock, its worker idle, while cells of a
    cached base could run). The first cell when every one would wait."""
    return next((i for i, cell in enumerate(pending) if not waits(base_of(cell))), 0)


def read_result(run_dir: Path) -> dict | None:
    """run_dir/result.json if it is complete JSON (an object), else None.

    run() writes it atomically, so a killed run leaves no result.json at all; the temporary files a killed
    writer may leave (`.result.json.*.tmp`) are never looked at, and a damaged file counts as missing.
    """
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) else None


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------


def worker_env(slot: int, jobs: int) -> dict[str, str]:
    """The environment of parallel worker `slot` of `jobs`: one GPU each where there are GPUs (round robin),
    else an equal share of the CPU cores as torch / OpenMP threads."""
    if jobs <= 1:
        return {}
    gpus = _gpu_count()
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": str(slot % gpus)}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _execute_in_worker(notebook: str, output: str, parameters: dict, cwd: str, env: dict) -> None:
    """A worker process's job: execute one notebook (module-level, so a process pool can pickle it)."""
    nb.execute(Path(notebook), Path(output), parameters, Path(cwd), env)


def run_study(name: str, shard: str | tuple[int, int] | None = None, root: str | Path | None = None,
              reference: bool = False, jobs: int = 1, select: list[str] | None = None) -> dict:
    """Run every missing cell of study NAME (or of one shard, or those `select` picks: ["KEY=VALUE"], see
    golf.study.grid); returns {"done", "cached", "busy", "failed"}. A shard or a selection is part of the
    grid, so neither runs the report notebook.

    Cells run into the work folder `work/NAME/` (or, with `reference`, into the committed `results/NAME/`).
    done: cells executed now that wrote their result (a cell whose run another study of the same kind
    of folder already made, same config hash, installs that run: golf.study.reuse); cached: cells whose
    result already existed *in that folder* with the same config hash; busy: cells another process holds
    the lock of (it is running them); failed: cells whose notebook raised or wrote no result (their executed notebook and `error.txt` are
    kept; the other cells go on), plus the report notebook if it failed (`cell_status` lists which).
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise GolfError(f"--jobs {jobs!r} must be a positive integer")
    root = resolve_root(root)
    shard_ix = parse_shard(shard)
    study, grid = plan(name, root)  # everything checked before anything is built or run
    selection = parse_where(select, study)
    cells = shard_cells(select_cells(grid, selection), shard_ix)
    nb._check_kernel()
    data_path = str(build_study_data(study.data_build, root)) if study.data_build is not None else None
    where = place(name, reference)
    expected = _Expected()
    summary = {"done": 0, "cached": 0, "busy": 0, "failed": 0}
    sources: dict[str, Path] | None = None  # other studies' finished runs by config hash, read when first needed
    marked: set[str] = set()  # cells whose notebook was told to install another study's run
    reused: list[str] = []

    def is_done(cell: Cell) -> bool:  # the dataset is opened (for the hash) only when a result exists
        previous = read_result(root / where.runs / cell.id)
        return previous is not None and previous.get("config_hash") == expected.hash(_with_data(cell.params, data_path))

    def start(cell: Cell) -> tuple[Path, Path, dict]:
        nonlocal sources
        run_rel = where.runs / cell.id  # relative: executed notebooks stay portable
        parameters = {**_with_data(cell.params, data_path), "out": str(run_rel)}
        if sources is None:
            sources = reuse.index_sources(root, where.study_dir.parent, exclude=name)
        run_dir = root / run_rel
        (run_dir / reuse.REUSE_FILE).unlink(missing_ok=True)  # an earlier attempt's marker is stale
        config_hash = expected.hash(_with_data(cell.params, data_path))
        if config_hash in sources:  # the same run exists in another study: its notebook installs it
            reuse.mark(run_dir, sources[config_hash], config_hash)
            marked.add(cell.id)
        return root / where.executed_dir / f"{cell.id}.ipynb", run_dir, parameters

    def finish(cell: Cell, run_dir: Path, exc: BaseException | None) -> None:
        if exc is None and not is_done(cell):
            exc = RuntimeError(f"notebook {cell.notebook} finished without writing {where.runs / cell.id}/"
                               "result.json with the expected config hash")
        if exc is not None:
            if isinstance(exc, KeyboardInterrupt) or getattr(exc, "ename", None) == "KeyboardInterrupt":
                raise KeyboardInterrupt from exc  # Ctrl-C, here or in the kernel: stop the grid
            write_text(run_dir / ERROR_FILE, f"cell {cell.id} (notebook {cell.notebook})\n"
                                             f"executed notebook: {where.executed_dir}/{cell.id}.ipynb\n\n"
                                             + nb._failure_text(exc))
            summary["failed"] += 1
        else:
            (run_dir / ERROR_FILE).unlink(missing_ok=True)  # an earlier failure of this cell is now stale
            summary["done"] += 1
            if cell.id in marked:  # its notebook finished, so the install succeeded
                reused.append(cell.id)

    desc = (f"study {name}" + (f" shard {shard_ix[0]}/{shard_ix[1]}" if shard_ix else "")
            + "".join(f" {k}={'|'.join(map(str, vs))}" for k, vs in selection.items()))
    with Progress(desc, total=len(cells), unit="cell") as bar, ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(jobs)) if jobs > 1 else None
        # cell, run folder, its lock, worker slot, and the base model it trains (None: cached when it started)
        running: dict[Future, tuple[Cell, Path, ExitStack, int, str | None]] = {}
        slots = list(range(jobs))

        def collect(block: bool) -> None:
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED) if block else (
                [f for f in running if f.done()], None)
            for future in finished:
                cell, run_dir, lock, slot, _ = running.pop(future)
                slots.append(slot)
                try:
                    finish(cell, run_dir, future.exception())
                finally:
                    lock.close()
                bar.update(1, **summary, last=cell.id)

        def base_of(cell: Cell) -> str:
            return expected.base(cell, _with_data(cell.params, data_path))

        def waits(base: str) -> bool:
            return base_in_training(base, {claim for *_, claim in running.values() if claim is not None})

        pending = list(cells)
        while pending:
            if pool is not None:  # a free worker first, then the cell that will not wait on a base in training
                while len(running) >= jobs:
                    collect(block=True)
                cell = pending.pop(next_cell(pending, base_of, waits))
            else:
                cell = pending.pop(0)
            if is_done(cell):
                summary["cached"] += 1
                bar.update(1, **summary, last=cell.id)
                continue
            lock = ExitStack()
            if not lock.enter_context(file_lock(root / where.runs / cell.id / LOCK_FILE, blocking=False)):
                lock.close()
                summary["busy"] += 1
                bar.update(1, **summary, last=cell.id)
                continue
            if is_done(cell):  # another process finished it between the first look and the lock
                lock.close()
                summary["cached"] += 1
                bar.update(1, **summary, last=cell.id)
                continue
            output, run_dir, parameters = start(cell)
            if pool is None:
                try:
                    with watch_status(bar, nb.status_file(output)):  # the cell's own steps, beside the count
                        nb.execute(nb.notebook_path(root, cell.notebook), output, parameters, root)
                except Exception as exc:  # noqa: BLE001 (one failing cell must not stop the others)
                    finish(cell, run_dir, exc)
                else:
                    finish(cell, run_dir, None)
                finally:
                    lock.close()
                bar.update(1, **summary, last=cell.id)
                continue
            slot = slots.pop(0)  # free: the loop's head waited for a worker
            from golf.run import base_cached

            base = base_of(cell)
            trains = None if base_cached(base) else base
            future = pool.submit(_execute_in_worker, str(nb.notebook_path(root, cell.notebook)), str(output),
                                 parameters, str(root), worker_env(slot, jobs))
            running[future] = (cell, run_dir, lock, slot, trains)
        while running:
            collect(block=True)

    # The report notebook runs once the whole grid is complete, and only when something changed (or it
    # never ran), so a fully cached re-run executes nothing.
    executed_dir = root / where.executed_dir
    report_nb = executed_dir / f"{nb.REPORT_NOTEBOOK}.ipynb"
    if (study.report and shard_ix is None and not selection and summary["failed"] == 0 and summary["busy"] == 0
            and (summary["done"] or not report_nb.exists())):
        try:
            nb.execute(nb.notebook_path(root, nb.REPORT_NOTEBOOK), report_nb,
                       {"name": name, "root": ".", "reference": reference}, root)
            (executed_dir / f"{nb.REPORT_NOTEBOOK}.{ERROR_FILE}").unlink(missing_ok=True)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 (a broken report is recorded, not raised: the cells are done)
            write_text(executed_dir / f"{nb.REPORT_NOTEBOOK}.{ERROR_FILE}", nb._failure_text(exc))
            summary["failed"] += 1
    _warn_strays(root / where.runs, {c.id for c in grid})
    if reused:
        print(f"golf study: {len(reused)} cell(s) of {name} reused the identical run of another study instead of "
              f"running it again (result.json reused_from; e.g. {reused[0]})", file=sys.stderr)
    return summary


def _warn_strays(runs: Path, ids: set[str]) -> None:
    """Run folders that are no cell of the study (an older grid) are left alone but named: the report reads them."""
    if not runs.is_dir():
        return
    strays = sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in ids and not p.name.startswith(".")
                    and (p / "result.json").is_file())  # a folder without a result (git-ignored leftovers) is not read
    if strays:
        print(f"golf study: {len(strays)} run folder(s) in {runs} are not cells of the current study "
              f"(e.g. {strays[0]}); the report includes them until they are deleted", file=sys.stderr)


def cell_status(name: str, root: Path, where: Place) -> dict[str, list[str]]:
    """The grid's cell ids by state in `where`: done (a readable result.json), failed (error.txt, no result),
    missing (neither: never run, interrupted, or a damaged result)."""
    _, cells = plan(name, root)
    status: dict[str, list[str]] = {"done": [], "failed": [], "missing": []}
    for cell in cells:
        run_dir = root / where.runs / cell.id
        state = ("done" if read_result(run_dir) is not None
                 else "failed" if (run_dir / ERROR_FILE).is_file() else "missing")
        status[state].append(cell.id)
    return status


def _absent_text(status: dict[str, list[str]]) -> str:
    parts = [f"{len(status[k])} {k} ({', '.join(status[k][:3])}{', ...' if len(status[k]) > 3 else ''})"
             for k in ("missing", "failed") if status[k]]
    return " and ".join(parts)


def slice_ids(name: str, root: Path, select: list[str] | None) -> list[str] | None:
    """The cell ids of study NAME that `select` (KEY=VALUE clauses, as --where) picks; None for no selection."""
    if not select:
        return None
    study, cells = plan(name, root)
    return [c.id for c in select_cells(cells, parse_where(select, study))]


def report_study(name: str, root: str | Path | None = None, reference: bool = False,
                 partial: bool = False, select: list[str] | None = None) -> list[Path]:
    """Aggregate the study's runs into the sections its YAML lists (golf.report); returns the paths written.

    Reads `work/NAME/runs` (or, with `reference`, the committed `results/NAME/runs`). A grid with cells
    missing or failed is refused, leaving the previous report and its figures as they are, unless
    `partial`: then the report covers the cells that are there and lists the absent ones (summary.md,
    and a warning on stderr). `select` (["KEY=VALUE"], as for run_study) reports on a slice of the grid
    only: the cells it picks, complete or (with `partial`) not, and no run of any other cell.
    """
    from golf.report import write_report

    root = resolve_root(root)
    where = place(name, reference)
    study_dir = root / where.study_dir
    if not (root / where.runs).is_dir():
        other = place(name, not reference)
        hint = (f"; {other.runs} has runs (pass {'--reference' if other.reference else 'no --reference'})"
                if (root / other.runs).is_dir() else f" (run `golf study run {name}` first)")
        raise GolfError(f"study {name!r} has no runs in {study_dir / 'runs'}{hint}")
    study = load_study(name, root)
    status = cell_status(name, root, where)
    only, slice_text = None, ""
    if select:
        selection = parse_where(select, study)
        only = slice_ids(name, root, select)
        picked = set(only)
        status = {state: [c for c in ids if c in picked] for state, ids in status.items()}
        slice_text = "; ".join(f"{k} in {{{', '.join(map(str, vs))}}}" for k, vs in selection.items())
    absent = status["missing"] + status["failed"]
    if absent and not partial:
        raise GolfError(f"study {name} in {where.study_dir} is incomplete: {_absent_text(status)} of "
                        f"{sum(map(len, status.values()))} cells; the report was left as it was. Run "
                        f"`golf study run {name}` to complete it, or pass --partial to report on what is there")
    if absent:
        print(f"golf study: partial report of {name}: {_absent_text(status)}", file=sys.stderr)
    return write_report(study_dir, study.report or [("summary", {})],
                        absent={"missing": status["missing"], "failed": status["failed"]}, only=only,
                        slice_text=slice_text)
