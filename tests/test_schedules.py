"""Schedules: optimizer.lr is the peak, the points give fractions of it, and the points' epoch axis
stretches to the run's length."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, compose_train
from hydra.utils import instantiate

from wycifar.errors import ConfigError
from wycifar.training.run import train
from wycifar.training.schedules import one_cycle, piecewise_linear

REFERENCE_POINTS = [[0, 0.2], [4, 1.0], [18, 0.1], [24, 0.0]]
REFERENCE_MOMENTA = [[0, 0.95], [4, 0.85], [18, 0.95], [24, 0.95]]


def run_schedule(steps: int, lr: float = 0.5, factory=piecewise_linear, **kwargs) -> list[tuple[float, float]]:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr, momentum=0.9, nesterov=True)
    scheduler = factory(optimizer, total_steps=steps, **kwargs)
    seen = []
    for _ in range(steps):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group["momentum"]))
        optimizer.step()
        scheduler.step()
    return seen


def test_per_epoch_lr_is_the_reference_log():
    lrs = [lr for lr, _ in run_schedule(24, points=REFERENCE_POINTS)]
    # The reference's log: 0.1, 0.2, ... peak 0.5 at epoch 5, 0.05 at epoch 19, 0.008333 at 24.
    assert lrs[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lrs[18] == pytest.approx(0.05) and lrs[23] == pytest.approx(0.05 / 6)


def test_momentum_cycles_against_the_lr():
    seen = run_schedule(24, points=REFERENCE_POINTS, momentum_points=REFERENCE_MOMENTA)
    momenta = [m for _, m in seen]
    assert momenta[0] == pytest.approx(0.95) and momenta[4] == pytest.approx(0.85)
    assert momenta[11] == pytest.approx(0.9) and momenta[18:] == pytest.approx([0.95] * 6)
    # Without momentum points the optimizer's own momentum stays.
    assert {m for _, m in run_schedule(5, points=REFERENCE_POINTS)} == {0.9}


def test_the_epoch_axis_stretches_to_the_run():
    """A 48-epoch run passes through the 24-epoch schedule at half speed; a 6-epoch one at 4x:
    both warm up, peak and decay, the momentum with them."""
    full = run_schedule(24, points=REFERENCE_POINTS, momentum_points=REFERENCE_MOMENTA)
    double = run_schedule(48, points=REFERENCE_POINTS, momentum_points=REFERENCE_MOMENTA)
    assert np.allclose(double[::2], full)
    short = [lr for lr, _ in run_schedule(6, points=REFERENCE_POINTS)]
    assert short == pytest.approx([0.5 * float(np.interp(4 * e, [0, 4, 18, 24], [0.2, 1, 0.1, 0])) for e in range(6)])
    assert short[1] == pytest.approx(0.5) and short[0] < short[1] and short[-1] < 0.05


def test_per_step_reads_fractional_epochs():
    lrs = [lr for lr, _ in run_schedule(8, lr=0.4, points=[[0, 0.0], [2, 1.0]])]
    assert lrs == pytest.approx([0.05 * i for i in range(8)])


def test_optimizer_lr_is_the_peak_of_every_schedule():
    for lr in (0.05, 10000.0):
        piecewise = [v for v, _ in run_schedule(24, lr=lr, points=REFERENCE_POINTS)]
        cycle = [v for v, _ in run_schedule(100, lr=lr, factory=one_cycle, pct_start=0.2)]
        assert max(piecewise) == pytest.approx(lr) and max(cycle) == pytest.approx(lr)


# Each recipe's LR per scheduler step, as its schedule was written before optimizer.lr became the
# peak: absolute points, per step (782 batches of 64) or per epoch.
RECIPE_LRS = {
    "train": ([[0, 0.014], [3, 0.2], [24, 0.0]], 782),
    "reference": ([[0, 0.1], [4, 0.5], [18, 0.05], [24, 0.0]], 1),
    "reference_readme": ([[0, 0.1], [4, 0.5], [18, 0.05], [24, 0.0]], 1),
}


@pytest.mark.parametrize("recipe", sorted(RECIPE_LRS))
def test_every_recipe_keeps_its_learning_rates(tmp_path: Path, recipe: str):
    cfg = compose_train(tmp_path, [] if recipe == "train" else [f"experiment={recipe}"])
    points, steps_per_epoch = RECIPE_LRS[recipe]
    assert cfg.trainer.max_epochs == 24 and cfg.scheduler.interval == ("step" if steps_per_epoch > 1 else "epoch")
    optimizer = instantiate(cfg.optimizer)(torch.nn.Linear(2, 2).parameters())
    scheduler_cfg = {k: v for k, v in cfg.scheduler.items() if k != "interval"}
    total = 24 * steps_per_epoch
    scheduler = instantiate(scheduler_cfg)(optimizer, total_steps=total)
    epochs, values = zip(*points)
    for step in range(total):
        expected = float(np.interp(step / steps_per_epoch, epochs, values))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-9), step
        optimizer.step()
        scheduler.step()


def test_a_short_run_warms_up_peaks_and_decays(tmp_path: Path, tiny_data: Path):
    """trainer.max_epochs=4 of the reference's schedule, in a real fit: its epoch table's LR column
    is the 24-epoch schedule read every 6 epochs."""
    overrides = [*TINY, f"data.root={tiny_data}", "experiment=reference", "trainer.max_epochs=4", "test=false"]
    train(compose_train(tmp_path, [*overrides, "data.augment.ssr_p=0", "data.augment.cutout_p=0"]))
    with open(tmp_path / "run" / "epochs.csv") as f:
        lrs = [float(row["LR"]) for row in csv.DictReader(f)]
    assert lrs == pytest.approx([0.1, 0.5 * (1 - 0.9 * 2 / 14), 0.5 * (1 - 0.9 * 8 / 14), 0.05], abs=1e-6)
    assert max(lrs) > lrs[0] and lrs[-1] < lrs[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points": [[0, 1.0]]}, r"scheduler.points=\[\[0, 1.0\]\] is not allowed"),
        ({"points": [[4, 0.1], [0, 1.0]]}, "scheduler.points="),
        ({"points": [[0, 0.1], [4, 0.5], [24, 0]]}, r"fractions of optimizer.lr in \[0, 1\] reaching 1"),
        ({"points": [[0, 0.1], [4, 2.0], [24, 0]]}, r"fractions of optimizer.lr in \[0, 1\] reaching 1"),
        ({"points": REFERENCE_POINTS, "momentum_points": [[0, 0.95], [4, 1.2]]}, r"momentum_points=.*momenta in"),
    ],
)
def test_bad_points_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        run_schedule(2, **kwargs)
    assert "\n" not in str(info.value)
