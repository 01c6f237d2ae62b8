"""The package's layers hold: every import points down, and no modules import each other in a cycle.

From the bottom up (style.md, docs/architecture.md); a package may import any package of a LOWER layer,
never one of its own layer or above::

    fixed_point, metrics, data  <  slot_attention  <  diagnostics  <  models  <  config  <  experiment
      <  pretrained  <  training, evaluation  <  benchmarks, reproduce  <  cli

Every module of the package is read (its whole syntax tree, so imports inside functions count too, and
relative imports are resolved). ``import implicit_slots`` alone (the version) is allowed everywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "implicit_slots"

LAYERS: list[set[str]] = [
    {"fixed_point", "metrics", "data"},
    {"slot_attention"},
    {"diagnostics"},
    {"models"},
    {"config"},
    {"experiment"},
    {"pretrained"},
    {"training", "evaluation"},
    {"benchmarks", "reproduce"},
    {"cli"},
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    """``implicit_slots.data.cache`` for ``src/implicit_slots/data/cache.py`` (packages: their name)."""
    parts = ["implicit_slots", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``implicit_slots`` module the file at ``path`` imports (see :func:`imports_of`)."""
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_of(source: str, this: str, is_package: bool) -> set[str]:
    """Every ``implicit_slots`` module the source of module ``this`` imports, anywhere in it (inside
    functions too), relative imports resolved."""
    package = this if is_package else this.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # ``from implicit_slots.data import cache`` imports the module implicit_slots.data.cache
            folder = PACKAGE.parent / module.replace(".", "/")
            found.update(
                f"{module}.{alias.name}"
                for alias in node.names
                if (folder / f"{alias.name}.py").is_file() or (folder / alias.name / "__init__.py").is_file()
            )
    return {name for name in found if name == "implicit_slots" or name.startswith("implicit_slots.")}


def top_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_package_has_a_layer() -> None:
    packages = {top_package(name) for name in MODULES} - {None, "__main__"}
    assert packages <= set(LAYER_OF), f"add {sorted(packages - set(LAYER_OF))} to LAYERS"


@pytest.mark.parametrize("package", sorted(LAYER_OF))
def test_imports_point_down(package: str) -> None:
    illegal = []
    for name, path in MODULES.items():
        if top_package(name) != package:
            continue
        for imported in sorted(imported_modules(path)):
            target = top_package(imported)
            if target is None or target == package:
                continue
            if target not in LAYER_OF or LAYER_OF[target] >= LAYER_OF[package]:
                illegal.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not illegal, "imports that do not point down:\n" + "\n".join(illegal)


def test_no_import_cycles_between_modules() -> None:
    graph = {
        name: {m for m in imported_modules(path) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    # A package's __init__ re-exporting its own modules is not a cycle of design; drop the edges from a
    # package to the modules inside it.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_walker_sees_imports_inside_functions_and_relative_ones() -> None:
    source = (
        "def f():\n    from ..models import base\n    from . import lock\n    import implicit_slots.cli\n"
    )
    assert imports_of(source, "implicit_slots.training.loop", is_package=False) == {
        "implicit_slots.models",
        "implicit_slots.models.base",
        "implicit_slots.training",
        "implicit_slots.training.lock",
        "implicit_slots.cli",
    }
    assert "implicit_slots.diagnostics" in imported_modules(PACKAGE / "training" / "loop.py")  # in a function
