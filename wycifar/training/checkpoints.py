"""The one way checkpoints are read, for resuming, evaluating, predicting and shipping: tensors and
plain data only (a checkpoint cannot run code), and a damaged or foreign file is one clear line."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from wycifar.errors import ConfigError, WycifarError, first_line
from wycifar.files import atomic_path
from wycifar.training.module import WyCifarModule

SLIM_KEYS = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step", "wycifar")


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, or a ConfigError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist; give the path of a .ckpt file written by wycifar")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler fails on foreign bytes in many ways
        code = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
            raise ConfigError(
                f"checkpoint {str(path)!r} holds pickled objects that would run code when loaded"
                f"{f' (calling {code.group(1)})' if code else ''}; refused, nothing was run"
            ) from None
        truncated = isinstance(error, (zipfile.BadZipFile, EOFError, RuntimeError, OSError))
        raise ConfigError(
            f"checkpoint {str(path)!r} is not a PyTorch checkpoint{' or is truncated' if truncated else ''} "
            f"({first_line(error)[:160]})"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise ConfigError(
            f"checkpoint {str(path)!r} is not a wycifar checkpoint: it has no state_dict and hyper_parameters"
        )
    bad = [
        name
        for name, value in checkpoint["state_dict"].items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise ConfigError(
            f"checkpoint {str(path)!r} holds {len(bad)} tensors that are not finite ({', '.join(bad[:3])}): "
            "the weights of a diverged run; use an earlier checkpoint"
        )
    return checkpoint


def check_network(checkpoint: dict, module: WyCifarModule, path: str | Path) -> None:
    """The checkpoint's network has the module's tensors, each of the same shape."""
    saved = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    expected = {k: v for k, v in module.state_dict().items() if k.startswith("net.")}
    differ = [
        f"{k} {list(saved[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in saved and saved[k].shape != v.shape
    ]
    missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    parts = [
        f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for what, names in (("tensors differ in shape", differ), ("missing", missing), ("unexpected", unexpected))
        if names
    ]
    if parts:
        raise ConfigError(
            f"checkpoint {str(path)!r} holds a network of another shape than this run's (checkpoint vs run): "
            + "; ".join(parts)
        )


def load_module(
    path: str | Path, map_location: str | torch.device = "cpu", compile: bool = False, tta: str | None = None
) -> WyCifarModule:
    """A WyCifarModule as the checkpoint's hyperparameters build it, with its weights. `compile` and
    `tta` are how this process runs the network, not part of the model: a run trained compiled is
    loaded uncompiled unless asked (compiling takes a minute and a C++ compiler on a CPU), and `tta`
    (null: as the run was trained) picks the test-time views."""
    return module_from(read_checkpoint(path), path, compile, tta).to(map_location)


def module_from(checkpoint: dict, path: str | Path, compile: bool = False, tta: str | None = None) -> WyCifarModule:
    """The module a checkpoint read by read_checkpoint holds (`path` names it in errors). A
    distilled network is loaded without its teacher, which only shaped its training."""
    settings = {"compile": compile, "teacher": None} | ({} if tta is None else {"tta": tta})
    try:
        module = WyCifarModule(**{**checkpoint["hyper_parameters"], **settings})
    except WycifarError as error:
        raise ConfigError(f"checkpoint {str(path)!r} has settings this version does not build: {error}") from None
    except TypeError as error:
        raise ConfigError(
            f"checkpoint {str(path)!r} has settings this version does not know: {first_line(error)}"
        ) from None
    check_network(checkpoint, module, path)
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module


def check_resumable(path: str | Path, module: WyCifarModule) -> None:
    """Before a fit resumes from `path`: a readable wycifar checkpoint of this run's network."""
    check_network(read_checkpoint(path), module, path)


def slim_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """A copy with weights, hyperparameters and class names only (no optimiser or loop state):
    what is shipped under results/ for evaluation and prediction."""
    checkpoint = read_checkpoint(src)
    slim = {k: checkpoint[k] for k in SLIM_KEYS if k in checkpoint}
    slim["hyper_parameters"] = {**slim["hyper_parameters"], "compile": False}  # how it ran, not what it is
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)
    return dst


def input_normalisation(checkpoint: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the checkpoint's network was trained with (CIFAR-10's where it records none)."""
    from wycifar.data.normalize import CIFAR10_MEAN, CIFAR10_STD

    extras = checkpoint.get("wycifar", {})
    return tuple(extras.get("mean", CIFAR10_MEAN)), tuple(extras.get("std", CIFAR10_STD))


def load_teacher(path: str | Path) -> torch.nn.Module:
    """module.teacher: the network of a wycifar checkpoint, frozen in evaluation mode. Building it
    draws no random numbers from the run's generator: the student starts as it would without it."""
    try:
        with torch.random.fork_rng(devices=[]):
            return load_module(path).net.eval().requires_grad_(False)
    except ConfigError as error:
        raise ConfigError(f"module.teacher: {error}") from None
