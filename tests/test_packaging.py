"""pyproject.toml and environment.yml name the same packages; the console script and `python -m golf` work."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch", "brotli-python": "brotli"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pypi = {_name(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {CONDA_TO_PYPI.get(_name(s), _name(s)) for s in env["dependencies"] if isinstance(s, str)}
    conda -= {"python", "pip"}
    assert conda == pypi
    # in step: the same version bounds on both sides
    bounds = {_name(s): s[len(_name(s)):].split("#")[0].strip() for s in project["dependencies"]
              + project["optional-dependencies"]["dev"]}
    conda_bounds = {CONDA_TO_PYPI.get(_name(s), _name(s)): s[len(_name(s)):].strip()
                    for s in env["dependencies"] if isinstance(s, str) and _name(s) not in ("python", "pip")}
    assert conda_bounds == bounds


def test_dev_install_has_a_jupyter_front_end():
    """The README says "open any notebook in Jupyter": `.[dev]` must bring something that opens them."""
    import importlib.util

    dev = {_name(s) for s in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]}
    assert dev & {"notebook", "jupyterlab"}
    assert importlib.util.find_spec("notebook") is not None  # installed here from that list


def test_entry_points():
    out = subprocess.run(
        [sys.executable, "-m", "golf", "model", "--list"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "baseline" in out.stdout.split()
    bad = subprocess.run(
        [sys.executable, "-m", "golf", "data", "inspect", "/nonexistent/dir"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith(
        "golf: error: dataset /nonexistent/dir"
    )
