"""Training logs: the reference's epoch table, a row printed as each epoch ends, also CSV and Markdown."""

from __future__ import annotations

import csv
import io
import logging
import math
import time

import lightning as L

from wycifar.callbacks.common import EpochMetrics, run_dir
from wycifar.files import atomic_write_text

log = logging.getLogger("wycifar.epochs")

COLUMNS = ["Epoch", "LR", "Time", "TrainLoss", "TrainAcc", "ValLoss", "ValAcc"]


def emit(text: str) -> None:
    """To the log (terminal and the run's train.log) where Hydra set logging up; printed in a
    process where nobody did (the workers that ddp_spawn starts)."""
    if logging.getLogger().handlers:
        log.info(text)
    else:
        print(text, flush=True)


def format_time(seconds: float) -> str:
    return f"{int(seconds // 60):02d}m {int(seconds % 60):02d}s"


def hyperparameter_header(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    hp = pl_module.hparams
    optimizer = dict(hp.get("optimizer", {}))
    scheduler = dict(hp.get("scheduler") or {})
    datamodule = getattr(trainer, "datamodule", None)
    lines = [
        f"Using Device: {trainer.strategy.root_device}",
        f"Precision: {trainer.precision}",
        f"Epochs: {trainer.max_epochs}",
        f"Optimizer: {str(optimizer.get('_target_', '?')).rsplit('.', 1)[-1]} (momentum {optimizer.get('momentum')}, "
        f"nesterov {optimizer.get('nesterov')}), peak lr {optimizer.get('lr')}",
        f"Schedule: {str(scheduler.get('_target_', 'constant')).rsplit('.', 1)[-1]} per {scheduler.get('interval', '-')}"
        + (f", points {scheduler['points']}" if "points" in scheduler else "")
        + (f", momentum points {scheduler['momentum_points']}" if scheduler.get("momentum_points") else ""),
        f"Batch Size: {getattr(datamodule, 'batch_size', '?')}",
        f"Dropout Ratio: {dict(hp.get('net', {})).get('dropout')}",
        f"Weight Decay: {optimizer.get('weight_decay')}"
        + ("" if hp.get("decay_norm_and_bias", True) else " (not on norms and biases)"),
        f"L1 Lambda: {hp.get('l1_lambda')}",
        f"Label Smoothing: {hp.get('label_smoothing')}",
    ]
    return "\n".join(lines)


class EpochTable(EpochMetrics):
    """| Epoch | LR | Time | TrainLoss | TrainAcc | ValLoss | ValAcc |, with LR as at the epoch's start.

    Rows go to the log (terminal and the run's train.log), epochs.csv and epochs.md; the epoch's
    time and LR also to the loggers (epoch/time_s, epoch/lr).
    """

    def __init__(self, csv_name: str = "epochs.csv", markdown_name: str = "epochs.md") -> None:
        self.csv_name, self.markdown_name = csv_name, markdown_name
        self.rows: list[dict] = []
        self.header = ""
        self._epoch_start = 0.0
        self._epoch_lr = 0.0
        self._carried_s, self._carried_lr = 0.0, None

    def outputs(self) -> dict[str, str]:
        return {"epochs_csv": self.csv_name, "epochs_md": self.markdown_name}

    def state_dict(self) -> dict:
        # a checkpoint written mid-epoch (Ctrl-C, SIGTERM) carries the epoch's time so far and its
        # starting LR: the resumed epoch's row counts the time trained, not the pause
        return {"rows": self.rows, "epoch_s": time.perf_counter() - self._epoch_start, "epoch_lr": self._epoch_lr}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
        self._carried_s = float(state_dict.get("epoch_s", 0.0))
        self._carried_lr = state_dict.get("epoch_lr")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch does not see that epoch start again: its time and LR so far
        self._epoch_start = time.perf_counter() - self._carried_s
        self._epoch_lr = self._carried_lr if self._carried_lr is not None else self._current_lr(trainer)

    @staticmethod
    def rule() -> str:
        return "-" * 73

    @staticmethod
    def title() -> str:
        return "| Epoch | LR       | Time    | TrainLoss | TrainAcc | ValLoss  | ValAcc |"

    @staticmethod
    def format_row(row: dict) -> str:
        # an epoch without validation (trainer.check_val_every_n_epoch) shows dashes
        validated = not math.isnan(row["ValAcc"])
        val_loss = f"{row['ValLoss']:<8.6f}" if validated else f"{'-':<8}"
        val_acc = f"{row['ValAcc']:5.2f}%" if validated else f"{'-':>6}"
        return (
            f"| {row['Epoch']:>5} | {row['LR']:.6f} | {format_time(row['Time'])} | {row['TrainLoss']:<9.6f} "
            f"| {row['TrainAcc']:7.2f}% | {val_loss} | {val_acc} |"
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.header = hyperparameter_header(trainer, pl_module)
        emit(f"\n{self.header}\n{self.rule()}\n{self.title()}\n{self.rule()}")

    @staticmethod
    def _current_lr(trainer: L.Trainer) -> float:
        return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._epoch_start = time.perf_counter() - self._carried_s
        if not self._carried_s:
            self._epoch_lr = self._current_lr(trainer)
        self._carried_s, self._carried_lr = 0.0, None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = self.epoch_metrics(trainer)

        def value(key: str, scale: float = 1.0) -> float:
            return metrics[key] * scale if key in metrics else float("nan")

        row = {
            "Epoch": trainer.current_epoch + 1,
            "LR": float(self._epoch_lr),
            "Time": time.perf_counter() - self._epoch_start,
            "TrainLoss": value("train/loss"),
            "TrainAcc": value("train/acc", 100),
            "ValLoss": value("val/loss"),
            "ValAcc": value("val/acc", 100),
        }
        self.rows.append(row)
        self._carried_s, self._carried_lr = 0.0, None
        emit(self.format_row(row))
        self.write(trainer)
        # the table's own columns that Lightning does not log: the epoch's time and starting LR
        for logger in trainer.loggers:
            logger.log_metrics({"epoch/time_s": row["Time"], "epoch/lr": row["LR"]}, step=trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            emit(self.rule())

    def markdown(self) -> str:
        lines = [self.title(), "|" + "|".join("-" * len(c) for c in self.title().split("|")[1:-1]) + "|"]
        return "\n".join(lines + [self.format_row(r) for r in self.rows]) + "\n"

    def write(self, trainer: L.Trainer) -> None:
        folder = run_dir(trainer)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(folder / self.csv_name, buffer.getvalue())
        header = "\n".join(f"- {line}" for line in self.header.splitlines())
        atomic_write_text(folder / self.markdown_name, f"{header}\n\n{self.markdown()}")
