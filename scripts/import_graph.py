"""Check that the project's imports run one way, and print its import graph (reads source with `ast` only).

    python scripts/import_graph.py            # the graph, the layers, then every violation
    python scripts/import_graph.py --quiet    # violations only
    python scripts/import_graph.py --root DIR # another checkout (e.g. an old commit, to compare)

Fails (exit 1) on a violation that is not in ALLOWED below, and on an ALLOWED entry that no longer occurs
(fixed: delete it), so the list can only shrink. The rules, from design.md:
- no cycle among cope_dspy / evals modules, counting lazy (function-level) imports;
- no upward import against the layers in LAYERS (signatures <- tasks/consensus <- cascade <- calibrate/cli/evals;
  costs, prices, ledger, models, errors, redact... are leaves that import no higher layer);
- the library (cope_dspy) never imports `evals`;
- code outside tests/ never puts `tests/` on sys.path or imports from it;
- no `_private` name of one project module used in another (`from m import _x`, or `m._x`).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cope_dspy", "evals")  # the modules the graph is made of
USERS = ("examples", "scripts")  # code that may import anything, but is held to the tests and private rules

# Lowest first. A module may import its own layer or a lower one. Every cope_dspy module must be listed.
# fmt: off
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("errors", "redact", "usage", "prices", "costs", "ledger", "models", "local", "sandbox", "sandbox_child",
                "answers", "objective", "adapter", "plain", "role", "billing", "failures", "runner", "jobs", "user_tests")),
    ("signatures", ("signatures",)),
    ("tasks/consensus", ("consensus", "tasks", "code", "text", "policy", "agent")),
    ("cascade", ("cascade", "ballot_replay", "records", "replay", "pair", "episode", "textworld")),
    ("calibrate/cli/evals", ("__init__", "calibrate", "cli", "server")),  # and every evals module
]
# fmt: on

# Known violations, each with the issue that removes it; the check fails on any other one and on an entry
# that no longer happens. Issue 15 removed the last four; keep it empty.
ALLOWED: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported project module (or the package for `from pkg import name`)
    names: tuple[str, ...]  # names taken from it (`from m import a, b`); empty for `import m`
    lazy: bool  # inside a function or class body: runs when called, not at import
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path = ROOT) -> dict[str, Path]:
    files = {}
    for top in PACKAGES + USERS:
        for path in sorted((root / top).rglob("*.py")):
            if "results" not in path.relative_to(root).parts:
                files[module_name(path, root)] = path
    return files


def resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative levels resolved against `source`)."""
    if node.level == 0:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def read_imports(source: str, path: Path, known: set[str]) -> tuple[list[Import], ast.Module]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(source, alias.name, (), lazy, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                target = resolve(source, is_package, child)
                names = tuple(alias.name for alias in child.names)
                submodules = [n for n in names if f"{target}.{n}" in known]
                for name in submodules:  # `from pkg import module`: an import of that module
                    found.append(Import(source, f"{target}.{name}", (), lazy, child.lineno))
                rest = tuple(n for n in names if n not in submodules)
                if rest or not submodules:
                    found.append(Import(source, target, rest, lazy, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found, tree


def layer_of(module: str) -> int | None:
    if module.split(".")[0] == "evals":
        return len(LAYERS) - 1
    if module == "cope_dspy":
        module = "cope_dspy.__init__"
    if not module.startswith("cope_dspy."):
        return None
    short = module.removeprefix("cope_dspy.")
    for i, (_name, members) in enumerate(LAYERS):
        if short in members:
            return i
    raise SystemExit(f"import_graph: {module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def in_project(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


def mentions_tests(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and "tests" in n.value.replace("\\", "/").split("/")
        for n in ast.walk(node)
    )


def is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and (node.value.id == "sys")
    )


def tests_on_path(tree: ast.Module) -> list[int]:
    """Lines that add a path naming `tests` to sys.path (insert/append/extend, assignment, +=)."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and is_sys_path(node.func.value)
        ):
            changed = node.func.attr in ("insert", "append", "extend")
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            changed = any(
                is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value)) for t in targets
            )
        else:
            continue
        if changed and mentions_tests(node):
            lines.append(node.lineno)
    return lines


def private_attributes(tree: ast.Module, imports: list[Import], source: str) -> list[tuple[str, str]]:
    """(module, name) for `alias._name` where `alias` is bound to another project module by an import."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if in_project(a.name) and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                for imp in imports:
                    if imp.line == node.lineno and imp.target.endswith("." + a.name) and not imp.names:
                        aliases[a.asname or a.name] = imp.target
    used = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and is_private(node.attr)
            and aliases[node.value.id] != source
        ):
            used.add((aliases[node.value.id], node.attr))
    return sorted(used)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def check(files: dict[str, Path], root: Path = ROOT) -> tuple[dict[str, list[Import]], dict[str, str]]:
    """Every import of every file, and every violation (key -> where it happens)."""
    known = set(files)
    imports: dict[str, list[Import]] = {}
    violations: dict[str, str] = {}
    for source, path in files.items():
        found, tree = read_imports(source, path, known)
        imports[source] = [
            imp for imp in found if in_project(imp.target) or imp.target.split(".")[0] == "tests"
        ]
        where = path.relative_to(root)
        for line in tests_on_path(tree):
            violations[f"tests: {where} puts tests/ on sys.path"] = f"{where}:{line}"
        for imp in imports[source]:
            at = f"{where}:{imp.line}"
            if imp.target.split(".")[0] == "tests":
                violations[f"tests: {source} imports {imp.target}"] = at
                continue
            if source.startswith("cope_dspy") and imp.target.startswith("evals"):
                violations[f"evals: {source} -> {imp.target}"] = at
            low, high = layer_of(source), layer_of(imp.target)
            if low is not None and high is not None and high > low:
                violations[f"upward: {source} ({LAYERS[low][0]}) -> {imp.target} ({LAYERS[high][0]})"] = at
            if imp.target != source:
                for name in filter(is_private, imp.names):
                    violations[f"private: {source} uses {imp.target}.{name}"] = at
        for target, name in private_attributes(tree, imports[source], source):
            violations[f"private: {source} uses {target}.{name}"] = str(where)
    edges = {
        s: {imp.target for imp in found if imp.target in files and imp.target != s}
        for s, found in imports.items()
        if in_project(s)
    }
    for component in cycles(edges):
        violations[f"cycle: {', '.join(component)}"] = " <-> ".join(component)
    return imports, violations


def print_graph(imports: dict[str, list[Import]]) -> None:
    print("layers (lowest first; a module imports its own layer or lower):")
    for i, (name, members) in enumerate(LAYERS):
        extra = " + evals.*" if i == len(LAYERS) - 1 else ""
        print(f"  {i} {name}: {' '.join(members)}{extra}")
    print("\nimports (lazy = inside a function, runs when called):")
    for source in sorted(imports):
        if not in_project(source):
            continue
        eager = sorted({i.target for i in imports[source] if not i.lazy and i.target != source})
        lazy = sorted({i.target for i in imports[source] if i.lazy and i.target != source} - set(eager))
        layer = layer_of(source)
        parts = [", ".join(eager) or "-"] + ([f"lazy: {', '.join(lazy)}"] if lazy else [])
        print(f"  {source} [{layer}] -> {'; '.join(parts)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print violations only")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to read (default: this one)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    imports, violations = check(project_files(root), root)
    if not args.quiet:
        print_graph(imports)
        print()
    new = sorted(set(violations) - set(ALLOWED))
    stale = sorted(set(ALLOWED) - set(violations))
    print(
        f"violations: {len(violations)} ({len(violations) - len(new)} allowed until issue 15, {len(new)} new)"
    )
    for key in sorted(violations):
        print(f"  {'NEW ' if key in new else 'allowed '}{key}   [{violations[key]}]")
    for key in stale:
        print(f"  STALE allowlist entry (no longer happens: delete it from ALLOWED): {key}")
    return 1 if new or stale else 0


if __name__ == "__main__":
    sys.exit(main())
