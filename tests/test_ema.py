"""callbacks=[default,ema]: validation, checkpoints, test and evaluation all use the warmed-up average."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train, evaluate_checkpoint

from wycifar.callbacks.ema import warmup_ema
from wycifar.training.run import train


def test_decay_warms_up_then_holds():
    averaged, current = torch.zeros(3), torch.ones(3)
    # update n (counting from 0) keeps (1 + n) / (10 + n) of the average, capped at `decay`
    assert torch.allclose(warmup_ema(averaged, current, 1, decay=0.999), torch.full((3,), 1 - 2 / 11))
    late = warmup_ema(averaged, current, 100_000, decay=0.999)
    assert torch.allclose(late, torch.full((3,), 0.001), atol=1e-6)


def test_ema_run_tests_and_ships_the_average(tmp_path: Path, tiny_data: Path):
    cfg = compose_train(
        tmp_path,
        [*TINY, f"data.root={tiny_data}", "callbacks=[default,ema]", "callbacks.ema.decay=0.9", "trainer.max_epochs=3"],
    )
    metrics, objects = train(cfg)
    best = objects["trainer"].checkpoint_callback.best_model_path
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    average, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    weight = "net.head.weight" if "net.head.weight" in average else next(k for k in average if k.endswith("weight"))
    assert not torch.equal(average[weight], current[weight])
    # Evaluating the checkpoint gives the test accuracy the run reported: the average was tested.
    eval_metrics = evaluate_checkpoint(tmp_path / "eval", best, tiny_data)
    assert eval_metrics["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_bad_decay_is_refused_before_training(tmp_path: Path):
    from wycifar.errors import ConfigError

    cfg = compose_train(tmp_path, ["callbacks=[default,ema]", "callbacks.ema.decay=1.5", "trainer.accelerator=cpu"])
    with pytest.raises(ConfigError, match=r"^callbacks.ema.decay=1.5 is not allowed; it must be a number > 0 and < 1"):
        train(cfg)


def test_bad_update_interval_is_refused():
    from wycifar.callbacks.ema import WarmupEMA
    from wycifar.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"callbacks.ema.update_every_n_steps=0 is not allowed; it must be a whole number >= 1"
    ):
        WarmupEMA(update_every_n_steps=0)
