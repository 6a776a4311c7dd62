"""callbacks=[default,precise_bn]: the last epoch's checkpoint carries BatchNorm statistics of the
plain training images under its own weights; training itself is unchanged."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train

from wycifar.checkpoints import load_module
from wycifar.data.loader import normalize_uint8
from wycifar.data.sources import load_split
from wycifar.errors import ConfigError
from wycifar.eval import evaluate
from wycifar.train import train

# the 160 tiny training images in two batches: statistics averaged over shuffled batches are
# within 4% of the whole set's; over batches in folder order (by class) they were 37% off
RUN = [*TINY, "trainer.precision=32-true", "data.eval_batch_size=80", "test=false"]


def plain_statistics(ckpt: Path, data_root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each BatchNorm's input mean and unbiased variance over all the un-augmented training images."""
    module = load_module(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["wycifar"]
    x = normalize_uint8(load_split(data_root, "train").images, saved["mean"], saved["std"])
    inputs = {}
    hooks = [
        bn.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0].detach()))
        for name, bn in module.net.named_modules()
        if isinstance(bn, torch.nn.BatchNorm2d)
    ]
    module.net.train()
    with torch.no_grad():
        module.net(x)
    for hook in hooks:
        hook.remove()
    return {name: (t.mean(dim=(0, 2, 3)), t.var(dim=(0, 2, 3), unbiased=True)) for name, t in inputs.items()}


def matches(state: dict, expected: dict) -> bool:
    """Means within 10% of a standard deviation, variances within 10% (the recomputed statistics
    are within 4% here; a fit's running averages of augmented batches are off by up to 18x)."""
    for name, (mean, var) in expected.items():
        mean_off = (state[f"net.{name}.running_mean"] - mean).abs() / var.sqrt()
        var_off = (state[f"net.{name}.running_var"] / var - 1).abs()
        if mean_off.max() > 0.1 or var_off.max() > 0.1:
            return False
    return True


def saved_state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_last_checkpoint_holds_plain_training_statistics_and_the_same_weights(tmp_path: Path, tiny_data: Path):
    train(compose_train(tmp_path / "precise", [*RUN, f"data.root={tiny_data}", "callbacks=[default,precise_bn]"]))
    train(compose_train(tmp_path / "plain", [*RUN, f"data.root={tiny_data}"]))
    precise = tmp_path / "precise" / "run" / "checkpoints" / "last.ckpt"
    usual = tmp_path / "plain" / "run" / "checkpoints" / "last.ckpt"

    expected = plain_statistics(precise, tiny_data)
    assert len(expected) >= 10
    assert matches(saved_state(precise), expected)
    # without the callback the running averages of augmented batches are something else
    expected_usual = plain_statistics(usual, tiny_data)
    assert not matches(saved_state(usual), expected_usual)
    # `wycifar.eval precise_bn=true` recomputes them for such a checkpoint before testing
    eval_cfg = compose_train(
        tmp_path / "eval",
        [f"ckpt_path={usual}", f"data.root={tiny_data}", "trainer.accelerator=cpu", "precise_bn=true"],
        config_name="eval",
    )
    _, objects = evaluate(eval_cfg)
    assert matches(objects["module"].state_dict(), expected_usual)

    a, b = saved_state(precise), saved_state(usual)
    assert a.keys() == b.keys()
    for key in a:
        # num_batches_tracked counts the recomputation's batches; BatchNorm reads it only without a momentum
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(a[key], b[key]), key


def test_weight_averaging_is_refused(tmp_path: Path, tiny_data: Path):
    cfg = compose_train(tmp_path, [*RUN, f"data.root={tiny_data}", "callbacks=[default,ema,precise_bn]"])
    with pytest.raises(ConfigError, match=r"callbacks.precise_bn does not combine with weight averaging"):
        train(cfg)


def test_bad_epoch_count_is_refused():
    from wycifar.callbacks.precise_bn import PreciseBN

    with pytest.raises(ConfigError, match=r"callbacks.precise_bn.last_epochs=0 is not allowed"):
        PreciseBN(last_epochs=0)
