"""Patch-whitening initialisation of the first layer, as far as a depthwise layer allows.

The fastest CIFAR-10 trainers start with a frozen conv whose filters whiten 2x2 or 3x3 patches of
all three colours. The first layer here is a depthwise 3x3 conv, one filter per colour channel, so
each filter can only whiten its own channel: it becomes that channel's ZCA filter, the centre row
of C^(-1/2) for the covariance C of the channel's 3x3 patches (neighbouring pixels decorrelated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wycifar.errors import ConfigError


def channel_zca_filters(images: torch.Tensor, kernel_size: int = 3, eps: float = 5e-4) -> torch.Tensor:
    """[C, 1, k, k] ZCA filters, one per channel of float images [N, C, H, W]."""
    channels = images.shape[1]
    filters = []
    for c in range(channels):
        patches = F.unfold(images[:, c : c + 1].double(), kernel_size)  # [N, k*k, L]
        patches = patches.transpose(1, 2).reshape(-1, kernel_size * kernel_size)
        patches = patches - patches.mean(0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        inverse_sqrt = eigenvectors @ torch.diag((eigenvalues + eps).rsqrt()) @ eigenvectors.T
        filters.append(inverse_sqrt[kernel_size * kernel_size // 2].reshape(1, kernel_size, kernel_size))
    return torch.stack(filters).float()


def whiten_first_layer_(layer: nn.Conv2d, images: torch.Tensor) -> None:
    """Set a depthwise, undilated first layer's filters to its channels' ZCA filters."""
    depthwise = layer.groups == layer.in_channels == layer.out_channels
    if not depthwise or max(layer.dilation) > 1 or layer.kernel_size[0] != layer.kernel_size[1]:
        raise ConfigError(
            "module.whiten_first_layer=true needs an undilated square depthwise first layer "
            f"(model.conv=depthwise_separable); this network's is {layer}"
        )
    with torch.no_grad():
        layer.weight.copy_(channel_zca_filters(images.float(), layer.kernel_size[0]).to(layer.weight))
