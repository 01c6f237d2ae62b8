"""The data package depends on nothing above it (no models, training, evaluation or cli imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import implicit_slots.data

FORBIDDEN = (
    "implicit_slots.models",
    "implicit_slots.training",
    "implicit_slots.evaluation",
    "implicit_slots.cli",
)


def test_data_imports_nothing_above_it() -> None:
    package = Path(implicit_slots.data.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) >= 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path} imports {name}"
