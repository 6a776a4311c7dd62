from wycifar.data.cifar10 import CIFAR10DataModule
from wycifar.data.loader import TensorLoader
from wycifar.data.synthetic import SyntheticCIFAR

__all__ = ["CIFAR10DataModule", "SyntheticCIFAR", "TensorLoader"]
