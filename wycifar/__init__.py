"""wycifar: a small, fast CIFAR-10 classifier of dilated and depthwise-separable convolutions."""

__version__ = "0.1.0"
