from wycifar.data.cifar10 import CIFAR10DataModule
from wycifar.data.loader import TensorLoader

__all__ = ["CIFAR10DataModule", "TensorLoader"]
