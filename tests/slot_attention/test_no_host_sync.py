"""With a fixed iteration count the slot-attention forward reads nothing back from the device.

``torch.compile(fullgraph=True)`` refuses any value read back to Python (``bool(tensor)``, ``.item()``: a
graph break), so compiling the whole forward proves there is none. The "eager" backend keeps the test quick.
"""

import pytest
import torch

from implicit_slots.slot_attention import SlotAttention


@pytest.mark.parametrize("variant", ["IN", "vanilla", "BN"])
def test_fixed_iteration_forward_compiles_as_one_graph(variant: str) -> None:
    module = SlotAttention(16, 3, 16, 16, num_iterations=3, variant=variant, tolerance=0.0)
    inputs = torch.randn(2, 8, 16)
    compiled = torch.compile(lambda x: module(x).slots, fullgraph=True, backend="eager")
    torch.manual_seed(0)
    slots = compiled(inputs)
    torch.manual_seed(0)
    torch.testing.assert_close(slots, module(inputs).slots)
    slots.sum().backward()  # the graph is differentiable as compiled
    assert module.cell.gru.weight_ih.grad is not None
