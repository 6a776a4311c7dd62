from wycifar.models.blocks import WyBlock, WyConv2d, WyResidual
from wycifar.models.net import WyCifarNet

__all__ = ["WyBlock", "WyConv2d", "WyCifarNet", "WyResidual"]
