"""A diverged run stops at once, and no checkpoint ever holds the weights it diverged to.

Two rules, each ending the run with DivergenceError (exit status 3) before anything is tested or
exported: a step's loss that is not finite stops the epoch at that step, and an epoch whose mean
training loss is above `threshold` stops at its last batch, before validation and the epoch's
checkpoints. The shipped recipes stay below 2.5 (a uniform guess over 10 classes costs 2.30). Any
checkpoint about to be written (the epoch's, or Ctrl-C's and SIGTERM's) is refused if a weight is
not finite, so `last.ckpt` keeps the last good state.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from wycifar.errors import DivergenceError, check_number


class DivergenceStop(Callback):
    def __init__(self, threshold: float = 100.0) -> None:
        check_number("callbacks.divergence.threshold", threshold, minimum=0, inclusive=False)
        self.threshold = threshold
        self._loss_sum: torch.Tensor | None = None
        self._steps = 0
        # on a GPU, each step's finiteness is read one step later, so that no step waits for it
        self._pending: tuple[torch.Tensor, torch.cuda.Event, int, int] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._steps, self._pending = None, 0, None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach().float()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._steps += 1
        finite = torch.isfinite(loss)
        if loss.device.type == "cuda":
            pending = self._pending
            event = torch.cuda.Event()
            self._pending = (finite.to("cpu", non_blocking=True), event, trainer.current_epoch, trainer.global_step)
            event.record()
            if pending is not None:
                pending[1].synchronize()
                if not bool(pending[0]):
                    self._stop(trainer, "nan or inf", pending[2], pending[3])
        elif not bool(finite):
            self._stop(trainer, f"{float(loss):.4g}", trainer.current_epoch, trainer.global_step)
        if batch_idx + 1 >= trainer.num_training_batches:
            self._check_epoch_mean(trainer)

    def _check_epoch_mean(self, trainer: L.Trainer) -> None:
        """At the epoch's last batch: its mean loss finite and at most the threshold."""
        if not self._steps:
            return
        mean = float(self._loss_sum) / self._steps
        if not math.isfinite(mean) or mean > self.threshold:
            self._stop(trainer, f"{mean:.4g} (the epoch's mean)", trainer.current_epoch, trainer.global_step)

    def _stop(self, trainer: L.Trainer, loss: str, epoch: int, step: int) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        raise DivergenceError(
            f"training diverged: the training loss is {loss} (allowed: finite, an epoch's mean at most "
            f"{self.threshold:g}) at epoch {epoch + 1}, step {step} (LR {lr:.4g}); "
            "the last good checkpoint is kept, lower optimizer.lr"
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        bad = [
            name
            for name, value in pl_module.state_dict().items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if bad:
            raise DivergenceError(
                f"training diverged: {len(bad)} weights are not finite ({', '.join(bad[:3])}) at epoch "
                f"{trainer.current_epoch + 1}, step {trainer.global_step}; no checkpoint of them was written, "
                "the last good one is kept; lower optimizer.lr"
            )
