"""python -m wycifar.export RUN_OR_CHECKPOINT [--data DIR] [--out DIR]: a saved model as an ONNX file.

Writes model_<params>_<acc>.onnx, `acc` being that file's own accuracy on the test split as
onnxruntime computes it, with the metadata wycifar.runtime needs (classes, input size,
normalisation, accuracy). A run folder gives its tested checkpoint and its data folder; a
checkpoint needs --data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from omegaconf import OmegaConf

from wycifar.cli import run_cli
from wycifar.errors import ConfigError
from wycifar.files import atomic_path
from wycifar.run_dirs import model_name
from wycifar.runtime import Classifier, model_metadata


def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of `model` on uint8 NHWC images."""
    predicted = np.concatenate(
        [model.probabilities(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)]
    )
    return float((predicted == labels).mean())


def source_of(target: Path, data: str | None) -> tuple[Path, str]:
    """(checkpoint, data folder) of a run folder or a checkpoint file."""
    from wycifar.ship import tested_checkpoint

    if target.is_dir():
        checkpoint = tested_checkpoint(target)
        if checkpoint is None:
            raise ConfigError(f"{target} holds no checkpoints/last.ckpt or best-*.ckpt: not a wycifar.train run")
        config = target / ".hydra" / "config.yaml"
        if data is None and config.is_file():
            data = OmegaConf.select(OmegaConf.load(config), "data.root", throw_on_resolution_failure=False)
        target = checkpoint
    if not data or "${" in str(data):
        raise ConfigError(
            f"--data is needed for {target}: the folder holding CIFAR-10's test/ (or the run's data.root)"
        )
    return target, str(data)


def export(target: Path, data: str | None, out: Path | None) -> Path:
    from wycifar.checkpoints import load_module, read_checkpoint
    from wycifar.data.normalize import CIFAR10_MEAN, CIFAR10_STD
    from wycifar.data.sources import load_split
    from wycifar.models.onnx import export_onnx
    from wycifar.resolvers import user_cache_dir

    checkpoint_path, data = source_of(target, data)
    checkpoint = read_checkpoint(checkpoint_path)
    net = load_module(checkpoint_path).net.float().eval()
    extras = checkpoint.get("wycifar", {})
    test = load_split(Path(data), "test", image_size=net.image_size, cache_dir=user_cache_dir(), download=False)
    classes = list(extras.get("classes", test.classes))
    mean, std = tuple(extras.get("mean", CIFAR10_MEAN)), tuple(extras.get("std", CIFAR10_STD))
    params = sum(p.numel() for p in net.parameters())
    if out is None:  # a run's checkpoints/x.ckpt exports into the run folder
        out = checkpoint_path.parent.parent if checkpoint_path.parent.name == "checkpoints" else checkpoint_path.parent
    with tempfile.TemporaryDirectory() as scratch:
        draft = Path(scratch) / "model.onnx"
        export_onnx(
            net, draft, net.image_size, net.in_channels, model_metadata(classes, net.image_size, mean, std, None)
        )
        measured = accuracy(Classifier(draft), test.images.permute(0, 2, 3, 1).numpy(), test.labels.numpy())
        model = onnx.load(str(draft))
    onnx.helper.set_model_props(model, model_metadata(classes, net.image_size, mean, std, measured))
    final = Path(out) / model_name(params, measured, "onnx")
    with atomic_path(final) as tmp:
        onnx.save(model, str(tmp))
    return final


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wycifar-export", description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="a run folder (outputs/train/<run>) or a .ckpt file")
    parser.add_argument("--data", default=None, help="the CIFAR-10 folder (default: the run's data.root)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the run folder)")
    args = parser.parse_args(argv)
    path = run_cli(lambda: export(args.target, args.data, args.out))
    print(path, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
