"""Read a submission script and unwrap code-golfed payloads without executing anything.

Parameter-golf counts code bytes against the 16 MB budget, so some submissions ship their script as
`exec(lzma.decompress(base64.b85decode("...")))` (or zlib / gzip / bz2 with b64 / b85 / a85, sometimes
nested, sometimes through `exec(compile(...))`). To check such a script we must see the real code.

How: the decode chain is recognised in the syntax tree (a call of a known stdlib decoder on a string
literal, a module constant, or another recognised call), the *real* stdlib decoders are applied to the
literal, and the result is parsed and spliced in place of the `exec(...)` statement; then we look again
(bounded depth). Nothing from the script is ever run: only `lzma`, `zlib`, `bz2`, `base64`, `binascii` and
`ast.parse` touch the bytes.

Safety limits: each decoded payload may hold at most `MAX_PAYLOAD_BYTES`, all payloads together
`MAX_TOTAL_BYTES` (decompressors are driven with `max_length`, so a decompression bomb stops at the limit
instead of filling memory), and at most `MAX_DEPTH` nested layers are opened. A payload refused by these
limits, or an `exec` of anything not statically decodable, leaves the node in place and adds a reason:
the verdict becomes `unknown`, never `legal`.

Limits: line numbers inside a spliced payload are those of the payload's own text; `eval(...)` is never
unwrapped (it is reported); only the decoders listed in `_DECODERS` are recognised.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import lzma
import os
import zlib
from dataclasses import dataclass, field

from golf.check.parser import parse_python
from golf.errors import GolfError

MAX_DEPTH = 4  # nested exec layers followed; real golfed scripts use one, rarely two
MAX_PAYLOAD_BYTES = 4 * 2**20  # one decoded layer; a 1,500-line script is about 60 KB
MAX_TOTAL_BYTES = 16 * 2**20  # all layers together, so many small layers cannot add up to a bomb
MAX_LZMA_DICT_BYTES = 64 * 2**20  # raw LZMA2 filters name their dictionary; preset 9 uses 64 MiB


class _Refused(Exception):
    """A payload we will not open (too large, too deep): the verdict must be `unknown`."""


class _NotStatic(Exception):
    """The exec argument is not a literal chain we can decode without running code."""


def read_source(path: str | os.PathLike) -> str:
    """The script's text; GolfError (exit 3 in the CLI) if it is missing or not UTF-8."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise GolfError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GolfError(f"{path}: is a directory, expected a Python script") from None
    except OSError as exc:
        raise GolfError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig")  # a leading byte-order mark is valid in Python source
    except UnicodeDecodeError as exc:
        raise GolfError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def parse_source(source: str, label: str) -> ast.Module:
    """Parse Python text with current Python's grammar (`parser.py`); GolfError naming `label` and the
    line if it is not Python."""
    return parse_python(source, label)[0]


def module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted module path for every import in the tree (`import lzma as L` -> L: lzma)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                # `import a.b` binds `a`; `import a.b as c` binds `c` to `a.b`
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def qualname(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """Dotted name of a module-level callable (`B.b85decode` -> `base64.b85decode`), else None.

    `__import__("lzma")` counts as the module `lzma`: golfed scripts often avoid import statements.
    """
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = qualname(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "__import__"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


# ---- bounded decoders ------------------------------------------------------------------------------
def _bounded(decompressor, data: bytes, name: str) -> bytes:
    """Run a stdlib decompressor object with an output cap; refuse (not fail) if the cap is hit."""
    out = decompressor.decompress(data, max_length=MAX_PAYLOAD_BYTES + 1)
    if len(out) > MAX_PAYLOAD_BYTES:
        raise _Refused(f"{name} payload expands beyond {MAX_PAYLOAD_BYTES} bytes (decompression bomb?)")
    return out


def _lzma_decoder(format: int = lzma.FORMAT_AUTO, memlimit: int | None = None, filters=None):
    """`lzma.decompress`'s options, checked: a raw stream needs its filter chain (given as literals)."""
    if format == lzma.FORMAT_RAW:
        # the decoder allocates the dictionary a filter asks for up front: a literal `dict_size` of
        # gigabytes would be a memory bomb before a single byte is decoded
        for f in filters or []:
            if isinstance(f, dict) and f.get("dict_size", 0) > MAX_LZMA_DICT_BYTES:
                raise _Refused(
                    f"lzma filter asks for a {f['dict_size']}-byte dictionary (over {MAX_LZMA_DICT_BYTES})"
                )
        return lzma.LZMADecompressor(format=format, filters=filters)
    if filters is not None:
        raise ValueError("lzma filters are only valid with FORMAT_RAW")
    return lzma.LZMADecompressor(format=format, memlimit=memlimit)


def _zlib(data: bytes, wbits: int = zlib.MAX_WBITS, bufsize: int = 0) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, MAX_PAYLOAD_BYTES + 1)
    if len(out) > MAX_PAYLOAD_BYTES or d.unconsumed_tail:
        raise _Refused(f"zlib payload expands beyond {MAX_PAYLOAD_BYTES} bytes (decompression bomb?)")
    return out


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else data


# dotted name -> decoder(data, *constant extra args); base64 variants never grow their input
_DECODERS = {
    "lzma.decompress": lambda d, *a, **k: _bounded(_lzma_decoder(*a, **k), _as_bytes(d), "lzma"),
    "zlib.decompress": lambda d, *a, **k: _zlib(_as_bytes(d), *a[:1], **k),
    "gzip.decompress": lambda d, *a, **k: _zlib(_as_bytes(d), 31),
    "bz2.decompress": lambda d, *a, **k: _bounded(bz2.BZ2Decompressor(), _as_bytes(d), "bz2"),
    "base64.b85decode": lambda d, *a, **k: base64.b85decode(d, *a, **k),
    "base64.b64decode": lambda d, *a, **k: base64.b64decode(d, *a, **k),
    "base64.a85decode": lambda d, *a, **k: base64.a85decode(d, *a, **k),
    "base64.b32decode": lambda d, *a, **k: base64.b32decode(d, *a, **k),
    "base64.b16decode": lambda d, *a, **k: base64.b16decode(d, *a, **k),
    "base64.urlsafe_b64decode": lambda d, *a, **k: base64.urlsafe_b64decode(d, *a, **k),
    "base64.decodebytes": lambda d, *a, **k: base64.decodebytes(_as_bytes(d)),
    "binascii.a2b_base64": lambda d, *a, **k: binascii.a2b_base64(d, **k),
    "binascii.unhexlify": lambda d, *a, **k: binascii.unhexlify(d),
}


@dataclass
class Unwrapped:
    """The tree to analyse, whether any payload was spliced in, and reasons for `unknown`."""

    tree: ast.Module
    unwrapped: bool = False
    reasons: list[str] = field(default_factory=list)


class _Splicer(ast.NodeTransformer):
    """Replace `exec(<static decode chain>)` statements by the statements of the decoded payload."""

    def __init__(self, tree: ast.Module, depth: int, budget: list[int], label: str):
        self.aliases = module_aliases(tree)
        self.consts = _module_constants(tree)
        self.depth, self.budget, self.label = depth, budget, label
        self.unwrapped = False
        self.reasons: dict[int, str] = {}  # line -> why its exec was left alone

    def visit_Expr(self, node: ast.Expr):
        call = node.value
        if not (_is_exec(call) and call.args):
            return self.generic_visit(node)
        line = node.lineno
        try:
            payload = self._static(call.args[0], before=line)
        except _NotStatic as exc:
            self.reasons[line] = f"exec() at line {line} runs code built at run time ({exc}); cannot see it"
            return node
        except _Refused as exc:
            self.reasons[line] = f"exec() at line {line}: {exc}; refused to unwrap"
            return node
        except (ValueError, TypeError, LookupError, lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
            # the script is Python; only its payload is broken (it would fail at run time): not exit 3
            self.reasons[line] = f"exec() payload at line {line} does not decode ({exc}); cannot see it"
            return node
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                self.reasons[line] = f"exec() payload at line {line} is not UTF-8 text; cannot see it"
                return node
        if self.depth + 1 > MAX_DEPTH:
            self.reasons[line] = f"exec payloads nested more than {MAX_DEPTH} deep at line {line}; refused"
            return node
        self.budget[0] -= len(payload)
        if self.budget[0] < 0:
            self.reasons[line] = f"exec payloads exceed {MAX_TOTAL_BYTES} bytes in total; refused to unwrap"
            return node
        try:
            inner = parse_source(payload, f"{self.label} (payload at line {line})")
        except GolfError as exc:
            self.reasons[line] = f"exec() payload at line {line} is not Python ({exc}); cannot see it"
            return node
        sub = _Splicer(inner, self.depth + 1, self.budget, self.label)
        inner = sub.visit(inner)
        self.reasons.update(sub.reasons)
        self.unwrapped = True
        return inner.body  # NodeTransformer splices a returned list into the enclosing body

    def _static(self, node: ast.AST, depth: int = 0, before: int = 1 << 30) -> bytes | str:
        """Value of a literal decode chain; raises _NotStatic for anything needing execution."""
        if depth > 32:
            raise _NotStatic("expression too deep")
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            return node.value
        if isinstance(node, ast.Name) and node.id in self.consts:
            # the module-level assignment in force at this point: `S = decompress(...); S = S.decode()`
            earlier = [(line, value) for line, value in self.consts[node.id] if line < before]
            if earlier:
                line, value = earlier[-1]
                return self._static(value, depth + 1, before=line)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = (
                self._static(node.left, depth + 1, before),
                self._static(node.right, depth + 1, before),
            )
            if type(left) is not type(right):
                raise _NotStatic("adds str to bytes")
            return left + right
        if isinstance(node, ast.Call):
            func = node.func
            # `.decode()` / `.encode()` on a static value: text <-> bytes, UTF-8 unless a literal says
            if isinstance(func, ast.Attribute) and func.attr in ("decode", "encode"):
                value = self._static(func.value, depth + 1, before)
                if isinstance(value, bytes) != (func.attr == "decode"):
                    raise _NotStatic(f".{func.attr}() on the wrong type")
                enc = _const_args(node.args)[:1] or ["utf-8"]
                return value.decode(*enc) if func.attr == "decode" else value.encode(*enc)
            # exec(compile(src, name, "exec")) runs src
            if (
                isinstance(func, ast.Name)
                and func.id == "compile"
                and node.args
                and "compile" not in self.aliases
            ):
                return self._static(node.args[0], depth + 1, before)
            name = qualname(func, self.aliases)
            if name in _DECODERS and node.args:
                data = self._static(node.args[0], depth + 1, before)
                # keyword arguments must be literals too: raw LZMA2 payloads are opened with
                # `format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]`
                kwargs = {k.arg: self._literal(k.value) for k in node.keywords if k.arg}
                if len(kwargs) != len(node.keywords):
                    raise _NotStatic("decoder called with **kwargs")
                return _DECODERS[name](data, *_const_args(node.args[1:]), **kwargs)
            raise _NotStatic(f"call to {name or ast.unparse(func)}")
        raise _NotStatic(f"{type(node).__name__} expression")

    def _literal(self, node: ast.AST, depth: int = 0):
        """A decoder option: a number/str/bool/None, a `lzma.FORMAT_*`/`FILTER_*`/`CHECK_*`/`PRESET_*`
        integer constant, or lists/tuples/dicts of these. Nothing else is accepted (nothing is run)."""
        if depth > 8:
            raise _NotStatic("decoder option nested too deeply")
        if isinstance(node, ast.Constant) and isinstance(
            node.value, (int, float, str, bytes, bool, type(None))
        ):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self._literal(node.operand, depth + 1)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # PRESET_DEFAULT | PRESET_EXTREME
            left, right = self._literal(node.left, depth + 1), self._literal(node.right, depth + 1)
            if isinstance(left, int) and isinstance(right, int):
                return left | right
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._literal(e, depth + 1) for e in node.elts]
        if isinstance(node, ast.Dict) and None not in node.keys:
            return {
                self._literal(k, depth + 1): self._literal(v, depth + 1)
                for k, v in zip(node.keys, node.values)
            }
        name = qualname(node, self.aliases)
        if name and name.startswith(("lzma.", "zlib.")):
            module, _, attr = name.partition(".")
            value = getattr(lzma if module == "lzma" else zlib, attr, None)
            if attr.isupper() and isinstance(value, int):
                return value
        raise _NotStatic(f"decoder option {ast.unparse(node)[:60]} is not a literal")


def _const_args(args: list[ast.expr]) -> list:
    out = []
    for a in args:
        if not isinstance(a, ast.Constant):
            raise _NotStatic("decoder argument is not a literal")
        out.append(a.value)
    return out


def _is_exec(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == "exec")
        or (
            isinstance(node.func, ast.Attribute)
            and node.func.attr == "exec"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "builtins"
        )
    )


def _module_constants(tree: ast.Module) -> dict[str, list[tuple[int, ast.expr]]]:
    """Names assigned at module level, each with its (line, value) assignments in order (golfed scripts
    put the blob in a variable, sometimes in two steps). A name also bound anywhere else (in a def, a
    loop, an augmented assignment) is left out: its value at the exec is not a literal fact."""
    top: dict[str, list[tuple[int, ast.expr]]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            top.setdefault(stmt.targets[0].id, []).append((stmt.lineno, stmt.value))
    top_assigns = {
        id(stmt.targets[0]) for stmt in tree.body if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
    }
    elsewhere = {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)) and id(n) not in top_assigns
    }
    return {name: values for name, values in top.items() if name not in elsewhere}


def unwrap(tree: ast.Module, label: str) -> Unwrapped:
    """Splice every statically decodable exec payload into `tree`; list the execs we could not open."""
    splicer = _Splicer(tree, 0, [MAX_TOTAL_BYTES], label)
    tree = ast.fix_missing_locations(splicer.visit(tree))
    reasons = dict(splicer.reasons)
    # Any exec/eval left (not a statement, or not decodable) hides code from the analysis.
    for node in ast.walk(tree):
        if _is_exec(node) and node.lineno not in reasons:
            reasons[node.lineno] = f"exec() at line {node.lineno} is not a decodable statement; cannot see it"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "eval":
            reasons.setdefault(node.lineno, f"eval() at line {node.lineno} runs code the checker cannot see")
    return Unwrapped(tree=tree, unwrapped=splicer.unwrapped, reasons=[reasons[k] for k in sorted(reasons)])
