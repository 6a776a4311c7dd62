import pytest
import torch

from wycifar.errors import ConfigError
from wycifar.schedules import piecewise_linear

SEED_MOMENTA = [[0, 0.95], [4, 0.85], [18, 0.95], [24, 0.95]]
SEED_POINTS = [[0, 0.1], [4, 0.5], [18, 0.05], [24, 0.0]]


def run_schedule(steps: int, **kwargs) -> list[tuple[float, float]]:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.05, momentum=0.9, nesterov=True)
    scheduler = piecewise_linear(optimizer, total_steps=steps, **kwargs)
    seen = []
    for _ in range(steps):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group["momentum"]))
        optimizer.step()
        scheduler.step()
    return seen


def test_per_epoch_lr_is_the_reference_log():
    lrs = [lr for lr, _ in run_schedule(24, points=SEED_POINTS, steps_per_epoch=1)]
    # The reference's log: 0.1, 0.2, ... peak 0.5 at epoch 5, 0.05 at epoch 19, 0.008333 at 24.
    assert lrs[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lrs[18] == pytest.approx(0.05) and lrs[23] == pytest.approx(0.05 / 6)


def test_momentum_cycles_against_the_lr():
    seen = run_schedule(24, points=SEED_POINTS, steps_per_epoch=1, momentum_points=[[0, 0.95], [4, 0.85], [24, 0.95]])
    momenta = [m for _, m in seen]
    assert momenta[0] == pytest.approx(0.95) and momenta[4] == pytest.approx(0.85)
    assert momenta[14] == pytest.approx(0.9) and momenta[23] == pytest.approx(0.945)
    three_phase = [m for _, m in run_schedule(24, points=SEED_POINTS, steps_per_epoch=1, momentum_points=SEED_MOMENTA)]
    assert three_phase[11] == pytest.approx(0.9) and three_phase[18:] == pytest.approx([0.95] * 6)
    # Without momentum points the optimizer's own momentum stays.
    assert {m for _, m in run_schedule(5, points=SEED_POINTS, steps_per_epoch=1)} == {0.9}


def test_per_step_reads_fractional_epochs():
    lrs = [lr for lr, _ in run_schedule(8, points=[[0, 0.0], [2, 0.4]], steps_per_epoch=4)]
    assert lrs == pytest.approx([0.05 * i for i in range(8)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points": [[0, 0.1]]}, r"scheduler.points=\[\[0, 0.1\]\] is not allowed"),
        ({"points": [[4, 0.1], [0, 0.2]]}, "scheduler.points="),
        ({"points": SEED_POINTS, "momentum_points": [[0, 0.95], [4, 1.2]]}, r"momentum_points=.*< 1.0"),
    ],
)
def test_bad_points_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        run_schedule(2, steps_per_epoch=1, **kwargs)
