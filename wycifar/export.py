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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from omegaconf import OmegaConf

from wycifar.cli import run_cli
from wycifar.errors import ConfigError
from wycifar.files import atomic_path
from wycifar.run_dirs import model_name
from wycifar.runtime import Classifier, model_metadata


def accuracy(predict, inputs: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of `predict` (a batch of inputs -> class scores) over `inputs`, in batches."""
    predicted = np.concatenate([predict(inputs[i : i + batch]).argmax(1) for i in range(0, len(inputs), batch)])
    return float((predicted == labels).mean())


@dataclass
class SavedModel:
    """A saved network with what its export needs: its classes, its input normalisation and the
    test split it is measured on."""

    checkpoint: Path
    net: Any
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test: Any  # wycifar.data.sources.Split: uint8 images [N, C, H, W], labels

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def metadata(self, measured: float | None) -> dict[str, str]:
        return model_metadata(self.classes, self.net.image_size, self.mean, self.std, measured)

    def export(self, path: Path, measured: float | None = None) -> None:
        from wycifar.models.onnx import export_onnx

        export_onnx(self.net, path, self.net.image_size, self.net.in_channels, self.metadata(measured))


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


def load_saved(target: Path, data: str | None) -> SavedModel:
    """The network of a run folder or checkpoint in fp32 evaluation mode, with its test split."""
    from wycifar.checkpoints import input_normalisation, load_module, read_checkpoint
    from wycifar.data.sources import load_split
    from wycifar.resolvers import user_cache_dir

    checkpoint_path, data = source_of(target, data)
    checkpoint = read_checkpoint(checkpoint_path)
    net = load_module(checkpoint_path).net.float().eval()
    test = load_split(Path(data), "test", image_size=net.image_size, cache_dir=user_cache_dir(), download=False)
    classes = list(checkpoint.get("wycifar", {}).get("classes", test.classes))
    return SavedModel(checkpoint_path, net, classes, *input_normalisation(checkpoint), test)


def export(target: Path, data: str | None, out: Path | None) -> Path:
    saved = load_saved(target, data)
    checkpoint = saved.checkpoint
    if out is None:  # a run's checkpoints/x.ckpt exports into the run folder
        out = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    with tempfile.TemporaryDirectory() as scratch:
        draft = Path(scratch) / "model.onnx"
        saved.export(draft)
        images = saved.test.images.permute(0, 2, 3, 1).numpy()
        measured = accuracy(Classifier(draft).probabilities, images, saved.test.labels.numpy())
        model = onnx.load(str(draft))
    onnx.helper.set_model_props(model, saved.metadata(measured))
    final = Path(out) / model_name(saved.params, measured, "onnx")
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
