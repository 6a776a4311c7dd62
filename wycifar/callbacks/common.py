"""What the report callbacks share: where the run folder is, TensorBoard, saving figures."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wycifar.data.normalize import CIFAR10_MEAN, CIFAR10_STD, denormalize  # noqa: E402
from wycifar.files import atomic_path  # noqa: E402
from wycifar.runs.loggers import log_figure  # noqa: E402


def run_dir(trainer: L.Trainer) -> Path:
    path = Path(trainer.default_root_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the run's TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def should_draw(trainer: L.Trainer) -> bool:
    """Figures come from rank 0, never from the sanity check or a fast_dev_run."""
    return trainer.is_global_zero and not trainer.sanity_checking and not trainer.fast_dev_run


def save_figure(fig: plt.Figure, path: Path, trainer: L.Trainer, tag: str, step: int | None = None) -> None:
    """The figure into the run folder and to each configured logger (wycifar.runs.loggers.log_figure)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    log_figure(trainer.loggers, path, tag, trainer.global_step if step is None else step)


def images_hwc(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalised [N, C, H, W] batch -> float HWC images in [0, 1] (what show_cam_on_image and
    matplotlib want)."""
    return denormalize(x, mean, std).permute(0, 2, 3, 1).numpy()


def normalisation(trainer: L.Trainer) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the data module's input normalisation (CIFAR-10's without one)."""
    datamodule = getattr(trainer, "datamodule", None)
    return tuple(getattr(datamodule, "mean", CIFAR10_MEAN)), tuple(getattr(datamodule, "std", CIFAR10_STD))


def class_names(trainer: L.Trainer, num_classes: int) -> list[str]:
    datamodule = getattr(trainer, "datamodule", None)
    names = getattr(datamodule, "classes", None) if datamodule is not None else None
    return list(names) if names else [str(i) for i in range(num_classes)]


def image_grid(n: int, cols: int = 5, size: float = 2.0):
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.3 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes.flat


class EpochMetrics(Callback):
    """The metrics of the training epoch that just ended. On an epoch that skipped validation
    (trainer.check_val_every_n_epoch > 1), trainer.callback_metrics still holds the last
    validation's numbers: they are left out."""

    _validated = False

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = self._validated or not trainer.sanity_checking

    def epoch_metrics(self, trainer: L.Trainer) -> dict[str, float]:
        return {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if self._validated or not key.startswith("val/")
        }
