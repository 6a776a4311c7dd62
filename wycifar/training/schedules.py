"""Learning-rate schedules. The optimiser's `lr` is the peak learning rate; a schedule gives
fractions of it over the run. Each factory takes the optimizer plus `total_steps`, the run's
length in scheduler steps (max_epochs when stepping per epoch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR

from wycifar.errors import ConfigError


class PiecewiseLinear(LRScheduler):
    """LR = peak x fraction, the fraction (and optionally the momentum) interpolated linearly
    through (epoch, value) points. The points' epoch axis ends at the last point's epoch and is
    stretched over the run: a 5-epoch run warms up, peaks and decays as a 24-epoch one."""

    def __init__(
        self,
        optimizer: Optimizer,
        points: Sequence[Sequence[float]],
        total_steps: int,
        momentum_points: Sequence[Sequence[float]] | None = None,
    ) -> None:
        self.epochs, self.fractions = [float(e) for e, _ in points], [float(v) for _, v in points]
        self.momentum_epochs = [float(e) for e, _ in momentum_points or []]
        self.momenta = [float(m) for _, m in momentum_points or []]
        # schedule epochs per scheduler step
        self.stretch = self.epochs[-1] / max(1, total_steps)
        super().__init__(optimizer)

    # Resuming takes the schedule from the config of the resumed run, not from the checkpoint: a
    # run resumed with another trainer.max_epochs follows its own length.
    CONFIGURED = ("epochs", "fractions", "momentum_epochs", "momenta", "stretch")

    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k not in self.CONFIGURED}

    def schedule_epoch(self) -> float:
        """Where the run is on the points' epoch axis."""
        return self.last_epoch * self.stretch

    def get_lr(self) -> list[float]:
        epoch = self.schedule_epoch()
        if self.momenta:
            momentum = float(np.interp(epoch, self.momentum_epochs, self.momenta))
            for group in self.optimizer.param_groups:
                group["momentum"] = momentum
        fraction = float(np.interp(epoch, self.epochs, self.fractions))
        return [base * fraction for base in self.base_lrs]


def _check_points(name: str, points: Sequence[Sequence[float]], allowed_values: str, ok_values) -> None:
    allowed = f"give >= 2 [epoch, value] pairs, epochs ascending from 0, {allowed_values}"
    ok = len(points) >= 2 and all(len(p) == 2 for p in points)
    if ok:
        epochs, values = [float(e) for e, _ in points], [float(v) for _, v in points]
        ok = epochs[0] == 0 and epochs == sorted(epochs) and epochs[-1] > 0 and ok_values(values)
    if not ok:
        raise ConfigError(f"scheduler.{name}={[list(p) for p in points]!r} is not allowed; {allowed}")


def piecewise_linear(
    optimizer: Optimizer,
    *,
    points: Sequence[Sequence[float]],
    total_steps: int,
    momentum_points: Sequence[Sequence[float]] | None = None,
) -> LRScheduler:
    """LR = optimizer.lr x a fraction interpolated through (epoch, fraction) points.

    The reference's schedule is optimizer.lr=0.5 with points [[0, 0.2], [4, 1], [18, 0.1], [24, 0]]
    stepped once per epoch; stepped per batch the same points give a smooth ramp. The fractions
    lie in [0, 1] and reach 1: optimizer.lr is the peak. `momentum_points`, when given, cycles
    SGD's momentum the same way (the reference's code went 0.95 -> 0.85 -> 0.95).
    """
    _check_points(
        "points", points, "fractions of optimizer.lr in [0, 1] reaching 1", lambda v: min(v) >= 0 and max(v) == 1
    )
    if momentum_points:
        _check_points("momentum_points", momentum_points, "momenta in [0, 1)", lambda v: min(v) >= 0 and max(v) < 1)
    return PiecewiseLinear(optimizer, points, total_steps, momentum_points)


def one_cycle(
    optimizer: Optimizer,
    *,
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
    """torch's OneCycleLR over the whole run, peaking at optimizer.lr."""
    return OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
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
