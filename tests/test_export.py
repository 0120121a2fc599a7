"""`golf export`: the exported train_gpt.py runs without golf, prints golf's val_bpb, and is bytes_code long.

The exported script is executed in a fresh interpreter that cannot import golf: `-I -S` (no .pth files, so
the editable install's import hook is never installed) with only the virtual environment's site-packages
on sys.path (torch, numpy, sentencepiece, the compressors), from a temporary directory. The runner itself
refuses to start the script if `golf` is importable, so every run here is also the proof.
"""

import ast
import json
import os
import re
import site
import subprocess
import sys

import pytest

from golf.check import check_script
from golf.cli import main as cli_main
from golf.config import build_config
from golf.export import export, script_bytes, script_text
from golf.run import run
from golf.ttt import STRATEGIES

# Put the third-party packages on the path by hand (no site processing), prove golf is not importable,
# then run the script as __main__ (so __file__ is the script and its code size is the file's).
RUNNER = (
    "import importlib.util, runpy, sys\n"
    "sys.path[:0] = {paths!r}\n"
    "if importlib.util.find_spec('golf') is not None:\n"
    "    sys.exit('golf is importable here: the isolation failed')\n"
    "sys.argv = [{script!r}]\n"
    "runpy.run_path({script!r}, run_name='__main__')\n"
)


def run_isolated(script, data, cwd, extra_env=None) -> subprocess.CompletedProcess:
    code = RUNNER.format(paths=site.getsitepackages(), script=str(script))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "OMP_NUM_THREADS": "1",  # one thread, as the tests
           "DATA_PATH": str(data), "RUN_ID": "t", **(extra_env or {})}
    return subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_runner_cannot_import_golf(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import golf\n")
    proc = run_isolated(probe, tmp_path, tmp_path)
    assert proc.returncode != 0 and "golf is importable" not in proc.stderr
    assert "No module named 'golf'" in proc.stderr  # the runner started the file; its import failed


def parameter_golf_layout(dataset, root):
    """The dataset as parameter-golf lays it out: data/datasets/fineweb10B_spV/fineweb_{train,val}_*.bin and
    data/tokenizers/fineweb_V_bpe.model (no manifest)."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    vocab = manifest["vocab_size"]
    shards = root / "data" / "datasets" / f"fineweb10B_sp{vocab}"
    shards.mkdir(parents=True)
    for f in sorted(dataset.glob(f"{manifest['name']}_*.bin")):
        (shards / f.name.replace(f"{manifest['name']}_", "fineweb_", 1)).symlink_to(f)
    (root / "data" / "tokenizers").mkdir()
    (root / "data" / "tokenizers" / f"fineweb_{vocab}_bpe.model").symlink_to(dataset / manifest["tokenizer"]["file"])
    return shards


@pytest.mark.parametrize(
    "overrides, layout",
    [
        ([], "golf"),  # no TTT: the round trip alone, on golf's dataset directory
        (["ttt.strategy=score_first", "ttt.probe=false", "ttt.chunk_tokens=1024", "ttt.epochs=1"], "parameter-golf"),
    ],
    ids=["none-golf-data", "score_first-fineweb-names"],
)
def test_exported_script_runs_without_golf_and_prints_golfs_score(tiny_dataset, tmp_path, overrides, layout):
    work = tmp_path / "work"
    work.mkdir()
    # golf runs on the same directory the script reads: on fineweb_* names both score eval.protocol=pg
    data = tiny_dataset if layout == "golf" else parameter_golf_layout(tiny_dataset, work)
    cfg = build_config("tiny", overrides=[f"data.path={data}", "train.max_steps=4",
                                          "data.max_val_tokens=3000", *overrides])
    result = run(cfg, tmp_path / "run")
    assert result["eval"]["protocol"] == ("all" if layout == "golf" else "pg")
    sub = export([tmp_path / "run"], tmp_path / "record")
    script = tmp_path / "record" / "train_gpt.py"
    size = os.path.getsize(script)
    assert size == sub["bytes_code"] == result["artifact"]["bytes_code"]
    assert result["artifact"]["bytes_total"] == result["artifact"]["bytes_model"] + size

    proc = run_isolated(script, data, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    exact = re.search(r"^final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)$", out, re.M)
    assert exact, out
    # same seed, same steps, same machine: the same weights, so the same artifact and the same score
    assert exact.group(2) == f"{result['eval']['val_bpb']:.8f}"
    assert exact.group(1) == f"{result['eval']['val_loss']:.8f}"
    assert ("tokenizers/fineweb_512_bpe.model" in out) == (layout == "parameter-golf")  # found as the reference's
    assert f"Code size: {size} bytes" in out
    assert f"Serialized model int8_zlib: {result['artifact']['bytes_model']} bytes" in out
    assert os.path.getsize(work / "final_model.golfart") == result["artifact"]["bytes_model"]
    assert (work / "logs" / "t.txt").read_text() == out  # the log file holds what was printed

    record = json.loads((tmp_path / "record" / "submission.json").read_text())
    assert record["seeds"] == {str(cfg.seed): result["eval"]["val_bpb"]}
    assert record["bytes_total"] == result["artifact"]["bytes_total"]
    readme = (tmp_path / "record" / "README.md").read_text()
    assert "torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_golf_check_agrees_with_the_strategy_on_the_exported_script(tmp_path, strategy):
    cfg = build_config("tiny", overrides=[f"ttt.strategy={strategy}", "ttt.allow_illegal=true"]).to_dict()
    path = tmp_path / "train_gpt.py"
    path.write_text(script_text(cfg))  # the wrapped form, as it ships: the checker unwraps it
    report = check_script(path)
    expected = "illegal" if STRATEGIES[strategy].declared_illegal else "legal"
    assert report["verdict"] == expected, report["reason"]
    assert report["unwrapped"]


def test_plain_export_is_one_golf_free_file_with_only_its_strategy(tmp_path):
    cfg = build_config("tiny").to_dict()
    text = script_text(cfg, wrap=False)
    tree = ast.parse(text)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m == "golf" or m.startswith("golf.") for m in imported if m)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    # golf's own pieces are inlined; other strategies' code is not
    assert {"GPT", "train", "quantize_state_dict", "save_artifact", "load_artifact", "BpbMeter", "eval_val"} <= defined
    assert not defined & {"eval_val_score_first", "fine_tune", "attach_lora", "_step", "ValidationStream"}
    # the wrapped form is the minified text behind lzma + base85, and what bytes_code counts
    assert script_bytes(cfg) == len(script_text(cfg).encode()) < len(text.encode())
    other = build_config("tiny", overrides=["ttt.strategy=score_first"]).to_dict()
    assert "eval_val_score_first" in script_text(other, wrap=False)


def test_export_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, tiny_dataset):
    out = tmp_path / "record"
    assert cli_main(["export", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("golf: error: golf export:") and "no config.json" in err[0]
    assert not out.exists()
    assert cli_main(["export", "--out", str(out)]) == 2
    assert "give a run folder" in capsys.readouterr().err
    # two run folders of different configs (not only the seed) cannot be one record
    for name, steps in (("a", 3), ("b", 4)):
        (tmp_path / name).mkdir()
        c = build_config("tiny", overrides=[f"train.max_steps={steps}"]).to_dict()
        (tmp_path / name / "config.json").write_text(json.dumps(c))
    with pytest.raises(Exception, match="another config"):
        export([tmp_path / "a", tmp_path / "b"], out)
    assert not out.exists()
    # the record folder is replaced whole, so an --out holding anything but an earlier export is refused
    assert cli_main(["export", str(tmp_path / "a"), "--out", str(tmp_path)]) == 2
    assert "is not a golf export folder" in capsys.readouterr().err
    assert (tmp_path / "a" / "config.json").exists()
