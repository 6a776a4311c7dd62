"""Building blocks of the WyCifar network: a convolution, a residual unit, a block of units.

The class names (WyConv2d, WyResidual, WyBlock) are the ones the reference summary table prints,
so that our summary can be compared with it row for row. Activations are applied functionally:
the reference table has no rows for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from wycifar.settings import ACTIVATION_NAMES, CONV_TYPES, DOWNSAMPLING, NORMS, SKIP_SUBSAMPLING  # noqa: F401 - the choices


# Module-level functions, not lambdas, so that a network stays picklable (ddp_spawn, deepcopy).
# ReLU runs in place: a norm's backward does not need its output, and on 2 CPU cores every
# elementwise pass over the activations costs as much as a depthwise conv.
def _relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x, inplace=True)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": _relu, "gelu": _gelu}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES  # settings.py checks model.activation against these names


def make_norm(kind: str, channels: int, gn_groups: int = 8) -> nn.Module:
    """bn: BatchNorm; gn: GroupNorm with up to `gn_groups` groups; ln: one group over C, H, W."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(gn_groups, channels), channels)
    return nn.GroupNorm(1, channels)


class WyConv2d(nn.Module):
    """A bias-free convolution: `vanilla` (dense), `depthwise` (groups = gcd(in, out)) or
    `depthwise_separable` (depthwise, then pointwise 1x1). A 1x1 kernel is one dense conv (the
    skip projection); its stride subsamples first, keeping one pixel per window (`avg_pool=False`,
    the reference) or the window's mean (`avg_pool=True`, ResNet-D's shortcut)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        conv: str = "depthwise_separable",
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        avg_pool: bool = False,
    ) -> None:
        super().__init__()
        # A strided 1x1 conv is a subsampling followed by a 1x1 conv, done in that order: torch
        # 2.14's oneDNN backward of strided 1x1 convs in channels_last corrupts memory for some
        # batch sizes ("double free or corruption").
        self.subsample = stride if kernel_size == 1 else 1
        self.avg_pool = avg_pool
        spatial = dict(kernel_size=kernel_size, padding=padding, dilation=dilation, bias=False)
        if kernel_size == 1 or conv == "vanilla":
            layers = [nn.Conv2d(in_channels, out_channels, stride=stride // self.subsample, **spatial)]
        elif conv == "depthwise":
            groups = math.gcd(in_channels, out_channels)
            layers = [nn.Conv2d(in_channels, out_channels, stride=stride, groups=groups, **spatial)]
        else:
            layers = [
                nn.Conv2d(in_channels, in_channels, stride=stride, groups=in_channels, **spatial),
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            ]
        self.layers = nn.Sequential(*layers)
        # torch 2.14's oneDNN has no fast bf16 kernel for a dilated grouped conv: under CPU bf16
        # autocast it falls back to a gemm path over 10x slower than fp32, so it runs in fp32.
        first = layers[0]
        self.fp32_under_cpu_autocast = first.groups > 1 and max(first.dilation) > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subsample > 1:
            if self.avg_pool:
                x = F.avg_pool2d(x, self.subsample, ceil_mode=True)
            else:
                x = x[:, :, :: self.subsample, :: self.subsample]
        if self.fp32_under_cpu_autocast and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                x = self.layers[0](x.float())
            return self.layers[1:](x)
        return self.layers(x)


def skip_projection(
    in_channels: int, out_channels: int, *, stride: int, norm_layer: Callable[[int], nn.Module], avg_pool: bool
) -> nn.Sequential:
    """The 1x1 conv + norm on a skip whose shape changes."""
    conv = WyConv2d(in_channels, out_channels, kernel_size=1, stride=stride, padding=0, avg_pool=avg_pool)
    return nn.Sequential(conv, norm_layer(out_channels))


class WyResidual(nn.Module):
    """act(norm2(conv2(act(norm1(conv1(x))))) + skip(x)).

    conv1 may downsample (by its dilation or its stride). `skip` is the shortcut's projection
    (None: the identity where the shape is unchanged, no skip where it changes)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        conv: str,
        norm_layer: Callable[[int], nn.Module],
        activation: Callable[[torch.Tensor], torch.Tensor],
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        skip: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.conv1 = WyConv2d(in_channels, out_channels, conv=conv, stride=stride, padding=padding, dilation=dilation)
        self.norm1 = norm_layer(out_channels)
        self.conv2 = WyConv2d(out_channels, out_channels, conv=conv)
        self.norm2 = norm_layer(out_channels)
        self.identity_skip = in_channels == out_channels and stride == 1 and dilation == 1
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.identity_skip:
            y += x
        elif self.skip is not None:
            y += self.skip(x)
        return self.activation(y)


class WyBlock(nn.Module):
    """A run of residual units; only the first may change channels or resolution."""

    def __init__(self, units: list[WyResidual]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x
