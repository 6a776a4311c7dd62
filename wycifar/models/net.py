"""The WyCifar network family: blocks of residual units, global average pooling, 1x1 classifier."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from wycifar.errors import ConfigError
from wycifar.models.blocks import (
    ACTIVATIONS,
    WyBlock,
    WyResidual,
    make_norm,
    skip_projection,
)
from wycifar.settings import check_model


def dilated_halving(size: int) -> tuple[int, int]:
    """(dilation, padding) that make a stride-1 3x3 conv map `size` to ceil(size / 2).

    The output of a 3x3 conv with dilation d and padding p is size + 2p - 2d; padding 1 gives
    d = size/4 + 1 for the sizes CIFAR uses (32 -> d=9, 16 -> d=5, 8 -> d=3), which is how the
    reference downsamples. The 1x1 stride-2 skip also gives ceil(size / 2), so the two must agree.
    """
    target = (size + 1) // 2
    for padding in (1, 0, 2):
        twice_d = size + 2 * padding - target
        if twice_d >= 2 and twice_d % 2 == 0:
            return twice_d // 2, padding
    raise ConfigError(
        f"model.downsample='dilated' cannot halve a {size}x{size} feature map with a 3x3 dilated conv; "
        "use image sizes divisible by 2**(num_blocks+1) or model.downsample=strided"
    )


class WyCifarNet(nn.Module):
    """Configurable residual network; the defaults rebuild the reference (95,653 parameters:
    ReLU, dropout 0.01). As for every class here, the defaults are the reference's and conf/'s
    are the default recipe's (conf/model: GELU, no dropout, averaged skips).

    Block b has `units_per_block` residual units of width base_width * 2**b; every block after the
    first halves the map in its first unit, by a dilated or a strided conv."""

    def __init__(
        self,
        norm: str = "bn",
        conv: str = "depthwise_separable",
        downsample: str = "dilated",
        skip_1x1: bool = True,
        skip_subsample: str = "stride",
        num_blocks: int = 3,
        units_per_block: int = 2,
        base_width: int = 32,
        activation: str = "relu",
        dropout: float = 0.01,
        num_classes: int = 10,
        image_size: int = 32,
        in_channels: int = 3,
        gn_groups: int = 8,
    ) -> None:
        super().__init__()
        check_model(locals())
        self.conv, self.downsample, self.skip_1x1 = conv, downsample, skip_1x1
        self.avg_skip = skip_subsample == "avg"
        self.norm_layer = partial(make_norm, norm, gn_groups=gn_groups)
        self.activation = ACTIVATIONS[activation]
        self.dropout = float(dropout)
        # after block 2, where this family of models puts it (after the last block if fewer)
        self.dropout_after = min(1, num_blocks - 1)
        self.num_classes, self.image_size, self.in_channels = num_classes, image_size, in_channels

        blocks, channels, size = [], in_channels, image_size
        for b in range(num_blocks):
            width = base_width * 2**b
            blocks.append(self._make_block(channels, width, units_per_block, size, halve=b > 0))
            channels, size = width, (size + 1) // 2 if b > 0 else size
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=True)

    def _make_block(self, in_channels: int, width: int, units: int, size: int, halve: bool) -> WyBlock:
        stride, dilation, padding = 1, 1, 1
        if halve and self.downsample == "dilated":
            dilation, padding = dilated_halving(size)
        elif halve:
            stride = 2
        projection = None
        if self.skip_1x1 and (halve or in_channels != width):
            projection = skip_projection(
                in_channels, width, stride=2 if halve else 1, norm_layer=self.norm_layer, avg_pool=self.avg_skip
            )
        unit = partial(WyResidual, conv=self.conv, norm_layer=self.norm_layer, activation=self.activation)
        first = unit(in_channels, width, stride=stride, padding=padding, dilation=dilation, skip=projection)
        return WyBlock([first] + [unit(width, width) for _ in range(units - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == self.dropout_after and self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        return self.classifier(self.pool(x)).flatten(1)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The layer GradCAM looks at: the last block (its output is after the final activation)."""
        return self.blocks[-1]
