"""The import graph of cxrlib: no cycles, and function-level imports between cxrlib modules
only where a comment says why (an optional or heavy dependency behind them)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cxrlib"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _targets(node: ast.AST, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
        subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
        return subs or [node.module]
    return []


def _runtime_nodes(tree: ast.AST):
    """Every node, less the ``if TYPE_CHECKING:`` blocks (imports for annotations never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in _runtime_nodes(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the cxrlib modules it imports, at module level or inside functions (a cycle
    broken only by a function-level import is still a cycle)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        edges = set()
        for node in _runtime_nodes(tree):
            for target in _targets(node, modules):
                if target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def test_no_import_cycles():
    graph = _import_graph()
    assert {"cxrlib.runs", "cxrlib.profiles", "cxrlib.models.factory"} <= set(graph)
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a submodule taking names from its own package's __init__ is how packages are used;
            # the __init__'s imports of its submodules are followed, so a loop through a package
            # (config -> models -> models.weights -> ... -> config) is found
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_function_level_imports_between_cxrlib_modules_say_why():
    modules = _modules()
    unexplained = []
    for path in modules.values():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not _targets(node, modules):
                    continue
                # the reason: a comment on the line, or in the block of imports and comments above it
                k = node.lineno - 1
                block = [lines[k]]
                while k > 0 and lines[k - 1].strip().startswith(("#", "from ", "import ")):
                    k -= 1
                    block.append(lines[k])
                if not any("#" in line for line in block):
                    unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "function-level imports without a reason:\n" + "\n".join(unexplained)


def test_lesson_modules_stay_out_of_the_core_chain():
    """The command line, the report runner, the check and the experiments never import a
    lesson module (shortcuts plans its own runs from the core, not the other way round)."""
    graph = _import_graph()
    core = ("cxrlib.cli", "cxrlib.report", "cxrlib.preflight", "cxrlib.experiments", "cxrlib.train")
    reached, todo = set(), list(core)
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += sorted(graph.get(name, ()))
    assert "cxrlib.shortcuts" not in reached
