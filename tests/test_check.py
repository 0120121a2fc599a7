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
    # patterns of real submissions (issue #18), each described in its fixture's docstring
    "timed_eval_prequant_ttt.py": ("illegal", {"multi-epoch-val"}),
    "timed_eval_prequant_ttt_nested.py": ("illegal", {"multi-epoch-val"}),
    "ttt_switch_off_by_default.py": ("legal", set()),
    "ttt_if_else_score_first.py": ("legal", set()),
    "ttt_early_return.py": ("legal", set()),
    "lora_fused_forward_score_first.py": ("legal", set()),
    "lora_fused_forward_score_first_lzma2.py": ("legal", set()),
    "pep701_fstrings_no_ttt.py": ("legal", set()),
}
WRAPPED = {  # wrapped fixture -> the plain fixture it was generated from (make_wrapped.py)
    "prequant_val_finetune_lzma_b85.py": "prequant_val_finetune.py",
    "score_first_chunks_zlib_b64.py": "score_first_chunks.py",
    "lora_fused_forward_score_first_lzma2.py": "lora_fused_forward_score_first.py",
    "timed_eval_prequant_ttt_nested.py": "timed_eval_prequant_ttt.py",
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
    assert all(isinstance(stmt, (ast.Import, ast.Assign)) for stmt in outer)  # the wrappers' own lines
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
    # functools.partial binds the model in front: the partial's call scores validation tokens after
    # a gradient step on them
    "partial_scorer_after_training_on_val": (
        "illegal",
        """
import functools
scorer = functools.partial(score, model)
step(model, opt, load(VAL))
print(scorer(load(VAL)))
""",
    ),
    # a no_grad block inside the model's own forward (a detached target) is not a scoring pass: the
    # chunk loop scores each chunk, then trains on it
    "no_grad_inside_forward_is_not_scoring": (
        "legal",
        """
class Smooth(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(1024, 64)

    def forward(self, x, y):
        logits = self.emb(x) @ self.emb.weight.T
        with torch.no_grad():
            target = F.softmax(logits.detach(), dim=-1)
        return F.cross_entropy(logits.flatten(0, 1), y.reshape(-1)) + 0.0 * target.sum()

smooth = Smooth()
smooth_opt = torch.optim.SGD(smooth.parameters(), lr=0.1)
tokens = load(VAL)
for i in range(0, tokens.numel() - 65, 64):
    chunk = tokens[i : i + 65]
    print(score(smooth, chunk))
    step(smooth, smooth_opt, chunk)
""",
    ),
    # WORLD_SIZE is set by the launcher, not a switch of the submission: the run it guards is the run
    "launcher_variable_is_not_a_switch": (
        "legal",
        """
import os
if int(os.environ.get("WORLD_SIZE", "1")) != 8:
    raise ValueError("launch with torchrun --nproc_per_node=8")
step(model, opt, load(TRAIN))
print(score(model, load(VAL)))
""",
    ),
    "local_module_import": (
        "unknown",
        """
import my_ttt_helpers
step(model, opt, load(TRAIN))
my_ttt_helpers.adapt(model, load(VAL))
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


# ---- patterns of real submissions (issue #18) ---------------------------------------------------------
def _line_of(name: str, text: str) -> int:
    """1-based line of the first line of fixture `name` holding `text`."""
    lines = (FIXTURES / name).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_scoring_through_higher_order_helpers_is_followed():
    # timed_eval(label, fn, *args), functools.partial and a lambda: each scoring pass after the fine-tune
    # is found, so the findings name the scoring lines inside both eval functions
    name = "timed_eval_prequant_ttt.py"
    lines = {n for f in check_script(FIXTURES / name)["findings"] for n in f["lines"]}
    assert _line_of(name, "total += model(") in lines  # eval_val, reached through timed_eval / partial
    assert _line_of(name, "logits = logits_fn(") in lines  # eval_val_sliding, reached through a lambda


def test_switch_off_by_default_gives_the_default_run_and_the_flip():
    report = check_script(FIXTURES / "ttt_switch_off_by_default.py")
    assert report["verdict"] == "legal" and report["switches"] == {"TTT_ENABLED=1": "illegal"}
    assert (
        report["reason"].startswith("legal by default") and "illegal with TTT_ENABLED=1" in report["reason"]
    )
    # the same file with the switch on by default is illegal, and says what turning it off gives
    on = (
        (FIXTURES / "ttt_switch_off_by_default.py")
        .read_text()
        .replace('"TTT_ENABLED", "0"', '"TTT_ENABLED", "1"')
    )
    assert on != (FIXTURES / "ttt_switch_off_by_default.py").read_text()
    report = _check_text(on)
    assert report["verdict"] == "illegal" and report["switches"] == {"TTT_ENABLED=0": "legal"}


def _check_text(text: str) -> dict:
    """Check a variant of a fixture, written to a fresh temporary folder (read, never run)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train_gpt.py"
        path.write_text(text)
        return check_script(path)


def _variant(name: str, old: str, new: str) -> str:
    text = (FIXTURES / name).read_text()
    assert old in text, old
    return text.replace(old, new)


def test_score_before_backward_on_one_forward_is_legal_and_the_reverse_is_not():
    name = "lora_fused_forward_score_first.py"
    swapped = _variant(
        name,
        """            with torch.no_grad():
                accumulate(per_tok, stats)  # 1) the chunk's score, before any update on it
            opt.zero_grad()
            per_tok.mean().backward()  # 2) then train on the chunk just scored
            opt.step()
""",
        """            opt.zero_grad()
            per_tok.mean().backward()
            opt.step()
            with torch.no_grad():
                accumulate(forward(x, y, lora=adapter), stats)
""",
    )
    report = _check_text(swapped)
    assert report["verdict"] == "illegal", report["reason"]
    assert {f["rule"] for f in report["findings"]} == {"C3-grad-before-score"}


def test_warm_up_step_counts_when_the_adapter_is_kept_for_scoring():
    # the warm-up adapter is discarded in the fixture (legal); kept and used to score, its step on the
    # first validation chunk comes before that chunk is scored
    name = "lora_fused_forward_score_first.py"
    kept = _variant(name, "    del warm, warm_opt\n", "").replace(
        "adapter = LoRA(256, args.lora_rank)\n        opt = torch.optim.Adam(adapter.parameters(), lr=args.lora_lr)",
        "adapter, opt = warm, warm_opt",
    )
    assert "adapter, opt = warm, warm_opt" in kept
    report = _check_text(kept)
    assert report["verdict"] == "illegal", report["reason"]
    assert "warm-up" in check_script(FIXTURES / name)["reason"]


def test_if_else_arms_are_alternatives_but_a_sequence_is_not():
    # the same two passes one after the other (no `else`): the plain eval follows the TTT's updates
    sequence = _variant(
        "ttt_if_else_score_first.py",
        """    if args.ttt_enabled:
        val_bpb = eval_val_score_first(args, model, val_tokens)
    else:
        val_bpb = eval_val(model, val_tokens, args.seq_len)""",
        """    val_bpb = eval_val_score_first(args, model, val_tokens)
    val_bpb = eval_val(model, val_tokens, args.seq_len)""",
    )
    assert _check_text(sequence)["verdict"] == "illegal"


def test_pep701_fstrings_keep_lines_and_values():
    from golf.check.parser import parse_python, requote_fstrings

    # PEP 701 source => the same program in pre-3.12 syntax, one case a line
    cases = r"""
x = f"{", ".join(a)}" => x = f'{", ".join(a)}'
y = f'{f'{v:.3f}'}' => y = f"{f'{v:.3f}'}"
z = f"{d["k"]!r:>{w}}" => z = f'{d["k"]!r:>{w}}'
m = f"a{"\n".join(b)}c" => m = f"a{''.join(map(chr, (10,))).join(b)}c"
plain = 'it''s' + rf"\d{x}" => plain = 'it''s' + rf"\d{x}"
"""
    for case in cases.strip().splitlines():
        source, expected = case.split(" => ")
        assert requote_fstrings(source) == (expected, []), source
    text = (FIXTURES / "pep701_fstrings_no_ttt.py").read_text()
    tree, dropped = parse_python(text, "pep701")
    assert dropped == []
    # every statement keeps its line: the def lines of the tree are the def lines of the text
    defs = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    text_defs = [
        i for i, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith(("def ", "class "))
    ]
    assert sorted(defs) == text_defs
    with pytest.raises(GolfError, match="not Python"):
        parse_python('x = f"{a b}"\n', "bad")


def test_raw_lzma2_decoder_options_must_be_literals(tmp_path):
    filters = [{"id": lzma.FILTER_LZMA2}]
    blob = base64.b85encode(
        lzma.compress(
            (FIXTURES / "score_first_chunks.py").read_bytes(), format=lzma.FORMAT_RAW, filters=filters
        )
    ).decode()
    call = f'L.decompress(B.b85decode("{blob}"),format=L.FORMAT_RAW,filters=F)'
    (tmp_path / "opts.py").write_text(
        f'import lzma as L,base64 as B\nF=[{{"id":L.FILTER_LZMA2}}]\nexec({call})\n'
    )
    report = check_script(tmp_path / "opts.py")  # F is a variable, not a literal: not opened
    assert report["verdict"] == "unknown" and "line 3" in report["reason"] and "literal" in report["reason"]
    inline = call.replace("filters=F", 'filters=[{"id":L.FILTER_LZMA2}]')
    (tmp_path / "inline.py").write_text(f"import lzma as L,base64 as B\nexec({inline})\n")
    assert check_script(tmp_path / "inline.py")["verdict"] == "legal"


def test_raw_lzma2_bomb_is_refused_while_streaming(tmp_path):
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 1}]
    bomb = lzma.compress(b"#" * (4 * MAX_PAYLOAD_BYTES), format=lzma.FORMAT_RAW, filters=filters)
    call = f'L.decompress(B.b85decode("{base64.b85encode(bomb).decode()}"),format=L.FORMAT_RAW,filters=[{{"id":L.FILTER_LZMA2}}])'
    (tmp_path / "bomb.py").write_text(f"import lzma as L,base64 as B\nexec({call})\n")
    tracemalloc.start()
    try:
        report = check_script(tmp_path / "bomb.py")
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["verdict"] == "unknown" and "bomb" in report["reason"]
    # the output stopped at the cap; the decoder's own dictionary (8 MiB by default) comes on top
    assert peak_bytes < 3 * MAX_PAYLOAD_BYTES + 8 * 2**20
    # a filter asking for a huge dictionary is refused before the decoder allocates it
    huge = call.replace('{"id":L.FILTER_LZMA2}', '{"id":L.FILTER_LZMA2,"dict_size":2147483648}')
    (tmp_path / "dict_bomb.py").write_text(f"import lzma as L,base64 as B\nexec({huge})\n")
    report = check_script(tmp_path / "dict_bomb.py")
    assert report["verdict"] == "unknown" and "dictionary" in report["reason"]


def test_an_internal_error_is_unknown_with_its_reason(monkeypatch, capsys):
    # a bug inside the checker must never read as `illegal` (a traceback's exit status is 1)
    from golf.check import analysis

    def broken(self):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(analysis.Analyzer, "run", broken)
    report = check_script(FIXTURES / "baseline_no_ttt.py")
    assert (
        report["verdict"] == "unknown"
        and "internal error" in report["reason"]
        and "injected" in report["reason"]
    )
    assert main([str(FIXTURES / "baseline_no_ttt.py")]) == EXIT_CODES["unknown"]


def test_many_scripts_and_directories(tmp_path, capsys):
    names = ["baseline_no_ttt.py", "prequant_val_finetune.py", "exec_runtime_string.py"]
    assert main([str(FIXTURES / n) for n in names[:1]] + [str(FIXTURES / names[0])]) == 0  # two legal
    capsys.readouterr()
    assert main([str(FIXTURES / n) for n in names] + ["--json"]) == EXIT_CODES["illegal"]
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["verdict"] for r in rows] == ["legal", "illegal", "unknown"]
    assert all(r["script"].endswith(n) and r["seconds"] >= 0 for r, n in zip(rows, names))
    # a directory: every .py in it, an unreadable one reported in its row (exit 1 still wins: illegal)
    for n in names:
        (tmp_path / n).write_text((FIXTURES / n).read_text())
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert main([str(tmp_path)]) == EXIT_CODES["illegal"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["verdict", "seconds", "script"] and len(out) == 1 + 4
    assert any(line.startswith("unreadable") and "broken.py" in line for line in out)
    (tmp_path / "prequant_val_finetune.py").unlink()
    assert main([str(tmp_path)]) == 3  # unreadable beats unknown
    capsys.readouterr()
    (tmp_path / "broken.py").unlink()
    assert main([str(tmp_path)]) == EXIT_CODES["unknown"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 3 and "no .py files" in capsys.readouterr().err


def test_check_command_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from golf.cli import main; rc = main(['check', sys.argv[1], '--json']); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(FIXTURES / "lora_fused_forward_score_first_lzma2.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[-1]
    assert out == "0 False"


PG_SUBMISSIONS = Path(__file__).resolve().parents[2] / "shared" / "pg_submissions"


@pytest.mark.slow
@pytest.mark.skipif(not (PG_SUBMISSIONS / "labels.json").exists(), reason="no shared/pg_submissions here")
def test_real_submissions_meet_the_targets():
    """The development set of 30 real scripts (issue #18's targets; benchmarks/check_corpus.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_corpus", Path(__file__).parents[1] / "benchmarks" / "check_corpus.py"
    )
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    summary = corpus.run(PG_SUBMISSIONS)
    misses = [(r["file"], r["verdict"], r["reason"][:200]) for r in summary["rows"] if corpus._wrong(r)]
    assert summary["crashes"] == 0 and not misses, misses
    assert summary["illegal_called_legal"] == 0 and summary["legal_called_illegal"] == 0
    assert summary["illegal_flagged_share"] >= 0.9 and summary["unknown_share"] <= 0.10
    assert summary["seconds_max"] <= 15


def test_a_switch_that_picks_validation_data_is_not_merged_into_the_default_run(tmp_path):
    # `files = VAL if TRAIN_ON_VAL else TRAIN` (off by default): the default run trains on TRAIN; the
    # flipped run would train on validation data, which the analysis does not follow past that line
    body = HEAD + (
        'import os\nfiles = VAL if bool(int(os.environ.get("TRAIN_ON_VAL", "0"))) else TRAIN\n'
        "step(model, opt, load(files))\nprint(score(model, load(VAL)))\n"
    )
    (tmp_path / "s.py").write_text(body)
    report = check_script(tmp_path / "s.py")
    assert report["verdict"] == "legal" and report["switches"] == {"TRAIN_ON_VAL=1": "unknown"}, report
    statement = body.replace(
        'files = VAL if bool(int(os.environ.get("TRAIN_ON_VAL", "0"))) else TRAIN\n',
        'if bool(int(os.environ.get("TRAIN_ON_VAL", "0"))):\n    files = VAL\nelse:\n    files = TRAIN\n',
    )
    (tmp_path / "t.py").write_text(statement)
    assert check_script(tmp_path / "t.py")["switches"] == {"TRAIN_ON_VAL=1": "unknown"}
