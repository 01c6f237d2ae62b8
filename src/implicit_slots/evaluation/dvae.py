"""Evaluation of a dVAE run (model ``dvae``, the first stage of two-stage SLATE): does it decode objects?

Metrics (``metrics.json`` keys), on the first ``max_images`` images of the split, in eval mode (argmax
tokens), in SLATE's MSE convention (sum of squared errors over pixels and channels, averaged over images):

- ``mse_dvae``: the dVAE reconstruction of the argmax tokens, clamped to [0, 1];
- ``mse_background``: the reconstruction of a grid holding the split's single most frequent token
  everywhere (the "all-background" image), clamped to [0, 1]. On scenes of a few objects on a plain
  background, a dVAE that has not learned object tokens reaches about this error; ``mse_dvae`` well below
  it means objects are decoded;
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
    counts = torch.zeros(model.vocab_size, dtype=torch.long, device=device)  # (V,)
    mse_total = 0.0
    # sum_i ||x_i - b||^2 = sum_i ||x_i||^2 - 2 <b, sum_i x_i> + N ||b||^2: one pass, b known at the end.
    image_sum: torch.Tensor | None = None  # (3, H, W) float64
    square_sum = 0.0
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
        counts += torch.bincount(output.tokens.flatten(), minlength=model.vocab_size)
        batch_sum = image.double().sum(dim=0)  # (3, H, W)
        image_sum = batch_sum if image_sum is None else image_sum + batch_sum
        square_sum += float(image.double().square().sum())
        num_images += image.shape[0]
        if sum(len(i) for i, _ in shown) < FIGURE_ROWS:
            shown.append((image, reconstruction))
    assert image_sum is not None
    background_token = int(counts.argmax())
    grid = torch.full((1, model.image_size // 4, model.image_size // 4), background_token, device=device)
    background = model.dvae.decode_tokens(grid).clamp(0.0, 1.0)[0].double()  # (3, H, W)
    background_total = (
        square_sum
        - 2.0 * float((background * image_sum).sum())
        + num_images * float(background.square().sum())
    )
    metrics = {
        "mse_dvae": mse_total / num_images,
        "mse_background": background_total / num_images,
        "background_token": float(background_token),
        "background_token_fraction": float(counts[background_token]) / float(counts.sum()),
        "tokens_used": float((counts > 0).sum()),
        "num_images": float(num_images),
    }
    inputs = torch.cat([i for i, _ in shown])[:FIGURE_ROWS]
    reconstructions = torch.cat([r for _, r in shown])[:FIGURE_ROWS]
    panels = [
        ("input", inputs),
        ("dVAE", reconstructions),
        ("background", background.float().expand_as(inputs)),
    ]
    figure = save_figure(panels, Path(options.out_dir) / f"dvae_{options.split}.png")
    return EvaluationReport(metrics=metrics, figures=[figure])


register_evaluator("dvae", evaluate_dvae)
