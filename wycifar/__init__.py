"""wycifar: a small, fast CIFAR-10 classifier of dilated and depthwise-separable convolutions.

Importing the package imports nothing heavy: `wycifar.runtime` runs a model with numpy, Pillow
and onnxruntime alone.
"""

from importlib.metadata import version

__version__ = version("wycifar")  # pyproject.toml holds the one number
