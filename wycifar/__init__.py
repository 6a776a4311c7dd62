"""wycifar: a small, fast CIFAR-10 classifier of dilated and depthwise-separable convolutions."""

import os
from importlib.metadata import version
from pathlib import Path

from omegaconf import OmegaConf

from wycifar.precision import best_precision
from wycifar.run_dirs import claim_dir

__version__ = version("wycifar")  # pyproject.toml holds the one number

OmegaConf.register_new_resolver("best_precision", best_precision, replace=True)


def user_cache_dir() -> str:
    """$XDG_CACHE_HOME/wycifar, else ~/.cache/wycifar: the decode cache, outside any installed package."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "wycifar")


OmegaConf.register_new_resolver("user_cache_dir", user_cache_dir, replace=True)
# cached: a run resolves its folder once, and its sweep jobs inherit it (conf/hydra/default.yaml)
OmegaConf.register_new_resolver("claim_dir", claim_dir, use_cache=True, replace=True)
