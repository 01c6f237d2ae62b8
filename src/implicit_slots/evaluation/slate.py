"""Evaluation of SLATE runs: reconstruction errors, cross-entropy, FID (or a labelled proxy), a figure.

Metrics (``metrics.json`` keys), on the first ``max_images`` images of the split, in eval mode:

- ``mse_dvae``: the dVAE reconstruction of the argmax tokens, clamped to [0, 1];
- ``mse_background``: the error of the all-background image, the dVAE's decoding of the split's most
  frequent token everywhere (:mod:`implicit_slots.evaluation.background`): a ``mse_dvae`` well below it
  means the dVAE's tokens describe the objects;
- ``mse_autoregressive``: the reconstruction *through the slots*, the paper's Table-3 images: argmax dVAE
  tokens -> slots -> tokens re-generated one by one (greedy, key/value cache) -> dVAE decoder -> clamp;
- ``mse_autoregressive_sampled``: the same with tokens sampled from the decoder's distribution (temperature
  1, a generator seeded with ``options.seed``) instead of the greedy argmax. Early in training greedy
  decoding of CLEVR-like scenes emits only the most frequent (background) token, because at an object's
  first token the background is still the single most likely one; sampling shows what the slots encode;
- the MSEs are in SLATE's convention (:func:`implicit_slots.metrics.per_image_squared_error`: sum of squared
  errors over pixels and channels of images in [0, 1], averaged over images);
- ``cross_entropy``: the decoder's teacher-forced cross-entropy of the argmax tokens, summed over tokens and
  averaged over images (SLATE's training-loss scale);
- ``cross_entropy_shuffled_slots``: the same cross-entropy with every image's slots replaced by those of the
  next image of its batch (a cyclic shift; batches of one image are skipped), and ``slot_information`` =
  ``cross_entropy_shuffled_slots - cross_entropy``: how many nats per image the decoder gains from the
  image's own slots. Near 0 means the decoder ignores the slots and models tokens from their prefix alone
  (reconstructions through the slots then cannot resemble their inputs);
- ``fid`` (with ``--fid-weights``) or ``proxy_feature_distance`` (without; not FID) between the input images
  and the autoregressive reconstructions (:func:`implicit_slots.metrics.build_image_distance`);
- ``relative_residual``: mean forward relative residual of the slot-attention fixed point;
- ``ari_attention`` / ``fg_ari_attention`` (only for datasets with ``"masks"``, background first): ARI over
  all pixels / over the objects' pixels of the slot-attention masks (each token's argmax slot over its
  4x4 patch) against the true segmentation; FG-ARI is how object-centric papers score SLATE's grouping;
- ``num_images``.

The figure ``slate_<split>.png`` has one row per image (up to 8): input | dVAE reconstruction |
reconstruction through the slots (greedy) | the same, sampled | one attention-mask overlay per slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from implicit_slots.evaluation import EvaluationOptions, EvaluationReport, register_evaluator
from implicit_slots.evaluation.background import BackgroundErrorAccumulator
from implicit_slots.metrics import adjusted_rand_index, build_image_distance, per_image_squared_error
from implicit_slots.models.base import ObjectCentricModel
from implicit_slots.models.slate import Slate, SlateOutput, attention_overlays

FIGURE_ROWS = 8  # images shown in the figure
_GAP = 2  # white pixels between panels
_HEADER = 14  # pixels of the label row


def _image_batches(
    dataset: Dataset, batch_size: int, max_images: int | None
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Images (B, 3, H, W) and ground-truth masks (B, Kt, H, W) or None, of the first ``max_images``
    samples, in dataset order."""
    total = len(dataset)  # type: ignore[arg-type]
    count = total if max_images is None else min(max_images, total)
    loader = DataLoader(Subset(dataset, range(count)), batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        yield batch["image"], batch.get("masks")


def save_figure(panels: list[tuple[str, Tensor]], path: Path, scale: int = 2) -> Path:
    """Write a grid of labelled image columns as a PNG.

    Args:
        panels: (label, images (N, 3, H, W) in [0, 1]) per column; every column has the same N, H, W.
        path: where to write the PNG.
        scale: nearest-neighbour magnification of every image.

    Returns:
        ``path``.
    """
    count, _, height, width = panels[0][1].shape
    cell_h, cell_w = height * scale, width * scale
    canvas = Image.new(
        "RGB", (len(panels) * (cell_w + _GAP) + _GAP, _HEADER + count * (cell_h + _GAP) + _GAP), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for column, (label, images) in enumerate(panels):
        left = _GAP + column * (cell_w + _GAP)
        draw.text((left + 1, 1), label, fill="black")
        pixels = (images.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8)
        for row in range(count):
            array = np.ascontiguousarray(pixels[row].permute(1, 2, 0).numpy())
            tile = Image.fromarray(array).resize((cell_w, cell_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (left, _HEADER + _GAP + row * (cell_h + _GAP)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


@torch.no_grad()
def evaluate_slate(
    model: ObjectCentricModel, dataset: Dataset, options: EvaluationOptions
) -> EvaluationReport:
    """Evaluate a SLATE model on one split (see the module docstring for the metrics).

    Args:
        model: a :class:`Slate` model (moved to ``options.device`` and put in eval mode here).
        dataset: the split; items are dicts with ``"image"`` float (3, H, W) in [0, 1].
        options: batch size, image limit, FID weights, device, seed and the figure folder.

    Returns:
        The metrics and the path of the figure.
    """
    if not isinstance(model, Slate):
        raise TypeError(f"the slate evaluator needs a Slate model, got {type(model).__name__}")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"split {options.split!r} has no images to evaluate")
    device = options.device
    model = model.to(device).eval()
    distance = build_image_distance(options.fid_weights, device)
    # The initial slots are random: seed the global generator so that evaluations are repeatable.
    torch.manual_seed(options.seed)
    sampling = torch.Generator(device=device).manual_seed(options.seed)
    totals = {
        "mse_dvae": 0.0,
        "mse_autoregressive": 0.0,
        "mse_autoregressive_sampled": 0.0,
        "cross_entropy": 0.0,
        "relative_residual": 0.0,
    }
    background_error = BackgroundErrorAccumulator(model.vocab_size, device)
    shuffled_total, paired_total, shuffled_images = 0.0, 0.0, 0
    num_images = 0
    figure_panels: list[tuple[str, Tensor]] | None = None
    for image, true_masks in _image_batches(dataset, options.batch_size, options.max_images):
        image = image.to(device)
        batch = {"image": image}
        output = model(batch)
        assert isinstance(output, SlateOutput)
        generated = model.generate_tokens(output.slot_attention.slots)  # (B, T)
        autoregressive = model.decode_image_tokens(generated)  # (B, 3, H, W) in [0, 1]
        sampled_tokens = model.generate_tokens(output.slot_attention.slots, sample=True, generator=sampling)
        sampled = model.decode_image_tokens(sampled_tokens)  # (B, 3, H, W)
        dvae_reconstruction = output.dvae_reconstruction.clamp(0.0, 1.0)
        count = image.shape[0]
        totals["mse_dvae"] += float(per_image_squared_error(image, dvae_reconstruction).sum())
        background_error.update(image, output.tokens)
        totals["mse_autoregressive"] += float(per_image_squared_error(image, autoregressive).sum())
        totals["mse_autoregressive_sampled"] += float(per_image_squared_error(image, sampled).sum())
        cross_entropy = float(model.compute_loss(output, batch).terms["cross_entropy"]) * count
        totals["cross_entropy"] += cross_entropy
        totals["relative_residual"] += float(output.slot_attention.relative_residual.float().sum())
        if count > 1:
            shuffled_logits = model.token_logits(output.tokens, output.slot_attention.slots.roll(1, dims=0))
            shuffled_total += float(
                F.cross_entropy(shuffled_logits.flatten(0, 1), output.tokens.flatten(), reduction="sum")
            )
            paired_total += cross_entropy
            shuffled_images += count
        if true_masks is not None:
            masks = model.attention_masks(output.slot_attention.attention)  # (B, K, H, W)
            true_masks = true_masks.to(device)
            for name, exclude in (("ari_attention", False), ("fg_ari_attention", True)):
                scores = adjusted_rand_index(true_masks, masks, exclude_background=exclude)
                totals[name] = totals.get(name, 0.0) + float(scores.sum())
        distance.update(image, real=True)
        distance.update(autoregressive, real=False)
        num_images += count
        if figure_panels is None:
            shown = slice(0, min(FIGURE_ROWS, count))
            masks = model.attention_masks(output.slot_attention.attention[shown])
            overlays = attention_overlays(image[shown], masks)  # (N, K, 3, H, W)
            figure_panels = [
                ("input", image[shown]),
                ("dVAE", dvae_reconstruction[shown]),
                ("slots", autoregressive[shown]),
                ("sampled", sampled[shown]),
                *((f"slot {k + 1}", overlays[:, k]) for k in range(overlays.shape[1])),
            ]
    metrics = {name: total / num_images for name, total in totals.items()}
    metrics["mse_background"] = background_error.compute(model.dvae, model.grid_size).mse
    if shuffled_images:
        metrics["cross_entropy_shuffled_slots"] = shuffled_total / shuffled_images
        metrics["slot_information"] = (shuffled_total - paired_total) / shuffled_images
    if num_images >= 2:
        metrics[distance.name] = distance.compute()
    metrics["num_images"] = float(num_images)
    assert figure_panels is not None
    figure = save_figure(figure_panels, Path(options.out_dir) / f"slate_{options.split}.png")
    return EvaluationReport(metrics=metrics, figures=[figure])


register_evaluator("slate", evaluate_slate)
