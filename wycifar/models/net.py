"""The WyCifar network family: blocks of residual units, global average pooling, 1x1 classifier."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from wycifar.errors import ConfigError, check_choice, check_whole_number
from wycifar.models.blocks import ACTIVATIONS, CONV_TYPES, DOWNSAMPLING, NORMS, SKIP_SUBSAMPLING, WyBlock, WyResidual
from wycifar.models.reparam import fold_depthwise


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
    """Configurable residual network; the defaults rebuild the reference (95,653 parameters)."""

    def __init__(
        self,
        norm: str = "bn",
        conv: str = "depthwise_separable",
        downsample: str = "dilated",
        skip_1x1: bool = True,
        num_blocks: int = 3,
        units_per_block: int = 2,
        base_width: int = 32,
        dropout: float = 0.01,
        num_classes: int = 10,
        image_size: int = 32,
        in_channels: int = 3,
        gn_groups: int = 8,
        zero_init_residual: bool = False,
        reparam: bool = False,
        activation: str = "relu",
        peer_heads: int = 1,
        skip_subsample: str = "stride",
        first_block_skip: bool = True,
    ) -> None:
        super().__init__()
        check_choice("model.norm", norm, NORMS)
        check_choice("model.activation", activation, tuple(ACTIVATIONS))
        check_choice("model.conv", conv, CONV_TYPES)
        check_choice("model.downsample", downsample, DOWNSAMPLING)
        check_choice("model.skip_subsample", skip_subsample, SKIP_SUBSAMPLING)
        for key, value in (
            ("num_blocks", num_blocks),
            ("units_per_block", units_per_block),
            ("base_width", base_width),
            ("num_classes", num_classes),
            ("image_size", image_size),
            ("peer_heads", peer_heads),
        ):
            check_whole_number(f"model.{key}", value)
        for key, flag in (("reparam", reparam), ("first_block_skip", first_block_skip)):
            if not isinstance(flag, bool):
                raise ConfigError(f"model.{key}={flag!r} is not allowed; it must be true or false")
        if reparam and (norm, conv) != ("bn", "depthwise_separable"):
            # the branches' constant is absorbed by a BatchNorm after a pointwise conv
            raise ConfigError(
                f"model.reparam=true needs model.norm=bn and model.conv=depthwise_separable (got norm={norm}, conv={conv})"
            )
        self.reparam = reparam
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout={dropout!r} is not allowed; it must be in [0, 1)")
        self.dropout = float(dropout)
        # After block 2, where this family of models puts it (after the last block if fewer).
        self.dropout_after = min(1, num_blocks - 1)

        blocks, channels, size = [], in_channels, image_size
        for b in range(num_blocks):
            width = base_width * 2**b
            stride, dilation, padding = 1, 1, 1
            add_skip = b > 0 or first_block_skip
            if b > 0:
                if downsample == "dilated":
                    dilation, padding = dilated_halving(size)
                else:
                    stride = 2
                size = (size + 1) // 2
            units = [
                WyResidual(
                    channels,
                    width,
                    conv=conv,
                    norm=norm,
                    stride=stride,
                    padding=padding,
                    dilation=dilation,
                    skip_1x1=skip_1x1,
                    gn_groups=gn_groups,
                    branches=reparam,
                    activation=activation,
                    skip_subsample=skip_subsample,
                    add_skip=add_skip,
                )
            ]
            units += [
                WyResidual(
                    width,
                    width,
                    conv=conv,
                    norm=norm,
                    gn_groups=gn_groups,
                    branches=reparam,
                    activation=activation,
                    add_skip=add_skip,
                )
                for _ in range(units_per_block - 1)
            ]
            blocks.append(WyBlock(units))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.zero_init_residual = zero_init_residual
        if zero_init_residual:
            for block in self.blocks:
                _start_as_skip(block)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=True)
        # Training-time peers (module.peer_*): more copies of the last block and classifier on the
        # shared trunk, each freshly initialised; dropped for test, export and shipping.
        self.peers = nn.ModuleList(self._new_peer() for _ in range(peer_heads - 1))
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_channels = in_channels

    def _new_peer(self) -> nn.ModuleDict:
        peer = nn.ModuleDict({"block": copy.deepcopy(self.blocks[-1]), "classifier": copy.deepcopy(self.classifier)})
        for module in peer.modules():
            if module is not peer and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if self.zero_init_residual:
            _start_as_skip(peer["block"])
        return peer

    def _block_output(self, index: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = block(x)
        if index == self.dropout_after and self.dropout:
            x = F.dropout(x, self.dropout, self.training)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = self._block_output(index, block, x)
        return self.classifier(self.pool(x)).flatten(1)

    def forward_peers(self, x: torch.Tensor, trunk_grad_scale: float = 1.0) -> list[torch.Tensor]:
        """Logits of the network and of each peer: [network, peer 1, ...]. The trunk (every block
        but the last) runs once; its gradient is scaled by `trunk_grad_scale` so that the sum of
        the heads' losses does not give it len(peers) + 1 times the step of the heads."""
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks[:-1]):
            x = self._block_output(index, block, x)
        if trunk_grad_scale != 1.0:
            x = x * trunk_grad_scale + (x * (1.0 - trunk_grad_scale)).detach()
        heads = [(self.blocks[-1], self.classifier)] + [(peer["block"], peer["classifier"]) for peer in self.peers]
        return [classifier(self.pool(self._block_output(last, block, x))).flatten(1) for block, classifier in heads]

    def drop_peers(self) -> int:
        """Removes the training-time peers, in place; returns how many there were."""
        count = len(self.peers)
        self.peers = nn.ModuleList()
        return count

    def fold_branches(self) -> int:
        """Folds the training-time branches (model.reparam) into the plain network, in place: the
        same outputs in eval mode, the parameters of model.reparam=false. Returns how many convs."""
        folded = 0
        for block in self.blocks:
            for unit in block.units:
                folded += fold_depthwise(unit.conv1.layers, unit.norm1)
                folded += fold_depthwise(unit.conv2.layers, unit.norm2)
        self.reparam = False
        return folded

    @property
    def gradcam_layer(self) -> nn.Module:
        """The layer GradCAM looks at: the last block (its output is after the final activation)."""
        return self.blocks[-1]


def _start_as_skip(block: nn.Module) -> None:
    """Each unit with a skip starts as that skip (torchvision's zero_init_residual): the scale of
    its last norm starts at 0, which helps short schedules."""
    for unit in block.units:
        if unit.adds_skip:
            nn.init.zeros_(unit.norm2.weight)
