"""golf.study: grids, ids, shards, parameter checks, and run_study's cache / resume / failure handling.

The run_study tests execute the real `quant_budget` notebook with papermill (kernel python3) on the
session's tiny dataset, a few training steps per cell, in a temporary project root with GOLF_CACHE in a
temporary folder. `golf.study.execute` is wrapped (not replaced) to count the notebooks actually executed.
"""

import json
import os
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from golf import study
from golf.errors import GolfError
from golf.study import notebooks as study_notebooks

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def make_root(tmp: Path, notebooks=("quant_budget",)) -> Path:
    root = tmp / "project"
    (root / "studies").mkdir(parents=True)
    (root / "notebooks").mkdir()
    for name in notebooks:
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", root / "notebooks")
    return root


def write_study(root: Path, name: str, **spec) -> None:
    spec = {"description": f"test study {name}", "scale": "test", "seeds": [1], "report": False, **spec}
    (root / "studies" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def mini_spec(data: Path, **parameters) -> dict:
    """Two quant_budget cells sharing one base model (same seed, model and training)."""
    overrides = {"data.path": str(data), "train.max_steps": 2, "data.max_val_tokens": 1024, "quant.method": "int8",
                 "train.batch_tokens": 1024, "train.warmdown_steps": 1, "train.checkpoint": False}
    return {"notebook": "quant_budget", "preset": "tiny", "overrides": {**overrides, **parameters},
            "axes": {"quant.compressor": ["zlib", "brotli"]}}


REAL_EXECUTE = study_notebooks.execute


class Spy:
    """Records the notebooks run_study starts; can stop the grid (like Ctrl-C) at the n-th start."""

    def __init__(self, monkeypatch, interrupt_at: int | None = None):
        self.started: list[str] = []  # every cell run_study was about to execute
        self.calls: list[str] = []  # the ones that were executed for real

        def execute(notebook, output, parameters, cwd, env=None):
            self.started.append(Path(output).stem)
            if len(self.started) == interrupt_at:
                raise KeyboardInterrupt
            self.calls.append(Path(output).stem)
            return REAL_EXECUTE(notebook, output, parameters, cwd, env)

        monkeypatch.setattr(study_notebooks, "execute", execute)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("golf_cache")


@pytest.fixture
def env(monkeypatch, cache_dir, tmp_path):
    monkeypatch.setenv("GOLF_CACHE", str(cache_dir))  # base models shared by this module's tests
    monkeypatch.setenv("GOLF_DATA", str(tmp_path / "data"))  # never the user's ~/.cache/golf


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory, tiny_dataset):
    """Run `mini` with a Ctrl-C before its second cell, then again: the grid completes.

    Returns the root and what each call saw, so several tests can check one (costly) scenario.
    """
    root = make_root(tmp_path_factory.mktemp("resume"))
    write_study(root, "mini", **mini_spec(tiny_dataset))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOLF_CACHE", str(tmp_path_factory.mktemp("resume_cache")))  # its own: first cell trains
        mp.setenv("GOLF_DATA", str(root / "data"))
        first = Spy(mp, interrupt_at=2)
        with pytest.raises(KeyboardInterrupt):
            study.run_study("mini", root=root)
        after_crash = sorted(p.parent.name for p in (root / "work/mini/runs").glob("*/result.json"))
        second = Spy(mp)
        resumed = study.run_study("mini", root=root)
        third = Spy(mp)
        cached = study.run_study("mini", root=root)
    return {"root": root, "first": first.calls, "first_started": first.started, "after_crash": after_crash,
            "second": second.calls,
            "resumed": resumed, "third": third.calls, "cached": cached}


# ---------------------------------------------------------------------------------------------------
# run_study: cache, resume, failures
# ---------------------------------------------------------------------------------------------------


def test_interrupted_grid_resumes_only_the_missing_cell(interrupted_then_resumed):
    s = interrupted_then_resumed
    ids = [c.id for c in study.expand(study.load_study("mini", s["root"]))]
    assert len(ids) == 2
    assert s["first_started"] == ids and s["first"] == [ids[0]]  # Ctrl-C as the second cell starts
    assert s["after_crash"] == [ids[0]]
    assert s["second"] == [ids[1]]  # the re-run executes only the missing one
    assert s["resumed"] == {"done": 1, "cached": 1, "busy": 0, "failed": 0}


def test_second_run_is_all_cached_without_papermill(interrupted_then_resumed):
    s = interrupted_then_resumed
    assert s["cached"] == {"done": 0, "cached": 2, "busy": 0, "failed": 0}
    assert s["third"] == []


def test_cells_write_results_with_study_params_and_executed_notebooks(interrupted_then_resumed):
    root = interrupted_then_resumed["root"]
    for cell in study.expand(study.load_study("mini", root)):
        result = json.loads((root / "work/mini/runs" / cell.id / "result.json").read_text())
        compressor = cell.params["overrides"]["quant.compressor"]
        assert result["study_params"]["overrides"]["quant.compressor"] == compressor
        assert result["artifact"]["compressor"] == compressor
        assert result["artifact"]["quant"].startswith("int8")
        assert set(result["study_params"]) == {"preset", "seed", "bundle", "overrides"}  # `out` is no configuration
        assert result["study_params"]["overrides"]["train.max_steps"] == 2 and result["train"]["steps"] == 2
        executed = nbformat.read(root / "work/mini/papermill" / f"{cell.id}.ipynb", as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert f"work/mini/runs/{cell.id}" in injected[0].source  # out, relative to the root
    # both cells trained once: the second loaded the base model from GOLF_CACHE
    cached = [json.loads(p.read_text())["train"]["cached"] for p in (root / "work/mini/runs").glob("*/result.json")]
    assert sorted(cached) == [False, True]


def test_stray_temp_file_and_damaged_result_are_not_done(interrupted_then_resumed, tmp_path, env, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(interrupted_then_resumed["root"], root)
    ids = [c.id for c in study.expand(study.load_study("mini", root))]
    damaged = root / "work/mini/runs" / ids[1]
    text = (damaged / "result.json").read_text()
    # What a killed writer can leave: the complete text under golf.io's temporary name, and a copy cut short.
    (damaged / ".result.json.k1ll3d.tmp").write_text(text)
    (damaged / "result.json").write_text(text[: len(text) // 2])
    spy = Spy(monkeypatch)
    assert study.run_study("mini", root=root) == {"done": 1, "cached": 1, "busy": 0, "failed": 0}
    assert spy.calls == [ids[1]]
    assert json.loads((damaged / "result.json").read_text())["config_hash"]


def test_changed_config_reruns_the_cell(interrupted_then_resumed, tmp_path, env, monkeypatch):
    """A result whose config hash differs from what the parameters give today is stale, not cached."""
    root = tmp_path / "copy"
    shutil.copytree(interrupted_then_resumed["root"], root)
    ids = [c.id for c in study.expand(study.load_study("mini", root))]
    path = root / "work/mini/runs" / ids[0] / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "config_hash": "0" * 16}))
    spy = Spy(monkeypatch, interrupt_at=1)  # stop instead of re-running: what would run is the point
    with pytest.raises(KeyboardInterrupt):
        study.run_study("mini", root=root)
    assert spy.started == [ids[0]]


def _set_env(study_dir: Path, **env) -> None:
    """Say which tree the runs under `study_dir` came from (a test tree's own git state is whatever it is)."""
    for path in (study_dir / "runs").glob("*/result.json"):
        result = json.loads(path.read_text())
        result["env"] = {**result["env"], "git_sha": "0123456789abcdef0123456789abcdef01234567", **env}
        path.write_text(json.dumps(result))


def test_a_cell_another_study_already_ran_installs_that_run(interrupted_then_resumed, tiny_dataset, tmp_path, env,
                                                            monkeypatch):
    """`other` holds mini's zlib run under another id and other study parameters (it also states ttt.probe's
    default, so the config hash is the same): that cell installs mini's run, the files and numbers exactly,
    under its own run_id and study_params; its lzma cell runs. A dirty source, one of unknown origin, or one
    in the other kind of folder (results/ for a work run) is never reused."""
    root = tmp_path / "copy"
    shutil.copytree(interrupted_then_resumed["root"], root)
    _set_env(root / "work/mini", dirty=False)
    spec = mini_spec(tiny_dataset, **{"ttt.probe": True})  # the default, stated: same run, other parameters
    write_study(root, "other", **{**spec, "axes": {"quant.compressor": ["zlib", "lzma"]}})
    mini = {c.params["overrides"]["quant.compressor"]: c.id for c in study.expand(study.load_study("mini", root))}
    other = {c.params["overrides"]["quant.compressor"]: c.id for c in study.expand(study.load_study("other", root))}
    assert other["zlib"] != mini["zlib"]
    (root / "work/other/runs" / other["zlib"]).mkdir(parents=True)
    (root / "work/other/runs" / other["zlib"] / "failure.json").write_text("{}")  # an earlier attempt's
    spy = Spy(monkeypatch)
    assert study.run_study("other", root=root) == {"done": 2, "cached": 0, "busy": 0, "failed": 0}
    assert sorted(spy.calls) == sorted(other.values())  # both notebooks execute; one installs, one runs
    source = root / "work/mini/runs" / mini["zlib"]
    made = root / "work/other/runs" / other["zlib"]
    src, got = (json.loads((d / "result.json").read_text()) for d in (source, made))
    assert got["reused_from"] == f"work/mini/runs/{mini['zlib']}" and got["run_id"] == other["zlib"]
    assert got["study_params"]["overrides"] == spec["overrides"] | {"quant.compressor": "zlib"}
    assert src["study_params"]["overrides"] != got["study_params"]["overrides"]
    assert got["config_hash"] == src["config_hash"] and got["eval"] == src["eval"] and got["env"] == src["env"]
    assert (made / "metrics.jsonl").read_bytes() == (source / "metrics.jsonl").read_bytes()
    assert not (made / "reuse.json").exists() and not (made / "failure.json").exists()
    lzma = json.loads((root / "work/other/runs" / other["lzma"] / "result.json").read_text())
    assert "reused_from" not in lzma and lzma["artifact"]["compressor"] == "lzma"
    assert study.run_study("other", root=root) == {"done": 0, "cached": 2, "busy": 0, "failed": 0}

    # A work run never reuses the committed results: mini's clean runs moved to results/ are not its sources.
    committed = tmp_path / "committed"
    shutil.copytree(interrupted_then_resumed["root"], committed)
    _set_env(committed / "work/mini", dirty=False)
    (committed / "results").mkdir()
    shutil.move(committed / "work/mini", committed / "results/mini")
    write_study(committed, "other", **{**spec, "axes": {"quant.compressor": ["zlib"]}})
    assert study.run_study("other", root=committed) == {"done": 1, "cached": 0, "busy": 0, "failed": 0}
    assert "reused_from" not in json.loads((committed / "work/other/runs" / other["zlib"] / "result.json").read_text())
    # Dirty or unknown trees are not sources (the runner asks index_sources for the same kind of folder).
    assert len(study.reuse.index_sources(root, Path("work"), exclude="other")) == 2
    _set_env(root / "work/mini", dirty=True)
    assert not study.reuse.index_sources(root, Path("work"), exclude="other")
    _set_env(root / "work/mini", dirty=False, git_sha="unknown")  # what git_state() says without git
    assert not study.reuse.index_sources(root, Path("work"), exclude="other")


def test_failing_cell_keeps_notebook_and_error_and_others_go_on(tmp_path, tiny_dataset, env, monkeypatch):
    root = make_root(tmp_path)
    # The quant_budget notebook with one more cell that fails for seed 0 (its cell sorts first).
    nb = nbformat.read(NOTEBOOKS / "quant_budget.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell('if seed == 0:\n    raise RuntimeError("planned failure")'))
    nbformat.write(nb, root / "notebooks" / "flaky.ipynb")
    spec = mini_spec(tiny_dataset)
    write_study(root, "flaky", **{**spec, "notebook": "flaky", "axes": {"quant.compressor": ["zlib"]}, "seeds": [0, 1]})
    spy = Spy(monkeypatch)
    summary = study.run_study("flaky", root=root)
    assert summary == {"done": 1, "cached": 0, "busy": 0, "failed": 1}
    bad, good = [c.id for c in study.expand(study.load_study("flaky", root))]
    assert spy.calls == [bad, good]  # the failure came first and the grid went on
    error = (root / "work/flaky/runs" / bad / "error.txt").read_text()
    assert "RuntimeError: planned failure" in error and f"work/flaky/papermill/{bad}.ipynb" in error
    assert (root / "work/flaky/papermill" / f"{bad}.ipynb").is_file()
    assert not (root / "work/flaky/runs" / bad / "result.json").exists()
    assert (root / "work/flaky/runs" / good / "result.json").is_file()
    assert not (root / "work/flaky/runs" / good / "error.txt").exists()


def test_shards_run_disjoint_parts(interrupted_then_resumed, env, monkeypatch):
    root = interrupted_then_resumed["root"]
    spy = Spy(monkeypatch)
    totals = [study.run_study("mini", shard=f"{i}/3", root=root) for i in range(3)]
    assert sum(t["cached"] for t in totals) == 2 and not any(t["done"] or t["failed"] for t in totals)
    assert spy.calls == []


def test_where_runs_only_the_selected_cells(interrupted_then_resumed, env, monkeypatch):
    root = interrupted_then_resumed["root"]
    spy = Spy(monkeypatch)
    assert study.run_study("mini", root=root, select=["quant.compressor=zlib"]) == {
        "done": 0, "cached": 1, "busy": 0, "failed": 0}
    with pytest.raises(GolfError, match=r"quant.compressor='lzma': no cell has it \(values: 'brotli', 'zlib'\)"):
        study.run_study("mini", root=root, select=["quant.compressor=lzma"])
    assert spy.calls == []


def as_committed(src: Path, dest: Path) -> Path:
    """A copy of a project whose work/mini run has become the committed reference results/mini (what a
    fresh clone holds: committed runs, no work folder)."""
    shutil.copytree(src, dest)
    (dest / "results").mkdir()
    shutil.move(dest / "work/mini/papermill", dest / "papermill_runs_mini")
    shutil.move(dest / "work/mini", dest / "results/mini")
    (dest / "papermill_runs").mkdir()
    shutil.move(dest / "papermill_runs_mini", dest / "papermill_runs/mini")
    shutil.rmtree(dest / "work")
    return dest


CONCLUSIONS = [
    {"claim": "brotli is smaller than zlib", "value": "summary[compressor=brotli].bytes_total_mean",
     "op": "<", "than": "summary[compressor=zlib].bytes_total_mean"},
    {"claim": "int8 costs almost nothing", "value": "summary[compressor=zlib].val_bpb_postquant_mean",
     "op": "~", "than": "summary[compressor=zlib].val_bpb_prequant_mean", "tol": 0.05},
    {"claim": "an untrained model scores below 1 bpb", "value": "summary[compressor=zlib].val_bpb_mean",
     "op": "<", "than": 1},
]


def test_committed_results_are_the_reference_not_a_cache(interrupted_then_resumed, tmp_path, env, monkeypatch):
    """A fresh clone recomputes every cell into work/ (none cached from results/), and compare puts the
    fresh numbers beside the committed ones and checks the conclusions on both."""
    root = as_committed(interrupted_then_resumed["root"], tmp_path / "clone")
    (root / "results/mini/conclusions.yaml").write_text(yaml.safe_dump(CONCLUSIONS, sort_keys=False))
    ids = [c.id for c in study.expand(study.load_study("mini", root))]
    spy = Spy(monkeypatch)
    assert study.run_study("mini", root=root) == {"done": 2, "cached": 0, "busy": 0, "failed": 0}
    assert spy.calls == ids
    assert sorted(p.parent.name for p in (root / "work/mini/runs").glob("*/result.json")) == ids
    # the reference is left as it was, and --reference sees it as complete (all cached, nothing run)
    assert study.run_study("mini", root=root, reference=True) == {"done": 0, "cached": 2, "busy": 0, "failed": 0}
    assert spy.calls == ids

    out = study.compare_study("mini", root=root)
    assert [r["cell"] for r in out["cells"]] == ids
    for row in out["cells"]:  # same machine, same code: the runs are bit-identical
        ref = json.loads((root / "results/mini/runs" / row["cell"] / "result.json").read_text())
        assert row["val_bpb_reference"] == ref["eval"]["val_bpb"] and row["val_bpb_diff"] == 0.0
        # within a run: quantization's cost against the run's own float base; no probe, no contrast
        assert row["gain_official_reference"] == pytest.approx(ref["eval"]["val_bpb"] - ref["eval"]["val_bpb_base"])
        assert row["gain_official_diff"] == 0.0 and row["contrast_fresh"] is row["contrast_diff"] is None
        assert row["weights_sha256_fresh"] == row["weights_sha256_reference"] == ref["train"]["weights_sha256"]
        assert row["configuration"] == f"quant.compressor={ref['artifact']['compressor']}"
    assert [(c["configuration"], c["cells"], c["val_bpb_diff_max_abs"], c["contrast_n"])
            for c in out["by_configuration"]] == [(r["configuration"], 1, 0.0, 0) for r in out["cells"]]
    verdicts = [(c["reference"]["holds"], c["fresh"]["holds"]) for c in out["conclusions"]]
    assert verdicts == [(True, True), (True, True), (False, False)]

    # a fresh run that breaks a conclusion: compare says so and `golf study compare` exits 1
    from golf.cli import main

    fresh = root / "work/mini/runs" / ids[0] / "result.json"  # ids[0] is the brotli cell
    result = json.loads(fresh.read_text())
    assert result["artifact"]["compressor"] == "brotli"
    result["artifact"]["bytes_total"] *= 10
    result["eval"]["val_bpb"] += 0.01  # a base retrained elsewhere, 0.004 worse, and TTT 0.006 less useful
    result["eval"]["val_bpb_base"] += 0.004
    fresh.write_text(json.dumps(result))
    row = study.compare_study("mini", root=root)["cells"][0]
    assert row["val_bpb_diff"] == pytest.approx(0.01) and row["gain_official_diff"] == pytest.approx(0.006)
    assert study.compare_study("mini", root=root)["conclusions"][0]["fresh"]["holds"] is False
    assert main(["study", "compare", "mini", "--project", str(root)]) == 1
    # a complete fresh run on which a claim finds no row (the brotli cell's compressor recorded as another):
    # n/a there is a failure, not an excuse
    result["artifact"]["bytes_total"] //= 10
    result["artifact"]["compressor"] = "lzma"
    fresh.write_text(json.dumps(result))
    out = study.compare_study("mini", root=root)
    assert out["conclusions"][0]["fresh"]["holds"] is None and all(r["fresh_result"] for r in out["cells"])
    assert main(["study", "compare", "mini", "--project", str(root)]) == 1
    # a slice of the grid (the brotli cell not run): its claim cannot be checked (n/a), which is not a failure
    shutil.rmtree(fresh.parent)
    out = study.compare_study("mini", root=root)
    assert out["conclusions"][0]["fresh"]["holds"] is None and out["conclusions"][0]["reference"]["holds"]
    assert main(["study", "compare", "mini", "--project", str(root)]) == 0


def test_conclusions_about_a_slice_are_checked_on_its_runs_only(interrupted_then_resumed, tmp_path, env):
    """conclusions.yaml as {where, claims}: the claims are checked on the slice's runs (a claim about a cell
    outside it finds no row, on either side), and a fresh run that has the whole slice but not the rest of
    the grid is complete for them: an n/a there fails `golf study compare`."""
    from golf.cli import main

    root = as_committed(interrupted_then_resumed["root"], tmp_path / "clone")
    cells = {c.axes["quant.compressor"]: c.id for c in study.expand(study.load_study("mini", root))}
    (root / "work/mini/runs").mkdir(parents=True)
    shutil.copytree(root / "results/mini/runs" / cells["zlib"], root / "work/mini/runs" / cells["zlib"])
    path = root / "results/mini/conclusions.yaml"
    path.write_text(yaml.safe_dump({"where": ["quant.compressor=zlib"], "claims": CONCLUSIONS[1:2]}, sort_keys=False))
    assert study.conclusions_slice(path) == ["quant.compressor=zlib"]
    assert study.slice_ids("mini", root, ["quant.compressor=zlib"]) == [cells["zlib"]]
    out = study.compare_study("mini", root=root)
    assert out["fresh_complete"] and [c["fresh"]["holds"] for c in out["conclusions"]] == [True]
    assert main(["study", "compare", "mini", "--project", str(root)]) == 0
    # a claim about the brotli cell, outside the slice: no row on either side, though both runs exist
    path.write_text(yaml.safe_dump({"where": ["quant.compressor=zlib"], "claims": CONCLUSIONS[:1]}, sort_keys=False))
    verdict = study.compare_study("mini", root=root)["conclusions"][0]
    assert verdict["reference"]["holds"] is None and verdict["fresh"]["holds"] is None
    path.write_text(yaml.safe_dump({"where": "quant.compressor=zlib", "claims": CONCLUSIONS}))
    with pytest.raises(GolfError, match="`where` must be a non-empty list"):
        study.conclusions_slice(path)


def test_compare_reads_a_committed_ttt_runs_contrast_at_its_last_epoch():
    """On a real committed run: the contrast is (A at E - A at 0) - (B at E - B at 0) from ttt.per_epoch,
    the official gain val_bpb - val_bpb_base, as the report's frame computes them."""
    from golf.study.compare import _within_run

    runs = sorted((REPO / "results/ttt_epochs_small/runs").glob("prequant_val-epochs2-*/result.json"))
    assert runs, "the committed E = 2 runs of ttt_epochs_small"
    result = json.loads(runs[0].read_text())
    by_epoch = {e["epoch"]: e for e in result["ttt"]["per_epoch"]}
    a = by_epoch[2]["val_bpb_adapted"] - by_epoch[0]["val_bpb_adapted"]
    b = by_epoch[2]["val_bpb_heldout"] - by_epoch[0]["val_bpb_heldout"]
    measured = _within_run(result)
    assert measured["contrast"] == pytest.approx(a - b) and measured["contrast"] < 0  # it memorizes
    assert measured["gain_official"] == pytest.approx(result["eval"]["val_bpb"] - result["eval"]["val_bpb_base"])
    assert _within_run(None) == {"gain_official": None, "contrast": None}
    # only the epoch-0 probe point: no contrast (nothing adapted); the real protocol (no probe): no contrast,
    # the official gain still; a result the report cannot read: nothing, and no crash
    zero = {**result, "ttt": {**result["ttt"], "per_epoch": result["ttt"]["per_epoch"][:1]}}
    assert _within_run(zero)["contrast"] is None
    off = {**result, "ttt": {**result["ttt"], "per_epoch": []}}
    assert _within_run(off) == {"gain_official": measured["gain_official"], "contrast": None}
    assert _within_run({}) == {"gain_official": None, "contrast": None}


def test_incomplete_study_report_is_refused_unless_partial(interrupted_then_resumed, tmp_path, env, capsys):
    root = tmp_path / "copy"
    shutil.copytree(interrupted_then_resumed["root"], root)
    ids = [c.id for c in study.expand(study.load_study("mini", root))]
    spec = yaml.safe_load((root / "studies/mini.yaml").read_text())
    (root / "studies/mini.yaml").write_text(yaml.safe_dump({**spec, "report": ["frontier"]}))
    shutil.copy(NOTEBOOKS / "report.ipynb", root / "notebooks")  # a study with a report has its notebook
    study.report_study("mini", root=root)  # complete: writes tables and figures
    figures = sorted((root / "work/mini/figures").iterdir())
    summary = (root / "work/mini/summary.md").read_text()
    assert figures and "partial" not in summary
    (root / "work/mini/runs" / ids[1] / "result.json").unlink()  # an interrupted second cell
    with pytest.raises(GolfError, match=rf"incomplete: 1 missing \({ids[1]}\) of 2 cells.*--partial"):
        study.report_study("mini", root=root)
    assert sorted((root / "work/mini/figures").iterdir()) == figures  # nothing deleted or rewritten
    assert (root / "work/mini/summary.md").read_text() == summary
    (root / "work/mini/runs" / ids[1] / "error.txt").write_text("failed\n")  # now it failed instead
    study.report_study("mini", root=root, partial=True)
    text = (root / "work/mini/summary.md").read_text()
    assert "1 runs read" in text and "partial report" in text and f"- `{ids[1]}`" in text and "1 failed" in text
    assert "partial report of mini: 1 failed" in capsys.readouterr().err


def test_report_of_a_slice_reads_only_its_cells(interrupted_then_resumed, tmp_path, env):
    """`golf study report --where`: a slice whose cells are all there reports without --partial while the
    grid is incomplete, no run of another cell enters a table, and summary.md names the slice. A slice with
    a missing cell is refused as a grid would be; a value no cell has is an error."""
    from golf.cli import main

    root = tmp_path / "copy"
    shutil.copytree(interrupted_then_resumed["root"], root)
    cells = study.expand(study.load_study("mini", root))
    by_compressor = {c.axes["quant.compressor"]: c.id for c in cells}
    (root / "work/mini/runs" / by_compressor["brotli"] / "result.json").unlink()  # the grid is incomplete
    with pytest.raises(GolfError, match="incomplete"):
        study.report_study("mini", root=root)
    assert main(["study", "report", "mini", "--project", str(root), "--where", "quant.compressor=zlib"]) == 0
    summary = pd.read_csv(root / "work/mini/summary.csv")
    assert summary["compressor"].tolist() == ["zlib"]
    text = (root / "work/mini/summary.md").read_text()
    assert "A slice of the grid" in text and "quant.compressor in {zlib}" in text and "partial report" not in text
    # the other cell's run is there again but outside the slice: it is still not read
    shutil.copy(interrupted_then_resumed["root"] / "work/mini/runs" / by_compressor["brotli"] / "result.json",
                root / "work/mini/runs" / by_compressor["brotli"] / "result.json")
    study.report_study("mini", root=root, select=["quant.compressor=zlib"])
    assert pd.read_csv(root / "work/mini/summary.csv")["compressor"].tolist() == ["zlib"]
    (root / "work/mini/runs" / by_compressor["zlib"] / "result.json").unlink()
    with pytest.raises(GolfError, match=rf"incomplete: 1 missing \({by_compressor['zlib']}\) of 1 cells"):
        study.report_study("mini", root=root, select=["quant.compressor=zlib"])
    with pytest.raises(GolfError, match="no cell has it"):
        study.report_study("mini", root=root, select=["quant.compressor=lzma"])


# ---------------------------------------------------------------------------------------------------
# Validation: nothing runs when the study is wrong
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"overrides": {"train.max_stepz": 3}}, r"'train.max_stepz' is not a config key; valid: seed, preset"),
    ({"overrides": {"train.max_steps": "3"}}, "train.max_steps must be int, got '3'"),
    ({"overrides": {"quant.bits": True}}, "quant.bits must be int or NoneType, got True"),
    ({"axes": {"quant.compressor": ["zlib", "rar"]}}, "quant.compressor"),
    ({"overrides": {"quant.method": "int3"}}, "quant.method='int3' is unknown"),
    ({"overrides": {"seed": 3}}, "'seed' is the cell's own parameter.*seeds:"),
    ({"overrides": {"preset": "tiny"}}, "'preset' is the cell's own parameter"),
    ({"axes": {"train.max_steps": [2]}}, "'train.max_steps' is both a fixed override and an axis"),
    ({"bundle": "no_xsa"}, "bundle 'no_xsa' changes nothing in preset 'tiny'"),
    ({"report": ["summary", "ut_curve"]}, "unknown report section 'ut_curve'"),
    ({"shuffle": True}, r"unknown key\(s\) shuffle; valid: description"),
    ({"seeds": []}, "seeds"),
    ({"notebook": "nope"}, "notebook 'nope' not found"),
])
def test_bad_study_fails_before_anything_runs(tmp_path, tiny_dataset, env, monkeypatch, change, message):
    root = make_root(tmp_path)
    spec = mini_spec(tiny_dataset)
    for key, value in change.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    write_study(root, "bad", **spec)
    spy = Spy(monkeypatch)
    with pytest.raises(GolfError, match=message):
        study.run_study("bad", root=root)
    assert spy.calls == []
    assert not (root / "work").exists()
    assert not (root / "results").exists() and not (root / "papermill_runs").exists()


def test_illegal_strategy_needs_allow_illegal(tmp_path, tiny_dataset, env, monkeypatch):
    root = make_root(tmp_path, notebooks=("ttt_epochs",))
    write_study(root, "ttt", notebook="ttt_epochs", overrides={"data.path": str(tiny_dataset)},
                axes={"ttt.strategy": ["score_first", "prequant_val"]})
    spy = Spy(monkeypatch)
    with pytest.raises(GolfError, match="prequant_val.*allow_illegal=true"):
        study.run_study("ttt", root=root)
    assert spy.calls == []


def test_unknown_study_lists_the_studies(tmp_path):
    root = make_root(tmp_path)
    write_study(root, "alpha", notebook="quant_budget")
    write_study(root, "beta", notebook="quant_budget")
    with pytest.raises(GolfError, match="unknown study 'gamma'; studies in .*: alpha, beta"):
        study.run_study("gamma", root=root)
    with pytest.raises(GolfError, match="no studies/ folder"):
        study.run_study("alpha", root=tmp_path / "empty")
    with pytest.raises(GolfError, match="no runs in"):
        study.report_study("alpha", root=root)


def test_papermill_unreadable_parameter_is_refused(tmp_path):
    """papermill silently drops a parameter line it cannot parse ('=' in the comment); we refuse it."""
    root = make_root(tmp_path)
    nb = nbformat.read(root / "notebooks/quant_budget.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += '\nextra: int = 3  # 0 = off'
    nbformat.write(nb, root / "notebooks/quant_budget.ipynb")
    with pytest.raises(GolfError, match="cannot read parameter.*extra"):
        study_notebooks.notebook_parameters(root / "notebooks/quant_budget.ipynb")


# ---------------------------------------------------------------------------------------------------
# Grids, ids and shards
# ---------------------------------------------------------------------------------------------------


def test_grid_ids_are_stable_readable_and_unique(tmp_path):
    root = make_root(tmp_path)
    write_study(root, "g", notebook="quant_budget", seeds=[1, 2],
                axes={"quant.method": ["gptq_lite", "gptq"], "quant.bits": [4, 6], "quant.compressor": ["zlib"]})
    cells = study.expand(study.load_study("g", root))
    assert len(cells) == 2 * 2 * 1 * 2 and len({c.id for c in cells}) == 8
    assert [c.id for c in cells] == sorted(c.id for c in cells)
    one = next(c for c in cells if c.params == {"preset": "tiny", "seed": 2, "bundle": "none", "overrides": {
        "quant.method": "gptq", "quant.bits": 4, "quant.compressor": "zlib"}})
    assert one.id.startswith("gptq-bits4-zlib-s2-")
    again = study.expand(study.load_study("g", root))
    assert [c.id for c in again] == [c.id for c in cells]
    write_study(root, "dup", notebook="quant_budget", axes={"quant.bits": [4, 4]})
    with pytest.raises(GolfError, match="same parameters"):
        study.expand(study.load_study("dup", root))


def test_shards_partition_the_grid_exactly_once():
    cells = study.expand(study.load_study("ttt_gap_small", REPO))
    for n in range(1, 6):
        parts = [study.shard_cells(cells, study.parse_shard(f"{i}/{n}")) for i in range(n)]
        ids = [c.id for part in parts for c in part]
        assert sorted(ids) == sorted(c.id for c in cells) and len(ids) == len(set(ids))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    for bad in ("1", "2/2", "-1/3", "a/b", "0/0"):
        with pytest.raises(GolfError, match="shard"):
            study.parse_shard(bad)


def test_where_selects_a_slice_of_the_real_grid():
    spec = study.load_study("ttt_epochs_small", REPO)
    cells = study.expand(spec)
    assert len(cells) == 288

    def pick(*clauses):
        return study.select_cells(cells, study.parse_where(list(clauses), spec))

    one = pick("ttt.epochs=1")
    assert len(one) == 72 and {c.axes["ttt.epochs"] for c in one} == {1}
    assert {c.id for c in pick("ttt.epochs=1", "ttt.epochs=2")} == {c.id for c in cells if c.axes["ttt.epochs"] in (1, 2)}
    both = pick("seed=1337", "ttt.strategy=score_first")
    assert len(both) == 24 and all(c.params["seed"] == 1337 and c.axes["ttt.strategy"] == "score_first" for c in both)
    assert len(pick("ttt.probe_swap=true")) == 144
    by_epochs = [c.id for e in (1, 2, 4, 8) for c in pick(f"ttt.epochs={e}")]
    assert sorted(by_epochs) == [c.id for c in cells]  # the slices of one axis cover the grid once
    assert pick() == cells
    for bad, message in [("ttt.probe_swap=1", "no cell has it"), ("ttt.epochs=3", r"values: 1, 2, 4, 8"),
                         ("ttt.lr=0.1", "not an axis of study ttt_epochs_small"), ("ttt.epochs", "KEY=VALUE"),
                         ("=1", "KEY=VALUE"), ("ttt.epochs=[1", "not a YAML scalar")]:
        with pytest.raises(GolfError, match=message):
            pick(bad)


def test_every_shipped_study_plans():
    """Each studies/*.yaml loads, matches its notebooks' parameters, and builds every cell's config."""
    names = study.list_studies(REPO)
    shipped = {"ttt_headline", "ttt_gap_small", "ttt_epochs_small", "ttt_scale", "ladder", "smoke",
               "ut_iterations", "quant_budget", "architecture"}
    assert shipped <= set(names)
    for name in names:
        _, cells = study.plan(name, REPO)
        assert cells, name
    _, cells = study.plan("ttt_epochs_small", REPO)  # 4 strategies x E 1, 2, 4, 8 x 3 splits x swap x 3 seeds
    assert len(cells) == 288 and {c.params["seed"] for c in cells} == {1337, 42, 7}
    assert {c.params["overrides"]["ttt.strategy"] for c in cells} == {"prequant_val", "lora_single_pass",
                                                                      "train_slice", "score_first"}
    assert {c.params["overrides"]["ttt.epochs"] for c in cells} == {1, 2, 4, 8}
    smoke_notebooks = {c.notebook for c in study.plan("smoke", REPO)[1]} | {"report"}
    assert smoke_notebooks == {p.stem for p in NOTEBOOKS.glob("*.ipynb")}  # smoke runs every notebook


# ---------------------------------------------------------------------------------------------------
# Parameters -> config
# ---------------------------------------------------------------------------------------------------


def test_cell_config_is_preset_seed_bundle_overrides():
    cfg = study.cell_config("tiny", 7, "none", {"ttt.strategy": "score_first", "ttt.epochs": 4, "ttt.lr": 0.01,
                                                "train.max_steps": 9, "data.max_val_tokens": 512,
                                                "data.path": "/some/dataset", "train.batch_tokens": 2048})
    assert (cfg.seed, cfg.ttt.strategy, cfg.ttt.epochs, cfg.ttt.lr) == (7, "score_first", 4, 0.01)
    assert (cfg.train.max_steps, cfg.data.max_val_tokens, cfg.data.path) == (9, 512, "/some/dataset")
    assert cfg.train.batch_tokens == 2048
    # The very config `golf run --preset tiny -s ...` builds from the same keys: no translation in between.
    from golf.config import build_config, parse_overrides

    same = build_config(preset="tiny", overrides=parse_overrides(["seed=7", "ttt.strategy=score_first",
        "ttt.epochs=4", "ttt.lr=0.01", "train.max_steps=9", "data.max_val_tokens=512", "data.path=/some/dataset",
        "train.batch_tokens=2048"]))
    assert same.hash() == cfg.hash()
    assert study.cell_config("tiny1554", 1, "none", {"model.ut_curriculum_frac": 0.0}).model.ut_curriculum_frac == 0.0
    assert study.cell_config("tiny1554").model.ut_curriculum_frac == 0.5
    q = study.cell_config(overrides={"quant.method": "sdclip", "quant.bits": 4, "quant.compressor": "lzma"}).quant
    assert (q.method, q.bits, q.compressor) == ("sdclip", 4, "lzma")
    with pytest.raises(GolfError, match="unknown config key 'ttt.stratgy'"):
        study.cell_config(overrides={"ttt.stratgy": "none"})
    with pytest.raises(GolfError, match="bundle 'no_xs' is unknown; valid: none, no_xsa"):
        study.cell_config(bundle="no_xs")
    with pytest.raises(GolfError, match="overrides set seed"):
        study.cell_config(overrides={"seed": 3})


@pytest.mark.parametrize("preset", ["tiny1550", "tiny1127"])
def test_each_bundle_switches_exactly_its_keys_off(preset):
    from golf.presets import BUNDLES

    full = study.cell_config(preset, overrides={"train.ema_decay": 0.95})
    flat_full = _flat(full.to_dict())
    applicable = 0
    for name, keys in BUNDLES.items():
        if name == "none":
            continue
        try:
            cut = study.cell_config(preset, bundle=name, overrides={"train.ema_decay": 0.95})
        except GolfError as e:  # only for a switch the stack does not have
            assert "changes nothing" in str(e)
            assert all(flat_full[k] == v for k, v in keys.items())
            continue
        applicable += 1
        changed = {k for k, v in _flat(cut.to_dict()).items() if flat_full[k] != v}
        assert changed and changed <= set(keys), (name, changed)
        assert all(_flat(cut.to_dict())[k] == v for k, v in keys.items())
    assert applicable >= 7  # most of the seed stack's switches are on in each tiny twin


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "mixed":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_read_result_rejects_partial_files(tmp_path):
    assert study.read_result(tmp_path) is None
    (tmp_path / "result.json").write_text('{"config_hash": "ab')
    assert study.read_result(tmp_path) is None
    (tmp_path / "result.json").write_text('["not", "an", "object"]')
    assert study.read_result(tmp_path) is None
    (tmp_path / "result.json").write_text('{"config_hash": "ab"}')
    assert study.read_result(tmp_path) == {"config_hash": "ab"}


@pytest.mark.parametrize("path", sorted((REPO / "results").glob("*/conclusions.yaml")), ids=lambda p: p.parent.name)
def test_committed_conclusions_hold_on_the_committed_runs(path):
    """Each results README's conclusions, as stated for `golf study compare`, hold on the runs committed beside it."""
    name = path.parent.name
    only = study.slice_ids(name, REPO, study.conclusions_slice(path))  # a file about a slice: its runs only
    tables = study.report_tables(path.parent, study.load_study(name, REPO).report, only)
    for c in study.load_conclusions(path):
        verdict = study.check_conclusion(c, tables)
        assert verdict["holds"] is True, (c.claim, verdict)


# ---------------------------------------------------------------------------------------------------
# Parallel cells and concurrent runs
# ---------------------------------------------------------------------------------------------------


def test_jobs_run_cells_in_parallel_workers(tmp_path, tiny_dataset, env, monkeypatch):
    monkeypatch.setenv("GOLF_CACHE", str(tmp_path / "cache"))  # its own: no base model trained yet
    root = make_root(tmp_path)
    write_study(root, "mini", **{**mini_spec(tiny_dataset), "seeds": [1, 2]})
    summary = study.run_study("mini", root=root, jobs=2)
    assert summary == {"done": 4, "cached": 0, "busy": 0, "failed": 0}
    ids = [c.id for c in study.expand(study.load_study("mini", root))]
    assert sorted(p.parent.name for p in (root / "work/mini/runs").glob("*/result.json")) == ids
    # Two cells of a seed share one base model, trained once even when both start at once.
    cached = sorted(json.loads((root / "work/mini/runs" / i / "result.json").read_text())["train"]["cached"]
                    for i in ids)
    assert cached == [False, False, True, True]
    # The runner's prediction of each cell's base model (what it schedules by) is the key run() used.
    expected, cells = study.runner._Expected(), study.expand(study.load_study("mini", root))
    for cell in cells:
        result = json.loads((root / "work/mini/runs" / cell.id / "result.json").read_text())
        assert expected.base(cell, cell.params) == result["train"]["cache_key"]
    assert len({expected.base(c, c.params) for c in cells}) == 2
    assert study.run_study("mini", root=root, jobs=2)["cached"] == 4
    with pytest.raises(GolfError, match="--jobs 0 must be a positive integer"):
        study.run_study("mini", root=root, jobs=0)
    env_cpu = study.runner.worker_env(0, 2)
    assert "CUDA_VISIBLE_DEVICES" in env_cpu or env_cpu["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_next_cell_skips_cells_whose_base_model_a_running_cell_is_training():
    from golf.study.grid import Cell

    cells = [Cell(id=f"c{i}", notebook="nb", params={}, axes={}) for i in range(4)]
    bases = {"c0": "A", "c1": "A", "c2": "B", "c3": "A"}
    def pick(pending, training):
        return study.runner.next_cell(pending, lambda c: bases[c.id], lambda base: base in training)

    assert pick(cells, set()) == 0
    assert pick(cells, {"A"}) == 2  # c0 and c1 would wait on A's lock
    assert pick(cells[:2], {"A"}) == 0  # all wait: the first, as before
    assert pick(cells, {"A", "B"}) == 0


def test_a_base_is_in_training_while_claimed_or_locked_and_not_once_cached(tmp_path, monkeypatch):
    from golf.io import file_lock
    from golf.run import base_lock, cache_root

    monkeypatch.setenv("GOLF_CACHE", str(tmp_path / "cache"))
    in_training = study.runner.base_in_training
    assert not in_training("k", set())
    assert in_training("k", {"k"})  # a cell of ours started it and may not hold the lock yet
    with file_lock(base_lock("k")):  # held by someone else
        assert in_training("k", set())
    (cache_root() / "k").mkdir(parents=True)
    (cache_root() / "k" / "checkpoint.pt").write_bytes(b"")
    assert in_training("k", {"k"})  # half an entry is not a cached base
    (cache_root() / "k" / "train.json").write_text("{}")
    assert not in_training("k", {"k"})  # cached: its cells load it and go on


def test_two_processes_on_one_study_never_run_a_cell_twice(tmp_path, tiny_dataset, env):
    import subprocess
    import sys

    root = make_root(tmp_path)
    write_study(root, "mini", **{**mini_spec(tiny_dataset), "seeds": [1, 2]})
    command = [sys.executable, "-m", "golf", "-q", "study", "run", "mini", "--project", str(root), "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sum(s["done"] for s in summaries) == 4  # every cell ran exactly once, in one of the two
    assert all(s["failed"] == 0 and s["done"] + s["cached"] + s["busy"] == 4 for s in summaries)
    run_ids = {json.loads(p.read_text())["run_id"] for p in (root / "work/mini/runs").glob("*/result.json")}
    assert len(run_ids) == 4
