"""Incorrect predictions: the most confident mistakes on the test set, with true and predicted labels."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from wycifar.callbacks.common import class_names, image_grid, images_hwc, normalisation, run_dir, save_figure


class MisclassifiedReport(Callback):
    """Keeps the `num_images` most confident wrong predictions seen by this rank while testing."""

    def __init__(self, num_images: int = 20, filename: str = "misclassified.png") -> None:
        self.num_images, self.filename = num_images, filename
        self.reset()

    def outputs(self) -> dict[str, str]:
        return {"misclassified": self.filename}

    def reset(self) -> None:
        self.images = torch.empty(0)
        self.true = torch.empty(0, dtype=torch.long)
        self.pred = torch.empty(0, dtype=torch.long)
        self.conf = torch.empty(0)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, dict):
            return
        conf, pred = outputs["probs"].max(1)
        wrong = pred != outputs["target"]
        if not wrong.any():
            return
        x = batch[0][wrong].detach().float().cpu()
        self.images = torch.cat([self.images, x]) if len(self.images) else x
        self.true = torch.cat([self.true, outputs["target"][wrong].cpu()])
        self.pred = torch.cat([self.pred, pred[wrong].cpu()])
        self.conf = torch.cat([self.conf, conf[wrong].cpu()])
        keep = self.conf.argsort(descending=True)[: self.num_images]
        self.images, self.true, self.pred, self.conf = (
            self.images[keep],
            self.true[keep],
            self.pred[keep],
            self.conf[keep],
        )

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run or not len(self.conf):
            return
        names = class_names(trainer, pl_module.net.num_classes)
        mean, std = normalisation(trainer)
        fig, axes = image_grid(len(self.conf), cols=5)
        for ax, image, t, p, c in zip(axes, images_hwc(self.images, mean, std), self.true, self.pred, self.conf):
            ax.imshow(image)
            ax.set_title(f"true: {names[t]}\npred: {names[p]} ({100 * c:.0f}%)", fontsize=8, color="crimson")
        fig.suptitle("Most confident mistakes on the test set")
        fig.tight_layout()
        save_figure(fig, run_dir(trainer) / self.filename, trainer, "report/misclassified")
