"""Static TTT-legality analysis of a parameter-golf script, by data flow over the syntax tree.

The rules (issue #1017, see shared/research/parameter-golf.md): a validation token may be trained on only
after it has been scored (C3, score before update), and the validation set is scored in one left-to-right
pass, with no rescoring and no choosing among passes (C4). Keyword scripts that grep for `ttt` or
`val_tokens` are fooled by renaming; this module follows where validation data *goes*.

Approach: an abstract interpreter walks the script from its module body, inlining calls to functions and
methods defined in the script (context-sensitive: each call site gets fresh parameter taints), and computes
for every value a small set of labels:
  VAL            the value holds or derives from validation tokens. Sources are string literals naming
                 validation shards (`fineweb_val_*.bin`, `val.bin`, `"VAL_FILES"`, `split="val"`);
                 the label flows through assignments, unpacking, attributes, subscripts, calls and returns;
  ("iter", L)    the value changes with each iteration of loop L (a loop variable, an element of a
                 tainted iterable, a loop-carried variable like `pos += chunk`, a slice indexed by one);
  ("score", P)   the value is a result of scoring pass P (used to spot choosing among passes);
  fn/cls/obj     references to script functions, classes and objects (allocation sites), so that calls
                 through variables, `torch.compile(model)` and methods resolve to the code they run;
  ("const", s)   the value is the string literal s, so `if split == "train":` inside `get_batch("train")`
                 follows one branch (nanoGPT style) instead of merging the train and val branches.
Sizes (`len`, `.numel()`, `.shape`) drop VAL: a count is not a token.

Two kinds of events are recorded in execution order, each with its dynamic loop stack:
  grad   `.backward()` / `torch.autograd.grad` on a VAL value (gradient use on validation tokens);
  score  a model-like call (script model, unknown callable, `torch.nn.functional.*`) with VAL arguments
         under `torch.no_grad()` / `torch.inference_mode()` (with-block, decorator or caller's mode).
Loops are interpreted twice (a fixpoint for loop-carried taint); events come from the second pass, so
their positions give the order inside one iteration, and their labels say which loops move them to new
tokens.
Each event also carries the `if` arms taken on the way to it (`branch`: a gradient in one arm is never
ordered against a score in the other), the environment-switch arms among them (`conds`: the default run
is the one with every `os.environ.get(NAME, default)` at its literal default; see `Analyzer._switch`), and,
for scores, the objects the scoring call used (`refs`: a gradient step whose optimizer only updates an
object later deleted without scoring with it is a throw-away warm-up). A forward on validation tokens
with gradients on is labelled `fwd`; reading its output under no_grad (`accumulate(per_token_loss)`) is
a score at that point, so a score-then-backward on one forward is score-first.
`rules.py` pairs these events into named findings and a verdict for the default run and each flip.

Anything the analysis cannot see is listed in `reasons` and makes the verdict `unknown`, with its line:
exec of code it could not decode, dynamic imports, a helper module (not a known library) handed
validation data, a model or an optimizer, gradient code never reached from the entry point, a function
value called without a value for a parameter in code that trains or scores, validation data written to
files, shell commands that run code built at run time, an exhausted analysis budget (statements or CPU
seconds).

Limits (deliberate, to stay small): slice bounds are not compared (training on chunk i-1 before scoring
chunk i is flagged; training on chunk i+1 after scoring chunk i is not); objects are tracked per
allocation site, dict values are merged; after an `if` on an unknown condition the two arms' values are
merged (after a switch, the default arm's are kept); only gradient-based adaptation is tracked
(val-calibrated GPTQ or n-gram caches updated from validation tokens are not seen); a training-mode
loss summed outside no_grad (`total += loss.item()`) is not a score; two scoring passes with no val
gradient between them (pre- and post-quantization evals) are legal unless their results are compared or
min/max-ed; MLX scripts (no no_grad) have no scoring pass it recognises.
"""

from __future__ import annotations

import ast
import builtins
import functools
import re
import sys
import time
from dataclasses import dataclass

from golf.check.parser import DROPPED_FIELD
from golf.check.unwrap import module_aliases, qualname

VAL = "val"
EMPTY: frozenset = frozenset()

STEP_BUDGET = 200_000  # statements interpreted; real 3,000-line records need up to ~50,000
TIME_BUDGET_S = 8.0  # CPU seconds (not wall: a busy machine must not change a verdict); the ceiling is 15 s
MAX_CALL_DEPTH = 24  # inlining depth; deeper calls are summarised conservatively
MAX_EVENTS = 50_000

# Strings that name validation data: paths/globs (no spaces) with a `val` word, or config keys.
_VAL_WORD = re.compile(r"(?i)(?<![a-z0-9])(val|valid|validation)(?![a-z])")
_PATH_SIGN = re.compile(r"[/\\*]|\.(bin|npy|pt|txt|jsonl?|arrow|parquet)\b")
_VAL_KEY = re.compile(
    r"(?i)-{0,2}([a-z0-9]+_)*(val|valid|validation)"
    r"([_-](files?|paths?|pattern|data|dir|shards?|glob|bin|split|set|dataset))?"
)

_LAUNCHER_VARIABLES = {
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CUDA_VISIBLE_DEVICES",
    "NPROC_PER_NODE",
}
# words that make an environment variable a flag about validation, not the data (`TRAIN_ON_VAL`)
_VAL_FLAG_WORDS = re.compile(
    r"(?i)(^|_)(on|skip|no|use|do|every|enable|enabled|disable|batch|loss|log|max|calib)(_|$)"
)
_NOGRAD = {"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.inference_mode"}
_ENABLEGRAD = {"torch.enable_grad", "torch.autograd.enable_grad"}
_SIZE_METHODS = {"numel", "size", "dim", "nelement", "element_size", "__len__", "stride"}
_SIZE_ATTRS = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad"}
_SIZE_BUILTINS = {"len", "isinstance", "hasattr", "type", "id", "callable"}
_STATEFUL = {"next_batch", "get_batch", "take", "__next__", "next", "sample_batch"}  # new data per call
_MUTATORS = {"append", "extend", "insert", "add", "update", "put", "appendleft", "setdefault", "copy_"}
# name tables read better packed than one per line:
# fmt: off
# Methods that move or reshape data, log, or fill containers: never a model forward.
_DATA_METHODS = _MUTATORS | {
    "to", "view", "reshape", "gather", "index_select", "expand", "type_as", "masked_fill", "where",
    "cuda", "cpu", "long", "int", "float", "double", "half", "bfloat16", "contiguous", "flatten",
    "unsqueeze", "squeeze", "transpose", "permute", "item", "tolist", "numpy", "sum", "mean", "split",
    "chunk", "narrow", "unfold", "clone", "detach", "repeat", "roll", "cumsum", "new_tensor", "get",
    "join", "format", "write", "info", "warning", "debug", "set_postfix", "log",
}
_FILE_SINKS = {"torch.save", "numpy.save", "numpy.savez", "numpy.savez_compressed", "pickle.dump"}
_DYNAMIC = {
    "importlib.import_module", "importlib.__import__", "importlib.util.spec_from_file_location",
    "importlib.util.module_from_spec", "runpy.run_path", "runpy.run_module", "marshal.loads",
    "types.FunctionType", "types.CodeType",
}
_SHELL = {"os.system", "os.popen", "os.execv", "os.execvp", "os.spawnv"}
_KNOWN_MODULES = set(sys.stdlib_module_names) | {
    "torch", "numpy", "sentencepiece", "triton", "flash_attn", "flash_attn_interface", "zstandard",
    "zstd", "brotli", "einops", "tqdm", "huggingface_hub", "tiktoken", "safetensors", "wandb",
    "kernels",
    # public libraries: they may be handed validation data, which the analysis then follows as calls
    "scipy", "sklearn", "pandas", "mlx", "jax", "numba", "cupy", "python_minifier", "yaml", "datasets",
    "transformers", "tokenizers", "accelerate", "bitsandbytes", "xformers", "apex", "liger_kernel",
    "matplotlib", "psutil", "pynvml", "lz4", "blosc", "blosc2", "lrzip", "msgpack", "requests",
    "flash_attn_3", "cutlass", "cuda", "tilelang", "deepspeed", "fla", "mamba_ssm", "causal_conv1d",
}
# fmt: on
_BUILTINS = set(dir(builtins))


def is_val_string(text: str) -> bool:
    """Does this literal name validation data (a shard path/glob, or a `VAL_FILES`-style key)?"""
    if "fineweb_val" in text.lower():
        return True
    if _VAL_WORD.search(text) and _PATH_SIGN.search(text) and not any(c.isspace() for c in text):
        return True
    return _VAL_KEY.fullmatch(text) is not None


# ---- abstract values ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tup:
    """A tuple/list literal whose elements keep their own labels (`return val, train` taints one)."""

    items: tuple


def flat(v) -> frozenset:
    return v if isinstance(v, frozenset) else frozenset().union(*(flat(i) for i in v.items))


def join(a, b):
    if isinstance(a, Tup) and isinstance(b, Tup) and len(a.items) == len(b.items):
        return Tup(tuple(join(x, y) for x, y in zip(a.items, b.items)))
    if a == EMPTY:
        return b
    if b == EMPTY:
        return a
    return flat(a) | flat(b)


def _is_ref(label) -> bool:
    return isinstance(label, tuple) and label[0] in ("fn", "cls", "obj", "bound", "pfn")


# labels that describe configuration or bookkeeping, never the tokens a value holds
_NOT_DATA = ("const", "env", "opt", "fwd")


def data_of(v) -> frozenset:
    """Labels describing data (VAL, iter, score), without references, constants and switches."""
    return frozenset(x for x in flat(v) if not _is_ref(x) and x[0:1] not in [(k,) for k in _NOT_DATA])


def _strip(labels: frozenset) -> frozenset:
    """Drop string-constant labels: a computed value is no longer that literal."""
    return frozenset(x for x in labels if x[0:1] != ("const",))


def _const(v) -> str | None:
    """The string a value certainly holds (exactly one constant label), else None."""
    consts = [x[1] for x in flat(v) if x[0:1] == ("const",)]
    return consts[0] if len(consts) == 1 else None


def iters_of(v) -> frozenset:
    return frozenset(x for x in flat(v) if isinstance(x, tuple) and x[0] == "iter")


def _join_env(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = join(out[k], v) if k in out else v
    return out


@dataclass(frozen=True)
class Event:
    kind: str  # "grad" | "score"
    pos: int  # order of execution within one unrolled pass
    line: int
    function: str
    loops: tuple  # dynamic loop ids, outermost first
    data: frozenset  # data labels of the tokens involved
    pass_id: object  # scoring pass (no-grad region) for scores
    branch: tuple = ()  # ((if-statement instance, arm taken, loop depth at the if), ...), outermost first
    conds: tuple = ()  # ((environment switch, its default's truth, arm taken), ...) on the way here
    refs: frozenset = EMPTY  # allocation sites of the objects a scoring call used (model, adapter)


class Frame:
    """One function activation: local env (names and `a.b` paths), closure parent, return value."""

    def __init__(self, function: str, parent: Frame | None = None):
        self.function, self.parent = function, parent
        self.env: dict = {}
        self.globals: set[str] = set()
        self.ret = EMPTY

    def lookup(self, name: str):
        f = self
        while f is not None:
            if name in f.env:
                return f.env[name]
            f = f.parent
        return None

    def root(self) -> Frame:
        f = self
        while f.parent is not None:
            f = f.parent
        return f

    def set(self, name: str, value) -> None:
        (self.root() if name in self.globals else self).env[name] = value


@dataclass
class _Func:
    node: ast.AST  # FunctionDef / AsyncFunctionDef / Lambda
    closure: Frame
    grad_mode: bool | None  # True: @no_grad/@inference_mode, False: @enable_grad


class _OutOfBudget(Exception):
    pass


class Analyzer:
    """Interprets one (unwrapped) module abstractly; fills `events`, `choices`, `reasons`."""

    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.aliases = module_aliases(tree)
        self.functions: dict[str, _Func] = {}
        self.classes: dict[str, dict] = {}  # name -> {"bases", "methods", "attrs"}
        self.heap: dict = {}  # (allocation site, attribute) -> value
        self.loose_attrs: dict[str, frozenset] = {}  # argparse dests naming validation data
        self.events: list[Event] = []
        self.choices: list[tuple[int, str, int]] = []  # (line, function, passes compared)
        self.reasons: dict[str, None] = {}  # ordered set of `unknown` reasons
        self.val_lines: set[int] = set()
        self.visited: set[int] = set()  # ids of gradient calls the interpreter reached
        self.loop_ids: dict = {}
        self.loop_lines: dict[int, int] = {}
        self.compares: dict[int, frozenset] = {}
        self.call_path: tuple = ()
        self.loops: tuple = ()
        self.active: list[str] = []
        self.nograd, self.region, self.record, self.in_scoring = False, None, True, False
        self.branch: tuple = ()  # the if-arms taken on the way to the current statement (see Event)
        self.conds: tuple = ()  # the environment-switch arms among them
        self.switches: dict[str, tuple] = {}  # environment switch -> (its literal default, first test line)
        self.optimizers: dict = {}  # torch.optim allocation site -> sites of the objects it updates
        self.pending_grads: list[int] = []  # grad events not yet followed by an optimizer step
        self.grad_owners: dict[int, frozenset] = {}  # grad event pos -> sites its optimizer step updates
        self.deleted: set = set()  # allocation sites removed by `del` (throw-away copies)
        self.control: frozenset = EMPTY  # loop labels of the enclosing if-tests (control dependence)
        self._compare_nodes: dict[int, list] = {}
        self._trains_cache: dict[int, bool] = {}  # function node id -> takes gradients or scores
        self.partials: dict = {}
        self.unfollowed: dict[
            str, int
        ] = {}  # switch -> line where its flipped arm hands on val data  # functools.partial allocation site -> (bound args, bound kwargs)  # if-test node id -> the comparisons inside it
        self._loop_names: dict[int, tuple] = {}  # loop node id -> (carried names, exit-test names)
        self.unseen: dict[str, int] = {}  # modules the checker cannot read -> line of the import
        self.moving: list[tuple] = []  # (exit-test names, loop label, frame) of enclosing while loops
        self.steps = self.pos = self.line = 0
        self.deadline = float("inf")
        self.module = Frame("<module>")

    # ---- driver ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.deadline = time.process_time() + TIME_BUDGET_S
        self._check_imports()
        try:
            self.exec_block(self.tree.body, self.module)
        except _OutOfBudget as exc:
            self.reasons[
                f"analysis budget ({exc}) exhausted at line {self.line}; did not follow the rest"
            ] = None
        except RecursionError:
            self.reasons["expressions nested too deeply to analyse"] = None
        # Gradient code the interpreter never reached could train on anything: refuse to call it legal.
        for node in ast.walk(self.tree):
            if self._is_grad_call(node) and id(node) not in self.visited:
                self.reasons[
                    f"gradient call at line {node.lineno} is never reached from the script's entry point; "
                    "cannot tell what data it trains on"
                ] = None

    def _check_imports(self) -> None:
        for node in ast.walk(self.tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." if node.level else (node.module or "")]
            for name in names:
                top = name.split(".")[0]
                if name == ".":
                    self.reasons[
                        f"imports from its own package (line {node.lineno}), code the checker cannot see"
                    ] = None
                elif top not in _KNOWN_MODULES:
                    # a helper file shipped next to the script (kernels, an n-gram tilt): what it does is
                    # unseen, so handing it validation data, a model or an optimizer loses track (eval_call)
                    self.unseen[top] = node.lineno

    def _trains_or_scores(self, fn) -> bool:
        """Does this function's own body take a gradient or open a no_grad / inference_mode region?"""
        if id(fn) not in self._trains_cache:
            regions = [
                item.context_expr
                for n in ast.walk(fn)
                if isinstance(n, (ast.With, ast.AsyncWith))
                for item in n.items
            ]
            grads = any(self._is_grad_call(n) for n in ast.walk(fn))
            decorated = not isinstance(fn, ast.Lambda) and self._decorator_mode(fn) is True
            self._trains_cache[id(fn)] = grads or decorated or any(self._grad_mode(r) for r in regions)
        return self._trains_cache[id(fn)]

    def _in_model_code(self) -> bool:
        """Is a method of a script module (a class with `forward`) on the call stack? A kernel called
        from a model's forward computes activations; it does not train."""
        return any(
            key.split(".")[0] in self.classes and self._method(key.split(".")[0], "forward")
            for key in self.active
        )

    def _is_grad_call(self, node) -> bool:
        """`x.backward()` (any receiver) or `torch.autograd.grad(...)` under any import alias."""
        if not isinstance(node, ast.Call):
            return False
        if isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
            return True
        return qualname(node.func, self.aliases) == "torch.autograd.grad"

    # ---- statements -----------------------------------------------------------------------------
    def exec_block(self, stmts, frame: Frame) -> None:
        for i, stmt in enumerate(stmts):
            rest = stmts[i + 1 :]
            if isinstance(stmt, ast.If) and rest and _ends(stmt.body) and not _ends(stmt.orelse):
                # `if c: ...; return` (or continue/raise): the rest of the block is the else arm
                self.steps += 1
                self.exec_if(stmt, frame, orelse=[*stmt.orelse, *rest])
                return
            self.exec_stmt(stmt, frame)

    def exec_stmt(self, node, frame: Frame) -> None:
        self.steps += 1
        self.line = node.lineno
        if self.steps > STEP_BUDGET:
            raise _OutOfBudget(f"{STEP_BUDGET} statements")
        if self.steps % 1024 == 0 and time.process_time() > self.deadline:
            raise _OutOfBudget(f"{TIME_BUDGET_S:.0f} s")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # a def only binds a reference; its body runs when called, with that call's argument taints
            key = node.name if frame is self.module else f"{frame.function}.{node.name}"
            self.functions[key] = _Func(node, frame, self._decorator_mode(node))
            frame.set(node.name, frozenset({("fn", key)}))
        elif isinstance(node, ast.ClassDef):
            self.define_class(node, frame)
        elif isinstance(node, ast.Assign):
            value = self.eval(node.value, frame)
            for target in node.targets:
                self.assign(target, value, frame)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.assign(node.target, self.eval(node.value, frame), frame)
        elif isinstance(node, ast.AugAssign):
            # `x += y` keeps what x held and adds y's labels (accumulators, loop counters)
            value = self.eval(node.value, frame)
            if (
                VAL in flat(value)
                and _fwd_sites(flat(value)) is not None
                and not self.in_scoring
                and self.nograd
            ):
                # `with no_grad: loss_sum += per_token_loss.sum()`: a forward's losses summed into a score
                self.event("score", node, frame, data_of(value), _fwd_sites(flat(value)))
            self.assign(node.target, join(self.eval(node.target, frame), value), frame)
        elif isinstance(node, ast.Expr):
            self.eval(node.value, frame)
        elif isinstance(node, ast.Return):
            # returns join: the caller sees what any path may return
            if node.value is not None:
                frame.ret = join(frame.ret, self.eval(node.value, frame))
        elif isinstance(node, ast.If):
            self.exec_if(node, frame, node.orelse)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            self.exec_loop(node, frame)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            self.exec_with(node, frame)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            # exceptions are not modelled: body, handlers, else and finally all run, in order
            self.exec_block(node.body, frame)
            for handler in node.handlers:
                if handler.name:
                    frame.set(handler.name, EMPTY)
                self.exec_block(handler.body, frame)
            self.exec_block(node.orelse, frame)
            self.exec_block(node.finalbody, frame)
        elif isinstance(node, ast.Global):
            frame.globals.update(node.names)
        elif isinstance(node, ast.Delete):
            # `del adapter, opt`: objects dropped here; a gradient step that only updated them and was
            # never followed by scoring with them is a warm-up, not training (rules.py)
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.deleted |= _sites(flat(self.eval(target, frame)))
                    frame.env.pop(target.id, None)
        elif isinstance(node, (ast.Assert, ast.Raise)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.eval(child, frame)
        elif isinstance(node, ast.Match):
            self.eval(node.subject, frame)
            for case in node.cases:
                self.exec_block(case.body, frame)

    def exec_if(self, node: ast.If, frame: Frame, orelse: list) -> None:
        """Either arm may run, never both: each is interpreted from the same state and its events are
        tagged with the arm (`Event.branch`), so the rules never order a gradient in one arm against a
        scoring pass in the other. An arm chosen by an environment switch is also tagged with the
        switch and whether the default run takes it (`Event.conds`)."""
        test = self.eval(node.test, frame)
        self._note_choice(node.test, frame)
        decided = self._decide(node.test, frame)
        if decided is not None:  # `if split == "train":` inside get_batch("train")
            self.exec_block(node.body if decided else orelse, frame)
            return
        switch = self._switch(node.test, test)
        key = (self.call_path, id(node))
        saved = (self.branch, self.conds, self.control)
        # what an arm assigns depends on the test: `if start < chunk_end: windows.append(ws)` makes
        # `windows` vary with the chunk loop, like a comprehension's filter
        self.control = self.control | iters_of(test)
        before, envs = dict(frame.env), []
        try:
            for arm, body in ((True, node.body), (False, orelse)):
                frame.env = dict(before)
                self.branch = saved[0] + ((key, arm, len(self.loops)),)
                self.conds = saved[1] + (((switch[0], switch[1], arm),) if switch else ())
                self.exec_block(body, frame)
                envs.append(frame.env)
        finally:
            self.branch, self.conds, self.control = saved
        if len(envs) < 2:
            frame.env = _join_env(before, frame.env)
        elif switch:
            # after a switch, the default run goes on with its own arm's values only (else every run
            # would train on what `if TRAIN_ON_VAL: files = val_files` assigns); a flipped switch that
            # would hand validation data onward is noted as not followed (rules.py: `unknown`)
            default, other = (envs[0], envs[1]) if switch[1] else (envs[1], envs[0])
            if any(VAL in flat(v) and VAL not in flat(default.get(k, EMPTY)) for k, v in other.items()):
                self.unfollowed.setdefault(switch[0], node.lineno)
            frame.env = default
        else:
            frame.env = _join_env(*envs)

    def _switch(self, test, value) -> tuple[str, bool] | None:
        """(variable, does the default run take the `if` arm?) when the test reads one environment
        variable through os.environ.get / os.getenv with a literal default, else None.

        Submissions gate their TTT behind `TTT_ENABLED = bool(int(os.environ.get("TTT_ENABLED", "0")))`;
        the default run is what the file does as submitted, the other arm what a flipped switch does.
        """
        negate = False
        while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            negate, test = not negate, test.operand
        labels = flat(value)
        envs = {x for x in labels if x[0:1] == ("env",)}
        if len(envs) != 1 or data_of(labels - envs):
            return None  # no switch, several, or one read with different defaults in different places
        ((_, name, default),) = envs
        if name in _LAUNCHER_VARIABLES:
            return None  # set by torchrun for each launch, not a switch of the submission
        typed = _typed(default)
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            other = test.comparators[0]
            if isinstance(other, (ast.Tuple, ast.List, ast.Set)) and isinstance(
                test.ops[0], (ast.In, ast.NotIn)
            ):
                if not all(isinstance(e, ast.Constant) for e in other.elts):
                    return None
                options = [e.value for e in other.elts]
                inside = default in options or typed in options
                truth = inside == isinstance(test.ops[0], ast.In)
            elif isinstance(other, ast.Constant):
                truth = _compare(test.ops[0], typed, other.value)
                if truth is None:
                    return None
            else:
                return None
        elif isinstance(test, (ast.Name, ast.Attribute, ast.Call)):
            truth = _truthy(default)
        else:
            return None
        self.switches.setdefault(name, (default, getattr(test, "lineno", 0)))
        return name, truth != negate

    def _decide(self, test, frame: Frame) -> bool | None:
        """Outcome of `x == "lit"` / `x != "lit"` when x certainly holds one string literal, else None.

        Context-sensitive inlining makes this worth having: nanoGPT-style `get_batch("train")` then
        reads only the training file, instead of being merged with the `"val"` branch.
        """
        if not (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], (ast.Eq, ast.NotEq))
        ):
            return None
        left, right = _const(self.eval(test.left, frame)), _const(self.eval(test.comparators[0], frame))
        if left is None or right is None:
            return None
        return (left == right) == isinstance(test.ops[0], ast.Eq)

    def _decorator_mode(self, node) -> bool | None:
        for dec in node.decorator_list:
            mode = self._grad_mode(dec)
            if mode is not None:
                return mode
        return None

    def _grad_mode(self, expr) -> bool | None:
        """True for no_grad/inference_mode, False for enable_grad, None for anything else."""
        target = expr.func if isinstance(expr, ast.Call) else expr
        name = qualname(target, self.aliases)
        args = expr.args if isinstance(expr, ast.Call) else []
        const = args[0].value if args and isinstance(args[0], ast.Constant) else None
        if name in _NOGRAD:
            return None if const is False else True
        if name in _ENABLEGRAD:
            return False
        if name == "torch.set_grad_enabled" and isinstance(const, bool):
            return not const
        return None

    def define_class(self, node: ast.ClassDef, frame: Frame) -> None:
        info = {
            "bases": [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases],
            "methods": {},
            "attrs": {},
        }
        self.classes[node.name] = info
        body = Frame(node.name, parent=frame)
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{node.name}.{stmt.name}"
                self.functions[key] = _Func(stmt, frame, self._decorator_mode(stmt))
                info["methods"][stmt.name] = key
            else:
                self.exec_stmt(stmt, body)  # class attributes: config defaults, dataclass fields
        info["attrs"] = dict(body.env)
        frame.set(node.name, frozenset({("cls", node.name)}))

    def _class_chain(self, name: str, seen=None):
        seen = seen or set()
        if name in self.classes and name not in seen:
            seen.add(name)
            yield self.classes[name]
            for base in self.classes[name]["bases"]:
                yield from self._class_chain(base, seen)

    def _method(self, cls: str, attr: str) -> str | None:
        for info in self._class_chain(cls):
            if attr in info["methods"]:
                return info["methods"][attr]
        return None

    def exec_loop(self, node, frame: Frame) -> None:
        loop_id = self.loop_ids.setdefault((self.call_path, id(node)), len(self.loop_ids))
        self.loop_lines[loop_id] = node.lineno
        label = ("iter", loop_id)
        items = self.eval(node.iter if not isinstance(node, ast.While) else node.test, frame)
        element = (
            functools.reduce(join, items.items) if isinstance(items, Tup) and items.items else flat(items)
        )
        before, record = dict(frame.env), self.record
        # loop-carried names vary per iteration, unless they already held validation tokens on entry
        # (`x = x[perm]` reshuffles the same tokens, it does not move to new ones)
        if id(node) not in self._loop_names:  # syntax facts, the same for every visit of this loop
            self._loop_names[id(node)] = (self._carried(node), self._exit_names(node))
        carried_names, exit_names = self._loop_names[id(node)]
        carried = {n for n in carried_names if VAL not in flat(before.get(n, EMPTY))}
        self.loops += (loop_id,)
        self.moving.append((exit_names, label, frame))
        try:
            for pass_index in (0, 1):  # pass 0 reaches the taint fixpoint, pass 1 records events
                self.record = record and pass_index == 1
                if not isinstance(node, ast.While):
                    self.assign(node.target, flat(element) | {label}, frame)
                for name in carried:
                    if frame.env.get(name) is not None:
                        frame.env[name] = flat(frame.env[name]) | {label}
                self.exec_block(node.body, frame)
        finally:
            self.loops, self.record = self.loops[:-1], record
            self.moving.pop()
        frame.env = _join_env(before, frame.env)
        self.exec_block(node.orelse, frame)

    @staticmethod
    def _exit_names(node) -> set[str]:
        """Names a while loop's exit tests read: `idx = claim_next(); if idx >= n: break` hands out a
        new item each iteration, as a for loop's variable does, wherever `idx` is assigned."""
        if not isinstance(node, ast.While):
            return set()
        tests = [node.test] + [
            s.test for s in node.body if isinstance(s, ast.If) and _ends(s.body) and not s.orelse
        ]
        return {n.id for t in tests for n in ast.walk(t) if isinstance(n, ast.Name)}

    @staticmethod
    def _carried(node) -> set[str]:
        """Names updated from their own value inside the loop (`pos += n`, `seen = cat([seen, x])`)."""
        out = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name):
                out.add(sub.target.id)
            elif isinstance(sub, ast.Assign):
                used = {n.id for n in ast.walk(sub.value) if isinstance(n, ast.Name)}
                out |= {t.id for t in sub.targets if isinstance(t, ast.Name) and t.id in used}
        return out

    def exec_with(self, node, frame: Frame) -> None:
        saved = (self.nograd, self.region)
        for item in node.items:
            mode = self._grad_mode(item.context_expr)
            value = self.eval(item.context_expr, frame)
            if item.optional_vars is not None:
                self.assign(item.optional_vars, value, frame)
            # a no_grad block inside a model's own forward (a detached target, a cache) is part of the
            # forward, not a scoring pass: scoring is the caller's no_grad around the model call
            if mode is True and not self.nograd and not self._in_model_code():
                self.nograd, self.region = True, (self.call_path, id(node))
            elif mode is False:
                self.nograd = False
        try:
            self.exec_block(node.body, frame)
        finally:
            self.nograd, self.region = saved

    def assign(self, target, value, frame: Frame) -> None:
        if isinstance(target, ast.Name):
            moving = {label for names, label, owner in self.moving if owner is frame and target.id in names}
            moving |= self.control
            frame.set(target.id, flat(value) | moving if moving else value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            elts = target.elts
            exact = isinstance(value, Tup) and len(value.items) == len(elts)
            exact = exact and not any(isinstance(e, ast.Starred) for e in elts)
            for i, elt in enumerate(elts):
                self.assign(
                    elt.value if isinstance(elt, ast.Starred) else elt,
                    value.items[i] if exact else flat(value),
                    frame,
                )
        elif isinstance(target, ast.Attribute):
            # field store: on the allocation sites of the base object, and as an `a.b` path
            base = self.eval(target.value, frame)
            for label in flat(base):
                if label[0:1] == ("obj",):
                    key = (label[2], target.attr)
                    self.heap[key] = join(self.heap.get(key, EMPTY), value)
            path = _dotted(target)
            if path:
                frame.set(path, value)
        elif isinstance(target, ast.Subscript):
            # container store: weakly taints the container variable
            root = _root_name(target)
            self.eval(target.slice, frame)
            if root:
                frame.set(root, join(frame.lookup(root) or EMPTY, flat(value) | self.control))
        elif isinstance(target, ast.Starred):
            self.assign(target.value, value, frame)

    # ---- expressions ----------------------------------------------------------------------------
    def eval(self, node, frame: Frame):
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, str):
                return EMPTY
            # the literal itself is kept (short ones only) so `split == "train"` branches can be decided
            value = frozenset({("const", node.value)}) if len(node.value) <= 64 else EMPTY
            if is_val_string(node.value):
                self.val_lines.add(node.lineno)
                value |= {VAL}
            return value
        if isinstance(node, ast.JoinedStr):  # f-string: a path when its literal parts name val shards
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    self.eval(part.value, frame)
            text = "".join(_fstring_part(p) for p in node.values)
            if is_val_string(text):
                self.val_lines.add(node.lineno)
                return frozenset({VAL})
            return EMPTY
        if isinstance(node, ast.Name):
            if node.id == DROPPED_FIELD:  # see parser.py: a pre-3.12 parser could not keep this field
                self.reasons[f"an f-string field at line {node.lineno} could not be read; cannot see it"] = (
                    None
                )
            value = frame.lookup(node.id)
            return EMPTY if value is None else value
        if isinstance(node, ast.Attribute):
            return self.eval_attribute(node, frame)
        if isinstance(node, ast.Subscript):
            base, index = self.eval(node.value, frame), self.eval(node.slice, frame)
            sl = node.slice
            if (
                isinstance(base, Tup)
                and isinstance(sl, ast.Constant)
                and isinstance(sl.value, int)
                and -len(base.items) <= sl.value < len(base.items)
            ):
                return base.items[sl.value]
            # indexing selects from the base; an index contributes only how it varies with loops
            keyed = VAL in flat(index) and isinstance(sl, ast.Constant)  # os.environ["VAL_FILES"]
            return _strip(flat(base)) | iters_of(index) | (frozenset({VAL}) if keyed else EMPTY)
        if isinstance(node, (ast.Tuple, ast.List)):
            return Tup(
                tuple(
                    flat(self.eval(e, frame)) if isinstance(e, ast.Starred) else self.eval(e, frame)
                    for e in node.elts
                )
            )
        if isinstance(node, ast.Call):
            return self.eval_call(node, frame)
        if isinstance(node, ast.BinOp):
            left = self.eval(node.left, frame)
            right = self.eval(node.right, frame)
            if isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant):
                return _strip(flat(left))  # "%s" % x formats a message
            return _strip(flat(left) | flat(right))
        if isinstance(node, ast.Compare):
            sides = [flat(self.eval(e, frame)) for e in [node.left, *node.comparators]]
            self.compares[id(node)] = sides
            return frozenset().union(*sides)
        if isinstance(node, ast.Lambda):
            key = f"{frame.function}.<lambda:{node.lineno}>"
            self.functions[key] = _Func(node, frame, None)
            return frozenset({("fn", key)})
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self.eval_comprehension(node, frame)
        if isinstance(node, ast.IfExp):
            test = self.eval(node.test, frame)
            self._note_choice(node.test, frame)
            decided = self._decide(node.test, frame)
            if decided is not None:
                return self.eval(node.body if decided else node.orelse, frame)
            body, orelse = self.eval(node.body, frame), self.eval(node.orelse, frame)
            switch = self._switch(node.test, test)
            if switch:  # `files = VAL_FILES if TRAIN_ON_VAL else TRAIN_FILES`: as for an if statement
                default, other = (body, orelse) if switch[1] else (orelse, body)
                if VAL in flat(other) and VAL not in flat(default):
                    self.unfollowed.setdefault(switch[0], node.lineno)
                return default
            return join(body, orelse)
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            if node.value is not None:
                frame.ret = join(frame.ret, self.eval(node.value, frame))
            return EMPTY
        if isinstance(node, ast.NamedExpr):
            value = self.eval(node.value, frame)
            self.assign(node.target, value, frame)
            return value
        if isinstance(node, ast.Dict):  # values only: keys are names, not data
            return frozenset().union(*(flat(self.eval(v, frame)) for v in node.values))
        # BoolOp, UnaryOp, Set, Slice, Starred, Await, FormattedValue...: union of the parts
        return frozenset().union(
            *(flat(self.eval(c, frame)) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr))
        )

    def eval_attribute(self, node: ast.Attribute, frame: Frame):
        path = _dotted(node)
        if path:
            stored = frame.lookup(path)
            if stored is not None:
                return stored
        base = self.eval(node.value, frame)
        if node.attr in _SIZE_ATTRS:
            return iters_of(base)
        refs = [x for x in flat(base) if _is_ref(x)]
        # objects whose __init__ we ran have precise per-field taint in the heap; others (dataclasses,
        # library objects) carry their constructor arguments' data in every field
        objs = [x for x in refs if x[0] == "obj"]
        precise = objs and all(self._method(x[1], "__init__") for x in objs)
        out = set(iters_of(base) if precise else data_of(base))
        for label in refs:
            if label[0] == "obj":
                out |= flat(self.heap.get((label[2], node.attr), EMPTY))
                if self._method(label[1], node.attr):  # `model.forward_logits`: a bound method
                    out.add(("bound", label[1], label[2], node.attr))
            if label[0] in ("obj", "cls"):
                for info in self._class_chain(label[1]):
                    if node.attr in info["attrs"]:
                        out |= flat(info["attrs"][node.attr])
                        break
        if not refs:
            out |= self.loose_attrs.get(node.attr, EMPTY)
        return frozenset(out)

    def eval_comprehension(self, node, frame: Frame):
        # a comprehension is a loop in its own scope; its result holds every element's labels, and
        # varies with any loop its filters depend on (`[w for w in windows if w // size == ci]`)
        inner = Frame(frame.function, parent=frame)
        pushed, filters = 0, EMPTY
        for gen in node.generators:
            items = self.eval(gen.iter, inner)
            loop_id = self.loop_ids.setdefault((self.call_path, id(gen)), len(self.loop_ids))
            self.loop_lines[loop_id] = node.lineno
            self.loops += (loop_id,)
            pushed += 1
            self.assign(gen.target, flat(items) | {("iter", loop_id)}, inner)
            for cond in gen.ifs:
                filters |= iters_of(self.eval(cond, inner))
        try:
            if isinstance(node, ast.DictComp):
                return flat(self.eval(node.key, inner)) | flat(self.eval(node.value, inner)) | filters
            return flat(self.eval(node.elt, inner)) | filters
        finally:
            self.loops = self.loops[: len(self.loops) - pushed]

    # ---- calls ----------------------------------------------------------------------------------
    def eval_call(self, node: ast.Call, frame: Frame):
        func = node.func
        name = qualname(func, self.aliases)
        # `f(a, *rest)`: what follows the first starred argument has no known position; it may reach
        # any remaining parameter (the `*` pool, see invoke), as `fn(*args, **kwargs)` helpers need
        args, star = [], None
        for a in node.args:
            value = self.eval(a, frame)
            if isinstance(a, ast.Starred) or star is not None:
                star = join(star if star is not None else EMPTY, flat(value))
            else:
                args.append(value)
        kwargs = {k.arg or "**": self.eval(k.value, frame) for k in node.keywords}
        if star is not None:
            kwargs["*"] = star
        arg_labels = frozenset().union(*(flat(v) for v in [*args, *kwargs.values()]))
        recv, attr = None, None
        if isinstance(func, ast.Attribute) and name is None:
            recv, attr = self.eval(func.value, frame), func.attr
        callee = frame.lookup(func.id) if isinstance(func, ast.Name) and name is None else None
        builtin = isinstance(func, ast.Name) and callee is None and name is None and func.id in _BUILTINS

        # gradient use
        if self._is_grad_call(node):
            self.visited.add(id(node))
            grads_of = flat(recv) if recv is not None else flat(args[0]) if args else arg_labels
            if VAL in grads_of:
                self.event("grad", node, frame, data_of(grads_of))
            return EMPTY
        # things that hide code or data from the analysis
        if name in _DYNAMIC or (
            builtin and func.id == "__import__" and not (node.args and isinstance(node.args[0], ast.Constant))
        ):
            self.reasons[f"dynamic import/code at line {node.lineno}; cannot see what it runs"] = None
        written = (name in _FILE_SINKS or attr == "tofile") and VAL in arg_labels | flat(recv or EMPTY)
        if written and not any(x[0] == "score" for x in arg_labels if isinstance(x, tuple)):  # not a score
            self.reasons[
                f"validation data written to a file at line {node.lineno}; "
                "the checker cannot follow data through files"
            ] = None
        if (
            name
            and (name.startswith("subprocess.") or name in _SHELL)
            and node.args
            and _runs_code(node.args[0])
        ):
            self.reasons[
                f"shell command built at run time at line {node.lineno}; cannot see what it runs"
            ] = None
        # argparse flags naming validation data become attributes of the parsed namespace
        if attr == "add_argument":
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if flags and (VAL in arg_labels):
                dest = flags[-1].lstrip("-").replace("-", "_")
                self.loose_attrs[dest] = frozenset({VAL})
        if name and name.split(".")[0] in self.unseen:
            handed = [
                what
                for what, present in (
                    ("validation data", VAL in arg_labels and not self._in_model_code()),
                    ("an optimizer", any(x[0:1] == ("opt",) for x in arg_labels)),
                    ("a model", any(self._method(x[1], "forward") for x in arg_labels if x[0:1] == ("obj",))),
                )
                if present
            ]
            if handed:
                module = name.split(".")[0]
                self.reasons[
                    f"line {node.lineno} hands {' and '.join(handed)} to {name}, from {module} (imported at "
                    f"line {self.unseen[module]}), code the checker cannot see"
                ] = None
        # an environment switch read with a literal default (see Analyzer._switch)
        if name in ("os.environ.get", "os.getenv") and node.args and isinstance(node.args[0], ast.Constant):
            default = node.args[1] if len(node.args) > 1 else None
            if default is None or isinstance(default, ast.Constant):
                env = ("env", node.args[0].value, default.value if default is not None else None)
                # the variable's name says validation data only if it names a path or set
                # (`VAL_FILES`), not a flag about it (`TRAIN_ON_VAL`, `SKIP_VAL`)
                variable = str(node.args[0].value)
                named = is_val_string(variable) and not _VAL_FLAG_WORDS.search(variable)
                value = _strip(flat(args[1])) if len(args) > 1 else EMPTY
                return value | {env} | (frozenset({VAL}) if named else EMPTY)
        if (
            builtin
            and func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            # getattr(args, "slot_enabled", False) reads the field (and its switch) like args.slot_enabled
            field_node = ast.copy_location(ast.Attribute(node.args[0], node.args[1].value, ast.Load()), node)
            value = self.eval_attribute(field_node, frame)
            return join(value, args[2]) if len(args) > 2 and value == EMPTY else value
        if name == "copy.deepcopy" and args:
            # a copy is a new object (a throw-away model for a warm-up is not the model that is scored)
            site, out = (self.call_path, id(node)), set()
            for label in flat(args[0]):
                if label[0:1] == ("obj",):
                    for (old, field_name), value in list(self.heap.items()):
                        if old == label[2]:
                            self.heap[(site, field_name)] = value
                    out.add(("obj", label[1], site))
                else:
                    out.add(label)
            return frozenset(out)
        # sizes are not tokens
        if (builtin and func.id in _SIZE_BUILTINS) or attr in _SIZE_METHODS:
            return iters_of(arg_labels | flat(recv or EMPTY))
        if builtin and func.id in ("min", "max", "sorted"):
            operands = [*args, *kwargs.values()]
            if len(operands) == 1 and isinstance(operands[0], Tup):  # min([a, b]) / max((a, b))
                operands = list(operands[0].items)
            self._note_passes([flat(v) for v in operands], node, frame)

        if name == "functools.partial" and args:
            # partial(f, a, k=v): a reference to f with those arguments bound in front (see invoke)
            site = (self.call_path, id(node))
            self.partials[site] = (args[1:], {k: v for k, v in kwargs.items() if k != "*"})
            fns = [x for x in flat(args[0]) if x[0:1] == ("fn",)]
            if fns:
                return frozenset(("pfn", x[1], site) for x in fns)

        # calls into script code: functions, constructors, methods, model forwards
        result, resolved, model_like = EMPTY, False, False
        targets: list[tuple] = []  # (function key, self value[, arguments bound by a partial])
        if callee is not None:
            for label in flat(callee):
                if label[0:1] == ("fn",):
                    targets.append((label[1], None, ((), {})))
                elif label[0:1] == ("pfn",):
                    targets.append((label[1], None, self.partials.get(label[2], ((), {}))))
                elif label[0:1] == ("cls",):
                    result = join(result, self.construct(label[1], node, args, kwargs))
                    resolved = True
                elif label[0:1] == ("obj",):
                    key = self._method(label[1], "forward") or self._method(label[1], "__call__")
                    if key:
                        targets.append((key, frozenset({label})))
                        model_like = True
                elif label[0:1] == ("bound",):  # `fn = model.forward_logits; fn(x)`
                    key = self._method(label[1], label[3])
                    if key:
                        targets.append((key, frozenset({("obj", label[1], label[2])})))
                        model_like = model_like or self._method(label[1], "forward") is not None
        if recv is not None:
            objs = [x for x in flat(recv) if _is_ref(x) and x[0] in ("obj", "cls")]
            for label in objs:
                key = self._method(label[1], attr)
                if key:
                    targets.append((key, recv))
                    model_like = model_like or self._method(label[1], "forward") is not None  # a module
            if not objs and attr not in ("forward", "__call__", "__init__"):
                owners = [c for c, info in self.classes.items() if attr in info["methods"]]
                if len(owners) == 1:  # a unique method name defined in the script
                    targets.append((self.classes[owners[0]]["methods"][attr], recv))
        # a model-like call on validation tokens under no_grad is scoring; calls nested inside an
        # inlined model forward belong to this one scoring call, so they are not recorded again
        scoring = self.nograd and model_like and VAL in arg_labels and not self.in_scoring
        used = _sites(arg_labels | flat(recv or EMPTY) | flat(callee or EMPTY))
        if scoring:
            self.event("score", node, frame, data_of(arg_labels), used)
        elif self.nograd and VAL in arg_labels and not self.in_scoring and _fwd_sites(arg_labels) is not None:
            # scoring a forward computed earlier with gradients on (`with no_grad: accumulate(loss)`)
            scoring = True
            self.event("score", node, frame, data_of(arg_labels), _fwd_sites(arg_labels))
        extra = data_of(callee) if callee is not None else EMPTY  # e.g. functools.partial(f, val)
        outer, self.in_scoring = self.in_scoring, self.in_scoring or scoring
        try:
            for key, self_value, *bound in targets:
                call_args, call_kwargs = args, kwargs
                if bound:  # a function value called by the script: partial's arguments come first
                    call_args, call_kwargs = [*bound[0][0], *args], {**bound[0][1], **kwargs}
                result = join(
                    result,
                    self.invoke(key, call_args, call_kwargs, node, self_value, extra, strict=bool(bound)),
                )
                resolved = True
        finally:
            self.in_scoring = outer
        if not resolved:
            result = _strip(arg_labels | flat(recv or EMPTY)) | data_of(callee or EMPTY)
            # callbacks (closures handed to optimizer.step, torch.compile, ...): run them too
            for label in arg_labels:
                if isinstance(label, tuple) and label[0] == "fn":
                    self.invoke(label[1], [], {}, node, None, data_of(arg_labels))
            if attr in _MUTATORS and isinstance(func, ast.Attribute):
                root = _root_name(func.value)
                if root:
                    frame.set(root, join(frame.lookup(root) or EMPTY, data_of(arg_labels) | self.control))
            if name is not None:
                model_like = name.startswith("torch.nn.functional.")
            elif recv is not None:
                model_like = attr not in _DATA_METHODS and not attr.endswith("_") and VAL not in flat(recv)
            else:
                model_like = not builtin
            if self.nograd and model_like and VAL in arg_labels and not self.in_scoring:
                scoring = True
                self.event("score", node, frame, data_of(arg_labels), used)
            if name and name.startswith("torch.optim.") and name.split(".")[-1][:1].isupper():
                # a torch optimizer: remember whose parameters its step() updates (throw-away copies)
                site = (self.call_path, id(node))
                self.optimizers[site] = self.optimizers.get(site, EMPTY) | _sites(arg_labels)
                result = flat(result) | {("opt", site)}
            if attr == "step" and recv is not None:
                steps = [x[1] for x in flat(recv) if x[0:1] == ("opt",)]
                if steps and self.record:
                    owners = frozenset().union(*(self.optimizers.get(site, EMPTY) for site in steps))
                    for pos in self.pending_grads:
                        self.grad_owners[pos] = self.grad_owners.get(pos, EMPTY) | owners
                    self.pending_grads = []
        if not scoring and model_like and VAL in arg_labels and not self.nograd and not self.in_scoring:
            # a forward on validation tokens with gradients on: its output may be both scored (read
            # under no_grad, or `.item()`-accumulated) and trained on, as per-document LoRA TTT does
            result = flat(result) | {("fwd", used)}
        if scoring:
            result = flat(result) | {("score", self.region)}
        # stateful loaders hand out new tokens on each call inside a loop
        stateful = attr in _STATEFUL or (builtin and func.id == "next")
        if stateful and self.loops and VAL in flat(recv or EMPTY) | arg_labels:
            result = flat(result) | {("iter", self.loops[-1])}
        return result

    def construct(self, cls: str, node: ast.Call, args, kwargs):
        """A script class instantiated: a fresh allocation site, `__init__` run with the real arguments."""
        obj = frozenset({("obj", cls, (self.call_path, id(node)))})
        init = self._method(cls, "__init__") or self._method(cls, "__post_init__")
        if init is not None:
            self.invoke(init, args, kwargs, node, obj, EMPTY)
        # the object also carries its arguments' data: a Dataset built on validation tokens stays
        # validation data when handed to a library DataLoader and iterated there
        return obj | frozenset().union(*(data_of(v) for v in [*args, *kwargs.values()]))

    def invoke(self, key: str, args, kwargs, node: ast.Call, self_value, extra, strict: bool = False):
        """Inline a script function with these argument values; return its return value."""
        info = self.functions.get(key)
        if info is None or key in self.active or len(self.call_path) >= MAX_CALL_DEPTH:
            # recursion or too deep: summarise the call by its arguments (what it returns may hold them)
            labels = _strip(frozenset().union(*(flat(v) for v in [*args, *kwargs.values()])))
            if info is not None and key not in self.active and VAL in labels:
                self.reasons[f"call depth limit reached at line {node.lineno}"] = None
            return labels
        fn = info.node
        frame = Frame(key, parent=info.closure)
        a = fn.args
        positional = [*a.posonlyargs, *a.args]
        values = ([self_value] if self_value is not None else []) + list(args)
        kwargs = dict(kwargs)
        # bind parameters like Python does; `extra` (data bound into a partial/closure value) reaches them all
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        for i, param in enumerate(positional):
            if i < len(values):
                value = values[i]
            elif param.arg in kwargs:
                value = kwargs.pop(param.arg)
            elif "*" in kwargs:
                value = kwargs["*"]
            elif defaults[i] is not None:
                value = self.eval(defaults[i], info.closure)
            else:
                value = kwargs.get("**", EMPTY)
                if strict and "**" not in kwargs and self._trains_or_scores(fn):
                    # Python would raise here; the analysis has lost which value reaches this parameter
                    self.reasons[
                        f"call at line {node.lineno} gives no value for parameter {param.arg!r} of {key}, "
                        "which trains or scores; lost track of its data"
                    ] = None
            frame.env[param.arg] = join(value, extra) if extra else value
        for param, default in zip(a.kwonlyargs, a.kw_defaults):
            value = kwargs.pop(param.arg, None)
            if value is None and "**" in kwargs:
                value = kwargs["**"]
            if value is None:
                value = self.eval(default, info.closure) if default is not None else EMPTY
            frame.env[param.arg] = flat(value) | extra
        if a.vararg:
            frame.env[a.vararg.arg] = frozenset().union(*(flat(v) for v in values[len(positional) :])) | extra
        if a.vararg and "*" in kwargs:
            frame.env[a.vararg.arg] = flat(frame.env[a.vararg.arg]) | flat(kwargs.pop("*"))
        kwargs.pop("*", None)
        if a.kwarg:
            frame.env[a.kwarg.arg] = frozenset().union(*(flat(v) for v in kwargs.values())) | extra
        # the call path keeps loops and allocation sites inside distinct per call site; a @no_grad /
        # @inference_mode decorator opens a scoring region for the body, @enable_grad closes it
        saved = (self.call_path, self.nograd, self.region)
        self.call_path += (id(node),)
        self.active.append(key)
        try:
            if info.grad_mode is True and not self.nograd:
                self.nograd, self.region = True, (self.call_path, id(fn))
            elif info.grad_mode is False:
                self.nograd = False
            if isinstance(fn, ast.Lambda):
                return self.eval(fn.body, frame)
            self.exec_block(fn.body, frame)
            return frame.ret
        finally:
            self.active.pop()
            self.call_path, self.nograd, self.region = saved

    # ---- events ---------------------------------------------------------------------------------
    def event(self, kind: str, node, frame: Frame, data: frozenset, refs: frozenset = EMPTY) -> None:
        # the first pass over a loop body only reaches the taint fixpoint; events come from the second
        if not self.record:
            return
        if len(self.events) >= MAX_EVENTS:
            self.reasons["too many scoring/gradient events to analyse"] = None
            return
        self.pos += 1
        self.events.append(
            Event(
                kind,
                self.pos,
                node.lineno,
                frame.function,
                self.loops,
                data,
                self.region if kind == "score" else None,
                self.branch,
                self.conds,
                refs,
            )
        )
        if kind == "grad":
            self.pending_grads.append(self.pos)

    def _note_passes(self, operands: list, node, frame: Frame) -> None:
        """Choosing among passes: two operands holding the results of different scoring passes
        (`min(bpb_plain, bpb_ttt)`), not one value that mixes passes (`max(token_count, 1)`)."""
        per_operand = [{x[1] for x in ops if isinstance(x, tuple) and x[0] == "score"} for ops in operands]
        per_operand = [p for p in per_operand if p]
        passes = set().union(*per_operand)
        distinct = any(a != b for a in per_operand for b in per_operand)
        if len(per_operand) >= 2 and distinct and len(passes) >= 2 and self.record:
            self.choices.append((node.lineno, frame.function, len(passes)))

    def _note_choice(self, test, frame: Frame) -> None:
        """An `if`/conditional comparing results of different scoring passes chooses among them."""
        if id(test) not in self._compare_nodes:
            self._compare_nodes[id(test)] = [sub for sub in ast.walk(test) if isinstance(sub, ast.Compare)]
        for sub in self._compare_nodes[id(test)]:
            if id(sub) in self.compares:
                self._note_passes(self.compares[id(sub)], sub, frame)


def _ends(body: list) -> bool:
    """Does this block always leave (return, raise, continue, break), so what follows it is the else arm?"""
    if not body:
        return False
    last = body[-1]
    if isinstance(last, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
        return True
    if isinstance(last, ast.If):
        return _ends(last.body) and _ends(last.orelse)
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):  # sys.exit(...), exit(), quit()
        func = last.value.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return called in ("exit", "quit", "_exit")
    return False


def _typed(default):
    """An environment default as the program will likely use it: "3" -> 3, "0.5" -> 0.5, else as is."""
    if isinstance(default, str):
        for kind in (int, float):
            try:
                return kind(default)
            except ValueError:
                pass
    return default


def _truthy(default) -> bool:
    """Truth of a switch read as `bool(int(x))`, `x == "1"`-style flags or a plain string."""
    if isinstance(default, str) and default.strip().lower() in ("", "0", "false", "no", "off", "none"):
        return False
    return bool(_typed(default))


_CMP = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}


def _compare(op, default, literal) -> bool | None:
    try:
        if (
            isinstance(op, (ast.Eq, ast.NotEq))
            and isinstance(default, (int, float))
            and isinstance(literal, str)
        ):
            default = str(default)  # `os.environ.get("X", "1") == "1"` compares strings
        return _CMP[type(op)](default, literal) if type(op) in _CMP else None
    except TypeError:
        return None


def _fwd_sites(labels: frozenset) -> frozenset | None:
    """Objects used by the gradient-mode forwards these labels come from; None if none does."""
    found = [x[1] for x in labels if isinstance(x, tuple) and x[0] == "fwd"]
    return frozenset().union(*found) if found else None


_INTERPRETERS = {"python", "python3", "torchrun", "bash", "sh", "zsh", "env", "exec"}


def _runs_code(command) -> bool:
    """Could this subprocess command run code the checker cannot see? A named tool given file
    arguments (`["lrzip", "-d", path]`, `[shutil.which("pyminify"), path]`, `["nvidia-smi"]`) cannot;
    a command string built at run time, `sys.executable ...` or an interpreter with computed arguments can.
    """
    if isinstance(command, ast.Constant):
        return False
    if not isinstance(command, (ast.List, ast.Tuple)) or not command.elts:
        return True  # a string built at run time (shell=True style), or a command held in a variable
    prog, rest = command.elts[0], command.elts[1:]
    programs = [prog.body, prog.orelse] if isinstance(prog, ast.IfExp) else [prog]
    literal_rest = all(isinstance(e, ast.Constant) for e in rest)
    for p in programs:
        if isinstance(p, ast.Constant) and isinstance(p.value, str):
            if p.value.rsplit("/", 1)[-1] in _INTERPRETERS and not literal_rest:
                return True
        elif _dotted(p) == "sys.executable":
            if not literal_rest:
                return True
        elif not isinstance(p, (ast.Name, ast.Attribute, ast.Call)):
            return True
    return False


def _sites(labels: frozenset) -> frozenset:
    """Allocation sites of the script objects among these labels."""
    return frozenset(x[2] for x in labels if isinstance(x, tuple) and x[0] in ("obj", "bound"))


def _fstring_part(part) -> str:
    """An f-string part as text: literal parts and literal fields (`{"val"}`) as written, others `*`."""
    if isinstance(part, ast.Constant):
        return str(part.value)
    value = getattr(part, "value", None)
    if isinstance(value, ast.Constant) and isinstance(value.value, str) and part.format_spec is None:
        return value.value
    return "*"


def _dotted(node) -> str | None:
    """`a.b.c` for a Name-rooted attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None
