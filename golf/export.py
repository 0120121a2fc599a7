"""`golf export`: a runnable parameter-golf record (train_gpt.py, submission.json, README.md) from a run.

train_gpt.py is golf's own code: the entry point `golf/submission.py` and every golf function it uses,
flattened into one plain Python file (`flatten`), with the run's resolved config inlined. Its size is
`artifact.bytes_code` in result.json (`script_bytes`), so bytes_total and fits describe a file that exists.

Why flattened, not embedded: a submission is one script that runs with only third-party packages
installed, and `golf check` must be able to read all of it (an `exec` of a string it cannot decode makes
its verdict `unknown`). So the golf code is not hidden as strings behind an import hook: it is *inlined*,
one module after the other, as ordinary top-level definitions.

How (`flatten`):
1. Starting from the entry module, every golf module it imports (at module level or inside functions),
   and so on, is parsed. Modules are ordered so that a module comes after the modules it imports at
   module level (the order Python's own imports would run them in).
2. Golf imports disappear. At module level `from golf.x import y as z` renames z to y in that module;
   inside a function it becomes `z = y`; `from golf import qat` followed by `qat.attach(...)` becomes
   `attach(...)`. A name is resolved through re-exports (`from golf.quant import QuantizedState` finds
   golf.quant.state's class).
3. Two modules defining the same top-level name differently: the later one's is renamed `name__module`
   in its module (scope-aware: a function's own local of that name is left alone).
4. The entry's `if TTT_STRATEGY == "...":` branches are decided (`_Fold`), so only the configured
   strategy's path remains.
5. Tree shaking: only the top-level statements the entry needs, transitively, are kept (a definition is
   kept when a kept statement names it; statements that define nothing, like a registry fill, are kept
   whole). This is what keeps unreachable code out: `golf check` calls a script `unknown` when it holds
   gradient code it cannot reach, and every byte counts against the 16 MB.
6. Third-party and standard imports are hoisted, one statement per distinct binding.

Annotations are not references (they are strings under postponed evaluation, which every golf module
uses), so a type named only in an annotation pulls nothing in. With `minify` (the wrapped form),
docstrings and argument/return annotations are dropped; dataclass fields keep theirs (dataclasses reads
them). Module docstrings and other modules' `__main__` blocks are always dropped.

Anything the flattener cannot express (a golf module used as a value, a star import, a name it cannot
resolve) raises GolfError naming the module and line, but only if the code holding it is kept, so a new
pattern in golf fails the export loudly instead of writing a broken script.
"""

from __future__ import annotations

import ast
import datetime
import functools
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from golf import __version__
from golf.artifact import wrap_code
from golf.errors import GolfError
from golf.io import atomic_dir, write_json, write_text
from golf.ttt import STRATEGIES


def _is_golf(name: str | None) -> bool:
    return bool(name) and (name == "golf" or name.startswith("golf."))


def _source_of(modname: str) -> tuple[Path, bool]:
    """(source file, is_package) of a golf module."""
    try:
        spec = importlib.util.find_spec(modname)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise GolfError(f"bundle: module {modname} has no Python source")
    return Path(spec.origin), spec.submodule_search_locations is not None


def _module_exists(modname: str) -> bool:
    try:
        return importlib.util.find_spec(modname) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class _Module:
    name: str
    is_package: bool
    tree: ast.Module
    deps: set[str] = field(default_factory=set)  # golf modules imported at module level
    lazy: set[str] = field(default_factory=set)  # golf modules imported inside functions
    aliases: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # local -> (module, name|None)

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.name if self.is_package else self.name.rpartition(".")[0]
        parts = package.split(".")
        base = parts[: len(parts) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))


def _parse(modname: str) -> _Module:
    path, is_package = _source_of(modname)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _Module(modname, is_package, tree)
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        targets: list[tuple[str, str, str | None]] = []  # (local, module, attribute or None)
        if isinstance(node, ast.Import):
            for a in node.names:
                if _is_golf(a.name):  # `import golf` / `import golf.x` bind the package `golf`
                    targets.append((a.asname, a.name, None) if a.asname else ("golf", "golf", None))
        elif isinstance(node, ast.ImportFrom):
            source = mod.absolute(node)
            if not _is_golf(source):
                continue
            for a in node.names:
                if a.name == "*":
                    raise GolfError(f"bundle: {modname} line {node.lineno}: star import from {source}")
                sub = f"{source}.{a.name}"
                if _module_exists(sub) and sub != source:
                    targets.append((a.asname or a.name, sub, None))  # `from golf import qat`: a module
                else:
                    targets.append((a.asname or a.name, source, a.name))
        for local, module, attr in targets:
            (mod.deps if id(node) in top else mod.lazy).add(module)
            if id(node) in top:
                mod.aliases[local] = (module, attr)
    return mod


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Top-level names a statement binds (defs, classes, assignments, imports, try/if bodies)."""
    out: set[str] = set()
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {a.asname or a.name.split(".")[0] for a in stmt.names}
    for node in ast.walk(stmt):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) and node is not stmt:
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {a.asname or a.name.split(".")[0] for a in node.names}
    if isinstance(stmt, (ast.If, ast.Try)):
        for node in ast.walk(stmt):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                out.add(node.name)
    return out


def _is_definition(stmt: ast.stmt) -> bool:
    """A statement whose only effect is binding names (kept only if one of them is needed)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return True
    if isinstance(stmt, ast.Assign):
        return all(isinstance(t, (ast.Name, ast.Tuple)) for t in stmt.targets)
    if isinstance(stmt, ast.AnnAssign):
        return isinstance(stmt.target, ast.Name)
    if isinstance(stmt, (ast.If, ast.Try)):
        return bool(_bound_names(stmt))
    return False


def _references(node: ast.AST) -> set[str]:
    """Global names a statement reads, anywhere inside it: annotations excluded, and a function's own
    locals (a local `code_bytes` is not a reference to a global `code_bytes`)."""
    out: set[str] = set()

    def visit(n: ast.AST, local: frozenset) -> None:
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local:
            out.add(n.id)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner = local | _local_names(n)
            for name, child in ast.iter_fields(n):
                if name in ("annotation", "returns", "args", "name"):
                    continue
                for c in child if isinstance(child, list) else [child]:
                    if isinstance(c, ast.AST):
                        visit(c, inner if name == "body" else local)
            for d in n.args.defaults + [d for d in n.args.kw_defaults if d is not None]:
                visit(d, local)
            return
        for name, child in ast.iter_fields(n):
            if name in ("annotation", "returns"):
                continue
            for c in child if isinstance(child, list) else [child]:
                if isinstance(c, ast.AST):
                    visit(c, local)

    visit(node, frozenset())
    return out


def _local_names(fn: ast.AST) -> set[str]:
    """Names bound locally in a function or lambda (arguments and stores), minus `global` declarations."""
    args = fn.args
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    declared_global: set[str] = set()
    body = fn.body if isinstance(fn.body, list) else [fn.body]
    stack = list(body)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
            stack.extend(n.decorator_list)
            continue  # its body is its own scope
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, ast.Global):
            declared_global |= set(n.names)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in n.names}
        stack.extend(ast.iter_child_nodes(n))
    return names - declared_global


class _Rename(ast.NodeTransformer):
    """Rename one module's global names (old -> new), leaving locals and class attributes of the same name."""

    def __init__(self, mapping: dict[str, str]):
        self.scopes: list[dict[str, str]] = [mapping]

    def _visit_def(self, node, rename_def: bool):
        if rename_def and node.name in self.scopes[-1]:
            node.name = self.scopes[-1][node.name]
        for child in getattr(node, "decorator_list", []):
            self.visit(child)
        if not isinstance(node, ast.ClassDef):
            for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                self.visit(d)  # defaults are evaluated in the enclosing scope
        else:
            for b in node.bases + [k.value for k in node.keywords]:
                self.visit(b)
        return node

    def visit_FunctionDef(self, node, rename_def: bool = True):
        self._visit_def(node, rename_def and len(self.scopes) == 1)
        local = _local_names(node)
        self.scopes.append({k: v for k, v in self.scopes[-1].items() if k not in local})
        node.body = [self.visit(s) for s in node.body]
        self.scopes.pop()
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        for d in node.args.defaults:
            self.visit(d)
        local = _local_names(node)
        self.scopes.append({k: v for k, v in self.scopes[-1].items() if k not in local})
        node.body = self.visit(node.body)
        self.scopes.pop()
        return node

    def visit_ClassDef(self, node):
        self._visit_def(node, len(self.scopes) == 1)
        outer = self.scopes[-1]
        attrs = set().union(*(_bound_names(s) for s in node.body)) if node.body else set()
        body = []
        for s in node.body:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # a method's own name is a class attribute; its body sees the module's globals
                self._visit_def(s, False)
                local = _local_names(s)
                self.scopes.append({k: v for k, v in outer.items() if k not in local})
                s.body = [self.visit(b) for b in s.body]
                self.scopes.pop()
                body.append(s)
            else:
                self.scopes.append({k: v for k, v in outer.items() if k not in attrs})
                body.append(self.visit(s))
                self.scopes.pop()
        node.body = body
        return node

    def visit_Name(self, node):
        new = self.scopes[-1].get(node.id)
        if new is not None:
            node.id = new
        return node

    def visit_Global(self, node):
        node.names = [self.scopes[0].get(n, n) for n in node.names]
        return node


def _is_main_guard(stmt: ast.stmt) -> bool:
    """`if __name__ == "__main__":` (only the entry module's runs in the flattened file)."""
    t = stmt.test if isinstance(stmt, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


class _Flattener:
    def __init__(self, entry: str):
        self.modules: dict[str, _Module] = {}
        queue = [entry]
        while queue:
            name = queue.pop(0)
            if name in self.modules:
                continue
            mod = _parse(name)
            self.modules[name] = mod
            parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
            queue.extend(sorted(mod.deps | mod.lazy) + [p for p in parents if p != "golf"])
        self.order = self._order(entry)
        self.defined: dict[str, dict[str, ast.stmt]] = {
            m: {n: s for s in self.modules[m].tree.body for n in _bound_names(s)} for m in self.order
        }

    def _order(self, entry: str) -> list[str]:
        """Modules after their module-level dependencies (depth-first, deterministic); entry last."""
        out: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            mod = self.modules[name]
            for dep in sorted(mod.deps):
                visit(dep)
            out.append(name)

        for name in sorted(self.modules):
            if name != entry:
                visit(name)
        visit(entry)
        return out

    def resolve(self, module: str, name: str, seen: frozenset = frozenset()) -> tuple[str, str]:
        """(defining module, name) of `module.name`, following re-exports."""
        key = (module, name)
        if key in seen:
            raise GolfError(f"bundle: import cycle resolving {module}.{name}")
        mod = self.modules.get(module)
        if mod is None:
            raise GolfError(f"bundle: {module} is not a golf module this bundle knows")
        if name in mod.aliases:
            target, attr = mod.aliases[name]
            if attr is None:
                raise GolfError(f"bundle: {module}.{name} is a module, not a definition")
            return self.resolve(target, attr, seen | {key})
        if name not in self.defined[module]:
            raise GolfError(f"bundle: {module} does not define {name}")
        return module, name


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body.pop(0)
                if not body:
                    body.append(ast.Pass())


def _strip_annotations(tree: ast.AST) -> None:
    """Drop argument and return annotations (never evaluated under postponed annotations)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
                arg.annotation = None


class _GolfImports(ast.NodeTransformer):
    """Remove golf imports of one module: aliases become assignments, module attributes become names."""

    def __init__(self, fl: _Flattener, mod: _Module, flat: dict[tuple[str, str], str], errors: dict[str, str]):
        self.fl, self.mod, self.flat = fl, mod, flat
        self.top = set(map(id, mod.tree.body))
        self.renames: dict[str, str] = {}  # module-level alias -> flat name (applied by _Rename afterwards)
        self.module_aliases: dict[str, str] = {}  # local name -> golf module (for `qat.attach`)
        self.errors = errors  # marker name -> message: raised only if a kept statement holds the marker

    def _flat(self, module: str, name: str, node: ast.AST) -> str:
        """The flat name of module.name, or a marker whose error is raised if the code is kept."""
        try:
            return self.flat[self.fl.resolve(module, name)]
        except GolfError as exc:
            marker = f"__bundle_error_{len(self.errors)}__"
            self.errors[marker] = f"{self.mod.name} line {getattr(node, 'lineno', '?')}: {exc}"
            return marker

    def _replacement(self, pairs: list[tuple[str, str, str | None]], node: ast.stmt) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for local, module, attr in pairs:
            if attr is None:
                self.module_aliases[local] = module
                continue
            target = self._flat(module, attr, node)
            if target != local and id(node) in self.top:
                self.renames[local] = target  # renamed, never assigned: an assignment could clobber a global
            elif target != local:
                out.append(ast.copy_location(ast.Assign([ast.Name(local, ast.Store())], ast.Name(target, ast.Load())), node))
        return out

    def visit_Import(self, node):
        golf = [a for a in node.names if _is_golf(a.name)]
        if not golf:
            return node
        repl = self._replacement([(a.asname, a.name, None) if a.asname else ("golf", "golf", None) for a in golf], node)
        rest = [a for a in node.names if not _is_golf(a.name)]
        return ([ast.copy_location(ast.Import(rest), node)] if rest else []) + repl or ast.Pass()

    def visit_ImportFrom(self, node):
        source = self.mod.absolute(node)
        if not _is_golf(source):
            return node
        pairs = []
        for a in node.names:
            sub = f"{source}.{a.name}"
            pairs.append((a.asname or a.name, sub, None) if _module_exists(sub) else (a.asname or a.name, source, a.name))
        return self._replacement(pairs, node) or ast.copy_location(ast.Pass(), node)

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in self.module_aliases:
            module = self.module_aliases[node.value.id]
            return ast.copy_location(ast.Name(self._flat(module, node.attr, node), node.ctx), node)
        self.generic_visit(node)
        return node

    def visit_Name(self, node):
        if node.id in self.module_aliases:
            marker = f"__bundle_error_{len(self.errors)}__"
            self.errors[marker] = (f"{self.mod.name} line {node.lineno}: golf module {self.module_aliases[node.id]} "
                                   f"used as a value ({node.id}); use its names directly")
            return ast.copy_location(ast.Name(marker, node.ctx), node)
        return node


class _Fold(ast.NodeTransformer):
    """Keep only the taken branch of `if NAME == "literal":` (==, !=, in, not in) for names whose value the
    export fixes (the entry's TTT_STRATEGY): the script then holds one strategy's code path."""

    def __init__(self, consts: dict[str, object]):
        self.consts = consts

    def _decide(self, test: ast.expr) -> bool | None:
        if not (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id in self.consts
                and len(test.ops) == 1):
            return None
        try:
            right = ast.literal_eval(test.comparators[0])
        except ValueError:
            return None
        value, op = self.consts[test.left.id], test.ops[0]
        table = {ast.Eq: lambda: value == right, ast.NotEq: lambda: value != right,
                 ast.In: lambda: value in right, ast.NotIn: lambda: value not in right}
        return table[type(op)]() if type(op) in table else None

    def visit_If(self, node):
        taken = self._decide(node.test)
        if taken is None:
            self.generic_visit(node)
            return node
        chosen = node.body if taken else node.orelse
        out = []
        for s in chosen:
            r = self.visit(s)
            out.extend(r if isinstance(r, list) else [r])
        return out or ast.Pass()


def _signature(stmt: ast.stmt, name: str) -> str | None:
    """What a third-party import binds `name` to, so identical imports from two modules are one binding."""
    for a in getattr(stmt, "names", []) if isinstance(stmt, (ast.Import, ast.ImportFrom)) else []:
        if isinstance(stmt, ast.Import) and (a.asname or a.name.split(".")[0]) == name:
            return f"import {a.name if a.asname else a.name.split('.')[0]}"
        if isinstance(stmt, ast.ImportFrom) and (a.asname or a.name) == name:
            return f"from {'.' * stmt.level}{stmt.module} import {a.name}"
    return None


def flatten(entry: str, minify: bool = True, replace: dict[str, ast.expr] | None = None) -> str:
    """The source of one file holding the entry module and all golf code it needs (see module doc).

    `replace` maps top-level names of the entry module to expressions that replace their assigned value
    (golf export puts the run's config there)."""
    fl = _Flattener(entry)
    # 1. flat names: the first module (in order) to define a name keeps it; a later, different one is renamed
    flat: dict[tuple[str, str], str] = {}
    owner: dict[str, str] = {}
    for m in fl.order:
        short = m.rsplit(".", 1)[-1]
        for name, stmt in fl.defined[m].items():
            if name in fl.modules[m].aliases:
                continue  # a golf import, not a definition
            sig = _signature(stmt, name)
            if name not in owner or (sig is not None and owner[name] == sig):
                owner[name] = sig or m
                flat[(m, name)] = name
            else:
                flat[(m, name)] = f"{name}__{short}"
    # 2. rewrite each module: golf imports out, renamed definitions in
    bodies: dict[str, list[ast.stmt]] = {}
    errors: dict[str, str] = {}
    for m in fl.order:
        mod = fl.modules[m]
        tree = mod.tree
        if minify:
            _strip_docstrings(tree)
            _strip_annotations(tree)
        imports = _GolfImports(fl, mod, flat, errors)
        tree = imports.visit(tree)
        renames = {n: flat[(m, n)] for n in fl.defined[m] if (m, n) in flat and flat[(m, n)] != n}
        renames.update(imports.renames)
        if renames:
            tree = _Rename(renames).visit(tree)
        body = [s for s in tree.body if not (isinstance(s, ast.ImportFrom) and s.module == "__future__")]
        if m == entry and replace:
            for s in body:
                if isinstance(s, (ast.Assign, ast.AnnAssign)):
                    t = s.targets[0] if isinstance(s, ast.Assign) else s.target
                    if isinstance(t, ast.Name) and t.id in replace:
                        s.value = replace[t.id]
            consts = {k: v.value for k, v in replace.items() if isinstance(v, ast.Constant)}
            body = [ast.fix_missing_locations(_Fold(consts).visit(s)) for s in body]
        bodies[m] = [s for s in body if not isinstance(s, ast.Pass) and (m == entry or not _is_main_guard(s))
                     and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]  # module docstrings
    # 3. tree shaking over all top-level statements
    stmts = [(m, s) for m in fl.order for s in bodies[m]]
    binds = [_bound_names(s) for _, s in stmts]
    refs = [_references(s) for _, s in stmts]
    keep = [not _is_definition(s) for _, s in stmts]
    needed: set[str] = set().union(*(r for r, k in zip(refs, keep) if k))
    changed = True
    while changed:
        changed = False
        for i in range(len(stmts)):
            if not keep[i] and binds[i] & needed:
                keep[i] = changed = True
                needed |= refs[i]
    broken = sorted(needed & set(errors))
    if broken:
        raise GolfError(f"bundle: {errors[broken[0]]}")
    # 4. emit: hoisted imports (each distinct binding once), then the code in module order
    imports: list[str] = []
    code: list[str] = []
    seen_imports: set[str] = set()
    for i, (m, s) in enumerate(stmts):
        if not keep[i]:
            continue
        if isinstance(s, (ast.Import, ast.ImportFrom)):
            for a in s.names:
                bound = a.asname or a.name.split(".")[0]
                name = flat.get((m, bound), bound)  # an import renamed for a clash binds the new name
                if isinstance(s, ast.Import):
                    target = a.name if a.asname else bound
                    one = ast.Import([ast.alias(target, None if name == target else name)])
                else:
                    one = ast.ImportFrom(s.module, [ast.alias(a.name, None if name == a.name else name)], s.level)
                text = ast.unparse(one)
                if name in needed and text not in seen_imports:
                    seen_imports.add(text)
                    imports.append(text)
            continue
        code.append(ast.unparse(s))
    text = "\n".join(["from __future__ import annotations", *imports, *code]) + "\n"
    compile(text, "<bundle>", "exec")  # the flattened file must be valid Python
    return text


# ---------------------------------------------------------------------------------------------------------
# golf export: the record folder
# ---------------------------------------------------------------------------------------------------------

ENTRY = "golf.submission"  # the exported script's own code (train, quantize, round trip, TTT, score)
SCRIPT_NAME = "train_gpt.py"
RECORD_FILES = (SCRIPT_NAME, "submission.json", "README.md")


def exported_config(config: dict) -> dict:
    """The run's resolved config as the script carries it: the dataset path is the user's machine's, so it
    goes (the script reads DATA_PATH, as the reference does)."""
    out = json.loads(json.dumps(config, sort_keys=True))  # sorted: the same config gives the same bytes
    out.get("data", {})["path"] = None
    return out


_CONFIG_SLOT = "__golf_export_config__"  # stands for the config literal in the cached flattened text


def _sources_fingerprint() -> tuple:
    """(path, mtime, size) of every golf source file: a flattening cached under it is never stale."""
    root = Path(__file__).resolve().parent
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*.py")))


@functools.lru_cache(maxsize=32)
def _flat_body(strategy: str, minify: bool, fingerprint: tuple) -> str:
    replace = {"CONFIG": ast.Name(_CONFIG_SLOT, ast.Load()), "TTT_STRATEGY": ast.Constant(strategy)}
    body = flatten(ENTRY, minify=minify, replace=replace)
    if body.count(_CONFIG_SLOT) != 1:
        raise GolfError(f"golf export: {ENTRY} must assign CONFIG exactly once at module level")
    return body


def script_text(config: dict, wrap: bool = True) -> str:
    """train_gpt.py for a resolved run config: the flattened golf code and entry point, with the config
    inlined; with `wrap`, minified and lzma + base85 wrapped in a one-line exec loader (as records ship).
    The flattening depends only on the TTT strategy (and golf's sources), so it is cached."""
    cfg = exported_config(config)
    body = _flat_body(cfg["ttt"]["strategy"], wrap, _sources_fingerprint()).replace(_CONFIG_SLOT, repr(cfg))
    if wrap:
        return wrap_code(body)
    head = ('"""Parameter Golf submission written by `golf export` (golf %s): golf\'s modules inlined, '
            'no golf needed.\nRun: torchrun --standalone --nproc_per_node=8 train_gpt.py (DATA_PATH, '
            'TOKENIZER_PATH, SEED, ... as in the reference)."""\n') % __version__
    return head + body


@functools.lru_cache(maxsize=64)
def _script_bytes(config_json: str, wrap: bool, fingerprint: tuple) -> int:
    return len(script_text(json.loads(config_json), wrap).encode("utf-8"))


def script_bytes(config: dict, wrap: bool = True) -> int:
    """Byte size of the train_gpt.py `golf export` writes for this config: result.json's bytes_code.
    Cached per config and state of golf's sources."""
    return _script_bytes(json.dumps(exported_config(config), sort_keys=True), wrap, _sources_fingerprint())


def _read_run(run_dir: Path) -> tuple[dict, dict | None]:
    """(config, result or None) of a run folder."""
    if not (run_dir / "config.json").is_file():
        raise GolfError(f"golf export: {run_dir} is not a run folder (no config.json)")
    try:
        config = json.loads((run_dir / "config.json").read_text())
        result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").is_file() else None
    except json.JSONDecodeError as e:
        raise GolfError(f"golf export: {run_dir}: unreadable JSON ({e.msg})") from None
    return config, result


def _without_seed(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "seed"}


def _readme(name: str, config: dict, results: list[dict], script_bytes_: int, wrapped: bool) -> str:
    ttt, quant = config["ttt"], config["quant"]
    rows = "\n".join(f"| {r['seed']} | {r['val_bpb']:.8f} | {r['bytes_total']:,} |" for r in results)
    seeds = " ".join(str(r["seed"]) for r in results) or str(config["seed"])
    probe = ttt["strategy"] not in ("none", "train_slice") and ttt.get("probe")
    vocab = config["model"]["vocab_size"]  # the parameter-golf names of that vocabulary's data
    illegal = ("**Not a valid record**: this TTT strategy trains on validation tokens before scoring them "
               "(golf's token ledger and `golf check` call it illegal); exported for study.\n\n"
               if STRATEGIES[ttt["strategy"]].declared_illegal else "")
    return f"""# {name}

Written by `golf export` (golf {__version__}) from a golf run; preset `{config.get("preset")}`,
quantization `{quant["method"]}` + `{quant["compressor"]}`, TTT `{ttt["strategy"]}`.

{illegal}`train_gpt.py` ({script_bytes_:,} bytes{", lzma + base85 wrapped" if wrapped else ""}) holds golf's model, optimizer,
trainer, quantizer, compressor and artifact code inlined, and runs with torch, numpy, sentencepiece, zstandard and
brotli installed (no golf).

## Run

```bash
# 8 GPUs, the challenge's 10-minute budget (set ITERATIONS / MAX_WALLCLOCK_SECONDS as the record needs)
for SEED in {seeds}; do
  RUN_ID=seed$SEED SEED=$SEED DATA_PATH=./data/datasets/fineweb10B_sp{vocab} \\
  TOKENIZER_PATH=./data/tokenizers/fineweb_{vocab}_bpe.model MAX_WALLCLOCK_SECONDS=600 \\
  torchrun --standalone --nproc_per_node=8 train_gpt.py
done
# one process (CPU or one GPU)
python train_gpt.py
```

Each run writes `final_model.golfart` and `logs/$RUN_ID.txt`, and ends with the lines
`final_<quant>_<compressor>_roundtrip val_loss:... val_bpb:...` (the official score: the model rebuilt from the
artifact{", after TTT" if ttt["strategy"] != "none" else ""}) and the byte counts.

## Results (from the golf run{"s" if len(results) != 1 else ""}, not yet from this script on the target hardware)

| seed | val_bpb | bytes_total |
| --- | ---: | ---: |
{rows or "| - | - | - |"}

{"The golf run measured its TTT with the memorization probe on (half of the validation documents held out); "
 "this script trains on every token it may, as a submission does, so its score differs from the table." if probe else ""}
Replace this table, `submission.json` and the author fields with the numbers from the target hardware's logs.
"""


def export(run_dirs: list[str | Path] | None = None, out: str | Path = "export", config: dict | None = None,
           wrap: bool = True, name: str | None = None) -> dict:
    """Write DIR/train_gpt.py, DIR/submission.json and DIR/README.md (atomically, as one folder).

    From run folders (several seeds of one config: val_bpb per seed) or from a resolved config alone.
    Returns the submission dict."""
    results: list[dict] = []
    if run_dirs:
        configs = []
        for rd in run_dirs:
            c, r = _read_run(Path(rd))
            configs.append(c)
            if r is not None:
                results.append({"run": str(rd), "seed": r["seed"], "val_bpb": r["eval"]["val_bpb"],
                                "val_loss": r["eval"]["val_loss"], "bytes_model": r["artifact"]["bytes_model"],
                                "ttt_legal": r["ttt"]["legal"]})
        config = configs[0]
        for rd, c in zip(run_dirs[1:], configs[1:]):
            if _without_seed(c) != _without_seed(config):
                raise GolfError(f"golf export: {rd} has another config than {run_dirs[0]} (only the seed may differ)")
    if config is None:
        raise GolfError("golf export: give a run folder or a config")
    if config["ttt"]["strategy"] == "train_slice" and config["ttt"].get("slice_tokens") == 0:
        raise GolfError("golf export: ttt.slice_tokens=0 matches a study's probe half, which a submission does not "
                        "have; export with a fixed ttt.slice_tokens (the seed's is 131073)")
    out = Path(out)
    if out.exists() and not (out.is_dir() and {p.name for p in out.iterdir()} <= set(RECORD_FILES)):
        # the folder is replaced whole: only an earlier export may be overwritten, never other files
        raise GolfError(f"golf export: {out} exists and is not a golf export folder; choose a new --out")
    text = script_text(config, wrap)
    size = len(text.encode("utf-8"))
    for r in results:
        r["bytes_code"] = size
        r["bytes_total"] = r["bytes_model"] + size
    name = name or f"golf {config.get('preset')} {config['quant']['method']} ttt={config['ttt']['strategy']}"
    bpbs = [r["val_bpb"] for r in results]
    submission = {
        "name": name,
        "author": "YOUR NAME",
        "github_id": "YOUR_GITHUB_ID",
        "date": datetime.date.today().isoformat(),
        "val_bpb": sum(bpbs) / len(bpbs) if bpbs else None,
        "seeds": {str(r["seed"]): r["val_bpb"] for r in results},
        "bytes_code": size,
        "bytes_model": max((r["bytes_model"] for r in results), default=None),
        "bytes_total": max((r["bytes_total"] for r in results), default=None),
        "ttt": config["ttt"]["strategy"],
        "ttt_legal": all(r["ttt_legal"] for r in results) if results else None,
        "blurb": f"golf export of preset {config.get('preset')}; val_bpb per seed from golf runs, to be replaced "
                 "by this script's own logs on the target hardware",
    }
    with atomic_dir(out) as tmp:
        write_text(tmp / SCRIPT_NAME, text)
        write_json(tmp / "submission.json", submission)
        write_text(tmp / "README.md", _readme(name, config, results, size, wrap))
    return submission
