"""The package's layering: no module imports one above it, and `golf check` never loads torch.

The layer order, lowest first (README "What is where" states the same). A module may import modules of
its own layer and of the layers below it, never above; imports inside functions count too (a lazy import
is still a dependency, only a later one).

1. foundation   golf (the package), errors, io, progress
2. checker      check.*: the static checker, standard library only
3. formats      metric (bits per byte), compress, stats, data.shards (the shard format, BOS), data.store,
                windows (window geometry: arithmetic on positions)
4. data         data.build, data.sources (offline corpus), data.fineweb (the hub), data.dataset
5. components   model, optim, qat, quant.*, artifact, ledger, device, ttt (the package: TTTConfig and the
                STRATEGIES registry): each owns its config dataclass (ModelConfig beside the model,
                QuantConfig beside QUANTIZERS, TTTConfig beside STRATEGIES)
6. config       config (RunConfig composes the components' configs), presets
7. stages       train, evaluate, baselines, ttt.* (the strategies, their sealed context, LoRA)
8. pipeline     run, pgformat (golf import), export, submission (the exported entry point)
9. top          cli, __main__, study*, report*

Why config sits above the components and not below: a component must be usable and testable without
the run config (the exported train_gpt.py carries ModelConfig and QuantConfig but no RunConfig), so a
component owns its config and the run config composes them; the stages read a RunConfig they are handed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "golf"
FIXTURES = Path(__file__).parent / "fixtures" / "check"

# (layer, module patterns): "golf.x" is that module, "golf.x.*" the package and everything in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("golf", "golf.errors", "golf.io", "golf.progress")),
    ("checker", ("golf.check.*",)),
    ("formats", ("golf.metric", "golf.compress", "golf.stats", "golf.data", "golf.data.shards", "golf.data.store",
                 "golf.windows")),
    ("data", ("golf.data.build", "golf.data.sources", "golf.data.fineweb", "golf.data.dataset")),
    ("components", ("golf.model", "golf.optim", "golf.qat", "golf.quant.*", "golf.artifact", "golf.ledger",
                    "golf.device", "golf.ttt")),
    ("config", ("golf.config", "golf.presets")),
    ("stages", ("golf.train", "golf.evaluate", "golf.baselines", "golf.ttt.strategies", "golf.ttt.context",
                "golf.ttt.lora")),
    ("pipeline", ("golf.run", "golf.pgformat", "golf.export", "golf.submission")),
    ("top", ("golf.cli", "golf.__main__", "golf.study.*", "golf.report.*")),
]

# Known upward imports being removed on another branch, each with what removes it. An entry that no
# longer occurs fails the test, so the list cannot outlive its reason.
KNOWN: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int:
    """Index of the layer holding `module` (the most specific pattern wins); fails for an unplaced module."""
    best, best_len = None, -1
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                stem = pattern[:-2]
                hit = module == stem or module.startswith(stem + ".")
            else:
                hit = module == pattern
            if hit and len(pattern) > best_len:
                best, best_len = index, len(pattern)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py LAYERS: place it there and in the "
                             "README's 'What is where'")
    return best


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def golf_imports(path: Path, package_dir: Path = PACKAGE) -> list[tuple[str, int]]:
    """(imported golf module, line) for every import anywhere in the file, functions included.
    `from golf.x import y` names module golf.x.y when that is a module, else golf.x."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = {module_name(p, package_dir) for p in package_dir.rglob("*.py")}
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name == "golf" or a.name.startswith("golf.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == "golf" or source.startswith("golf.")):
                continue
            for a in node.names:
                sub = f"{source}.{a.name}"
                out.append((sub if sub in modules else source, node.lineno))
    return out


def upward_imports(package_dir: Path = PACKAGE) -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        importer = module_name(path, package_dir)
        for imported, line in golf_imports(path, package_dir):
            if layer_of(imported) > layer_of(importer):
                found.append((importer, imported, line))
    return found


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_no_module_imports_one_above_it():
    found = upward_imports()
    bad = [f"{a} (layer {LAYERS[layer_of(a)][0]}) line {line} imports {b} (layer {LAYERS[layer_of(b)][0]})"
           for a, b, line in found if (a, b) not in KNOWN]
    assert not bad, "upward imports:\n" + "\n".join(bad)
    stale = set(KNOWN) - {(a, b) for a, b, _ in found}
    assert not stale, f"KNOWN lists upward imports that no longer exist, remove them: {sorted(stale)}"


def test_the_order_catches_an_upward_import(tmp_path):
    """The checker itself: a lazy import of the trainer from the model is found, a module-level import of
    the model from the trainer is not."""
    assert layer_of("golf.train") > layer_of("golf.model") > layer_of("golf.metric")
    assert layer_of("golf.study.spec") == layer_of("golf.report.tables") == layer_of("golf.cli")
    package = tmp_path / "golf"
    package.mkdir()
    (package / "model.py").write_text("import torch\n\ndef f():\n    from golf.train import train\n    from . import metric\n")
    (package / "metric.py").write_text("")
    (package / "train.py").write_text("from golf.model import GPT\n")
    assert golf_imports(package / "model.py", package) == [("golf.train", 4), ("golf.metric", 5)]
    assert [(a, b) for a, b, _ in upward_imports(package)] == [("golf.model", "golf.train")]


def test_the_corpus_fetchers_do_not_import_each_other():
    """The offline corpus and the FineWeb download share their helpers through data.store, not each other."""
    for a, b in (("sources", "fineweb"), ("fineweb", "sources")):
        imported = {m for m, _ in golf_imports(PACKAGE / "data" / f"{a}.py")}
        assert f"golf.data.{b}" not in imported


@pytest.mark.parametrize("script", ["lora_fused_forward_score_first_lzma2.py"])
def test_golf_check_cli_imports_no_torch(script):
    """`python -m golf check FILE`, the CLI path itself: -X importtime lists every module it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "golf", "check", str(FIXTURES / script)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "golf.check" in imported  # the listing is real: the checker itself is in it
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "numpy", "sentencepiece"))
    assert not heavy, f"golf check imported {heavy[:5]}"
