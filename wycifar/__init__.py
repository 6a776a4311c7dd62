"""wycifar: a small, fast CIFAR-10 classifier of dilated and depthwise-separable convolutions."""

from omegaconf import OmegaConf

from wycifar.precision import best_precision

__version__ = "0.1.0"

OmegaConf.register_new_resolver("best_precision", best_precision, replace=True)
