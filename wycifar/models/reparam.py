"""Training-time branches that fold into one convolution (structural re-parameterisation).

While training, a 3x3 depthwise convolution is two parallel branches, each with its own
BatchNorm: the 3x3 filter and the identity (RepVGG, Ding et al. 2021; MobileOne, Vasu et al.
2023). Their 1x1 branch is left out: a depthwise 1x1 filter is one scale per channel, which the
BatchNorm after it normalises away, so it would repeat the identity branch at the cost of a pass.
Both branches are linear once the norms use their running statistics, so for test and export they
fold into one 3x3 depthwise filter and a per-channel constant. The constant goes
through the bias-free pointwise conv that follows and is absorbed by the next BatchNorm's running
mean: the folded network is the plain one, parameter for parameter.
"""

from __future__ import annotations

import torch
from torch import nn


def _scaled(kernel: torch.Tensor, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of conv-then-norm with the norm's running statistics."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return kernel * scale.reshape(-1, 1, 1, 1), norm.bias - norm.running_mean * scale


class BranchedDepthwise(nn.Module):
    """norm(dw3x3(x)) + norm(x), for a stride-1, undilated 3x3 depthwise conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm3 = nn.BatchNorm2d(channels)
        self.norm_identity = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm3(self.conv3(x)) + self.norm_identity(x)

    @torch.no_grad()
    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one 3x3 depthwise kernel [C, 1, 3, 3] and per-channel bias [C] it equals in eval mode."""
        identity = torch.zeros_like(self.conv3.weight)
        identity[:, 0, 1, 1] = 1.0
        kernel, bias = _scaled(self.conv3.weight, self.norm3)
        identity_kernel, identity_bias = _scaled(identity, self.norm_identity)
        return kernel + identity_kernel, bias + identity_bias


@torch.no_grad()
def fold_depthwise(layers: nn.Sequential, next_norm: nn.BatchNorm2d) -> bool:
    """Replaces a BranchedDepthwise at layers[0] (followed by a bias-free pointwise conv at
    layers[1], then `next_norm`) by the plain depthwise conv it equals in eval mode, in place.
    Returns whether there was one."""
    branched = layers[0]
    if not isinstance(branched, BranchedDepthwise):
        return False
    kernel, bias = branched.folded()
    # the 3x3 branch's conv is the plain depthwise conv; it already has the device, dtype and layout
    plain = branched.conv3
    plain.weight.copy_(kernel)
    layers[0] = plain
    # the bias, through the pointwise conv, is a per-channel constant the next norm subtracts
    next_norm.running_mean.sub_(layers[1].weight[:, :, 0, 0] @ bias)
    return True
