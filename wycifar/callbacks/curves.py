"""Model performance: train/validation loss and accuracy curves, a PNG refreshed every epoch
(at most once per `min_interval_s`, so that drawing stays a small part of seconds-long GPU epochs)
and always when training ends."""

from __future__ import annotations

import time

import lightning as L
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from wycifar.callbacks.common import EpochMetrics, run_dir, save_figure, should_draw

KEYS = ("train/loss", "val/loss", "train/acc", "val/acc")


class LearningCurves(EpochMetrics):
    def __init__(self, filename: str = "curves.png", min_interval_s: float = 10.0) -> None:
        self.filename, self.min_interval_s = filename, min_interval_s
        self._drawn_at: float | None = None
        self._pending = False
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k in KEYS}

    def outputs(self) -> dict[str, str]:
        return {"curves": self.filename}

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict.get("history", {}).items()}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not should_draw(trainer):
            return
        epoch = trainer.current_epoch + 1
        metrics = self.epoch_metrics(trainer)
        for key in KEYS:
            if key in metrics:
                self.history.setdefault(key, []).append((epoch, metrics[key]))
        self._pending = True
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.min_interval_s:
            self.draw(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending and should_draw(trainer):
            self.draw(trainer)

    def draw(self, trainer: L.Trainer) -> None:
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
        for ax, kind in ((loss_ax, "loss"), (acc_ax, "acc")):
            for split, style in (("train", "-o"), ("val", "-s")):
                points = self.history.get(f"{split}/{kind}", [])
                if points:
                    xs, ys = zip(*points)
                    ys = [100 * y for y in ys] if kind == "acc" else ys
                    ax.plot(xs, ys, style, markersize=3, label=f"{split}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
            ax.set_ylabel("accuracy (%)" if kind == "acc" else "cross-entropy loss")
            ax.set_title("Accuracy" if kind == "acc" else "Loss")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        save_figure(fig, run_dir(trainer) / self.filename, trainer, "report/curves")
        self._pending, self._drawn_at = False, time.monotonic()
