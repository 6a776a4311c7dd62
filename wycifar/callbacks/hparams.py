"""TensorBoard's HPARAMS tab: the run's hyperparameters with its real final metrics."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

FINAL_METRICS = {
    "test/acc": "hp/test_acc",
    "test/acc_tta": "hp/test_acc_tta",
    "test/loss": "hp/test_loss",
    "val/acc_best": "hp/val_acc_best",
}


class HyperparametersReport(Callback):
    """After testing, writes hp/test_acc, hp/val_acc_best... (no placeholder hp_metric) beside the
    hyperparameters the logger already holds: the flattened config every logger was given
    (wycifar.runs.loggers.log_config), so the HPARAMS tab and hparams.yaml show one key set."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {
            new: float(trainer.callback_metrics[old])
            for old, new in FINAL_METRICS.items()
            if old in trainer.callback_metrics
        }
        if "hp/val_acc_best" not in metrics and pl_module.val_acc_best.update_called:
            metrics["hp/val_acc_best"] = float(pl_module.val_acc_best.compute())
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(dict(logger.hparams), metrics)
                logger.experiment.flush()
