"""Speed switches change no result: a compiled model keeps its parameter names and outputs; freed memory."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from implicit_slots.models.speed import compile_model


def test_compile_model_is_in_place_and_keeps_names_and_outputs() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    names = list(model.state_dict())
    inputs = torch.randn(3, 4)
    expected = model(inputs)
    assert compile_model(model, backend="eager") is model
    assert list(model.state_dict()) == names  # checkpoints load unchanged
    torch.testing.assert_close(model(inputs), expected)


CHILD = """
import resource, torch
from implicit_slots.models.speed import keep_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(16, 1024, 1024).sum()  # a 64 MiB temporary (above glibc's adaptive mmap limit), freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = faults()
assert keep_freed_memory() is True
kept = faults()
print(default, kept)
assert kept < default / 4, (default, kept)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_refaulting_freed_temporaries() -> None:
    # In a child process: the setting is process-wide and would change this test process's memory use.
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
