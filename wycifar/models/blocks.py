"""Building blocks of the WyCifar network: a configurable convolution, a residual unit, a block.

The class names (WyConv2d, WyResidual, WyBlock) are the ones the reference summary table prints,
so that our summary can be compared with it row for row. Activations and dropout are applied
functionally: the reference table has no rows for them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wycifar.errors import ConfigError, check_choice
from wycifar.models.reparam import BranchedDepthwise

NORMS = ("bn", "gn", "ln")
CONV_TYPES = ("vanilla", "depthwise", "depthwise_separable")
DOWNSAMPLING = ("dilated", "strided")
SKIP_SUBSAMPLING = ("stride", "avg", "centre")


# Module-level functions, not lambdas, so that a network stays picklable (ddp_spawn, deepcopy).
def _relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x, inplace=True)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


def _silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=True)


def _hardswish(x: torch.Tensor) -> torch.Tensor:
    return F.hardswish(x)


# Slope 0.1 rather than torch's default 0.01: enough gradient below zero to keep a unit of this
# small network from dying, at a ReLU's cost.
LEAKY_SLOPE = 0.1


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE, inplace=True)


# ReLU, leaky ReLU and SiLU run in place (tests/test_model.py checks their gradients against the out-of-place
# ones): norm outputs are not needed by the norm's backward, and on 2 CPU cores every elementwise
# pass over the activations costs as much as a depthwise conv.
ACTIVATIONS = {"relu": _relu, "gelu": _gelu, "silu": _silu, "hardswish": _hardswish, "leaky_relu": _leaky_relu}


def make_norm(kind: str, channels: int, gn_groups: int = 8) -> nn.Module:
    """bn: BatchNorm; gn: GroupNorm with up to `gn_groups` groups; ln: one group over C, H, W."""
    check_choice("model.norm", kind, NORMS)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(gn_groups, channels), channels)
    return nn.GroupNorm(1, channels)


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter group per input channel."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


class WyConv2d(nn.Module):
    """A bias-free convolution of one of three kinds.

    - vanilla: one dense k x k convolution.
    - depthwise: one grouped k x k convolution, groups = gcd(in, out) (a true depthwise
      convolution whenever the channel counts allow it).
    - depthwise_separable: depthwise k x k (groups = in) followed by a pointwise 1x1.
    A 1x1 kernel is always a single dense convolution (it is the skip projection).
    `branches`: a depthwise_separable conv that keeps the resolution trains its depthwise filter
    as parallel branches that fold into it for test and export (wycifar.models.reparam).
    `subsample_by`: how a strided 1x1 conv shrinks the map: "stride" keeps one pixel of each window
    (the reference), "avg" averages the window first (ResNet-D), so no input pixel is ignored.
    `trim`: pixels cut from each side of the map before the conv (a 1x1 skip that keeps only the
    part of the map a dilated conv centres its outputs on).
    """

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
        branches: bool = False,
        subsample_by: str = "stride",
        trim: int = 0,
    ) -> None:
        super().__init__()
        check_choice("model.conv", conv, CONV_TYPES)
        check_choice("subsample_by", subsample_by, ("stride", "avg"))
        if trim < 0:
            raise ConfigError(f"trim={trim!r} is not allowed; it must be 0 or more pixels")
        self.subsample_by_avg = subsample_by == "avg"
        self.trim = trim
        self.in_channels, self.out_channels = in_channels, out_channels
        # A strided 1x1 conv is a subsampling followed by a 1x1 conv. Done in that order because
        # torch 2.14's oneDNN backward of strided 1x1 convs in channels_last corrupts memory for
        # some batch sizes (odd ones, 8 input channels: "double free or corruption").
        self.subsample = stride if kernel_size == 1 else 1
        stride = 1 if kernel_size == 1 else stride
        spatial = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)
        if kernel_size == 1 or conv == "vanilla":
            layers = [nn.Conv2d(in_channels, out_channels, **spatial)]
        elif conv == "depthwise":
            layers = [nn.Conv2d(in_channels, out_channels, groups=math.gcd(in_channels, out_channels), **spatial)]
        else:
            keeps_resolution = (kernel_size, stride, padding, dilation) == (3, 1, 1, 1)
            depthwise = (
                BranchedDepthwise(in_channels)
                if branches and keeps_resolution
                else nn.Conv2d(in_channels, in_channels, groups=in_channels, **spatial)
            )
            layers = [depthwise, nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)]
        self.layers = nn.Sequential(*layers)
        # torch 2.14's oneDNN has no fast bf16 kernel for a dilated grouped conv: under CPU bf16
        # autocast it falls back to a gemm path over 10x slower than its fp32 kernel, which made
        # bf16 training slower than fp32 overall. Such a conv runs in fp32 even under autocast.
        first = layers[0]
        self.fp32_under_cpu_autocast = isinstance(first, nn.Conv2d) and first.groups > 1 and max(first.dilation) > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trim:
            x = x[:, :, self.trim : -self.trim, self.trim : -self.trim]
        if self.subsample > 1 and self.subsample_by_avg:
            x = F.avg_pool2d(x, self.subsample, ceil_mode=True)
        elif self.subsample > 1:
            x = x[:, :, :: self.subsample, :: self.subsample]
        if self.fp32_under_cpu_autocast and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                x = self.layers[0](x.float())
            return self.layers[1:](x)
        return self.layers(x)


class WyResidual(nn.Module):
    """act(norm(conv2(act(norm(conv1(x))))) + skip(x)), act being ReLU unless `activation` says.

    `add_skip=False` leaves out the "+ skip(x)" (a plain two-conv unit, as the reference's code
    built its first block); a 1x1 skip is then still built, run and counted, but frozen.

    conv1 may downsample (by its dilation or its stride). The skip is the identity when the shape
    is unchanged, a 1x1 projection + norm when it changes and `skip_1x1` is set, and absent
    otherwise. `skip_subsample` says how a 1x1 skip halves the map: "stride" and "avg" as in
    WyConv2d; "centre" takes, for each output pixel, the input pixel under conv1's centre tap: in a
    dilated unit the centre (size - 2 * (dilation - padding)) square at stride 1, so the skip and
    the main path add up the same place of the image; in a strided unit that is the strided skip.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        conv: str,
        norm: str,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        skip_1x1: bool = True,
        gn_groups: int = 8,
        branches: bool = False,
        activation: str = "relu",
        skip_subsample: str = "stride",
        add_skip: bool = True,
    ) -> None:
        super().__init__()
        check_choice("model.activation", activation, tuple(ACTIVATIONS))
        self.activation = ACTIVATIONS[activation]
        self.add_skip = add_skip
        self.conv1 = WyConv2d(
            in_channels,
            out_channels,
            conv=conv,
            stride=stride,
            padding=padding,
            dilation=dilation,
            branches=branches,
        )
        self.norm1 = make_norm(norm, out_channels, gn_groups)
        self.conv2 = WyConv2d(out_channels, out_channels, conv=conv, branches=branches)
        self.norm2 = make_norm(norm, out_channels, gn_groups)
        halves = stride != 1 or dilation != 1
        reshapes = in_channels != out_channels or halves
        self.identity_skip = not reshapes
        self.skip: nn.Module | None = None
        check_choice("model.skip_subsample", skip_subsample, SKIP_SUBSAMPLING)
        if reshapes and skip_1x1:
            centred = skip_subsample == "centre" and dilation != 1
            self.skip = nn.Sequential(
                WyConv2d(
                    in_channels,
                    out_channels,
                    kernel_size=1,
                    stride=2 if halves and not centred else 1,
                    padding=0,
                    subsample_by="avg" if skip_subsample == "avg" else "stride",
                    trim=dilation - padding if centred else 0,
                ),
                make_norm(norm, out_channels, gn_groups),
            )
            if not add_skip:
                # Run but never added, as in the reference's first block: nothing reaches it to
                # learn from, and frozen it needs no find_unused_parameters under DDP.
                self.skip.requires_grad_(False)

    @property
    def adds_skip(self) -> bool:
        """Whether the unit's output has a skip sum in it (what zero_init_residual relies on)."""
        return self.add_skip and (self.identity_skip or self.skip is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        skip = x if self.identity_skip else self.skip(x) if self.skip is not None else None
        if self.adds_skip:
            y += skip
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
