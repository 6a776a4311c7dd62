"""module.self_distill: each training image learns its label blended with the network's own
prediction for it in the previous epoch (PS-KD), checked step by step in real fits."""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_resume_matches_straight, compose_train
from hydra.utils import instantiate
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback

from wycifar.builders import build_module, build_trainer
from wycifar.callbacks.epoch_table import hyperparameter_header
from wycifar.checkpoints import read_checkpoint, slim_checkpoint
from wycifar.errors import ConfigError
from wycifar.module import WyCifarModule

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}


class RecordSteps(Callback):
    """For the first batch of each epoch: the network's logits on it (a copy of the network,
    same weights and mode), the stored predictions for its images before the step, the loss the
    step returned and the stored predictions after it."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            x, y, index = batch
            with torch.no_grad():
                logits = copy.deepcopy(pl_module.net)(x)
            before = pl_module.past_probs[index].clone()
            self.steps.append(
                {"epoch": trainer.current_epoch, "y": y, "index": index, "logits": logits, "before": before}
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            step = self.steps[-1]
            step["loss"] = outputs["loss"].detach()
            step["after"] = pl_module.past_probs[step["index"]].clone()


def test_targets_blend_the_label_with_last_epochs_prediction(tmp_path: Path, tiny_data: Path):
    cfg = compose_train(
        tmp_path,
        [*TINY, f"data.root={tiny_data}", "trainer.max_epochs=4", "module.self_distill=0.8"]
        # fp32 on every CPU: the default is bf16-mixed where the CPU has AVX512-BF16, and the loss
        # is compared with one recomputed here in fp32 to 1e-5
        + ["module.label_smoothing=0.1", "model.dropout=0.0", "trainer.precision=32-true"],
    )
    module = build_module(cfg)
    recorder = RecordSteps()
    trainer = build_trainer(cfg.trainer, [recorder], [])
    datamodule = instantiate(cfg.data)
    trainer.fit(module, datamodule=datamodule)

    assert module.past_probs.shape == (len(datamodule.train_data), 10)
    assert [s["epoch"] for s in recorder.steps] == [0, 1, 2, 3]
    for step in recorder.steps:
        weight = 0.8 * step["epoch"] / 4  # 0 in the first epoch, rising linearly
        label = F.one_hot(step["y"], 10).float()
        target = (1 - weight) * label + weight * step["before"]
        expected = F.cross_entropy(step["logits"], target, label_smoothing=0.1)
        assert step["loss"].item() == pytest.approx(expected.item(), rel=1e-5), step["epoch"]
        # this step's predictions are what the next epoch learns from
        assert torch.allclose(step["after"], step["logits"].softmax(1), atol=1e-6)
    # from the second epoch on, what was stored is a prediction (a distribution), not the zeros it started as
    later = recorder.steps[1]["before"]
    assert torch.allclose(later.sum(1), torch.ones(len(later)), atol=1e-5)
    # and it makes a difference: the loss is not the plain cross-entropy
    plain = F.cross_entropy(recorder.steps[3]["logits"], recorder.steps[3]["y"], label_smoothing=0.1)
    assert abs(recorder.steps[3]["loss"].item() - plain.item()) > 1e-3
    assert "Label Smoothing: 0.1, self-distillation (PS-KD) up to 0.8" in hyperparameter_header(trainer, module)


def test_resume_restores_the_stored_predictions_and_shipping_drops_them(tmp_path: Path, tiny_data: Path):
    # epoch 2 learns from epoch 1's predictions: the resumed run must have them to match
    first = assert_resume_matches_straight(tmp_path, [*TINY, f"data.root={tiny_data}", "module.self_distill=0.8"])
    stored = read_checkpoint(first)["self_distill_probs"]
    assert stored.shape == (160, 10)
    assert torch.allclose(stored.sum(1), torch.ones(160), atol=1e-5)  # every image seen once in the epoch
    shipped = read_checkpoint(slim_checkpoint(first, tmp_path / "shipped.ckpt"))
    assert "self_distill_probs" not in shipped
    assert all(k.startswith("net.") for k in shipped["state_dict"])


def test_resuming_a_run_trained_without_it_is_refused(tmp_path: Path, tiny_data: Path):
    from wycifar.train import train

    base = [*TINY, f"data.root={tiny_data}", "test=false"]
    train(compose_train(tmp_path / "a", [*base, "trainer.max_epochs=1"]))
    last = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    resumed = compose_train(tmp_path / "b", [*base, f"ckpt_path={last}", "module.self_distill=0.8"])
    with pytest.raises(
        ConfigError, match=r"^module.self_distill=0.8 cannot resume a checkpoint without its stored predictions"
    ):
        train(resumed)


def test_a_loader_without_image_indices_is_refused(tmp_path: Path):
    module = WyCifarModule(net={"base_width": 8}, optimizer=SGD, self_distill=0.5)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match=r"^module.self_distill needs each training image's index"):
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"self_distill": 1.5}, "module.self_distill=1.5 is not allowed; it must be a number >= 0 and <= 1"),
        ({"self_distill": -0.1}, "module.self_distill=-0.1 is not allowed; it must be a number >= 0 and <= 1"),
        ({"self_distill": True}, "module.self_distill=True is not allowed"),
        ({"self_distill": 0.8, "sam_rho": 0.05}, "module.self_distill=0.8 does not work with module.sam_rho=0.05"),
        (
            {"self_distill": 0.8, "net": {"base_width": 8, "peer_heads": 2}},
            "module.self_distill=0.8 does not work with model.peer_heads=2",
        ),
    ],
)
def test_bad_self_distill_settings_are_refused(settings: dict, message: str):
    with pytest.raises(ConfigError) as error:
        WyCifarModule(**{"net": {"base_width": 8}, "optimizer": SGD, **settings})
    assert message in str(error.value)


@pytest.mark.slow
def test_under_ddp_every_ranks_predictions_are_kept(tmp_path: Path, tiny_data: Path):
    """Each rank trains on its own shard, and the next epoch shards differently: rank 0's
    checkpoint must hold the predictions of every image, from both ranks."""
    from wycifar.train import train

    overrides = [*TINY, "trainer=ddp_sim", f"data.root={tiny_data}", "module.self_distill=0.8", "test=false"]
    train(compose_train(tmp_path, [*overrides, "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"]))
    stored = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["self_distill_probs"]
    assert stored.shape == (160, 10)
    assert torch.allclose(stored.sum(1), torch.ones(160), atol=1e-5)
