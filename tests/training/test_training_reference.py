"""The engine reproduces its recorded reference runs bit for bit (see reference_runs.py).

The record was written by the loop as it stood before it was restructured into named phases; any change
of what a step computes (order of random draws, which norm is logged, when a step is skipped) fails here.
Bit-identity is only defined for one torch build on CPU with one thread, so another torch version skips.
"""

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from reference_runs import RECORD_PATH, REFERENCE_RUNS, run_reference

RECORD = torch.load(RECORD_PATH, weights_only=True)


def _assert_identical(got: Any, expected: Any, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype, where
        assert torch.equal(got, expected), f"{where} differs"
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(expected), f"{where}: keys differ"
        for key in expected:
            _assert_identical(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(got, expected)):
            _assert_identical(a, b, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(got, float) and math.isnan(got), where
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


@pytest.mark.skipif(
    RECORD["torch_version"] != str(torch.__version__),
    reason=f"recorded with torch {RECORD['torch_version']}; bit-identity holds for one torch build only",
)
@pytest.mark.parametrize("name", sorted(REFERENCE_RUNS))
def test_training_reproduces_the_recorded_run(tmp_path: Path, name: str) -> None:
    torch.set_num_threads(1)
    got = run_reference(name, tmp_path)
    expected = RECORD["runs"][name]
    assert [r["step"] for r in got["metrics"]] == [r["step"] for r in expected["metrics"]]
    for record, reference in zip(got["metrics"], expected["metrics"]):
        _assert_identical(record, reference, f"metrics step {reference['step']}")
    _assert_identical(got["checkpoint"], expected["checkpoint"], "checkpoint")
