"""Study notebooks under papermill: finding them, checking their parameters, executing one.

Every study notebook takes the same typed parameters, the cell's definition (golf.study.cells):

    preset: str = "tiny"     # model preset
    seed: int = 1337         # seed
    bundle: str = "none"     # override bundle (golf.presets.BUNDLES)
    overrides: dict = {}     # dotted config keys
    out: str = "runs/x"      # run folder

papermill only warns about unknown parameters; golf refuses a notebook that does not take exactly these.
"""

from __future__ import annotations

import ast
import os
import re
import traceback
from pathlib import Path

from golf.errors import GolfError
from golf.progress import STATUS_ENV
from golf.study.spec import NOTEBOOKS_DIR

KERNEL = "python3"
REPORT_NOTEBOOK = "report"
NOTEBOOK_PARAMS = {"preset": "str", "seed": "int", "bundle": "str", "overrides": "dict", "out": "str"}
REPORT_PARAMS = {"name": "str", "root": "str", "reference": "bool"}


def notebook_path(root: Path, notebook: str) -> Path:
    path = root / NOTEBOOKS_DIR / f"{notebook}.ipynb"
    if not path.is_file():
        have = sorted(p.stem for p in (root / NOTEBOOKS_DIR).glob("*.ipynb"))
        raise GolfError(f"notebook {notebook!r} not found in {root / NOTEBOOKS_DIR}; have: {', '.join(have) or 'none'}")
    return path


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The notebook's `parameters` cell as papermill reads it: name -> {type, default (a Python value)}."""
    import papermill

    found = papermill.inspect_notebook(str(path))
    if not found:
        raise GolfError(f"{path}: no cell tagged `parameters`")
    # papermill skips (with a log line) any assignment it cannot parse, e.g. one whose comment holds "=";
    # such a parameter would be silently unsettable, so compare with what Python sees in the cell.
    import nbformat

    cell = next(c for c in nbformat.read(str(path), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = []
    for node in ast.parse(cell.source).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        assigned += [t.id for t in targets if isinstance(t, ast.Name)]
    missed = [name for name in assigned if name not in found]
    if missed:
        raise GolfError(f"{path}: papermill cannot read parameter(s) {', '.join(missed)}; "
                        "write `name: type = literal  # comment` with no '=' in the comment")
    params = {}
    for name, info in found.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as e:
            raise GolfError(f"{path}: parameter {name} default {info['default']!r} is not a literal") from e
        params[name] = {"type": info["inferred_type_name"], "default": default}
    return params


def check_notebook(path: Path, wanted: dict[str, str]) -> None:
    """The notebook's parameters cell declares exactly `wanted` (name -> papermill type name)."""
    found = {name: info["type"] for name, info in notebook_parameters(path).items()}
    if found != wanted:
        want = ", ".join(f"{k}: {v}" for k, v in wanted.items())
        have = ", ".join(f"{k}: {v}" for k, v in found.items()) or "none"
        raise GolfError(f"{path}: a study notebook takes exactly the parameters {want}; it has {have}")


def _check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise GolfError(f"Jupyter kernel {KERNEL!r} not found; install it with "
                        "`python -m ipykernel install --user`") from None


def execute(notebook: Path, output: Path, parameters: dict, cwd: Path, env: dict[str, str] | None = None) -> None:
    """Execute one notebook with papermill (kernel python3, working directory = the project root).

    `env` is added to the kernel's environment (a parallel worker's thread count or GPU); the kernel
    inherits this process's environment, so it is set here for the call and restored after."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    # The kernel's own log (a warning about unencrypted local TCP on every start, an error line when it
    # is shut down mid-interrupt) would interleave with the progress bar; failures of the notebook's code
    # still surface as PapermillExecutionError with the cell's traceback.
    # The kernel inherits the environment: GOLF_PROGRESS_STATUS sends golf's own progress (training steps,
    # evaluation windows) to a status file instead of the executed notebook; run_study shows it.
    extra = {**(env or {}), STATUS_ENV: str(status_file(output))}
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
                                   cwd=str(cwd), progress_bar=False, log_output=False,
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def status_file(executed: Path) -> Path:
    """Where the kernel executing `executed` (the output notebook) writes its latest progress line."""
    return executed.with_name(f".{executed.stem}.status")


def _failure_text(exc: BaseException) -> str:
    import papermill

    if isinstance(exc, papermill.PapermillExecutionError):
        # The kernel-side traceback, ANSI colours stripped, is what the user needs to read.
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(exc.traceback))
        return f"{exc.ename}: {exc.evalue}\n\ncell {exc.exec_count}:\n{tb}\n"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


