"""Knowledge distillation (module.teacher): a real teacher checkpoint, real student fits."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train, evaluate_checkpoint, make_image_folder

from wycifar.errors import ConfigError
from wycifar.training.distill import soft_target_loss
from wycifar.training.run import train


def fit(tmp_path: Path, data: Path, *overrides: str) -> Path:
    """One tiny epoch with no reports; the run's last checkpoint."""
    quiet = ["trainer.max_epochs=1", "test=false", "callbacks=[model_checkpoint]", "logger=none"]
    cfg = compose_train(tmp_path, [*TINY, f"data.root={data}", *quiet, *overrides])
    train(cfg)
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_data_module) -> Path:
    """A wider network than the student's (base_width 16 against 8), trained one epoch."""
    return fit(tmp_path_factory.mktemp("teacher"), tiny_data_module, "model.base_width=16")


@pytest.fixture(scope="module")
def tiny_data_module(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny"))


def test_soft_target_loss_is_zero_only_for_the_teachers_own_predictions():
    teacher_logits = torch.randn(8, 10)
    assert soft_target_loss(teacher_logits, teacher_logits, 4.0).abs() < 1e-6
    assert soft_target_loss(teacher_logits + 5.0, teacher_logits, 4.0).abs() < 1e-6  # softmax ignores a shift
    assert soft_target_loss(torch.randn(8, 10), teacher_logits, 4.0) > 0.01


def test_the_teacher_shapes_training_and_stays_out_of_the_student(tmp_path: Path, teacher: Path, tiny_data_module):
    teacher_before = torch.load(teacher, weights_only=True)["state_dict"]
    plain = fit(tmp_path / "plain", tiny_data_module)
    weightless = fit(tmp_path / "weight0", tiny_data_module, f"module.teacher={teacher}", "module.distill_weight=0")
    distilled = fit(tmp_path / "distilled", tiny_data_module, f"module.teacher={teacher}", "module.distill_weight=0.9")
    weights = {
        name: torch.load(p, weights_only=True)["state_dict"]
        for name, p in (("plain", plain), ("weight0", weightless), ("distilled", distilled))
    }
    # the student's checkpoint holds the student only, at its own width
    assert weights["distilled"].keys() == weights["plain"].keys()
    assert all(key.startswith("net.") for key in weights["distilled"])
    # with weight 0 the teacher changes nothing; with weight 0.9 it changes the weights
    assert all(torch.equal(weights["weight0"][k], weights["plain"][k]) for k in weights["plain"])
    assert not all(torch.equal(weights["distilled"][k], weights["plain"][k]) for k in weights["plain"])
    # the teacher was not trained
    teacher_after = torch.load(teacher, weights_only=True)["state_dict"]
    assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
    # the student is evaluated without its teacher's file
    moved = teacher.with_name("moved.ckpt")
    teacher.rename(moved)
    try:
        metrics = evaluate_checkpoint(tmp_path / "eval", distilled, tiny_data_module, ["callbacks=none", "logger=none"])
    finally:
        moved.rename(teacher)
    assert 0 <= metrics["test/acc"] <= 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("module.teacher=missing.ckpt", "module.teacher: checkpoint 'missing.ckpt' does not exist"),
        ("module.distill_weight=1.5", "module.distill_weight=1.5"),
        ("module.distill_temperature=0", "module.distill_temperature=0"),
    ],
)
def test_bad_distillation_settings_stop_before_training(tmp_path: Path, tiny_data_module, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        fit(tmp_path, tiny_data_module, override)
    assert not (tmp_path / "run" / "checkpoints").exists()
