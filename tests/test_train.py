"""Real Lightning fits from the real composed config."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_resume_matches_straight, compose_train, link_real_subset, run_main

from wycifar.errors import ConfigError
from wycifar.train import main as train_main
from wycifar.training.builders import map_gpus
from wycifar.training.run import train


def test_tiny_fit_loss_falls_and_writes_run_folder(tmp_path: Path, tiny_data: Path):
    cfg = compose_train(
        tmp_path,
        [
            *TINY,
            f"data.root={tiny_data}",
            "trainer.max_epochs=10",
            "scheduler=onecycle",
            "optimizer.lr=0.05",
            "model.dropout=0",
        ],
    )
    metrics, objects = train(cfg)
    assert metrics["train/loss"] < 2.0, metrics  # started near ln(10) = 2.30
    assert metrics["test/acc"] > 0.5, metrics
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_no_epoch_is_chosen_on_the_test_split(tmp_path: Path, tiny_data: Path):
    """data.val_size=0 (validation is the test split): the last epoch's model is tested and no
    checkpoint is kept for its score. With a held-out split, the best epoch on it is tested."""
    quick = [*TINY, f"data.root={tiny_data}", "trainer.max_epochs=3", "logger=none", "module.tta=none"]
    metrics, objects = train(compose_train(tmp_path / "test_split", quick))
    run = tmp_path / "test_split" / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    last_epoch = (run / "epochs.csv").read_text().splitlines()[-1].split(",")
    assert metrics["test/acc"] == pytest.approx(float(last_epoch[-1]) / 100, abs=1e-6)

    metrics, objects = train(compose_train(tmp_path / "held_out", [*quick, "data.val_size=40"]))
    best = Path(objects["trainer"].checkpoint_callback.best_model_path)
    assert best.parent == tmp_path / "held_out" / "run" / "checkpoints" and best.name.startswith("best-epoch")
    tested = objects["module"].state_dict()
    saved = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(tested[k], v) for k, v in saved.items())


def test_loss_falls_step_by_step(tmp_path: Path, tiny_data: Path):
    """Loss of the first epoch against the last, logged by the trainer per epoch."""
    from lightning.pytorch.callbacks import Callback

    class Record(Callback):
        def __init__(self):
            self.losses = []

        def on_train_epoch_end(self, trainer, pl_module):
            self.losses.append(float(trainer.callback_metrics["train/loss"]))

    cfg = compose_train(
        tmp_path,
        [
            *TINY,
            f"data.root={tiny_data}",
            "trainer.max_epochs=3",
            "logger=none",
            "scheduler=none",
            "optimizer.lr=0.05",
            "test=false",
        ],
    )
    from hydra.utils import instantiate

    from wycifar.training.builders import build_module, build_trainer

    record = Record()
    trainer = build_trainer(cfg.trainer, [record], [])
    trainer.fit(build_module(cfg), datamodule=instantiate(cfg.data))
    assert len(record.losses) == 3
    assert record.losses[-1] < record.losses[0] - 0.3, record.losses


@pytest.mark.slow  # 4,000 real images through the full network: about 35 s on 2 cores
def test_one_real_epoch_beats_chance(tmp_path: Path, real_data: Path):
    subset = link_real_subset(tmp_path / "cifar", train_per_class=400, test_per_class=100)
    cfg = compose_train(
        tmp_path,
        [
            "experiment=reference",
            f"data.root={subset}",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "data.batch_size=32",
            "optimizer.lr=0.05",
            "scheduler.points=[[0,1],[1,1]]",
            "data.augment.ssr_p=0",
            "data.augment.cutout_p=0",
        ],
    )
    metrics, _ = train(cfg)
    assert metrics["test/acc"] > 0.25, metrics  # chance is 0.10; this gives about 0.39


def test_resume_continues_where_it_stopped(tmp_path: Path, tiny_data: Path):
    # the interrupted-and-resumed run ends exactly where an uninterrupted one does
    first = assert_resume_matches_straight(tmp_path, [*TINY, f"data.root={tiny_data}"])
    ckpt = torch.load(first, weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 5  # 160 images in batches of 32
    resumed = torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 10


def test_gpus_maps_to_accelerator_and_devices(monkeypatch):
    assert map_gpus({"gpus": None, "accelerator": "auto"}) == {"accelerator": "auto"}
    assert map_gpus({"gpus": 0})["accelerator"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert map_gpus({"gpus": 2, "accelerator": "auto", "devices": 1}) == {"accelerator": "gpu", "devices": 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpus_without_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="trainer.gpus=1 asks for a GPU"):
        map_gpus({"gpus": 1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cli_gpus_flag_fails_cleanly_on_cpu(tmp_path: Path, tiny_data: Path):
    result = run_main(
        train_main,
        "model=dws_dilated",
        "trainer.gpus=1",
        f"data.root={tiny_data}",
        f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path}/cache",
    )
    assert result.returncode == 2, result.stderr
    assert "deprecated" not in result.stdout + result.stderr  # the design's own spelling, taken as it is
    assert not (tmp_path / "train").exists()  # refused before training: nothing left
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trainer.gpus=1 asks for a GPU"), result.stderr
    assert "Traceback" not in result.stderr
