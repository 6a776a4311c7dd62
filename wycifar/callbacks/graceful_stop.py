"""Ctrl-C or SIGTERM: stop at a batch boundary with a resumable last.ckpt, then exit.

SIGTERM is Lightning's: it finishes the batch and raises SIGTERMException, and this callback
writes the checkpoint from `on_exception`. Ctrl-C is ours: the first one asks for the same stop
before the next batch (a second one interrupts at once). Either way optimiser, schedule, random
state and the data module's position describe the same moment, so `ckpt_path=last` continues
exactly where the run stopped.

Under DDP every process stops at the same batch, on rank 0's flag sent to all (as Lightning does
for SIGTERM): saving ends in a barrier, and a process that saw Ctrl-C a batch later, or not at
all, would be waiting in the gradient all-reduce instead.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from wycifar.errors import InterruptedRun

log = logging.getLogger("wycifar.stop")


class GracefulStop(Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.interrupted = False
        self._previous_sigint = None

    def _on_sigint(self, signum: int, _frame=None) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.interrupted = False
        try:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread (a launcher's worker): leave Ctrl-C alone
            self._previous_sigint = None

    def _restore(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def _save(self, trainer: L.Trainer, why: str) -> None:
        trainer.save_checkpoint(self.path)
        log.info("%s: saved %s", why, self.path)

    def stop_requested(self, trainer: L.Trainer) -> bool:
        """This process's Ctrl-C flag, or under DDP rank 0's, the same on every rank. (Lightning's
        SIGTERM broadcast has already waited for the device before each batch: this one adds a
        message, not a stall.)"""
        if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
            return self.interrupted
        flag = torch.tensor([int(self.interrupted)], device=trainer.strategy.root_device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if not self.stop_requested(trainer):
            return
        self._save(trainer, "SIGINT")
        raise InterruptedRun(message("SIGINT", trainer.current_epoch, batch_idx, self.path))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException):
            self._save(trainer, "SIGTERM")


def message(signal_name: str, epoch: int, batch: int, path: Path) -> str:
    return (
        f"stopped by {signal_name} at epoch {epoch + 1}, batch {batch}; "
        f"resume with ckpt_path={path} (or ckpt_path=last)"
    )
