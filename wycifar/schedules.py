"""Learning-rate schedules. Each factory takes the optimizer plus `steps_per_epoch` and
`total_steps` (both counted in scheduler steps: 1 and max_epochs when stepping per epoch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR

from wycifar.errors import ConfigError


class PiecewiseLinear(LRScheduler):
    """LR (and optionally momentum) interpolated linearly through (epoch, value) points, read at
    the fractional epoch `step / steps_per_epoch`."""

    def __init__(
        self,
        optimizer: Optimizer,
        epochs: Sequence[float],
        lrs: Sequence[float],
        steps_per_epoch: int,
        momentum_points: Sequence[Sequence[float]] | None = None,
    ) -> None:
        self.epochs, self.lrs, self.steps_per_epoch = list(epochs), list(lrs), steps_per_epoch
        self.momentum_epochs = [float(e) for e, _ in momentum_points or []]
        self.momenta = [float(m) for _, m in momentum_points or []]
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        epoch = self.last_epoch / self.steps_per_epoch
        if self.momenta:
            momentum = float(np.interp(epoch, self.momentum_epochs, self.momenta))
            for group in self.optimizer.param_groups:
                group["momentum"] = momentum
        return [float(np.interp(epoch, self.epochs, self.lrs)) for _ in self.optimizer.param_groups]


def _check_points(name: str, points: Sequence[Sequence[float]], upper: float | None = None) -> None:
    allowed = "give >= 2 [epoch, value] pairs, epochs ascending, values >= 0"
    if upper is not None:
        allowed += f" and < {upper}"
    ok = len(points) >= 2 and all(len(p) == 2 for p in points)
    if ok:
        epochs, values = [float(e) for e, _ in points], [float(v) for _, v in points]
        ok = epochs == sorted(epochs) and min(values) >= 0 and (upper is None or max(values) < upper)
    if not ok:
        raise ConfigError(f"scheduler.{name}={[list(p) for p in points]!r} is not allowed; {allowed}")


def piecewise_linear(
    optimizer: Optimizer,
    *,
    points: Sequence[Sequence[float]],
    steps_per_epoch: int,
    total_steps: int,
    lr_scale: float = 1.0,
    momentum_points: Sequence[Sequence[float]] | None = None,
) -> LRScheduler:
    """LR interpolated linearly through (epoch, lr) points, read at fractional epochs.

    The reference's schedule is points [[0, 0.1], [4, 0.5], [18, 0.05], [24, 0]] stepped once per
    epoch; stepped per batch the same points give a smooth ramp. Returned LRs are absolute: the
    optimizer's own `lr` is ignored; `lr_scale` multiplies every point (one knob for sweeps).
    `momentum_points`, when given, cycles SGD's momentum the same way (the reference's code went
    0.95 -> 0.85 -> 0.95).
    """
    _check_points("points", points)
    if momentum_points:
        _check_points("momentum_points", momentum_points, upper=1.0)
    epochs = [float(e) for e, _ in points]
    lrs = [float(lr) * lr_scale for _, lr in points]
    return PiecewiseLinear(optimizer, epochs, lrs, steps_per_epoch, momentum_points)


def one_cycle(
    optimizer: Optimizer,
    *,
    max_lr: float,
    steps_per_epoch: int,
    total_steps: int,
    pct_start: float = 0.25,
    div_factor: float = 10.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "linear",
    three_phase: bool = False,
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> LRScheduler:
    """torch's OneCycleLR over the whole run (total_steps comes from the trainer)."""
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=max(1, total_steps),
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal_strategy=anneal_strategy,
        three_phase=three_phase,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )
