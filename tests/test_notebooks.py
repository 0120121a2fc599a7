"""The study notebooks: thin and well-formed (fast checks), and all of them executed by the smoke study.

The smoke test runs the shipped `studies/smoke.yaml` end to end with papermill in a temporary project
root (a copy of notebooks/, the study file and the fixture text it builds its dataset from), GOLF_CACHE
and GOLF_DATA in temporary folders: every notebook at its smallest setting, the report notebook, and a
second run that is entirely cached.
"""

import ast
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from golf import study
from golf.study import notebooks as study_notebooks
from golf.study.notebooks import NOTEBOOK_PARAMS, notebook_parameters

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_NOTEBOOKS = [p for p in NOTEBOOKS if p.stem != "report"]


def parameters_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def test_the_seven_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == {"ttt_epochs", "ttt_gap", "ut_iterations", "quant_budget",
                                           "architecture", "ladder", "report"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_with_a_typed_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = parameters_cell(nb)
    assert "parameters" in first.metadata.get("tags", []), "the first code cell is the parameters cell"
    assert 3 <= len(code) <= 6, "a notebook is a few short cells; logic belongs in golf/"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    # Every line: `name: type = literal  # comment` -- typed literals, each explained, nothing derived.
    for line in first.source.splitlines():
        node = ast.parse(line).body[0]
        assert isinstance(node, ast.AnnAssign), line
        ast.literal_eval(node.value)  # a literal, not an expression of other parameters
        assert "  # " in line, f"parameter without a comment: {line}"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # papermill reads every parameter (it skips lines it cannot parse; golf.study refuses that).
    spec = notebook_parameters(path)
    assert len(spec) == len(first.source.splitlines())


@pytest.mark.parametrize("path", CELL_NOTEBOOKS, ids=lambda p: p.stem)
def test_cell_notebook_takes_the_cell_and_passes_it_whole(path):
    """Every cell notebook takes exactly preset, seed, bundle, overrides and out; its defaults are a valid
    cell, and the four cell parameters reach run_cell (and so result.json's study_params) unchanged."""
    spec = notebook_parameters(path)
    assert {name: info["type"] for name, info in spec.items()} == NOTEBOOK_PARAMS
    defaults = {name: info["default"] for name, info in spec.items() if name != "out"}
    cfg = study.cell_config(**defaults)
    assert cfg.seed == defaults["seed"] and cfg.preset == defaults["preset"]
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "study.run_cell(out, preset, seed, bundle, overrides)" in source
    assert "study.cell_config(preset, seed, bundle, overrides)" in source


@pytest.mark.slow
def test_smoke_study_runs_every_notebook(tmp_path, monkeypatch):
    root = tmp_path / "project"
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    (root / "studies").mkdir()
    shutil.copy(REPO / "studies" / "smoke.yaml", root / "studies")
    shutil.copytree(REPO / "tests" / "fixtures" / "text", root / "tests" / "fixtures" / "text")
    monkeypatch.setenv("GOLF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GOLF_DATA", str(tmp_path / "data"))

    assert study.run_study("smoke", root=root) == {"done": 7, "cached": 0, "busy": 0, "failed": 0}

    cells = study.expand(study.load_study("smoke", root))
    assert {c.notebook for c in cells} | {"report"} == {p.stem for p in NOTEBOOKS}
    for cell in cells:
        result = json.loads((root / "work/smoke/runs" / cell.id / "result.json").read_text())
        assert result["study_params"]["seed"] == 1337
        assert result["train"]["steps"] == cell.params["overrides"]["train.max_steps"]
        executed = nbformat.read(root / "work/smoke/papermill" / f"{cell.id}.ipynb", as_version=4)
        assert executed.metadata["papermill"]["exception"] is None
        assert any(o for c in executed.cells for o in c.get("outputs", [])), "the cell shows its result inline"
    by_notebook = {c.notebook: json.loads((root / "work/smoke/runs" / c.id / "result.json").read_text())
                   for c in cells if c.params["overrides"]["train.max_steps"] == 4}  # one cell each
    assert len(by_notebook["ttt_epochs"]["ttt"]["per_epoch"]) == 3  # epochs 0..2
    assert by_notebook["ttt_gap"]["ttt"]["legal"] is False  # prequant_val, measured by the ledger
    assert by_notebook["ut_iterations"]["config"]["model"]["ut_loops"] == 2
    assert by_notebook["quant_budget"]["artifact"]["quant"].startswith("gptq")
    assert by_notebook["architecture"]["config"]["model"]["recur_start"] is None
    assert [p["step"] for p in by_notebook["ladder"]["train"]["curve"]] == [0, 2, 4]  # train.val_every=2
    # the report notebook ran on the complete grid and wrote the study tables
    report = nbformat.read(root / "work/smoke/papermill/report.ipynb", as_version=4)
    assert report.metadata["papermill"]["exception"] is None
    assert (root / "work/smoke/summary.md").is_file() and (root / "work/smoke/summary.csv").is_file()
    # every section the smoke study lists wrote what its one-cell-per-notebook data supports
    figures = {p.stem for p in (root / "work/smoke/figures").glob("*.png")}
    assert {"ttt_curves", "gap_units", "frontier", "learning_curves", "data_scale"} <= figures, figures
    assert (root / "work/smoke/gap.md").is_file()
    assert "2,048 -> 4,096" in (root / "work/smoke/data_scale.md").read_text()  # 2 and 4 steps of 1,024 tokens

    calls = []
    monkeypatch.setattr(study_notebooks, "execute", lambda *a, **k: calls.append(a))
    assert study.run_study("smoke", root=root) == {"done": 0, "cached": 7, "busy": 0, "failed": 0}
    assert calls == []  # nothing executed, not even the report
    assert study.report_study("smoke", root=root)
