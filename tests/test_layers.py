"""The package's layers hold: no import cycle between modules, no import that runs up the layers.

Layers, bottom to top: the shared library (``shared``), the site (``client``), the coordinator
(``server``), the operator's tools (``orchestration``). A module may import its own layer and
those below it only, so a site never loads coordinator code and the library stays usable on its
own. Every import counts, including those inside functions (an import deferred to call time is
still a dependency). Tests and benchmarks are not part of the package and are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fedaegis"
EXEMPT = ("tests", "benchmarks")
LAYERS = {"shared": 0, "client": 1, "server": 2, "orchestration": 3}

#: Known violations owned by other work, each to be fixed there (the test fails once one is gone,
#: so its entry is dropped with the fix); these lists only ever shrink, to empty.
KNOWN_CYCLES: set[frozenset[str]] = set()
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in EXEMPT or any(p.startswith(".") for p in rel.parts):
            continue
        parts = [PACKAGE, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports anywhere in its body (relative ones resolved).

    An import counts for the module it names; the packages above that module are not counted
    (Python runs their ``__init__`` first, but a package importing its own submodules is no cycle).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # ``import pkg.mod.attr`` -> the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, target) for target in _imports(name, path, modules))
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_import_runs_up_the_layers() -> None:
    upward = {(a, b) for a, b in _graph().edges
              if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)}
    unexpected = sorted(upward - KNOWN_UPWARD)
    assert not unexpected, "imports up the layers (shared < client < server < orchestration):\n" + "\n".join(
        f"  {a} imports {b}" for a, b in unexpected)
    assert KNOWN_UPWARD <= upward, f"fixed, drop from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - upward)}"


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = {frozenset(c) for c in nx.strongly_connected_components(graph) if len(c) > 1}
    unexpected = cycles - KNOWN_CYCLES
    lines = []
    for comp in sorted(unexpected, key=sorted):
        sub = graph.subgraph(comp)
        lines.append("  cycle: " + ", ".join(f"{a} -> {b}" for a, b in sorted(sub.edges)))
    assert not unexpected, "import cycles between modules:\n" + "\n".join(lines)
    assert KNOWN_CYCLES <= cycles, f"fixed, drop from KNOWN_CYCLES: {sorted(map(sorted, KNOWN_CYCLES - cycles))}"


def test_nothing_imports_the_cli() -> None:
    """The CLI registers commands; helpers live in modules of their own."""
    importers = sorted(a for a, b in _graph().edges if b == "fedaegis.orchestration.cli")
    assert not importers, f"modules import the CLI: {importers}"


def test_the_walk_sees_every_kind_of_import() -> None:
    """Module-level, function-level, relative and ``TYPE_CHECKING`` imports are all edges."""
    edges = set(_graph().edges)
    assert ("fedaegis.orchestration.cli", "fedaegis.orchestration.terminal") in edges  # module level
    assert ("fedaegis.orchestration.audit", "fedaegis.orchestration.quarantine") in edges  # in a function
    assert ("fedaegis.orchestration.sweep_cli", "fedaegis.orchestration.sweep_run") in edges  # TYPE_CHECKING
    assert ("fedaegis.shared.segmentation.attacks.pgd", "fedaegis.shared.attacks.base") in edges  # ``...``
