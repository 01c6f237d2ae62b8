"""The engine reproduces its recorded reference runs bit for bit (see reference_runs.py).

The record was written by the loop as it stood before it was restructured into named phases; any change
of what a step computes (order of random draws, which norm is logged, when a step is skipped) fails here.
Bit-identity is only defined for one torch build on one kind of CPU with one thread: another torch version
skips, and a run must equal the record of one kind of CPU (reference_runs.py says how to add one).
"""

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from reference_runs import REFERENCE_RUNS, record_paths, run_reference

RECORDS = {path.name: torch.load(path, weights_only=True) for path in record_paths()}
THIS_TORCH = {name: r for name, r in RECORDS.items() if r["torch_version"] == str(torch.__version__)}


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
    not THIS_TORCH,
    reason=f"recorded with torch {sorted({r['torch_version'] for r in RECORDS.values()})}; "
    "bit-identity holds for one torch build only",
)
@pytest.mark.parametrize("name", sorted(REFERENCE_RUNS))
def test_training_reproduces_the_recorded_run(tmp_path: Path, name: str) -> None:
    torch.set_num_threads(1)
    got = run_reference(name, tmp_path)
    differences = {}
    for record_name, record in THIS_TORCH.items():
        expected = record["runs"][name]
        try:
            assert [r["step"] for r in got["metrics"]] == [r["step"] for r in expected["metrics"]]
            for entry, reference in zip(got["metrics"], expected["metrics"]):
                _assert_identical(entry, reference, f"metrics step {reference['step']}")
            _assert_identical(got["checkpoint"], expected["checkpoint"], "checkpoint")
        except AssertionError as error:
            differences[record_name] = str(error).splitlines()[0]
        else:
            return  # bit-identical to the run recorded on this kind of CPU
    pytest.fail("equal to no record: " + "; ".join(f"{k}: {v}" for k, v in differences.items()))
