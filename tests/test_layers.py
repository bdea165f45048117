"""The package's layers import only what their docstrings allow (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin" / "coercion"

# Each layer and what it may import of the package, besides itself. The top-level modules are
# layers of their own. Mirrors the docstrings of the subpackages' __init__.py.
ALLOWED = {
    "engine": set(),
    "stores": {"engine"},
    "rules": {"engine"},
    "configuration": {"stores"},  # stores: where a store lives by default (beside the linkage store)
    "service": {"engine", "stores", "rules", "configuration"},
    "exchanges": {"engine", "stores", "rules", "service"},
    "edge": {"engine", "stores", "rules", "service", "exchanges", "checks", "configuration"},
    "checks": {"engine", "rules", "configuration"},
    "serve": {"engine", "rules", "stores", "configuration"},  # stores: where a store lives (a path or a URL)
    "cli": {"engine", "serve", "checks"},
    "__init__": {"engine"},
}
# Third-party modules only some layers may use.
ONLY_IN = {"orthanc": {"edge"}}


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports_of(path: Path, source: str) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in ``source``, at any depth (lazy ones too)."""
    package = ["coercion", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                found.append((node.module or "", node.lineno))
                continue
            base = ".".join(package[: len(package) - node.level + 1])
            if node.module:
                found.append((f"{base}.{node.module}", node.lineno))
            else:  # from . import x: each name may be a module
                found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def target_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "coercion":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def violations(path: Path, source: str) -> list[str]:
    layer = layer_of(path)
    if layer not in ALLOWED:
        return [f"{layer}: a module outside the known layers; add it to ALLOWED and to a docstring"]
    wrong = []
    for module, line in imports_of(path, source):
        target = target_layer(module)
        if target is not None and target != layer and target not in ALLOWED[layer]:
            wrong.append(f"line {line}: {module} ({target})")
        top = module.split(".")[0]
        if top in ONLY_IN and layer not in ONLY_IN[top]:
            wrong.append(f"line {line}: {module} (only {', '.join(sorted(ONLY_IN[top]))} may)")
    return wrong


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_the_layers_its_layer_may(path):
    wrong = violations(path, path.read_text())
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer_of(path)}) imports what it may not: {wrong}"


def test_every_subpackage_says_what_it_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init}: the docstring must say what the layer may import"
        assert init.parent.name in ALLOWED


@pytest.mark.parametrize("where, source, expected", [
    ("engine/probe.py", "from ..service import CoercionService\n", "coercion.service (service)"),
    ("engine/probe.py", "def f():\n    import orthanc\n", "orthanc (only edge may)"),
    ("engine/probe.py", "from .. import rules\n", "coercion.rules (rules)"),
    ("stores/probe.py", "from ..exchanges.find import FindRequest\n", "coercion.exchanges.find (exchanges)"),
    ("exchanges/probe.py", "from ..edge import state\n", "coercion.edge (edge)"),
    ("service.py", "import coercion.edge.state\n", "coercion.edge.state (edge)"),
    ("rules.py", "from .service import Decision\n", "coercion.service (service)"),
])
def test_the_checker_sees_a_forbidden_import(where, source, expected):
    # A test that cannot fail is a defect: each of these must be caught.
    assert any(expected in v for v in violations(PACKAGE / where, source))


def module_name(path: Path) -> str:
    parts = ["coercion", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: dict[str, tuple[Path, str]]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (lazy imports too: a circle is a circle)."""
    graph: dict[str, set[str]] = {}
    for name, (path, source) in sources.items():
        targets = set()
        for module, _ in imports_of(path, source):
            while module and module not in sources:  # from .x import name: the module x
                module = module.rpartition(".")[0]
            if module and module != name and module.startswith("coercion"):
                targets.add(module)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_module_of_the_package_imports_itself_in_a_circle():
    sources = {module_name(p): (p, p.read_text()) for p in MODULES}
    # A package's __init__ imported by its own modules is how Python loads them, not a circle.
    graph = {name: {t for t in targets if not name.startswith(t + ".")}
             for name, targets in import_graph(sources).items()}
    assert circles(graph) == []


def test_the_circle_finder_sees_a_circle_and_a_lazy_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
    sources = {"coercion.edge.x": (PACKAGE / "edge" / "x.py", "def f():\n    from .y import g\n"),
               "coercion.edge.y": (PACKAGE / "edge" / "y.py", "from .x import f\n")}
    assert circles(import_graph(sources)) == [["coercion.edge.x", "coercion.edge.y"]]
