"""Loading checkpoints safely: weights only (a checkpoint cannot run code), clear errors."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from wycifar.errors import ConfigError
from wycifar.module import WyCifarModule


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> WyCifarModule:
    """A WyCifarModule from a wycifar checkpoint, unpickling tensors and plain data only."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={str(path)!r} does not exist; give the path of a .ckpt file written by wycifar.train"
        )
    try:
        return WyCifarModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"ckpt_path={str(path)!r} is not a readable wycifar checkpoint ({first[:200]})") from None
