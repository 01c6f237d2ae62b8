"""Time full training steps of any experiment config's model (forward, loss, backward, Adam).

    python benchmarks/config_step_time.py configs/slate_clevr_lite.yaml --threads 2

Builds the model of the config (its ``model:`` section), feeds random images of the config's size at its
batch size, runs ``--warmup`` untimed steps and prints the mean wall time of ``--steps`` timed steps.
Data loading, gradient clipping and logging are not included: this is the model's compute per step.
Only for models trained on images alone (SLATE, the autoencoder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path, help="experiment YAML")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    args = parser.parse_args(argv)

    from implicit_slots.config import load_config
    from implicit_slots.training.loop import build_model

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    model = build_model(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    size = config.data.image_size
    batch = {"image": torch.rand(config.training.batch_size, 3, size, size)}

    def step() -> None:
        loss = model.compute_loss(model(batch), batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    milliseconds = (time.perf_counter() - start) / args.steps * 1000
    print("| config | threads | batch | ms/step |\n|---|---|---|---|")
    print(f"| {args.config} | {args.threads} | {config.training.batch_size} | {milliseconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
