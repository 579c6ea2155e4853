"""The package layout is the architecture: imports only point down, never in a circle.

Layers, lowest first: the root modules (``config``, ``errors``, ``metrics``,
``logs``, ``durations``), ``decide`` (pure), ``resolve``, ``serve``,
``commands``. A module may import its own layer and those below it. Read from
the source with :mod:`ast`, counting what runs at import time and in functions
(a deferred import is still a dependency), not what only type checkers read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mutator"
ROOT_MODULES = {"config", "errors", "metrics", "logs", "durations"}
LAYERS = {"": 0, "decide": 1, "resolve": 2, "serve": 3, "commands": 4, "__main__": 5}
# What a pure module may import beyond its own package and mutator.errors: no I/O.
PURE_ALLOWED = {"__future__", "base64", "collections", "dataclasses", "enum", "functools", "json", "re",
                "typing", "uuid", "orjson"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> set[str]:
    """Every module *path* imports (``from a import b`` is ``a.b`` when that is a module)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names.add(child.module)
                names.update(f"{child.module}.{alias.name}" for alias in child.names
                             if f"{child.module}.{alias.name}" in MODULES)
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


GRAPH = {name: {n for n in _imports(path) if n in MODULES and n != name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    if len(parts) == 2 and parts[1] in ROOT_MODULES:
        return 0
    return LAYERS[parts[1]]


def test_the_root_holds_only_the_shared_modules_and_four_packages():
    top = {path.name for path in PACKAGE.iterdir() if not path.name.startswith((".", "__pycache__"))}
    modules = {name[:-3] for name in top if name.endswith(".py")} - {"__init__", "__main__"}
    packages = {name for name in top if (PACKAGE / name / "__init__.py").is_file()}
    assert modules == ROOT_MODULES
    assert packages == {"decide", "resolve", "serve", "commands"}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    up = sorted(n for n in GRAPH[module] if n != "mutator" and _layer(n) > _layer(module))
    assert not up, f"{module} imports a higher layer: {up}"


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith("mutator.decide")))
def test_deciding_imports_nothing_that_does_io(module):
    foreign = sorted(n for n in _imports(MODULES[module])
                     if not n.startswith(("mutator.decide", "mutator.errors"))
                     and n.split(".")[0] not in PURE_ALLOWED and n != "mutator")
    assert not foreign, f"{module} imports {foreign}"


def test_there_is_no_import_cycle():
    done: set[str] = set()
    stack: list[str] = []

    def walk(name: str) -> None:
        if name in stack:
            raise AssertionError("import cycle: " + " → ".join([*stack[stack.index(name):], name]))
        if name in done:
            return
        stack.append(name)
        for other in sorted(GRAPH[name]):
            walk(other)
        stack.pop()
        done.add(name)

    for name in sorted(GRAPH):
        walk(name)


@pytest.mark.parametrize("package", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_says_what_lives_in_it(package):
    assert ast.get_docstring(ast.parse(MODULES[package].read_text())), package


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines"


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.startswith("mutator.resolve.registry")))
def test_the_registry_code_is_passed_its_settings_and_imports_no_application_config(module):
    assert "mutator.config" not in GRAPH[module], module
