"""Test-time augmentation: the class probabilities averaged over views of each image."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# TTA_MODES (settings.py): none: the image only | flip: the image and its mirror | flip_translate:
# those two, each also shifted by one pixel up-left and down-right (mirrored borders, as the
# training crops), six views


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The batch shifted by (dy, dx) pixels, the uncovered border filled by reflection."""
    pad = max(abs(dy), abs(dx))
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    top, left = pad - dy, pad - dx
    return padded[..., top : top + h, left : left + w]


def views(x: torch.Tensor, mode: str) -> list[tuple[torch.Tensor, float]]:
    """(view, weight) pairs; the weights sum to 1. The first view is x itself (tta_probs takes its
    probabilities from the caller)."""
    if mode == "none":
        return [(x, 1.0)]
    mirrored = x.flip(3)
    if mode == "flip":
        return [(x, 0.5), (mirrored, 0.5)]
    # the untranslated pair keeps half the weight: a shifted view loses a row and a column
    shifted = [translate(image, d, d) for image in (x, mirrored) for d in (-1, 1)]
    return [(x, 0.25), (mirrored, 0.25)] + [(view, 0.125) for view in shifted]


def tta_probs(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, probs: torch.Tensor, mode: str
) -> torch.Tensor:
    """The weighted mean of the views' class probabilities. `probs` are forward(x)'s, which the
    caller has computed already: only the other views run the network. Each view's output is
    turned into probabilities before the next call: under CUDA graphs a call reuses the memory of
    the previous call's output."""
    (_, weight), *others = views(x, mode)
    mean = weight * probs.float()
    for view, w in others:
        mean = mean + w * forward(view).float().softmax(1)
    return mean
