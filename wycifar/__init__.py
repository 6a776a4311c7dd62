"""wycifar: a small, fast CIFAR-10 classifier of dilated and depthwise-separable convolutions.

Importing the package imports nothing heavy: `wycifar.deploy.runtime` runs a model with numpy, Pillow
and onnxruntime alone.
"""

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    """The installed package's version; from a checkout that is not installed, pyproject.toml's."""
    try:
        return version("wycifar")  # pyproject.toml holds the one number
    except PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()
