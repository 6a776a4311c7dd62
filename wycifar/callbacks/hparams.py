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


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = "None" if value is None else value
        else:
            flat[name] = str(value)
    return flat


def run_hyperparameters(trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
    params = {
        "model": dict(pl_module.hparams.get("net", {})),
        "optimizer": dict(pl_module.hparams.get("optimizer", {})),
        "scheduler": dict(pl_module.hparams.get("scheduler") or {}),
    }
    params["module"] = {k: v for k, v in pl_module.hparams.items() if k not in ("net", "optimizer", "scheduler")}
    datamodule = trainer.datamodule
    if datamodule is not None:
        params["data"] = {
            "batch_size": datamodule.batch_size,
            "val_size": datamodule.val_size,
            "augment": vars(datamodule.augment),
        }
    params["trainer"] = {
        "max_epochs": trainer.max_epochs,
        "precision": str(trainer.precision),
        "devices": trainer.num_devices,
        "accelerator": type(trainer.accelerator).__name__,
    }
    return flatten(params)


class HyperparametersReport(Callback):
    """After testing, writes hparams with hp/test_acc, hp/val_acc_best... (no placeholder hp_metric)."""

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
        params = run_hyperparameters(trainer, pl_module)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics)
                logger.experiment.flush()
