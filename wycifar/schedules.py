"""Learning-rate schedules. Each factory takes the optimizer plus `steps_per_epoch` and
`total_steps` (both counted in scheduler steps: 1 and max_epochs when stepping per epoch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from wycifar.errors import ConfigError


def piecewise_linear(
    optimizer: Optimizer,
    *,
    points: Sequence[Sequence[float]],
    steps_per_epoch: int,
    total_steps: int,
    lr_scale: float = 1.0,
) -> LRScheduler:
    """LR interpolated linearly through (epoch, lr) points, read at fractional epochs.

    The reference's schedule is points [[0, 0.1], [4, 0.5], [18, 0.05], [24, 0]] stepped once per
    epoch; stepped per batch the same points give a smooth ramp. Returned LRs are absolute: the
    optimizer's own `lr` is ignored; `lr_scale` multiplies every point (one knob for sweeps).
    """
    allowed = "give >= 2 [epoch, lr] pairs, epochs ascending, lrs >= 0"
    if len(points) < 2 or any(len(p) != 2 for p in points):
        raise ConfigError(f"scheduler.points={[list(p) for p in points]!r} is not allowed; {allowed}")
    epochs = [float(e) for e, _ in points]
    lrs = [float(lr) * lr_scale for _, lr in points]
    if epochs != sorted(epochs) or min(lrs) < 0:
        raise ConfigError(f"scheduler.points={[list(p) for p in points]!r} is not allowed; {allowed}")
    for group in optimizer.param_groups:
        group["lr"] = 1.0
        group["initial_lr"] = 1.0

    def lr_at(step: int) -> float:
        return float(np.interp(step / steps_per_epoch, epochs, lrs))

    return LambdaLR(optimizer, lr_at)


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
