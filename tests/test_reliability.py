"""Bad input, interruptions, divergence, reproducibility: each case as a user meets it."""

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, assert_one_line_error, compose_train, link_real_subset, run_main
from lightning.pytorch.callbacks import Callback

from wycifar.callbacks.epoch_table import EpochTable
from wycifar.errors import ConfigError, DivergenceError, InterruptedRun
from wycifar.train import main as train_main
from wycifar.training.run import train


def cli(*args):
    """`python -m wycifar.train ARGS`, its main() run in this process."""
    return run_main(train_main, *args)


BAD_SETTINGS = [
    ("model.norm=xyz", "model.norm='xyz' is not allowed; choose one of: bn, gn, ln"),
    ("model.conv=depthwise_seperable", "model.conv='depthwise_seperable' is not allowed"),
    ("data.source=imagenet", "data.source='imagenet' is not allowed"),
    ("data.batch_size=0", "data.batch_size=0 is not allowed"),
    ("trainer.max_epochs=-3", "trainer.max_epochs=-3 is not allowed"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is not allowed"),
    ("model.dropout=1.0", "model.dropout=1.0 is not allowed"),
    ("data.batch_size=abc", "data.batch_size='abc' is not allowed"),
    ("trainer.precision=17", "trainer:"),
    ("module.compile_mode=fastest", "module.compile_mode='fastest' is not allowed; choose one of: default"),
    ("data.augment.ssr_border=wrap", "data.augment.ssr_border='wrap' is not allowed"),
    ("scheduler.momentum_points=[[0,0.9],[4,1.5]]", "scheduler.momentum_points=[[0, 0.9], [4, 1.5]] is not allowed"),
]


@pytest.mark.parametrize("override,fragment", BAD_SETTINGS)
def test_config_errors_are_one_line_before_training(tmp_path, tiny_data, override, fragment):
    """The command line's own path (its main(), in this process): one line, exit status 2."""
    result = cli(override, f"data.root={tiny_data}", f"paths.log_dir={tmp_path}", "trainer.accelerator=cpu")
    assert_one_line_error(result, fragment)
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_unknown_group_option_names_the_choices(tmp_path):
    result = cli("model=xyz", f"paths.log_dir={tmp_path}")
    assert_one_line_error(result, "model=xyz is not allowed; choose one of: dws_dilated, dws_strided, vanilla")
    assert not list(tmp_path.iterdir())


def test_a_misspelt_key_names_the_closest_and_leaves_nothing(tmp_path):
    result = cli("model.nrom=gn", f"paths.log_dir={tmp_path}")
    assert_one_line_error(result, "model.nrom is not a setting of train; did you mean model.norm")
    assert "+model.nrom" not in result.stderr and not list(tmp_path.iterdir())


def test_missing_data_root_says_where_it_looked(tmp_path):
    result = cli(
        f"data.root={tmp_path}/nowhere", "data.source=folder", f"paths.log_dir={tmp_path}", "trainer.accelerator=cpu"
    )
    assert_one_line_error(result, f"{tmp_path}/nowhere")
    offline = compose_train(tmp_path, [f"data.root={tmp_path}/empty", "data.download=false", "trainer.accelerator=cpu"])
    with pytest.raises(ConfigError, match="CIFAR-10 not found under"):
        train(offline)


def test_unwritable_output_folder_fails_before_anything(tmp_path, tiny_data):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = cli(f"hydra.run.dir={blocker}/run", f"data.root={tiny_data}")
    assert_one_line_error(result, "is not writable")


# A small LR for the first epoch, then the peak: the second epoch diverges, the first was good.
@pytest.mark.parametrize(
    "peak_lr,points,loss",
    [
        ("1e30", "[[0,1e-32],[1,1e-32],[1,1],[3,1]]", r"(nan|inf)"),
        ("30", "[[0,1e-3],[1,1e-3],[1,1],[3,1]]", r"\d+(\.\d+)?(e\+\d+)?"),
    ],
    ids=["non-finite", "finite-explosion"],
)
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, peak_lr, points, loss):
    cfg = compose_train(
        tmp_path,
        [
            *TINY,
            f"data.root={tiny_data}",
            "trainer.max_epochs=3",
            f"optimizer.lr={peak_lr}",
            f"scheduler.points={points}",
        ],
    )
    with pytest.raises(
        DivergenceError, match=rf"training diverged: the training loss is {loss} .* at epoch 2, step \d+ \(LR"
    ):
        train(cfg)
    run = tmp_path / "run"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 0  # the first epoch's weights: the second never reached a checkpoint
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not list(run.glob("model_*.onnx")) and not (run / "report.md").exists()


def test_an_exploding_run_exits_3_in_one_line(tmp_path, tiny_data):
    """optimizer.lr=8 trains at a finite loss of 1e10 and more: it stops like a NaN run."""
    result = cli("optimizer.lr=8", f"data.root={tiny_data}", f"hydra.run.dir={tmp_path}/run", *TINY)
    last = assert_one_line_error(result, "training diverged: the training loss is", code=3)
    assert "at epoch 2, step 10 (LR" in last and "lower optimizer.lr" in last
    assert not list((tmp_path / "run").glob("model_*.onnx"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "diverged"


RECIPES = ["default", "reference", "reference_readme", "speedrun"]


class StopAfter(Callback):
    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = trainer.current_epoch + 1 >= self.epochs


@pytest.mark.slow  # 15-25 s a recipe on 2 cores; the next test checks every kept run's whole table
@pytest.mark.parametrize("recipe", RECIPES)
def test_the_divergence_rule_never_stops_a_shipped_recipe(tmp_path: Path, real_data: Path, recipe: str):
    """Each recipe's first epochs on real images, at its width, batch size and schedule (stretched
    over all its epochs as ever), through the end of its warm-up: the rule leaves them alone."""
    data = link_real_subset(tmp_path / "data", train_per_class=52, test_per_class=2)
    cfg = compose_train(
        tmp_path,
        [
            *([] if recipe == "default" else [f"experiment={recipe}"]),
            f"data.root={data}",
            "trainer.accelerator=cpu",
            "trainer.limit_val_batches=0",
            "test=false",
            "logger=none",
            "callbacks=divergence",
        ],
    )
    epochs = 5  # every recipe peaks by its fourth epoch (the reference's schedule at 4 of 24)
    metrics, objects = train(cfg, extra_callbacks=[StopAfter(epochs)])
    (rule,) = [c for c in objects["trainer"].callbacks if type(c).__name__ == "DivergenceStop"]
    assert objects["trainer"].current_epoch == epochs
    assert metrics["train/loss"] < rule.threshold / 10


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_shipped_run_stayed_far_below_the_divergence_rule(recipe: str):
    """The quantity the rule reads, the epoch's mean training loss, in every epoch of every run
    kept under results/ (their full 24 or 30 epochs)."""
    from wycifar.callbacks.divergence import DivergenceStop

    threshold = compose_train(Path("/nonexistent")).callbacks.divergence.threshold
    assert threshold == DivergenceStop().threshold
    tables = sorted((ROOT / "results" / recipe).glob("**/seed*.csv"))
    assert tables
    for table in tables:
        losses = [float(row["TrainLoss"]) for row in csv.DictReader(table.open())]
        assert len(losses) >= 24 and max(losses) < threshold / 50, table


class SignalAt(Callback):
    def __init__(self, signum, epoch, batch):
        self.signum, self.epoch, self.batch = signum, epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_leaves_resumable_checkpoint_and_resume_matches(tmp_path, tiny_data, signum):
    overrides = [
        *TINY,
        f"data.root={tiny_data}",
        "trainer.max_epochs=2",
        "test=false",
        "logger=none",
        "data.augment.crop_padding=4",
        "scheduler.interval=step",
    ]
    straight_cfg = compose_train(tmp_path / "straight", overrides)
    straight, straight_objects = train(straight_cfg)

    cfg = compose_train(tmp_path / "cut", overrides)
    sigint_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(InterruptedRun, match=f"stopped by {signal.Signals(signum).name} at epoch 2, batch 3"):
        train(cfg, extra_callbacks=[SignalAt(signum, epoch=1, batch=2)])
    last = tmp_path / "cut" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 5 + 3
    assert signal.getsignal(signal.SIGINT) is sigint_before  # Ctrl-C handling is given back

    carried = torch.load(last, weights_only=True)["fit_s"]
    resumed_cfg = compose_train(tmp_path / "cut", [*overrides, f"ckpt_path={last}"])
    started = time.perf_counter()
    resumed, resumed_objects = train(resumed_cfg)
    # the run's fit time counts both parts
    assert carried < resumed["time/fit_s"] <= carried + time.perf_counter() - started
    # the resumed epoch's progress bar is named and counts to the epoch's length
    bar = resumed_objects["trainer"].progress_bar_callback.train_progress_bar
    assert (bar.desc, bar.total, bar.n) == ("Epoch 2/2: ", 5, 5)
    # the epoch cut in two is counted whole: its training loss and accuracy are the straight run's
    tables = [
        next(c for c in o["trainer"].callbacks if isinstance(c, EpochTable))
        for o in (straight_objects, resumed_objects)
    ]
    for column in ("TrainLoss", "TrainAcc"):
        assert [row[column] for row in tables[1].rows] == pytest.approx(
            [row[column] for row in tables[0].rows], rel=1e-6
        )
    a = torch.load(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == 10
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_same_seed_twice_gives_identical_metrics(tmp_path, tiny_data):
    runs = []
    for name in ("one", "two"):
        cfg = compose_train(
            tmp_path / name,
            [
                *TINY,
                f"data.root={tiny_data}",
                "trainer.max_epochs=2",
                "logger=none",
                "data.augment.crop_padding=4",
                "data.augment.cutout_p=0.5",
                "seed=7",
            ],
        )
        metrics, _ = train(cfg)
        runs.append({k: v for k, v in metrics.items() if not k.startswith("time/")})
    assert runs[0] == runs[1]
