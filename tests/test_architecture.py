"""The dependency direction of the package stays one way (style.md):

fixed_point <- slot_attention <- models <- training / evaluation / reproduce / cli, and data, metrics and
diagnostics import nothing above slot_attention.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "implicit_slots"

# package -> the implicit_slots sub-packages it may import
ALLOWED: dict[str, set[str]] = {
    "fixed_point": set(),
    "slot_attention": {"fixed_point"},
    "diagnostics": {"fixed_point", "slot_attention"},
    "data": set(),
    "metrics": set(),
    "models": {"fixed_point", "slot_attention", "diagnostics", "metrics"},
}


def imported_subpackages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "implicit_slots" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_one_way(package: str) -> None:
    for path in sorted((PACKAGE / package).rglob("*.py")):
        illegal = imported_subpackages(path) - ALLOWED[package] - {package}
        assert not illegal, f"{path.relative_to(PACKAGE)} imports {sorted(illegal)}"
