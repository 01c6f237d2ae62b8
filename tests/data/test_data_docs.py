"""docs/data.md states every folder loader's options and defaults as the code has them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from implicit_slots.data import build_dataset
from implicit_slots.data.loaders.base import FOLDER_DEFAULTS
from implicit_slots.data.loaders.clevr import CLEVR6_DEFAULTS, CLEVR_DEFAULTS
from implicit_slots.data.loaders.clevr_mirror import CLEVR_MIRROR_DEFAULTS
from implicit_slots.data.loaders.multi_object import MULTI_OBJECT_DEFAULTS
from implicit_slots.data.loaders.shapestacks import SHAPESTACKS_DEFAULTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"

CODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "clevr": CLEVR_DEFAULTS,
    "clevr6": CLEVR6_DEFAULTS,
    "clevr-mirror": CLEVR_MIRROR_DEFAULTS,
    "shapestacks": SHAPESTACKS_DEFAULTS,
    "coco": FOLDER_DEFAULTS,
    **MULTI_OBJECT_DEFAULTS,
}


def _as_written(value: Any) -> str:
    """How the docs write a default: YAML-like (false, null, [a, b])."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _documented() -> dict[str, dict[str, str]]:
    text = DOC.read_text()
    table = text.split("<!-- loader-options: begin -->")[1].split("<!-- loader-options: end -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        name, options = (cell.strip() for cell in line.strip("|").split("|"))
        pairs = (re.fullmatch(r"`([\w]+)`: `(.*)`", item.strip()) for item in options.split(";"))
        rows[name.strip("`")] = {m.group(1): m.group(2) for m in pairs if m is not None}
    return rows


def test_every_folder_loader_is_in_the_table() -> None:
    assert set(_documented()) == set(CODE_DEFAULTS)
    assert set(MULTI_OBJECT_DEFAULTS) == {
        "dm-clevr-with-masks",
        "dm-clevr6",
        "dm-multi-dsprites",
        "dm-objects-room",
        "dm-tetrominoes",
    }


@pytest.mark.parametrize("name", sorted(CODE_DEFAULTS))
def test_documented_options_and_defaults_match_the_code(name: str, tmp_path: Path) -> None:
    documented = _documented()[name]
    assert documented == {key: _as_written(value) for key, value in CODE_DEFAULTS[name].items()}
    # The option names the builder itself accepts (its error lists them) are the documented ones.
    with pytest.raises(ValueError, match="valid options") as error:
        build_dataset(name, root=tmp_path, not_an_option=1)
    assert str(error.value).endswith(f"valid options: {sorted(documented)}")
