"""Speed switches that change no result: compiling a model, keeping freed memory in the process.

Neither is used by default; the engine (or a benchmark) opts in. ``implicit-slots main-job`` keeps freed
memory: bit-identical weights and metrics, and its system time falls from about 4% of the job to 2 s
(docs/slate.md "The main job").

- :func:`compile_model`: ``torch.compile`` of the model's ``forward`` in place (parameter names and
  checkpoints unchanged). Measured on the project's CPU machine (SLATE at official sizes, batch 32, one
  thread, 2026-12-01) the compiled training step needed more CPU time than the eager one (4.5-4.9 s against
  2.7-3.2 s per step, after 84 s of compilation), so it is for GPUs (``implicit-slots bench gpu`` measures
  both there).
- :func:`keep_freed_memory`: glibc returns large freed blocks to the operating system, so every step's large
  temporaries are mapped and page-faulted again (140k-155k minor page faults per SLATE step at official
  sizes). Raising glibc's mmap and trim thresholds keeps them in the heap for reuse: 1k-8k faults per
  step, the same peak memory, and the system time per step drops from 0.33-0.35 s to 0.00-0.03 s
  (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from torch import nn

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# mallopt takes a C int: both values stay below 2**31.
_MMAP_THRESHOLD = 2**30  # blocks below 1 GiB come from the heap (default: 128 KiB, adaptive up to 32 MiB)
_TRIM_THRESHOLD = 2**31 - 1  # return the heap's free top to the system only beyond 2 GiB


def compile_model(model: nn.Module, backend: str = "inductor", **options: object) -> nn.Module:
    """Compile ``model.forward`` in place with ``torch.compile`` and return the model.

    Args:
        model: any module; its ``state_dict`` keys do not change (unlike wrapping it in ``torch.compile``).
        backend: the ``torch.compile`` backend ("inductor"; "eager" only traces, for tests).
        options: further ``torch.compile`` options (``mode``, ``fullgraph``, ``dynamic``).
    """
    model.compile(backend=backend, **options)
    return model


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (see the module docstring); True when it applied.

    Process-wide and irreversible for the process; a no-op returning False outside Linux / glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
