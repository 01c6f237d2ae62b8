"""Why greedy SLATE reconstructions stay empty: the decoder's background probability where objects start.

The images are tokenised with the run's dVAE (argmax codes); the ``background_codes`` most frequent codes
over those images count as "background". At the *object onsets*, the tokens that are not background while
their predecessor in raster order is (position 0 counts as following the background), the teacher-forced
decoder (true prefix, the image's own slots) is asked for its next-token distribution. Greedy decoding,
which writes the background before an object, emits the object only where the background's probability
there falls below about one half.

The teacher-forced statistics alone can mislead: the decoder also reads cues in the true prefix (for example
the rarer background codes of shadows next to objects), which greedy decoding never writes, so two runs with
the same onset probability can differ completely in what greedy decoding emits. Two further statistics
close that gap: with every background token of the prefix replaced by the most frequent code (closer to what
greedy decoding feeds back), the fraction of onsets where the decoder predicts that same code; and, from
greedy decoding through the same slots (the evaluation's reconstruction), the fraction of true object tokens
where the greedy token is not background (the *greedy object recall*) and where it is the true code.

Used by ``implicit-slots inspect onset RUN_DIR`` (:mod:`implicit_slots.cli.inspect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from implicit_slots.models.slate.model import Slate


@dataclass(frozen=True)
class OnsetStatistics:
    """Teacher-forced predictions at object onsets.

    Attributes:
        onsets: number of onset positions over all images.
        background_probability: mean over onsets of the summed probability of the background codes.
        true_code_probability: mean over onsets of the probability of the true code.
        argmax_background_fraction: fraction of onsets whose most probable code is a background code.
        background_share: fraction of all tokens that are background codes.
    """

    onsets: int
    background_probability: float
    true_code_probability: float
    argmax_background_fraction: float
    background_share: float


@dataclass(frozen=True)
class GreedyStatistics:
    """How much of the objects greedy decoding writes.

    Attributes:
        object_recall: fraction of true object tokens where the greedy token is not a background code.
        object_exact: fraction of true object tokens that the greedy token reproduces exactly.
    """

    object_recall: float
    object_exact: float


@dataclass(frozen=True)
class OnsetReport:
    """Everything ``inspect onset`` prints for one run.

    Attributes:
        images: number of images measured.
        background: the codes counted as background, most frequent first (1D).
        onset: teacher-forced statistics at the onsets.
        plain_background_fraction: with a plain-background prefix, the fraction of onsets where the decoder's
            argmax is the most frequent code.
        greedy: greedy-decoding statistics on the object tokens.
    """

    images: int
    background: Tensor
    onset: OnsetStatistics
    plain_background_fraction: float
    greedy: GreedyStatistics


def onset_mask(tokens: Tensor, background: Tensor) -> Tensor:
    """Object onsets of ``tokens``.

    Args:
        tokens: (B, T) codes in raster order.
        background: (N,) codes counted as background.

    Returns:
        (B, T) bool: tokens that are not background while their predecessor (or the image start) is.
    """
    is_background = torch.isin(tokens, background)  # (B, T)
    after_background = torch.cat([torch.ones_like(is_background[:, :1]), is_background[:, :-1]], dim=1)
    return ~is_background & after_background


def onset_statistics(logits: Tensor, tokens: Tensor, background: Tensor) -> OnsetStatistics:
    """Statistics of next-token predictions at the onsets of the true tokens.

    Args:
        logits: (B, T, V) teacher-forced next-token logits; ``logits[:, t]`` predicts ``tokens[:, t]``.
        tokens: (B, T) the true codes.
        background: (N,) codes counted as background (see :func:`background_codes_of`).

    Raises:
        ValueError: there is no onset (every token is a background code).
    """
    is_background = torch.isin(tokens, background)
    onset = onset_mask(tokens, background)
    if not bool(onset.any()):
        raise ValueError("no object onsets: every token is a background code")
    probabilities = logits.float().softmax(dim=-1)  # (B, T, V)
    return OnsetStatistics(
        onsets=int(onset.sum()),
        background_probability=float(probabilities[..., background].sum(dim=-1)[onset].mean()),
        true_code_probability=float(probabilities.gather(-1, tokens[..., None])[..., 0][onset].mean()),
        argmax_background_fraction=float(torch.isin(logits.argmax(dim=-1)[onset], background).float().mean()),
        background_share=float(is_background.float().mean()),
    )


def greedy_statistics(greedy: Tensor, tokens: Tensor, background: Tensor) -> GreedyStatistics:
    """Compare greedily decoded tokens with the true tokens on the true object tokens.

    Args:
        greedy: (B, T) greedily decoded codes.
        tokens: (B, T) the true codes.
        background: (N,) codes counted as background.

    Raises:
        ValueError: there is no object token (every true token is a background code).
    """
    objects = ~torch.isin(tokens, background)  # (B, T)
    if not bool(objects.any()):
        raise ValueError("no object tokens: every token is a background code")
    return GreedyStatistics(
        object_recall=float((~torch.isin(greedy, background))[objects].float().mean()),
        object_exact=float((greedy == tokens)[objects].float().mean()),
    )


def background_codes_of(tokens: Tensor, vocab_size: int, count: int) -> Tensor:
    """The ``count`` most frequent codes of ``tokens`` (any shape), most frequent first: (count,)."""
    if not 1 <= count <= vocab_size:
        raise ValueError(f"the number of background codes must be in [1, {vocab_size}], got {count}")
    return torch.bincount(tokens.flatten(), minlength=vocab_size).argsort(descending=True)[:count]


@torch.no_grad()
def measure_onsets(
    model: Slate,
    images: Sequence[Tensor],
    *,
    background_codes: int = 3,
    generator: torch.Generator | None = None,
) -> OnsetReport:
    """Run the measurement of the module docstring on batches of images.

    Args:
        model: a trained SLATE model in eval mode.
        images: batches of images, each (B, 3, S, S) in [0, 1] on the model's device.
        background_codes: how many of the most frequent codes count as background.
        generator: draws the slot initialisations (the same slots serve every statistic).

    Raises:
        ValueError: no images, or no onset / object token with this many background codes.
    """
    if not images:
        raise ValueError("no images to measure")
    all_tokens, all_slots, all_logits, all_greedy = [], [], [], []
    for batch in images:
        tokens = model.encode_image_tokens(batch)  # (B, T)
        slots = model.encode_slots(model.embed_tokens(tokens)[:, 1:], generator=generator).slots  # (B, K, D)
        all_tokens.append(tokens)
        all_slots.append(slots)
        all_logits.append(model.token_logits(tokens, slots))  # (B, T, V)
        all_greedy.append(model.generate_tokens(slots))  # (B, T)
    tokens = torch.cat(all_tokens)
    background = background_codes_of(tokens, model.vocab_size, background_codes)
    onset = onset_statistics(torch.cat(all_logits), tokens, background)
    greedy = greedy_statistics(torch.cat(all_greedy), tokens, background)
    plain_logits = []
    for batch_tokens, slots in zip(all_tokens, all_slots, strict=True):
        plain = torch.where(torch.isin(batch_tokens, background), background[0], batch_tokens)
        plain_logits.append(model.token_logits(plain, slots))
    plain_argmax = torch.cat(plain_logits).argmax(dim=-1)[onset_mask(tokens, background)]
    return OnsetReport(
        images=int(tokens.shape[0]),
        background=background.cpu(),
        onset=onset,
        plain_background_fraction=float((plain_argmax == background[0]).float().mean()),
        greedy=greedy,
    )


def format_onset_table(report: OnsetReport) -> list[str]:
    """The Markdown table of a report: a header, a rule and one row."""
    stats, greedy = report.onset, report.greedy
    return [
        "| onsets | p(background) | p(true code) | argmax is background | background share of tokens "
        "| argmax is the plain background, plain prefix | greedy object recall "
        "| greedy object tokens exact |",
        "|---|---|---|---|---|---|---|---|",
        f"| {stats.onsets} | {stats.background_probability:.3f} | {stats.true_code_probability:.3f} "
        f"| {stats.argmax_background_fraction:.3f} | {stats.background_share:.3f} "
        f"| {report.plain_background_fraction:.3f} "
        f"| {greedy.object_recall:.3f} | {greedy.object_exact:.3f} |",
    ]
