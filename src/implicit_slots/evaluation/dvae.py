"""Evaluation of a dVAE run (model ``dvae``, the first stage of two-stage SLATE): does it decode objects?

Metrics (``metrics.json`` keys), on the first ``max_images`` images of the split, in eval mode (argmax
tokens), in SLATE's MSE convention (sum of squared errors over pixels and channels, averaged over images):

- ``mse_dvae``: the dVAE reconstruction of the argmax tokens, clamped to [0, 1];
- ``mse_background``: the error of the all-background image (:mod:`implicit_slots.evaluation.background`):
  ``mse_dvae`` well below it means objects are decoded;
- ``background_token``: that token, ``background_token_fraction``: the fraction of token positions that
  hold it, ``tokens_used``: the number of distinct tokens of the split;
- ``num_images``.

The figure ``dvae_<split>.png`` has one row per image (up to 8): input | dVAE | all-background.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from implicit_slots.evaluation import EvaluationOptions, EvaluationReport, register_evaluator
from implicit_slots.evaluation.background import BackgroundErrorAccumulator
from implicit_slots.evaluation.slate import FIGURE_ROWS, save_figure
from implicit_slots.metrics import per_image_squared_error
from implicit_slots.models.base import ObjectCentricModel
from implicit_slots.models.slate import DvaeModel


@torch.no_grad()
def evaluate_dvae(
    model: ObjectCentricModel, dataset: Dataset, options: EvaluationOptions
) -> EvaluationReport:
    """Evaluate a dVAE model on one split (see the module docstring for the metrics).

    Args:
        model: a :class:`~implicit_slots.models.slate.DvaeModel` (moved to ``options.device``, eval mode).
        dataset: the split; items are dicts with ``"image"`` float (3, H, W) in [0, 1].
        options: batch size, image limit, device and the figure folder.

    Returns:
        The metrics and the path of the figure.
    """
    if not isinstance(model, DvaeModel):
        raise TypeError(f"the dvae evaluator needs a DvaeModel, got {type(model).__name__}")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"split {options.split!r} has no images to evaluate")
    device = options.device
    model = model.to(device).eval()
    background_error = BackgroundErrorAccumulator(model.vocab_size, device)
    mse_total = 0.0
    num_images = 0
    shown: list[tuple[torch.Tensor, torch.Tensor]] = []
    total = len(dataset)  # type: ignore[arg-type]
    count = total if options.max_images is None else min(options.max_images, total)
    loader = DataLoader(Subset(dataset, range(count)), batch_size=options.batch_size, shuffle=False)
    for batch in loader:
        image = batch["image"].to(device)  # (B, 3, H, W)
        output = model({"image": image})
        reconstruction = output.reconstruction.clamp(0.0, 1.0)  # (B, 3, H, W)
        mse_total += float(per_image_squared_error(image, reconstruction).sum())
        background_error.update(image, output.tokens)
        num_images += image.shape[0]
        if sum(len(i) for i, _ in shown) < FIGURE_ROWS:
            shown.append((image, reconstruction))
    background = background_error.compute(model.dvae, model.image_size // 4)
    metrics = {
        "mse_dvae": mse_total / num_images,
        "mse_background": background.mse,
        "background_token": float(background.token),
        "background_token_fraction": background.token_fraction,
        "tokens_used": float(background.tokens_used),
        "num_images": float(num_images),
    }
    inputs = torch.cat([i for i, _ in shown])[:FIGURE_ROWS]
    reconstructions = torch.cat([r for _, r in shown])[:FIGURE_ROWS]
    panels = [
        ("input", inputs),
        ("dVAE", reconstructions),
        ("background", background.image.expand_as(inputs)),
    ]
    figure = save_figure(panels, Path(options.out_dir) / f"dvae_{options.split}.png")
    return EvaluationReport(metrics=metrics, figures=[figure])


register_evaluator("dvae", evaluate_dvae)
