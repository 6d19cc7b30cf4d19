"""Static checks of the package's shape: no import cycles, the CLI stays on the public side.

Read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` statement, at module level, inside functions and under
``if TYPE_CHECKING:`` alike, plus ``importlib.import_module("...")`` with a
literal name. Modules are named as installed: ``cli/`` is ``gradcalc.cli`` and
``grammar/`` is ``gradcalc.grammar`` (pyproject's ``package-dir``).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI_MAY_IMPORT = frozenset(
    {
        "gradcalc",  # the package: Tensor and Size for isinstance, __version__
        "gradcalc.api",  # everything the CLI and the REPL compute
        "gradcalc.explain",  # explain mode: both passes step by step (on top of api)
        "gradcalc.jsonio",  # the one JSON encoding
        "gradcalc.graph",  # Graph and its DOT/Mermaid text
        "gradcalc.builtins",  # the built-ins table: `gradcalc functions`, completion
        "gradcalc.errors",
        "gradcalc.limits",
        "gradcalc.lines",  # batch input: whole lines in blocks, the maximum line length
        "gradcalc.distributed",  # batch --dask: partitions, run_partition (imports Dask lazily)
    }
)
"""The gradcalc modules ``gradcalc.cli`` may import (besides its own)."""
LONGEST_FUNCTION = 150
SHORT_FUNCTION_FILES = ("cli/*.py", "gradcalc/api.py", "gradcalc/graph.py", "gradcalc/jsonio.py")


@cache
def modules() -> dict[str, Path]:
    """Every module of the installed packages, by dotted name (a package by its own name)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found: dict[str, Path] = {}
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    for extension in config["tool"]["setuptools"].get("ext-modules", []):
        found[extension["name"]] = ROOT / extension["sources"][0]  # C: imports nothing here
    return found


def imports(name: str, source: str, package: bool) -> Iterator[tuple[str, list[str], int]]:
    """(module imported from, names taken from it, line) for every import in ``source``,
    the text of module ``name`` (a package's ``__init__`` when ``package``)."""
    home = name if package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = home.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names], node.lineno
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, [], node.lineno


def module_imports(name: str) -> Iterator[tuple[str, list[str], int]]:
    path = modules()[name]
    if path.suffix != ".py":
        return iter(())
    return imports(name, path.read_text(encoding="utf-8"), path.name == "__init__.py")


def targets(module: str, names: list[str]) -> set[str]:
    """The project modules an import statement loads (a submodule, else the module itself)."""
    known = modules()
    found = {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
    if module in known and (not names or len(found) < len(names)):
        found.add(module)
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name in modules():
        edges: set[str] = set()
        for module, names, _ in module_imports(name):
            edges |= targets(module, names)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One cycle through the component, as ``a -> b -> a``, for the failure message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    node = start
    while True:
        step = sorted(graph[node] & members)
        nxt = (
            start
            if start in step and len(path) > 1
            else next((s for s in step if s not in seen), start)
        )
        path.append(nxt)
        if nxt == start:
            return " -> ".join(path)
        seen.add(nxt)
        node = nxt


def test_the_module_map_follows_pyproject() -> None:
    names = modules()
    assert names["gradcalc.cli.main"] == ROOT / "cli" / "main.py"
    assert names["gradcalc.grammar"] == ROOT / "grammar" / "__init__.py"
    assert names["gradcalc.api"] == ROOT / "gradcalc" / "api.py"
    assert not any(name.startswith("gradcalc.gradcalc") for name in names)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycle_path(graph, ["a", "b", "c"]) == "a -> b -> c -> a"
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_kind_of_import_counts() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from gradcalc.graph import Graph\n"
        "def f():\n"
        "    from gradcalc import api, Tensor\n"
        "    from . import render\n"
        "    import gradcalc.errors as e\n"
        "    return importlib.import_module('gradcalc.jsonio')\n"
    )
    found = set()
    for module, names, _ in imports("gradcalc.cli.run", source, package=False):
        found |= targets(module, names)
    expected = {"gradcalc.graph", "gradcalc.api", "gradcalc", "gradcalc.cli.render"}
    assert found == expected | {"gradcalc.errors", "gradcalc.jsonio"}


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = [cycle_path(graph, component) for component in cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def cli_files() -> list[Path]:
    return sorted((ROOT / "cli").glob("*.py"))


@pytest.mark.parametrize("path", cli_files(), ids=lambda p: p.name)
def test_cli_imports_only_public_gradcalc_modules(path: Path) -> None:
    name = "gradcalc.cli." + path.stem if path.stem != "__init__" else "gradcalc.cli"
    bad = []
    for module, names, line in module_imports(name):
        if module != "gradcalc" and not module.startswith("gradcalc."):
            continue
        if module == "gradcalc.cli" or module.startswith("gradcalc.cli."):
            continue
        loaded = targets(module, names) or {module}
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        outside = sorted(t for t in loaded if t not in CLI_MAY_IMPORT)
        if private or outside:
            bad.append(f"line {line}: from {module} import {', '.join(names) or '*'}")
    assert bad == [], f"{path.name} reaches past gradcalc.api:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", cli_files(), ids=lambda p: p.name)
def test_cli_reads_no_private_attribute(path: Path) -> None:
    """``x._name`` only on ``self``/``cls``; no ``getattr(x, "_name")`` either."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                bad.append(f"line {node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            bad.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    assert bad == [], f"{path.name} reads private fields:\n" + "\n".join(bad)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def short_function_files() -> list[Path]:
    return sorted({p for pattern in SHORT_FUNCTION_FILES for p in ROOT.glob(pattern)})


@pytest.mark.parametrize("path", short_function_files(), ids=lambda p: p.name)
def test_no_function_is_longer_than_150_lines(path: Path) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION
    ]
    assert long == []


def test_every_public_module_imports_alone() -> None:
    """``from gradcalc import NAME`` of a module must not load the whole engine through the
    package's lazy ``__getattr__`` (it did for ``pylang``: 14 ms of every one-shot command)."""
    import gradcalc

    package = ROOT / "gradcalc"
    modules = {
        path.stem if path.suffix == ".py" else path.name
        for path in package.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists())
        and not path.name.startswith("_")
    }
    modules |= {"cli", "grammar"}
    assert modules == gradcalc._SUBMODULES


def test_a_one_shot_command_never_loads_the_whole_engine() -> None:
    """The engine's own ``from gradcalc import Tensor`` resolves in ``_tensor``; binding every
    public name (``_load``) is left to users of ``gradcalc.<name>`` and ``__all__``."""
    import subprocess
    import sys

    code = (
        "import gradcalc, contextlib, io\n"
        "from gradcalc.cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    run(['3*a**3 - b**2', 'a=2', 'b=6', '--json'])\n"
        "print(gradcalc._state['loaded'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
