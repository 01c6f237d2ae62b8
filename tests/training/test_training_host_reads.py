"""The loop reads numbers back from the device once per step, plus once on the steps that log; the
slot-attention residual (one extra cell call) is measured only on the steps that log diagnostics."""

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from tiny_training_setup import tiny_dataset_factory, write_config

from implicit_slots.config import load_config
from implicit_slots.fixed_point import gradients as fixed_point_gradients
from implicit_slots.training import loop, train

# Reads made by any module of the training package count, except data.py's sample order: a CPU-side
# permutation per epoch (torch.randperm(...).tolist()), never a device tensor.
ENGINE = Path(loop.__file__).parent
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def test_one_device_read_per_step_plus_one_per_logged_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: Counter[str] = Counter()
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counting(self: torch.Tensor, *args: object, _real=real, _name=name, **kwargs: object) -> object:
            caller = Path(sys._getframe(1).f_code.co_filename)
            if caller.parent == ENGINE and caller.name != "data.py":
                reads[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    config = load_config(
        write_config(tmp_path / "c.yaml"),
        ["training.max_steps=6", "training.log_every=3", "training.checkpoint_every=0"],
    )
    train(config, tmp_path / "run", dataset_factory=tiny_dataset_factory)
    # 6 skip/stop decisions (one fused check each) + 2 logged steps (loss, terms and norm in one read).
    assert reads == Counter({"__bool__": 6, "tolist": 2})


def test_the_residual_is_measured_only_on_diagnostics_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured: list[bool] = []
    real = fixed_point_gradients._finish

    def spy(f, fixed_point, forward, compute_residual):  # type: ignore[no-untyped-def]
        measured.append(compute_residual)
        return real(f, fixed_point, forward, compute_residual)

    monkeypatch.setattr(fixed_point_gradients, "_finish", spy)
    config = load_config(
        write_config(tmp_path / "c.yaml"),
        ["training.max_steps=4", "diagnostics.every=2", "diagnostics.jacobian=false"],
    )
    result = train(config, tmp_path / "run", dataset_factory=tiny_dataset_factory)
    assert measured == [False, True, False, True]
    assert result.model.slot_attention.record_residual  # the returned model measures it again
