"""model.peer_heads: heads trained together on a shared trunk; the network alone afterwards."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
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
from wycifar.module import WyCifarModule
from wycifar.train import train

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}


def test_peers_share_the_trunk_and_leave_the_network_alone():
    torch.manual_seed(0)
    net = WyCifarNet(dropout=0.0, peer_heads=3).eval()
    plain_keys = set(WyCifarNet(dropout=0.0).state_dict())
    assert len(net.peers) == 2
    # each peer is a fresh copy of the last block and classifier, not a clone of the network's
    assert sum(p.numel() for p in net.peers.parameters()) == 2 * (35_264 + 35_584 + 1_290)
    assert not torch.equal(net.peers[0]["classifier"].weight, net.classifier.weight)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        heads = net.forward_peers(x)
        alone = net(x)
    assert len(heads) == 3
    assert torch.equal(heads[0], alone)
    assert not torch.allclose(heads[1], heads[0]) and not torch.allclose(heads[2], heads[1])
    assert net.drop_peers() == 2
    assert set(net.state_dict()) == plain_keys
    assert sum(p.numel() for p in net.parameters()) == 95_653
    with torch.no_grad():
        assert torch.equal(net(x), alone)


def test_trunk_takes_the_mean_of_the_heads_gradients():
    torch.manual_seed(0)
    net = WyCifarNet(dropout=0.0, peer_heads=3, base_width=8)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    trunk = net.blocks[0].units[0].conv1.layers[-1].weight
    head = net.classifier.weight

    def grads(loss_of_heads, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        net.zero_grad()
        loss_of_heads(net.forward_peers(x, scale)).backward()
        return trunk.grad.clone(), torch.zeros_like(head) if head.grad is None else head.grad.clone()

    each = [grads(lambda heads, i=i: F.cross_entropy(heads[i], y), 1.0) for i in range(3)]
    trunk_grad, head_grad = grads(lambda heads: sum(F.cross_entropy(z, y) for z in heads), 1 / 3)
    assert torch.allclose(trunk_grad, sum(g for g, _ in each) / 3, atol=1e-6)
    # the heads keep their own full gradient (the network's head: its own loss only)
    assert torch.allclose(head_grad, each[0][1], atol=1e-6)


def test_peer_loss_is_cross_entropy_plus_distillation_from_the_others():
    module = WyCifarModule(
        net={"base_width": 8, "peer_heads": 2},
        optimizer=SGD,
        label_smoothing=0.1,
        peer_weight=0.5,
        peer_temperature=3.0,
    )
    torch.manual_seed(0)
    a, b = torch.randn(6, 10, requires_grad=True), torch.randn(6, 10, requires_grad=True)
    y = torch.randint(0, 10, (6,))

    def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        p, q = (teacher / 3).softmax(1), (student / 3).softmax(1)
        return (p * (p.log() - q.log())).sum(1).mean()

    expected = (
        F.cross_entropy(a, y, label_smoothing=0.1)
        + F.cross_entropy(b, y, label_smoothing=0.1)
        + 0.5 * 9 * (kl(a, b.detach()) + kl(b, a.detach()))
    )
    loss = module.peer_loss([a, b], y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the teacher is not trained through: each head's gradient comes from its own terms only
    loss.backward()
    grad_a = a.grad.clone()
    a.grad = None
    (F.cross_entropy(a, y, label_smoothing=0.1) + 0.5 * 9 * kl(a, b.detach())).backward()
    assert torch.allclose(grad_a, a.grad, atol=1e-6)
    # heads that agree teach each other nothing
    same = module.peer_loss([a.detach(), a.detach().clone()], y)
    assert same.item() == pytest.approx(2 * F.cross_entropy(a.detach(), y, label_smoothing=0.1).item(), rel=1e-5)


def test_peer_run_tests_exports_and_ships_the_network_alone(tmp_path: Path, tiny_data: Path):
    overrides = [*TINY, f"data.root={tiny_data}", "model.peer_heads=3", "trainer.max_epochs=3"]
    metrics, objects = train(compose_train(tmp_path, overrides))
    plain = WyCifarNet(base_width=8)
    plain_params = sum(p.numel() for p in plain.parameters())
    module = objects["module"]
    assert len(module.net.peers) == 0 and module.hparams.net["peer_heads"] == 1
    assert sum(p.numel() for p in module.net.parameters()) == plain_params
    # the checkpoint keeps the trained peers (a fit can resume from it)
    best = objects["trainer"].checkpoint_callback.best_model_path
    state = read_checkpoint(best)["state_dict"]
    assert any(k.startswith("net.peers.1.block.") for k in state)
    # the summary counts the network, and says what trained beside it
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert f"Total params: {plain_params:,}" in summary
    assert "Training-time peers: 2 (model.peer_heads=3)" in summary

    # the exported ONNX model is the network alone and gives the tested network's logits
    x, expected = assert_onnx_is_the_network(tmp_path / "run", module.net, plain_params)

    # evaluating the checkpoint tests the network and gets the run's accuracy; prediction loads it alone
    eval_metrics = evaluate_checkpoint(tmp_path / "eval", best, tiny_data)
    assert eval_metrics["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert len(load_module(best).net.peers) == 0

    # the shipped checkpoint is a plain peer_heads=1 checkpoint with the same outputs
    raw = assert_shipped_is_the_network(best, tmp_path / "shipped.ckpt", x, expected, set(plain.state_dict()))
    assert raw["hyper_parameters"]["net"]["peer_heads"] == 1


def test_peer_resume_matches_straight(tmp_path: Path, tiny_data: Path):
    first = assert_resume_matches_straight(tmp_path, [*TINY, f"data.root={tiny_data}", "model.peer_heads=2"])
    assert any(k.startswith("net.peers.0.") for k in read_checkpoint(first)["state_dict"])


@pytest.mark.parametrize(
    "net, module, message",
    [
        ({"peer_heads": 0}, {}, "model.peer_heads=0 is not allowed; it must be a whole number >= 1"),
        (
            {"peer_heads": 2},
            {"peer_temperature": 0},
            "module.peer_temperature=0 is not allowed; it must be a number > 0",
        ),
        ({"peer_heads": 2}, {"peer_weight": -1.0}, "module.peer_weight=-1.0 is not allowed; it must be a number >= 0"),
        ({"peer_heads": 2}, {"sam_rho": 0.05}, "module.sam_rho=0.05 does not work with model.peer_heads=2"),
    ],
)
def test_bad_peer_settings_are_refused(net: dict, module: dict, message: str):
    with pytest.raises(ConfigError) as error:
        WyCifarModule(net={"base_width": 8, **net}, optimizer=SGD, **module)
    assert message in str(error.value)
