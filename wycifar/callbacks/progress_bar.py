"""tqdm's progress bar, counting epochs as the epoch table does: `Epoch 1/24`, not Lightning's `Epoch 0`."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class EpochProgressBar(TQDMProgressBar):
    def on_train_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_start(trainer, *args)
        # a run resumed mid-epoch does not see that epoch start: name it and its length here
        if trainer.fit_loop.epoch_loop.batch_progress.current.completed:
            self.on_train_epoch_start(trainer, *args)

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
