"""The layering the README's design map promises, and short files (issue 14), checked from the source.

    core  -> nothing of the interfaces (tui, cli, web, trainer)
    web, trainer -> core only (never the Textual app)
and no import cycles between moviechat_tui's modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it, as absolute dotted names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def reaches(names: set[str], forbidden: str) -> set[str]:
    return {n for n in names if n == forbidden or n.startswith(forbidden + ".")}


@pytest.mark.parametrize("folder,forbidden", [
    ("moviechat_tui/core", ["moviechat_tui.tui", "moviechat_tui.cli", "web", "trainer"]),
    ("web", ["moviechat_tui.tui", "trainer"]),
    ("trainer", ["moviechat_tui.tui", "moviechat_tui.cli", "web"]),
    ("moviechat_tui/tui", ["web", "trainer", "moviechat_tui.cli"]),
])
def test_layers_only_import_downwards(folder, forbidden):
    wrong = {}
    for path in python_files(folder):
        bad = set().union(*(reaches(imports(path), f) for f in forbidden))
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"imports across the layers: {wrong}"


def test_the_package_has_no_import_cycles():
    modules = {module_name(p): p for p in python_files("moviechat_tui")}
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's own __init__ is imported on the way to its modules; that is not a cycle.
    graph = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    done, active, cycles = set(), [], []

    def visit(name):
        if name in active:
            cycles.append(active[active.index(name):] + [name])
            return
        if name in done:
            return
        active.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        active.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert not cycles, f"import cycles: {cycles}"


def test_no_file_is_over_400_lines():
    files = python_files("moviechat_tui", "web", "trainer", "bench", "tests")
    lengths = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in files}
    long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"
