"""golf check: verdicts on fixture scripts, exit codes, static unwrapping and its limits, nothing runs.

Fixture scripts under tests/fixtures/check are only read as text, never imported or executed. Small
inline scripts written to tmp_path probe single data-flow features (renamed variables, closures,
unreachable gradient code, hidden data paths).
"""

from __future__ import annotations

import ast
import base64
import json
import lzma
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from golf.check import EXIT_CODES, check_script, main
from golf.check.analysis import is_val_string
from golf.check.unwrap import MAX_DEPTH, MAX_PAYLOAD_BYTES, parse_source, unwrap
from golf.errors import GolfError

FIXTURES = Path(__file__).parent / "fixtures" / "check"

# fixture -> (verdict, rules of its findings)
EXPECTED = {
    "baseline_no_ttt.py": ("legal", set()),
    "train_slice_ttt.py": ("legal", set()),
    "score_first_chunks.py": ("legal", set()),
    "lora_per_doc_score_first.py": ("legal", set()),
    "score_first_chunks_zlib_b64.py": ("legal", set()),
    "prequant_val_finetune.py": ("illegal", {"multi-epoch-val"}),
    "prequant_val_finetune_lzma_b85.py": ("illegal", {"multi-epoch-val"}),
    "renamed_val_finetune.py": ("illegal", {"multi-epoch-val"}),
    "lora_single_pass_val.py": ("illegal", {"score-after-adapt"}),
    "double_scoring_pass.py": ("illegal", {"C4-rescore"}),
    "adapt_before_score_chunks.py": ("illegal", {"C3-grad-before-score"}),
    "exec_runtime_string.py": ("unknown", set()),
}
WRAPPED = {  # wrapped fixture -> the plain fixture it was generated from (make_wrapped.py)
    "prequant_val_finetune_lzma_b85.py": "prequant_val_finetune.py",
    "score_first_chunks_zlib_b64.py": "score_first_chunks.py",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_verdicts(name):
    verdict, rules = EXPECTED[name]
    report = check_script(FIXTURES / name)
    assert report["verdict"] == verdict, report["reason"]
    assert {f["rule"] for f in report["findings"]} == rules
    assert report["unwrapped"] is (name in WRAPPED)
    assert isinstance(report["reason"], str) and report["reason"]
    for f in report["findings"]:
        assert set(f) == {"rule", "function", "lines", "explanation"}
        assert f["lines"] == sorted(f["lines"]) and all(isinstance(n, int) and n > 0 for n in f["lines"])
        assert f["function"] and "\n" not in f["explanation"]


def test_every_fixture_has_an_expectation():
    scripts = {p.name for p in FIXTURES.glob("*.py")} - {"make_wrapped.py"}
    assert scripts == set(EXPECTED)


@pytest.mark.parametrize(
    "name",
    [
        "prequant_val_finetune.py",
        "lora_single_pass_val.py",
        "renamed_val_finetune.py",
        "adapt_before_score_chunks.py",
        "double_scoring_pass.py",
    ],
)
def test_findings_point_at_the_gradient_and_the_scoring(name):
    source_lines = (FIXTURES / name).read_text().splitlines()
    report = check_script(FIXTURES / name)
    pair_findings = [f for f in report["findings"] if len(f["lines"]) >= 2]
    assert pair_findings
    for f in pair_findings:
        text = [source_lines[n - 1] for n in f["lines"]]
        assert any(".backward()" in line for line in text), text  # the gradient step on val tokens
        assert any("model(" in line or "net(" in line for line in text), text  # the scoring call


@pytest.mark.parametrize("wrapped,plain", sorted(WRAPPED.items()))
def test_wrapped_fixtures_decode_to_their_plain_source(wrapped, plain):
    tree = parse_source((FIXTURES / wrapped).read_text(), wrapped)
    result = unwrap(tree, wrapped)
    assert result.unwrapped and not result.reasons
    plain_body = ast.parse((FIXTURES / plain).read_text()).body
    outer, inner = result.tree.body[: -len(plain_body)], result.tree.body[-len(plain_body) :]
    assert all(isinstance(stmt, (ast.Import, ast.Assign)) for stmt in outer)  # the wrapper's own lines
    assert [ast.dump(s) for s in inner] == [ast.dump(s) for s in plain_body]

    # and the wrapped script gets the plain script's findings (line numbers are the payload's own)
    def rules(report):
        return sorted((f["rule"], f["function"]) for f in report["findings"])

    assert rules(check_script(FIXTURES / wrapped)) == rules(check_script(FIXTURES / plain))


# ---- data flow, not names ----------------------------------------------------------------------------
HEAD = """
import glob
import torch
import torch.nn.functional as F

VAL = "data/fineweb_val_*.bin"
TRAIN = "data/fineweb_train_*.bin"

def load(pattern):
    return torch.cat([torch.load(f) for f in sorted(glob.glob(pattern))])

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(1024, 64)

    def forward(self, x, y):
        return F.cross_entropy((self.emb(x) @ self.emb.weight.T).flatten(0, 1), y.reshape(-1))

@torch.no_grad()
def score(model, tokens):
    total = 0.0
    for i in range(0, tokens.numel() - 65, 64):
        total += model(tokens[i : i + 64][None], tokens[i + 1 : i + 65][None]).item()
    return total

def step(model, opt, tokens):
    loss = model(tokens[:-1][None], tokens[1:][None])
    opt.zero_grad()
    loss.backward()
    opt.step()

model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
"""

CASES = {
    # the names lie: `val_tokens` holds training data, `train_data` holds validation data
    "names_lie_legal": (
        "legal",
        """
val_tokens = load(TRAIN)
train_data = load(VAL)
for epoch in range(3):
    step(model, opt, val_tokens)
print(score(model, train_data))
""",
    ),
    "names_lie_illegal": (
        "illegal",
        """
val_tokens = load(TRAIN)
train_data = load(VAL)
for epoch in range(3):
    step(model, opt, train_data)
print(score(model, train_data))
""",
    ),
    # taint through tuple returns, aliasing and a closure handed to optimizer.step
    "closure_through_optimizer": (
        "illegal",
        """
def both():
    return load(TRAIN), load(VAL)

a, b = both()
c = b
def closure():
    opt.zero_grad()
    loss = model(c[:-1][None], c[1:][None])
    loss.backward()
    return loss
opt.step(closure)
step(model, opt, a)
print(score(model, b))
""",
    ),
    "tuple_keeps_elements_apart": (
        "legal",
        """
def both():
    return load(TRAIN), load(VAL)

a, b = both()
step(model, opt, a)
print(score(model, b))
""",
    ),
    # nanoGPT-style `get_batch(split)`: the literal decides the branch in each calling context
    "get_batch_train_legal": (
        "legal",
        """
def get_batch(split):
    data = load(TRAIN) if split == "train" else load(VAL)
    i = torch.randint(data.numel() - 65, (1,)).item()
    return data[i : i + 65]

for it in range(100):
    step(model, opt, get_batch("train"))
print(score(model, get_batch("val")))
""",
    ),
    "get_batch_val_illegal": (
        "illegal",
        """
def get_batch(split):
    data = load(TRAIN) if split == "train" else load(VAL)
    i = torch.randint(data.numel() - 65, (1,)).item()
    return data[i : i + 65]

for it in range(100):
    step(model, opt, get_batch("val"))
print(score(model, get_batch("val")))
""",
    ),
    # score-first with sliding windows assigned to chunks by a filtered comprehension
    "windows_per_chunk_score_first": (
        "legal",
        """
val = load(VAL)
windows = list(range(0, val.numel() - 65, 64))
for ci in range(4):
    mine = [w for w in windows if w // 1024 == ci]
    with torch.no_grad():
        for w in mine:
            model(val[w : w + 64][None], val[w + 1 : w + 65][None])
    step(model, opt, val[ci * 1024 : (ci + 1) * 1024])
""",
    ),
    # a stateful loader hands out the next chunk on each call: score it, then train on it
    "stateful_loader_score_first": (
        "legal",
        """
class Chunks:
    def __init__(self, tokens, size):
        self.tokens, self.size, self.pos = tokens, size, 0

    def next_batch(self):
        out = self.tokens[self.pos : self.pos + self.size + 1]
        self.pos += self.size
        return out

chunks = Chunks(load(VAL), 1024)
for ci in range(8):
    c = chunks.next_batch()
    print(score(model, c))
    step(model, opt, c)
""",
    ),
    "unreached_gradient_code": (
        "unknown",
        """
print(score(model, load(VAL)))
""",
    ),
    "no_validation_data": (
        "unknown",
        """
step(model, opt, load(TRAIN))
print(score(model, load(TRAIN)))
""",
    ),
    "no_scoring_pass": (
        "unknown",
        """
step(model, opt, load(TRAIN))
v = load(VAL)
print(model(v[:-1][None], v[1:][None]).item())
""",
    ),
    "local_module_import": (
        "unknown",
        """
import my_ttt_helpers
step(model, opt, load(TRAIN))
print(score(model, load(VAL)))
""",
    ),
    "val_through_a_file": (
        "unknown",
        """
torch.save(load(VAL), "/tmp/tokens.pt")
step(model, opt, torch.load("/tmp/tokens.pt"))
print(score(model, load(VAL)))
""",
    ),
    "dynamic_import": (
        "unknown",
        """
import importlib
helpers = importlib.import_module("hel" + "pers")
step(model, opt, load(TRAIN))
print(score(model, load(VAL)))
""",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_data_flow_cases(tmp_path, case):
    verdict, body = CASES[case]
    path = tmp_path / f"{case}.py"
    path.write_text(HEAD + body)
    report = check_script(path)
    assert report["verdict"] == verdict, report["reason"]


def test_unknown_reasons_say_why(tmp_path):
    path = tmp_path / "s.py"
    path.write_text(HEAD + CASES["unreached_gradient_code"][1])
    assert "never reached" in check_script(path)["reason"]
    assert "exec()" in check_script(FIXTURES / "exec_runtime_string.py")["reason"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin", True),
        ("fineweb_val_", True),
        ("data/val.bin", True),
        ("VAL_FILES", True),
        ("val", True),
        ("validation", True),
        ("--val-files", True),
        ("fineweb_train_*.bin", False),
        ("val_loss:{:.4f}", False),
        ("eval", False),
        ("VAL_BATCH_SIZE", False),
        ("step:*/* val_loss:*", False),
        ("interval/*.bin", False),
    ],
)
def test_validation_literals(text, expected):
    assert is_val_string(text) is expected


# ---- command line ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["baseline_no_ttt.py", "prequant_val_finetune.py", "exec_runtime_string.py"])
def test_main_exit_codes_and_json(capsys, name):
    verdict = EXPECTED[name][0]
    assert main([str(FIXTURES / name), "--json"]) == EXIT_CODES[verdict]
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == verdict and {"findings", "reason", "unwrapped"} <= set(out)
    assert main([str(FIXTURES / name)]) == EXIT_CODES[verdict]
    assert capsys.readouterr().out.startswith(f"{verdict}: ")


def test_exit_code_table():
    assert EXIT_CODES == {"legal": 0, "illegal": 1, "unknown": 2}


def _unreadable_inputs(tmp_path):
    (tmp_path / "latin1.py").write_bytes(b"x = '\xe9t\xe9'\n")
    (tmp_path / "broken.py").write_text("def f(:\n    pass\n")
    return [tmp_path / "missing.py", tmp_path / "latin1.py", tmp_path / "broken.py"]


def test_broken_payload_in_a_python_script_is_unknown_not_unreadable(tmp_path):
    # the script is Python; only what it would exec is broken: the checker cannot see it -> unknown
    not_python = base64.b64encode(zlib.compress(b"this is not python (((")).decode()
    (tmp_path / "bad_payload.py").write_text(
        f'import zlib, base64\nexec(zlib.decompress(base64.b64decode("{not_python}")))\n'
    )
    (tmp_path / "corrupt_payload.py").write_text(
        'import lzma, base64\nexec(lzma.decompress(base64.b85decode("VPRomVPRomVPRom")))\n'
    )
    for name, why in (("bad_payload.py", "not Python"), ("corrupt_payload.py", "does not decode")):
        report = check_script(tmp_path / name)
        assert report["verdict"] == "unknown" and why in report["reason"] and "line 2" in report["reason"]


def test_unreadable_input_exits_3(tmp_path, capsys):
    for path in _unreadable_inputs(tmp_path):
        with pytest.raises(GolfError):
            check_script(path)
        assert main([str(path)]) == 3
        err = capsys.readouterr().err
        assert err.startswith("golf: error: ") and err.count("\n") == 1, err
    assert main([]) == 3  # usage error: no script given


# ---- unwrapping: limits and safety ---------------------------------------------------------------------
def _wrap_zlib(source: str) -> str:
    blob = base64.b64encode(zlib.compress(source.encode(), 9)).decode()
    return f'import zlib, base64\nexec(zlib.decompress(base64.b64decode("{blob}")).decode())\n'


def test_nested_payloads_unwrap_up_to_the_limit(tmp_path):
    source = (FIXTURES / "score_first_chunks.py").read_text()
    for _ in range(MAX_DEPTH):
        source = _wrap_zlib(source)
    (tmp_path / "nested.py").write_text(source)
    report = check_script(tmp_path / "nested.py")
    assert report["verdict"] == "legal" and report["unwrapped"]
    (tmp_path / "too_deep.py").write_text(_wrap_zlib(source))
    report = check_script(tmp_path / "too_deep.py")
    assert report["verdict"] == "unknown" and "nested" in report["reason"]


@pytest.mark.parametrize("codec", ["zlib", "lzma"])
def test_decompression_bomb_is_refused(tmp_path, codec):
    bomb = b"#" * (4 * MAX_PAYLOAD_BYTES)  # a valid (all-comment) script, far over the payload limit
    if codec == "zlib":
        call = f'zlib.decompress(base64.b64decode("{base64.b64encode(zlib.compress(bomb, 9)).decode()}"))'
    else:
        blob = base64.b85encode(lzma.compress(bomb, preset=1)).decode()
        call = f'lzma.decompress(base64.b85decode("{blob}"))'
    (tmp_path / "bomb.py").write_text(f"import zlib, lzma, base64\nexec({call})\n")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        report = check_script(tmp_path / "bomb.py")
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["verdict"] == "unknown" and "bomb" in report["reason"]
    assert peak_bytes < 3 * MAX_PAYLOAD_BYTES  # the output stopped at the cap, never 4x it
    assert time.perf_counter() - t0 < 10


def test_nothing_is_executed(tmp_path):
    outer_marker, inner_marker = tmp_path / "outer_ran", tmp_path / "payload_ran"
    payload = (
        FIXTURES / "score_first_chunks.py"
    ).read_text() + f"open({str(inner_marker)!r}, 'w').write('x')\n"
    blob = base64.b85encode(lzma.compress(payload.encode())).decode()
    (tmp_path / "trap.py").write_text(
        "import lzma, base64\n"
        f"open({str(outer_marker)!r}, 'w').write('x')\n"
        f'exec(lzma.decompress(base64.b85decode("{blob}")))\n'
    )
    report = check_script(tmp_path / "trap.py")
    assert report["unwrapped"] and report["verdict"] == "legal"
    assert not outer_marker.exists() and not inner_marker.exists()
