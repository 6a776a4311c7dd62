"""Network architecture: after testing, the tested network as model_<params>_<test acc>.onnx
(checked in onnxruntime against PyTorch), its drawing (.onnx.svg), both also to the loggers that
take files, and TensorBoard's graph."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from wycifar.callbacks.common import class_names, normalisation, run_dir, tensorboard
from wycifar.data.normalize import normalize_uint8
from wycifar.models.drawing import draw_model
from wycifar.models.modes import eval_mode
from wycifar.models.onnx import check_onnx, tracing_quietly, write_onnx
from wycifar.onnx_metadata import model_metadata
from wycifar.runs.folders import keep_only_model, model_name
from wycifar.runs.loggers import log_files

log = logging.getLogger("wycifar.onnx")


def whole_split_accuracy(trainer: L.Trainer) -> float | None:
    """The test accuracy where the test covered the whole split; None for none or part of it (a
    model file's name and metadata carry only a whole-split accuracy)."""
    acc, tested = trainer.callback_metrics.get("test/acc"), trainer.callback_metrics.get("test/images")
    test_data = getattr(trainer.datamodule, "test_data", None) if trainer.datamodule is not None else None
    if acc is None or (tested is not None and test_data is not None and int(tested) < len(test_data)):
        return None
    return float(acc)


class OnnxModel(Callback):
    """After testing (the tested weights, in train()), writes model_<params>_<test acc>.onnx and .onnx.svg."""

    def __init__(self, check_images: int = 16, log_graph: bool = True) -> None:
        self.check_images, self.log_graph = check_images, log_graph
        self.onnx_path: Path | None = None
        self.svg_path: Path | None = None
        self.max_error: float | None = None

    def check_batch(self, trainer: L.Trainer, net: torch.nn.Module) -> torch.Tensor:
        """Real normalised test images when the data module has them, else random ones."""
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "test_data", None) is None:
            return torch.randn(self.check_images, net.in_channels, net.image_size, net.image_size)
        return normalize_uint8(datamodule.test_data.images[: self.check_images], datamodule.mean, datamodule.std)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        net = pl_module.net
        params = sum(p.numel() for p in net.parameters())
        accuracy = whole_split_accuracy(trainer)
        folder = run_dir(trainer)
        self.onnx_path = self.write(trainer, net, folder / model_name(params, accuracy, "onnx"), accuracy)
        keep_only_model(folder, self.onnx_path)
        self.svg_path = draw_model(net, self.onnx_path, params, accuracy)
        log_files(trainer.loggers, [self.onnx_path, self.svg_path], "model")
        if self.log_graph:
            self.log_tensorboard_graph(trainer, net, pl_module.device)

    def write(self, trainer: L.Trainer, net: torch.nn.Module, path: Path, accuracy: float | None) -> Path:
        classes = class_names(trainer, net.num_classes)
        mean, std = normalisation(trainer)
        metadata = model_metadata(classes, net.image_size, mean, std, accuracy)
        write_onnx(net, path, net.image_size, net.in_channels, metadata)
        self.max_error = check_onnx(net, path, self.check_batch(trainer, net))
        log.info("exported %s (onnxruntime matches PyTorch: max |diff| %.1e)", path.name, self.max_error)
        return path

    @staticmethod
    def log_tensorboard_graph(trainer: L.Trainer, net: torch.nn.Module, device: torch.device) -> None:
        writer = tensorboard(trainer)
        if writer is None:
            return
        example = torch.zeros(1, net.in_channels, net.image_size, net.image_size, device=device)
        with eval_mode(net), torch.inference_mode(False), torch.no_grad(), tracing_quietly():
            writer.add_graph(net, example)
        writer.flush()
