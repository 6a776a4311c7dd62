"""Saved models as files: a run folder's or checkpoint's network with its classes, normalisation
and test split (`load_saved`), exported to ONNX with the metadata wycifar.deploy.runtime needs and named by
its own onnxruntime accuracy (`export`), or metadata added to an ONNX file that has none
(`add_metadata`). `python -m wycifar.export` and `python -m wycifar.add_metadata` are the commands;
the deployment benchmark uses these too.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from wycifar.deploy.runtime import Classifier
from wycifar.errors import ConfigError, first_line
from wycifar.files import atomic_path
from wycifar.onnx_metadata import PREFIX, model_metadata
from wycifar.runs.folders import keep_only_model, model_name, parse_model_name, run_data_root, tested_checkpoint

# a file's accuracy in onnxruntime against the one in its name (measured in training, in bf16 or
# fp32): within half a point, or the file was not trained with the normalisation assumed
NAME_TOLERANCE = 0.005


def accuracy(predict, inputs: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of `predict` (a batch of inputs -> class scores) over `inputs`, in batches."""
    predicted = np.concatenate([predict(inputs[i : i + batch]).argmax(1) for i in range(0, len(inputs), batch)])
    return float((predicted == labels).mean())


def onnx_accuracy(model: onnx.ModelProto, test) -> float:
    """Top-1 accuracy in onnxruntime of `model` (with its wycifar metadata, which say how to
    preprocess) on a test split (uint8 images [N, C, H, W], labels)."""
    with tempfile.TemporaryDirectory() as scratch:
        draft = Path(scratch) / "model.onnx"
        onnx.save(model, str(draft))
        images = test.images.permute(0, 2, 3, 1).numpy()
        return accuracy(Classifier(draft).probabilities, images, test.labels.numpy())


def save_with_metadata(model: onnx.ModelProto, metadata: dict[str, str], path: Path) -> Path:
    """`model` with `metadata` as its metadata_props, written whole at `path`."""
    onnx.helper.set_model_props(model, metadata)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


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

    def write_onnx(self, path: Path, measured: float | None = None) -> None:
        from wycifar.models.onnx import write_onnx

        write_onnx(self.net, path, self.net.image_size, self.net.in_channels, self.metadata(measured))


def source_of(target: Path, data: str | None) -> tuple[Path, str]:
    """(checkpoint, data folder) of a run folder or a checkpoint file."""
    if target.suffix == ".onnx":
        raise ConfigError(
            f"{target} is an ONNX model already: export takes a run folder or a checkpoint "
            f"(python -m wycifar.add_metadata {target} --data DIR adds wycifar's metadata to an ONNX model)"
        )
    if target.is_dir():
        checkpoint = tested_checkpoint(target)
        if checkpoint is None:
            raise ConfigError(f"{target} holds no checkpoints/last.ckpt or best-*.ckpt: not a wycifar.train run")
        data = data or run_data_root(target)
        target = checkpoint
    if not data or "${" in str(data):
        raise ConfigError(
            f"--data is needed for {target}: the folder holding CIFAR-10's test/ (or the run's data.root)"
        )
    return target, str(data)


def load_saved(target: Path, data: str | None) -> SavedModel:
    """The network of a run folder or checkpoint in fp32 evaluation mode, with its test split."""
    from wycifar.data.sources import load_split
    from wycifar.runs.resolvers import user_cache_dir
    from wycifar.training.checkpoints import input_normalisation, load_module, read_checkpoint

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
        saved.write_onnx(draft)
        model = onnx.load(str(draft))
    measured = onnx_accuracy(model, saved.test)
    path = save_with_metadata(model, saved.metadata(measured), Path(out) / model_name(saved.params, measured, "onnx"))
    # a run folder holds one model: this one, measured on the whole split, replaces the run's own
    from wycifar.models.drawing import draw_model

    draw_model(saved.net, path, saved.params, measured)
    keep_only_model(Path(out), path)
    return path


def add_metadata(model_path: Path, data: str | None, out: Path | None) -> Path:
    """A wycifar ONNX file that carries no metadata (exported before files carried them) gets
    them: CIFAR-10's classes and normalisation, and its accuracy as onnxruntime measures it on
    the test split, which must agree with the accuracy in its name (else it was not trained with
    CIFAR-10's normalisation: export its checkpoint instead)."""
    from wycifar.data.normalize import CIFAR10_MEAN, CIFAR10_STD
    from wycifar.data.sources import load_split
    from wycifar.runs.resolvers import user_cache_dir

    if not data:
        raise ConfigError(f"--data is needed for {model_path}: the folder holding CIFAR-10's test/")
    try:
        model = onnx.load(str(model_path))
    except Exception as error:  # noqa: BLE001 - onnx raises its own types for a bad file
        raise ConfigError(f"{model_path} is not an ONNX model or is truncated ({first_line(error)[:160]})") from None
    if any(p.key.startswith(PREFIX) for p in model.metadata_props):
        raise ConfigError(f"{model_path} already carries wycifar metadata; nothing to add")
    named = parse_model_name(model_path.name)
    if named is None:
        raise ConfigError(
            f"{model_path.name} is not named model_<params>_<accuracy>.onnx: without the accuracy it was "
            "tested at, the file cannot be checked; export its checkpoint instead"
        )
    size = model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    test = load_split(Path(data), "test", image_size=size, cache_dir=user_cache_dir(), download=False)
    onnx.helper.set_model_props(model, model_metadata(test.classes, size, CIFAR10_MEAN, CIFAR10_STD, None))
    measured = onnx_accuracy(model, test)
    if named is not None and abs(named[1] - measured) > NAME_TOLERANCE:
        raise ConfigError(
            f"{model_path} scores {100 * measured:.2f}% with CIFAR-10's normalisation, not the {100 * named[1]:.2f}% "
            "in its name: it was trained with another; export its checkpoint instead"
        )
    metadata = model_metadata(test.classes, size, CIFAR10_MEAN, CIFAR10_STD, measured)
    return save_with_metadata(model, metadata, (out or model_path.parent) / model_path.name)
