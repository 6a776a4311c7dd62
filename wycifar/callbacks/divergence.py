"""A diverged run stops: Lightning's EarlyStopping watching the training loss, turned into an error.

At the end of every training epoch the epoch's mean training loss must be finite and at most
`threshold`; the shipped recipes stay below 2.5 (a uniform guess over 10 classes costs 2.30). The
check runs before the checkpoints of that epoch are written, so `last.ckpt` keeps the last good
epoch, and the error ends the run before testing: no model or report is presented as a result.
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from wycifar.errors import DivergenceError, check_number


class DivergenceStop(EarlyStopping):
    """Stops the run with DivergenceError (exit status 3) when `monitor` is not finite or above
    `threshold`. It never stops a run for not improving."""

    def __init__(self, threshold: float = 100.0, monitor: str = "train/loss") -> None:
        check_number("callbacks.divergence.threshold", threshold, minimum=0, inclusive=False)
        super().__init__(
            monitor=monitor,
            mode="min",
            check_finite=True,
            divergence_threshold=threshold,
            patience=sys.maxsize,
            check_on_train_epoch_end=True,
        )

    @property
    def state_key(self) -> str:
        return f"DivergenceStop{{'monitor': '{self.monitor}'}}"

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        super()._run_early_stopping_check(trainer)
        if self.stopping_reason not in (
            EarlyStoppingReason.NON_FINITE_METRIC,
            EarlyStoppingReason.DIVERGENCE_THRESHOLD,
        ):
            return
        loss = float(trainer.callback_metrics[self.monitor])
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        raise DivergenceError(
            f"training diverged: {self.monitor} is {loss:.4g} (allowed: finite, at most {self.divergence_threshold:g}) "
            f"at epoch {trainer.current_epoch + 1}, step {trainer.global_step} (LR {lr:.4g}); "
            "the last good checkpoint is kept, lower optimizer.lr"
        )
