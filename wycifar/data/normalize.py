"""The input normalisation, both ways: what the network sees, and the image a person sees again."""

from __future__ import annotations

import torch

# per-channel mean and std of CIFAR-10's training images, in 0..1
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str | None = None, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as [1, C, 1, 1] tensors, times `scale` (255 for uint8 images)."""
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1) * scale  # noqa: E731
    return as_tensor(mean), as_tensor(std)


def normalize_uint8(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [N, C, H, W] in 0..255 -> float, standardised per channel (mean and std given in 0..1)."""
    mean_t, std_t = channel_stats(mean, std, images.device, scale=255)
    return (images.float() - mean_t) / std_t


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """The inverse: a normalised [N, C, H, W] batch -> float images in [0, 1] (on the CPU)."""
    mean_t, std_t = channel_stats(mean, std)
    return (x.detach().float().cpu() * std_t + mean_t).clamp(0, 1)
