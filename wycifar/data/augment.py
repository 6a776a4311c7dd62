"""Augmentations applied to a whole batch at once, on whatever device the batch lives on.

Each takes and returns a float tensor [N, C, H, W] (already normalised, so 0 is the mean colour,
which is what padding, rotation and cutout fill with) and draws its randomness from `generator`
so a seeded run is reproducible on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from wycifar.settings import check_augment


def _rand(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=generator.device if generator is not None else x.device, generator=generator).to(
        x.device
    )


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None, border: str = "zeros"
) -> torch.Tensor:
    """Pad by `padding` (zeros: the mean colour; reflection: the image mirrored) and take a random
    HxW window per image."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect" if border == "reflection" else "constant")
    dy = (_rand(n, x, generator) * (2 * padding + 1)).long().clamp_max(2 * padding)
    dx = (_rand(n, x, generator) * (2 * padding + 1)).long().clamp_max(2 * padding)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # N,1,H,1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # N,1,1,W
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image with probability p."""
    if p <= 0:
        return x
    flip = _rand(x.shape[0], x, generator) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(
    x: torch.Tensor, p: float, min_size: int, max_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero one square hole per image, with probability p, its side in [min_size, max_size] and its
    centre anywhere in the image, clipped at the borders (DeVries & Taylor's cutout)."""
    if p <= 0 or max_size <= 0:
        return x
    n, _, h, w = x.shape
    side = (min_size + _rand(n, x, generator) * (max_size - min_size + 1)).floor().clamp(min_size, max_size)
    top, left = _rand(n, x, generator) * h - side / 2, _rand(n, x, generator) * w - side / 2
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    inside_y = (ys >= top[:, None]) & (ys < (top + side)[:, None])  # N,H
    inside_x = (xs >= left[:, None]) & (xs < (left + side)[:, None])  # N,W
    apply = (_rand(n, x, generator) < p)[:, None, None]
    hole = inside_y[:, :, None] & inside_x[:, None, :] & apply  # N,H,W
    return x.masked_fill(hole[:, None], 0.0)


def shift_scale_rotate(
    x: torch.Tensor,
    p: float,
    shift: float,
    scale: float,
    rotate_deg: float,
    generator: torch.Generator | None = None,
    border: str = "zeros",
) -> torch.Tensor:
    """The albumentations ShiftScaleRotate family, batched: per image, with probability p, shift
    by up to `shift` of the size, scale by 1 +- `scale`, rotate by +- `rotate_deg`. `border` is
    grid_sample's padding mode: "zeros" fills with the mean colour, "reflection" mirrors the image
    (albumentations' default, BORDER_REFLECT_101, mirrors about the edge pixel; torch about the
    edge itself: one pixel apart)."""
    if p <= 0:
        return x
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (_rand(n, x, generator) * 2 - 1) * limit

    apply = _rand(n, x, generator) < p
    angle = uniform(math.radians(rotate_deg)) * apply
    zoom = torch.where(apply, 1 + uniform(scale), torch.ones_like(angle))
    tx, ty = uniform(2 * shift) * apply, uniform(2 * shift) * apply  # grid units span 2 per image side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, -tx], 1), torch.stack([sin, cos, -ty], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=border, align_corners=False)


@dataclass
class AugmentConfig:
    """Every augmentation, each off when its probability or size is 0."""

    crop_padding: int = 0
    crop_border: str = "zeros"
    flip_p: float = 0.5
    cutout_p: float = 0.0
    cutout_min: int = 8
    cutout_max: int = 16
    ssr_p: float = 0.0
    ssr_shift: float = 0.15
    ssr_scale: float = 0.15
    ssr_rotate: float = 10.0
    ssr_border: str = "zeros"

    def __post_init__(self) -> None:
        check_augment(asdict(self))


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    x = shift_scale_rotate(x, cfg.ssr_p, cfg.ssr_shift, cfg.ssr_scale, cfg.ssr_rotate, generator, cfg.ssr_border)
    x = random_crop(x, cfg.crop_padding, generator, cfg.crop_border)
    x = random_flip(x, cfg.flip_p, generator)
    return cutout(x, cfg.cutout_p, cfg.cutout_min, cfg.cutout_max, generator)
