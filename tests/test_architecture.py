"""The package's shape: no import circle, aiohttp only at the transport seam, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vbatch"
NETWORK_MODULES = {"vbatch.transport.network", "vbatch.testing.simulator"}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST, type_checking: bool = True) -> set[str]:
    """Every module imported anywhere in ``tree`` (functions too); those imported for type
    checking only count unless ``type_checking`` is False: a circle of types is a circle."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = _imports(ast.parse(path.read_text()))
        graph[name] = {m for m in imported if m in modules and m != name}
        graph[name].update(m for m in imported if m.split(".")[0] == "aiohttp")
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle() -> None:
    # The package's __init__ re-exports; a module importing it is a circle only by name.
    graph = {name: targets - {"vbatch"} for name, targets in _graph().items()}
    assert _cycle(graph) is None


def _package(module: str) -> str:
    """``vbatch.engine.job`` → ``engine``; a top-level module is its own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_circle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for name, targets in _graph().items():
        own = _package(name)
        packages.setdefault(own, set()).update(
            _package(t) for t in targets if t.startswith("vbatch.") and _package(t) != own)
    assert _cycle(packages) is None


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_type_checking_imports_count() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.y\n")
    assert "x.y" in _imports(tree)
    assert "x.y" not in _imports(tree, type_checking=False)


def test_aiohttp_only_at_the_transport_seam() -> None:
    users = {name for name, targets in _graph().items()
             if any(t.split(".")[0] == "aiohttp" for t in targets)}
    assert users == NETWORK_MODULES


@pytest.mark.parametrize("module", ["vbatch.testing.simulator", "vbatch.testing.command",
                                    "vbatch.testing.behaviour", "vbatch.testing.fake"])
def test_the_test_double_does_not_import_the_cli(module: str) -> None:
    assert "vbatch.cli" not in _graph()[module]


def test_the_runner_does_not_import_ray_paths_at_load() -> None:
    tree = ast.parse((PACKAGE / "runner.py").read_text())
    top_level = _imports(ast.Module(body=[n for n in tree.body
                                          if isinstance(n, ast.Import | ast.ImportFrom)],
                                    type_ignores=[]), type_checking=False)
    assert not {m for m in top_level if m.startswith("vbatch.distributed")}


def test_no_module_over_the_size_limit() -> None:
    sizes = {_module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_sub_packages_say_what_they_hold() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {"source", "prepare", "transport", "engine", "output", "servers", "distributed",
            "testing", "endpoints"} <= packages
    for name in packages:
        assert ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())), name
