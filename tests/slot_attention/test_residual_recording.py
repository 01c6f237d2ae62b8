"""``record_residual`` / ``set_residual_recording``: the extra residual cell call happens only when asked."""

import pytest
import torch
from torch import nn

from implicit_slots.slot_attention import SlotAttention, set_residual_recording


@pytest.mark.parametrize("variant", ["vanilla", "IN", "IB"])
def test_without_recording_one_cell_call_less_and_same_slots(variant: str) -> None:
    torch.manual_seed(0)
    module = SlotAttention(8, 3, 8, 16, 3, variant=variant)
    inputs = torch.randn(2, 5, 8)
    calls = []
    module.cell.register_forward_hook(lambda *_: calls.append(1))
    outputs = []
    for enabled in (True, False):
        set_residual_recording(nn.Sequential(module), enabled)
        assert module.record_residual is enabled
        calls.clear()
        outputs.append((module(inputs, generator=torch.Generator().manual_seed(1)), len(calls)))
    (recorded, calls_on), (plain, calls_off) = outputs
    assert calls_off == calls_on - 1
    assert torch.equal(recorded.slots, plain.slots) and torch.equal(recorded.attention, plain.attention)
    # Without the extra call the residual is the forward solver's last recorded one.
    assert torch.equal(plain.relative_residual, plain.solution.forward.relative_trace[:, -1])
