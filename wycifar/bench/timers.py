"""Clocks and memory for the benchmark: a device sync, peak memory, and callbacks that time a fit."""

from __future__ import annotations

import resource
import time

import torch
from lightning.pytorch.callbacks import Callback


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    dtype = torch.bfloat16 if "bf16" in str(precision) else torch.float16 if str(precision).startswith("16") else None
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def endless(loader):
    """The loader's batches, epoch after epoch: a timed run may be longer than one epoch."""
    while True:
        yield from loader


class StepTimer(Callback):
    """Times the fit's steps from batch `warmup` on (per-step callbacks and logging included), and
    apart from them the epoch-end work (the report callbacks), which a real epoch pays once per
    391 steps rather than once per `batches`. Kept last in the callback list."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.images = warmup, 0.0, 0
        self.steps_s, self.epoch_end_s, self._last_batch_end = 0.0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()
        if batch_idx >= self.warmup:
            self.images += len(batch[1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # A sync per step would stop a GPU's queue from running ahead: only after the last one.
        if batch_idx + 1 >= trainer.num_training_batches:
            sync(pl_module.device)
        self._last_batch_end = time.perf_counter()
        self.steps_s = self._last_batch_end - self.start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_end_s = time.perf_counter() - self._last_batch_end

    def full_epoch_rate(self, batch_size: int, train_images: int) -> float:
        """Images/s over a whole epoch of `train_images`: the measured step rate plus one epoch end."""
        steps = -(-train_images // batch_size)
        per_step = self.steps_s / max(1, self.images / batch_size)
        return train_images / (steps * per_step + self.epoch_end_s)


class EpochTimer(Callback):
    """Wall-clock seconds of each whole epoch: training, validation and every epoch-end callback."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.end = time.perf_counter()

    @property
    def epoch_s(self) -> list[float]:
        bounds = self.starts + [self.end]
        return [b - a for a, b in zip(bounds, bounds[1:])]
