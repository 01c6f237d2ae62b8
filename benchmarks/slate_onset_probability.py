"""Why greedy SLATE reconstructions stay empty: the decoder's background probability where objects start.

Run ``python benchmarks/slate_onset_probability.py RUN_DIR [--images 64] [--split test]`` on a trained SLATE
run. It tokenises the images with the run's dVAE (argmax codes), takes the ``--background-codes`` most
frequent codes over those images as "background", and prints one Markdown table of what the teacher-forced
decoder (true prefix, the image's own slots) predicts at the *object onsets*: the tokens that are not
background while their predecessor in raster order is. Greedy decoding, which writes the background before
an object, emits the object only where the background's probability there falls below about one half.

Columns: the number of onsets; the mean probability of all background codes there; the mean probability
of the true code; the fraction of onsets whose argmax is a background code; the share of all tokens that
the background codes cover; then, from greedy decoding through the same slots (the evaluation's
reconstruction), the *greedy object recall*: the fraction of true object tokens (not background) where the
greedy token is not background either, and the fraction of object tokens it reproduces exactly.

The teacher-forced columns alone can mislead: the decoder also reads cues in the true prefix (for example
the rarer background codes of shadows next to objects), which greedy decoding never writes. Two runs
with the same onset probability can then differ completely in what greedy decoding emits. The column
"argmax is the plain background, plain prefix" replaces every background token of the prefix by the most
frequent code (closer to what greedy decoding feeds back) and gives the fraction of onsets where the
decoder then predicts that same code, i.e. where greedy decoding would go on writing plain background.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))  # run from a checkout without installing

from implicit_slots.evaluation.runner import EvaluationRunError, load_trained_model  # noqa: E402
from implicit_slots.training.data import build_dataset_split  # noqa: E402


@dataclass(frozen=True)
class OnsetStatistics:
    """Teacher-forced predictions at object onsets (see the module docstring)."""

    onsets: int
    background_probability: float
    true_code_probability: float
    argmax_background_fraction: float
    background_share: float


def onset_mask(tokens: Tensor, background: Tensor) -> Tensor:
    """(B, T) bool: object tokens whose predecessor in raster order (or the image start) is background."""
    is_background = torch.isin(tokens, background)
    after_background = torch.cat([torch.ones_like(is_background[:, :1]), is_background[:, :-1]], dim=1)
    return ~is_background & after_background


def onset_statistics(logits: Tensor, tokens: Tensor, background: Tensor) -> OnsetStatistics:
    """Statistics of next-token ``logits`` (B, T, V) at the onsets of the true ``tokens`` (B, T).

    ``background`` (1D) holds the codes counted as background (see :func:`background_codes_of`); position 0
    counts as following the background.
    """
    is_background = torch.isin(tokens, background)
    onset = onset_mask(tokens, background)
    probabilities = logits.float().softmax(dim=-1)
    if not bool(onset.any()):
        raise ValueError("no object onsets: every token is a background code")
    return OnsetStatistics(
        onsets=int(onset.sum()),
        background_probability=float(probabilities[..., background].sum(dim=-1)[onset].mean()),
        true_code_probability=float(probabilities.gather(-1, tokens[..., None])[..., 0][onset].mean()),
        argmax_background_fraction=float(torch.isin(logits.argmax(dim=-1)[onset], background).float().mean()),
        background_share=float(is_background.float().mean()),
    )


@dataclass(frozen=True)
class GreedyStatistics:
    """How much of the objects greedy decoding writes (see the module docstring)."""

    object_recall: float
    object_exact: float


def greedy_statistics(greedy: Tensor, tokens: Tensor, background: Tensor) -> GreedyStatistics:
    """Compare greedy tokens (B, T) with the true tokens (B, T) on the true object tokens.

    Args:
        greedy: greedily decoded tokens.
        tokens: the true tokens.
        background: the codes counted as background (1D).
    """
    objects = ~torch.isin(tokens, background)
    if not bool(objects.any()):
        raise ValueError("no object tokens: every token is a background code")
    return GreedyStatistics(
        object_recall=float((~torch.isin(greedy, background))[objects].float().mean()),
        object_exact=float((greedy == tokens)[objects].float().mean()),
    )


def background_codes_of(tokens: Tensor, vocab_size: int, count: int) -> Tensor:
    """The ``count`` most frequent codes of ``tokens``."""
    return torch.bincount(tokens.flatten(), minlength=vocab_size).argsort(descending=True)[:count]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", type=Path, help="a trained SLATE run folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=64, help="first N images of the split")
    parser.add_argument("--background-codes", type=int, default=3, help="most frequent codes = background")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        model, config, step = load_trained_model(args.run_dir)
    except EvaluationRunError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if config.model.name != "slate":
        parser.error(f"{str(args.run_dir)!r} holds a {config.model.name!r} run, not a SLATE one")
    dataset = build_dataset_split(config.data, args.split)
    count = min(args.images, len(dataset))
    generator = torch.Generator().manual_seed(0)
    all_logits, all_slots, all_tokens, all_greedy = [], [], [], []
    with torch.no_grad():
        for start in range(0, count, args.batch_size):
            images = torch.stack(
                [dataset[i]["image"] for i in range(start, min(start + args.batch_size, count))]
            )
            tokens = model.encode_image_tokens(images)
            slots = model.encode_slots(model.embed_tokens(tokens)[:, 1:], generator=generator).slots
            all_logits.append(model.token_logits(tokens, slots))
            all_tokens.append(tokens)
            all_slots.append(slots)
            all_greedy.append(model.generate_tokens(slots))
    tokens = torch.cat(all_tokens)
    background = background_codes_of(tokens, model.vocab_size, args.background_codes)
    with torch.no_grad():
        plain_logits = []
        for batch_tokens, slots in zip(all_tokens, all_slots, strict=True):
            plain = torch.where(torch.isin(batch_tokens, background), background[0], batch_tokens)
            plain_logits.append(model.token_logits(plain, slots))
    try:
        stats = onset_statistics(torch.cat(all_logits), tokens, background)
        greedy = greedy_statistics(torch.cat(all_greedy), tokens, background)
    except ValueError as error:
        parser.exit(1, f"{parser.prog}: {args.run_dir}: {error}\n")
    plain_argmax = torch.cat(plain_logits).argmax(dim=-1)[onset_mask(tokens, background)]
    plain_background = float((plain_argmax == background[0]).float().mean())
    codes = args.background_codes
    print(f"{args.run_dir} (step {step}, {args.split}, {count} images, {codes} background codes)")
    print(
        "| onsets | p(background) | p(true code) | argmax is background | background share of tokens "
        "| argmax is the plain background, plain prefix | greedy object recall | greedy object tokens exact |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {stats.onsets} | {stats.background_probability:.3f} | {stats.true_code_probability:.3f} "
        f"| {stats.argmax_background_fraction:.3f} | {stats.background_share:.3f} "
        f"| {plain_background:.3f} "
        f"| {greedy.object_recall:.3f} | {greedy.object_exact:.3f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
