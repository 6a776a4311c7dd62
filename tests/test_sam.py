"""module.sam_rho: sharpness-aware steps, checked by hand and in real fits."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_resume_matches_straight, compose_train
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from wycifar.builders import build_module, build_trainer
from wycifar.callbacks.epoch_table import hyperparameter_header
from wycifar.errors import ConfigError
from wycifar.sam import SAM, frozen_norm_statistics


def test_step_uses_the_gradient_at_the_perturbed_weights():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randn(16, 1)
    model = torch.nn.Linear(5, 1)
    start = [p.detach().clone() for p in model.parameters()]

    def loss_at(params: list[torch.Tensor]) -> torch.Tensor:
        return ((x @ params[0].T + params[1] - y) ** 2).mean()

    # by hand: g at w, the point w + rho * g / ||g||, the gradient there, one plain SGD step from w
    w = [p.clone().requires_grad_() for p in start]
    g = torch.autograd.grad(loss_at(w), w)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    uphill = [(wi + 0.1 * gi / norm).detach().requires_grad_() for wi, gi in zip(w, g, strict=True)]
    g_uphill = torch.autograd.grad(loss_at(uphill), uphill)
    expected = [s - 0.5 * gu for s, gu in zip(start, g_uphill, strict=True)]

    optimizer = SAM(torch.optim.SGD(model.parameters(), lr=0.5), rho=0.1)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(optimizer.perturbed)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert calls == [False, True]  # once at w, once at the perturbed weights
    assert loss.item() == pytest.approx(float(loss_at(start)))  # the loss reported is the one at w
    for got, want in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert not optimizer.perturbed


@pytest.mark.parametrize("rho", [0.0, -0.05])
def test_sam_used_directly_refuses_a_radius_that_is_not_positive(rho):
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=f"SAM needs rho > 0, got {rho}"):
        SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=rho)


def test_frozen_norm_statistics_normalise_with_the_batch_and_keep_the_running_ones():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    x = torch.randn(8, 3, 6, 6) * 3 + 1
    net(x)
    norm = net[1]
    before = (norm.running_mean.clone(), norm.running_var.clone(), int(norm.num_batches_tracked))
    with frozen_norm_statistics(net):
        y = net(x * 2)
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])
    assert int(norm.num_batches_tracked) == before[2] and norm.momentum == 0.1
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # still normalised with the batch's own statistics


class CountImages(Callback):
    """How many images the training metrics have taken in, after each batch."""

    def __init__(self):
        self.seen: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(int(pl_module.train_acc.weight))


def test_fit_with_sam_learns_and_counts_each_image_once(tmp_path: Path, tiny_data: Path):
    cfg = compose_train(
        tmp_path,
        [*TINY, f"data.root={tiny_data}", "experiment=fast", "module.sam_rho=0.05"]
        + ["trainer.max_epochs=6", "scheduler.points=[[0,0.02],[1,0.1],[6,0]]"],
    )
    module = build_module(cfg)
    steps: list[int] = []
    training_step = module.training_step

    def counted(batch, batch_idx):
        steps.append(batch_idx)
        return training_step(batch, batch_idx)

    module.training_step = counted
    counter = CountImages()
    trainer = build_trainer(cfg.trainer, [counter], [])
    trainer.fit(module, datamodule=instantiate(cfg.data))
    metrics = trainer.test(module, datamodule=instantiate(cfg.data), verbose=False)[0]
    assert isinstance(trainer.optimizers[0], SAM)
    assert trainer.global_step == 6 * 5  # 160 images in batches of 32
    assert len(steps) == 2 * trainer.global_step  # two gradients per step
    assert counter.seen[:5] == [32, 64, 96, 128, 160]  # the metrics see each image once per epoch
    norms = [m for m in module.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # the running statistics were updated once per step, at the weights being trained
    assert {int(m.num_batches_tracked) for m in norms} == {trainer.global_step}
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0)  # the schedule drove it
    assert metrics["test/acc"] > 0.5, metrics
    assert "Optimizer: SGD (momentum 0.9, nesterov True), sharpness-aware (SAM, rho 0.05)" in hyperparameter_header(
        trainer, module
    )


def test_resumed_sam_run_ends_where_an_uninterrupted_one_does(tmp_path: Path, tiny_data: Path):
    base = [*TINY, f"data.root={tiny_data}", "module.sam_rho=0.05", "optimizer.momentum=0.9"]
    last = assert_resume_matches_straight(tmp_path, base)
    assert torch.load(last, weights_only=True)["optimizer_states"][0]["state"]  # momentum buffers saved


@pytest.mark.parametrize(("rho", "shown"), [("-0.1", "-0.1"), ("true", "True")])
def test_bad_rho_is_a_one_line_error(tmp_path: Path, rho: str, shown: str):
    cfg = compose_train(tmp_path, [f"module.sam_rho={rho}"])
    with pytest.raises(ConfigError, match=rf"^module.sam_rho={shown} is not allowed; it must be >= 0"):
        build_module(cfg)


def test_a_gradient_scaler_is_refused_before_the_first_step(tmp_path: Path, tiny_data: Path):
    """fp16 on a GPU steps through a GradScaler, which calls the optimiser without a closure."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.plugins.precision import MixedPrecision

    cfg = compose_train(tmp_path, [*TINY, f"data.root={tiny_data}", "module.sam_rho=0.05"])
    module = build_module(cfg)
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = Trainer(accelerator="cpu", plugins=[scaled], max_epochs=1, logger=False, enable_checkpointing=False)
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ConfigError, match=r"^module.sam_rho=0.05 does not work with trainer.precision=16-mixed"):
        trainer.fit(module, datamodule=instantiate(cfg.data))
    assert all(torch.equal(weights[k], v) for k, v in module.state_dict().items())
