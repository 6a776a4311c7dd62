"""Confusion matrix on the test set: counts and row-normalised, with class names (torchmetrics)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MulticlassConfusionMatrix

from wycifar.callbacks.common import class_names, run_dir, save_figure
from wycifar.files import atomic_write_text


def draw_confusion(counts: np.ndarray, names: list[str]):
    normalised = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    for ax, matrix, title, fmt in (
        (axes[0], counts, "Counts", "d"),
        (axes[1], normalised, "Row-normalised (recall)", ".2f"),
    ):
        image = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        threshold = matrix.max() / 2
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j,
                    i,
                    format(matrix[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black",
                )
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


class ConfusionMatrixReport(Callback):
    def __init__(self, filename: str = "confusion_matrix.png") -> None:
        self.filename = filename
        self.metric: MulticlassConfusionMatrix | None = None
        self.counts: np.ndarray | None = None

    def outputs(self) -> dict[str, str]:
        """The files it writes into the run folder, by role (report.md and wycifar.ship read these)."""
        return {"confusion_matrix": self.filename, "confusion_matrix_csv": str(Path(self.filename).with_suffix(".csv"))}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metric = MulticlassConfusionMatrix(num_classes=pl_module.net.num_classes).to(pl_module.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.metric is not None and isinstance(outputs, dict):
            self.metric.update(outputs["probs"], outputs["target"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        counts = self.metric.compute().cpu().numpy()  # synchronised across ranks by torchmetrics
        self.counts = counts
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        names = class_names(trainer, len(counts))
        folder = run_dir(trainer)
        rows = ["true\\predicted," + ",".join(names)] + [
            f"{n}," + ",".join(str(int(c)) for c in row) for n, row in zip(names, counts)
        ]
        atomic_write_text(folder / self.outputs()["confusion_matrix_csv"], "\n".join(rows) + "\n")
        save_figure(draw_confusion(counts, names), folder / self.filename, trainer, "report/confusion_matrix")
