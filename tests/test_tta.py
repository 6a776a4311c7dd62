"""Test-time augmentation (module.tta, eval's tta): the views and what a run reports."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train, evaluate_checkpoint, make_image_folder

from wycifar.errors import ConfigError
from wycifar.training.run import train
from wycifar.training.tta import translate, tta_probs, views


def test_translate_moves_the_image_and_mirrors_into_the_uncovered_border():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    down_right = translate(x, 1, 1)
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])  # row -1 mirrors row 1
    up_left = translate(x, -1, -1)
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])


@pytest.mark.parametrize(("mode", "count"), [("none", 1), ("flip", 2), ("flip_translate", 6)])
def test_each_mode_has_its_views_and_weights_that_sum_to_one(mode, count):
    x = torch.randn(2, 3, 8, 8)
    pairs = views(x, mode)
    assert len(pairs) == count
    assert sum(weight for _, weight in pairs) == pytest.approx(1.0)
    assert all(view.shape == x.shape for view, _ in pairs)


def test_tta_probs_average_the_views():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    x = torch.randn(5, 3, 8, 8)
    single = net(x).softmax(1)
    assert torch.allclose(tta_probs(net, x, single, "none"), single)
    flip = tta_probs(net, x, single, "flip")
    assert torch.allclose(flip, (single + net(x.flip(3)).softmax(1)) / 2)
    assert torch.allclose(tta_probs(net, x, single, "flip_translate").sum(1), torch.ones(5))
    # the caller's probabilities stand for the image itself: only the other views run the network
    calls = []
    tta_probs(lambda view: calls.append(view) or net(view), x, single, "flip_translate")
    assert len(calls) == 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tta")
    data = make_image_folder(root / "data")
    quiet = ["trainer.max_epochs=1", "callbacks=[model_checkpoint]", "logger=none", "module.tta=none"]
    metrics, _ = train(compose_train(root, [*TINY, f"data.root={data}", *quiet]))
    assert "test/acc_tta" not in metrics
    return root / "run" / "checkpoints" / "last.ckpt", data


def test_eval_reports_the_views_it_is_asked_for(tmp_path: Path, trained):
    """The run trained without TTA; its evaluation asks for six views."""
    ckpt, data = trained
    metrics = evaluate_checkpoint(tmp_path, ckpt, data, ["tta=flip_translate", "callbacks=none", "logger=none"])
    assert 0 <= metrics["test/acc_tta"] <= 1


def test_an_unknown_mode_is_refused(tmp_path: Path, trained):
    ckpt, data = trained
    with pytest.raises(ConfigError, match="tta='mirror' is not allowed; choose one of: none, flip, flip_translate"):
        evaluate_checkpoint(tmp_path, ckpt, data, ["tta=mirror"])
    with pytest.raises(ConfigError, match="module.tta='mirror' is not allowed"):
        train(compose_train(tmp_path, [*TINY, f"data.root={data}", "module.tta=mirror"]))
