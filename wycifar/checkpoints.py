"""Loading checkpoints safely: weights only (a checkpoint cannot run code), clear errors."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from wycifar.errors import ConfigError
from wycifar.module import WyCifarModule


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_module(path: str | Path, map_location: str | torch.device = "cpu", compile: bool = False) -> WyCifarModule:
    """A WyCifarModule from a wycifar checkpoint, unpickling tensors and plain data only.
    `compile` is how this process runs the network, not part of the model: a run trained with
    module.compile=true is loaded uncompiled unless asked (compiling takes a minute and a C++
    compiler on a CPU)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={str(path)!r} does not exist; give the path of a .ckpt file written by wycifar.train"
        )
    try:
        return WyCifarModule.load_from_checkpoint(path, map_location=map_location, weights_only=True, compile=compile)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, KeyError, TypeError) as error:
        first = first_line(error)
        raise ConfigError(f"ckpt_path={str(path)!r} is not a readable wycifar checkpoint ({first[:200]})") from None


SLIM_KEYS = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step", "wycifar")


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, tensors and plain data only."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as error:
        first = first_line(error)
        raise ConfigError(f"checkpoint {str(path)!r} is not readable ({first[:200]})") from None


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """A copy with weights, hyperparameters and class names only (no optimiser or loop state):
    what is shipped under results/ for evaluation and prediction."""
    checkpoint = read_checkpoint(src)
    slim = {k: checkpoint[k] for k in SLIM_KEYS if k in checkpoint}
    if "hyper_parameters" in slim:
        slim["hyper_parameters"] = {**slim["hyper_parameters"], "compile": False}  # how it ran, not what it is
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    torch.save(slim, tmp)
    tmp.replace(dst)
    return dst
