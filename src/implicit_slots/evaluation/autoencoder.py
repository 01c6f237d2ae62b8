"""Evaluator of the slot-attention autoencoder: ARI / FG-ARI of its masks and a masks figure.

Metrics (over the evaluated split, averaged per image):

- ``ari`` / ``fg_ari``: ARI over all pixels / over foreground pixels only (ground-truth channel 0 is
  the background), scoring the decoder's alpha masks (argmax over slots), the masks the paper shows.
- ``fg_ari_attention``: FG-ARI of the slot-attention weights of the last iteration, upsampled
  (nearest) from the encoder grid to the image; users compare both mask sources.
- ``mse``: Locatello's training loss (mean over values on the [-1, 1] scale);
  ``per_image_squared_error``: SLATE's convention (per-image sum on [0, 1]).
- ``num_images``.

ARI metrics need ``"masks"`` in the samples; datasets without masks give the reconstruction
metrics only.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from implicit_slots.evaluation import EvaluationOptions, EvaluationReport, register_evaluator
from implicit_slots.metrics import adjusted_rand_index, per_image_squared_error
from implicit_slots.models.autoencoder import AutoencoderOutput
from implicit_slots.models.autoencoder.visualisation import paint_segmentation, resize_attention
from implicit_slots.models.base import ObjectCentricModel

FIGURE_NAME = "autoencoder_masks.png"
FIGURE_IMAGES = 8


def _loader(dataset: Dataset, options: EvaluationOptions) -> DataLoader:
    if options.max_images is not None:
        dataset = Subset(dataset, range(min(options.max_images, len(dataset))))  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=0)


def save_masks_figure(
    path: Path,
    images: Tensor,
    output: AutoencoderOutput,
    true_masks: Tensor | None,
    scores: Tensor | None = None,
) -> None:
    """One row per image: input, reconstruction, predicted and true segmentation, each slot masked.

    Args:
        path: PNG file to write.
        images: (B, 3, H, W) inputs in [0, 1].
        output: the model output for ``images``.
        true_masks: (B, Kt, H, W) ground-truth masks (background first) or None.
        scores: (B,) FG-ARI per image, shown in the row titles, or None.
    """
    num_rows, num_slots = images.shape[0], output.masks.shape[1]
    columns = ["input", "reconstruction", "segmentation"] + (
        ["ground truth"] if true_masks is not None else []
    )
    columns += [f"slot {k + 1}" for k in range(num_slots)]
    figure, axes = plt.subplots(
        num_rows, len(columns), figsize=(1.4 * len(columns), 1.5 * num_rows), squeeze=False
    )
    segmentation = paint_segmentation(output.masks)
    truth = paint_segmentation(true_masks) if true_masks is not None else None
    weights = output.masks.unsqueeze(2)  # (B, K, 1, H, W)
    slots = output.slot_reconstructions.clamp(0, 1) * weights + (1 - weights)  # (B, K, 3, H, W)
    for row in range(num_rows):
        panels = [images[row], output.reconstruction[row], segmentation[row]]
        if truth is not None:
            panels.append(truth[row])
        panels += list(slots[row])
        for column, (panel, title) in enumerate(zip(panels, columns)):
            axis = axes[row, column]
            axis.imshow(panel.clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=8)
        if scores is not None:
            axes[row, 0].set_ylabel(f"FG-ARI {scores[row]:.2f}", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


@torch.no_grad()
def evaluate_autoencoder(
    model: ObjectCentricModel, dataset: Dataset, options: EvaluationOptions
) -> EvaluationReport:
    """ARI, FG-ARI (decoder and attention masks), reconstruction errors and the masks figure.

    Args:
        model: a :class:`~implicit_slots.models.autoencoder.SlotAttentionAutoencoder`.
        dataset: the split to evaluate (samples with ``"image"`` and, for ARI, ``"masks"``).
        options: batch size, image limit, device, seed, output folder.

    Returns:
        Metrics ``ari``, ``fg_ari``, ``fg_ari_attention`` (with masks), ``mse``,
        ``per_image_squared_error``, ``num_images``; figure ``options.out_dir / autoencoder_masks.png``.
    """
    model.eval().to(options.device)
    totals: dict[str, float] = {}
    num_images = 0
    figure_path = options.out_dir / FIGURE_NAME
    batches = iter(_loader(dataset, options))  # created first: a DataLoader iterator draws a random seed
    with torch.random.fork_rng(devices=[]):
        # Slot initialisation noise is the only randomness: seeded, and the caller's RNG left untouched.
        torch.manual_seed(options.seed)
        for batch_index, batch in enumerate(batches):
            batch = {key: value.to(options.device) for key, value in batch.items()}
            output = model(batch)
            if not isinstance(output, AutoencoderOutput):
                raise TypeError(
                    f"the autoencoder evaluator needs an AutoencoderOutput, got {type(output).__name__}"
                )
            images = batch["image"]
            values = {
                "mse": ((2 * (output.reconstruction - images)) ** 2).mean(dim=(1, 2, 3)),
                "per_image_squared_error": per_image_squared_error(images, output.reconstruction),
            }
            true_masks = batch.get("masks")
            if true_masks is not None:
                attention = resize_attention(
                    output.slot_attention.attention, images.shape[2], images.shape[3]
                )
                values["ari"] = adjusted_rand_index(true_masks, output.masks)
                values["fg_ari"] = adjusted_rand_index(true_masks, output.masks, exclude_background=True)
                values["fg_ari_attention"] = adjusted_rand_index(
                    true_masks, attention, exclude_background=True
                )
            for name, per_image in values.items():
                totals[name] = totals.get(name, 0.0) + float(per_image.double().sum())
            if batch_index == 0:
                count = min(FIGURE_IMAGES, images.shape[0])
                first = AutoencoderOutput(
                    slot_attention=output.slot_attention,
                    reconstruction=output.reconstruction[:count],
                    slot_reconstructions=output.slot_reconstructions[:count],
                    masks=output.masks[:count],
                )
                save_masks_figure(
                    figure_path,
                    images[:count],
                    first,
                    true_masks[:count] if true_masks is not None else None,
                    values["fg_ari"][:count] if "fg_ari" in values else None,
                )
            num_images += images.shape[0]
    if num_images == 0:
        raise ValueError("the autoencoder evaluator got an empty dataset")
    metrics = {name: total / num_images for name, total in totals.items()}
    metrics["num_images"] = float(num_images)
    return EvaluationReport(metrics=metrics, figures=[figure_path])


register_evaluator("autoencoder", evaluate_autoencoder)
