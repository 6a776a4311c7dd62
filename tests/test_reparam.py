"""model.reparam=true: branches while training, the plain network for test, export and shipping."""

from pathlib import Path

import pytest
import torch
from conftest import (
    TINY,
    assert_onnx_is_the_network,
    assert_resume_matches_straight,
    assert_shipped_is_the_network,
    compose_train,
    evaluate_checkpoint,
)

from wycifar.checkpoints import load_module, read_checkpoint
from wycifar.errors import ConfigError
from wycifar.models import WyCifarNet
from wycifar.models.reparam import BranchedDepthwise
from wycifar.train import train


def trained_looking(net: WyCifarNet) -> WyCifarNet:
    """Running statistics and norm affines far from their initial values, as after training."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, 32, 32) * 2 + 0.5)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_()
    return net.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_network_is_the_plain_network(channels_last: bool):
    torch.manual_seed(0)
    net = WyCifarNet(dropout=0.0, reparam=True)
    plain = WyCifarNet(dropout=0.0)
    # every 3x3 depthwise conv that keeps the resolution branches; the two dilated ones do not
    assert sum(isinstance(m, BranchedDepthwise) for m in net.modules()) == 10
    assert sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in plain.parameters()) == 95_653
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    trained_looking(net)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        assert net.fold_branches() == 10
        after = net(x)
    assert not net.reparam
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    assert sum(p.numel() for p in net.parameters()) == 95_653
    # the folded weights load, key for key, into a network built without branches
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), before, atol=1e-5)


def test_reparam_run_tests_exports_and_ships_the_plain_network(tmp_path: Path, tiny_data: Path):
    overrides = [*TINY, f"data.root={tiny_data}", "model.reparam=true", "trainer.max_epochs=3"]
    metrics, objects = train(compose_train(tmp_path, overrides))
    plain_params = sum(p.numel() for p in WyCifarNet(base_width=8).parameters())
    module = objects["module"]
    assert not any(isinstance(m, BranchedDepthwise) for m in module.net.modules())
    assert sum(p.numel() for p in module.net.parameters()) == plain_params
    # the checkpoint keeps the branches (a fit can resume from it)
    best = objects["trainer"].checkpoint_callback.best_model_path
    assert any(".norm_identity." in k for k in read_checkpoint(best)["state_dict"])

    # the exported ONNX model is the plain network and gives the tested network's logits
    x, expected = assert_onnx_is_the_network(tmp_path / "run", module.net, plain_params)

    # evaluating the checkpoint tests the folded network and gets the run's accuracy
    eval_metrics = evaluate_checkpoint(tmp_path / "eval", best, tiny_data)
    assert eval_metrics["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    # so does loading it for prediction
    assert not any(isinstance(m, BranchedDepthwise) for m in load_module(best).net.modules())

    # the shipped checkpoint is a plain model.reparam=false checkpoint with the same outputs
    plain_keys = set(WyCifarNet(base_width=8).state_dict())
    raw = assert_shipped_is_the_network(best, tmp_path / "shipped.ckpt", x, expected, plain_keys)
    assert raw["hyper_parameters"]["net"]["reparam"] is False


def test_reparam_resume_matches_straight(tmp_path: Path, tiny_data: Path):
    first = assert_resume_matches_straight(tmp_path, [*TINY, f"data.root={tiny_data}", "model.reparam=true"])
    assert any(".norm_identity." in k for k in read_checkpoint(first)["state_dict"])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"norm": "gn"}, "model.reparam=true needs model.norm=bn and model.conv=depthwise_separable (got norm=gn"),
        ({"conv": "vanilla"}, "(got norm=bn, conv=vanilla)"),
        ({"reparam": "yes"}, "model.reparam='yes' is not allowed; it must be true or false"),
    ],
)
def test_bad_reparam_settings_are_refused(settings: dict, message: str):
    with pytest.raises(ConfigError, match=None) as error:
        WyCifarNet(**{"reparam": True, **settings})
    assert message in str(error.value)
