"""SLATE's training forward (and loss) compiles as one graph: nothing is read back from the device.

``torch.compile(fullgraph=True)`` fails on any host read (a graph break); the "eager" backend keeps it quick.
The image is large enough (81 tokens) for the chunked causal attention with dropout to run.
"""

import torch

from implicit_slots.models.slate import SlateConfig, build_slate
from implicit_slots.slot_attention import SlotAttentionConfig


def test_training_forward_and_loss_compile_as_one_graph() -> None:
    config = SlateConfig(
        image_size=36,
        vocab_size=12,
        dvae_hidden_channels=8,
        d_model=16,
        num_heads=2,
        num_decoder_blocks=1,
        slot_attention=SlotAttentionConfig(num_slots=3, slot_dim=16, mlp_hidden_dim=16, num_iterations=2),
    )
    model = build_slate(config).train()

    def loss(image: torch.Tensor) -> torch.Tensor:
        batch = {"image": image}
        return model.compute_loss(model(batch), batch).loss

    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    value = compiled(torch.rand(2, 3, 36, 36))
    value.backward()
    assert torch.isfinite(value) and model.token_head.weight.grad is not None
