"""Every run counted and every figure meaning what it says: records of runs however they end,
`ckpt_path=last` resuming the run meant in its own folder, partial tests that say so, one model
file per run, no checkpoint of non-finite weights, ranks of one run in one folder."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, TINY_REPORTS, assert_one_line_error, run_main, start_command
from lightning.pytorch.callbacks import Callback

from wycifar.data.cifar10 import evaluation_order
from wycifar.summary import main as summary_main
from wycifar.train import main as train_main

QUICK_OPTIONS = [
    "trainer.max_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
    "++callbacks.gradcam=null",
    "logger=none",
]
QUICK = [*TINY, *QUICK_OPTIONS]


def common(tmp_path: Path, data: Path) -> list[str]:
    return [f"data.root={data}", f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache"]


def record(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def runs_of(log_dir: Path, task: str = "train") -> list[Path]:
    return sorted(p for p in (log_dir / task).iterdir() if p.is_dir() and not p.name.startswith("."))


class SignalAt(Callback):
    """Sends this process `signum` after a given training batch (a user's Ctrl-C, a cluster's SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT, epoch: int = 0, batch: int = 1):
        self.signum, self.epoch, self.batch = signum, epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class Misbehave(Callback):
    """A sweep job that raises an error that is not wycifar's own, or is stopped by Ctrl-C, or runs."""

    def __init__(self, what: str = "none"):
        self.what = what

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 1 and self.what == "raise":
            raise RuntimeError("a bug in a callback")
        if batch_idx == 1 and self.what == "sigint":
            os.kill(os.getpid(), signal.SIGINT)


class PoisonAt(Callback):
    """Makes the network's weights NaN after a given step, as an exploding update would, and
    then, where asked, sends this process a signal."""

    def __init__(self, step: int = 7, signum: int = 0):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.net.parameters()).fill_(float("nan"))
            if self.signum:
                os.kill(os.getpid(), self.signum)


SIGNAL_AT = "+callbacks.signal_at._target_=test_counting.SignalAt"
POISON = "+callbacks.poison._target_=test_counting.PoisonAt"


def test_a_killed_seed_counts_as_failed_beside_the_seeds_that_ran(tmp_path: Path, tiny_data: Path):
    """Three seeds started together, one killed outright (SIGKILL: no chance to write anything):
    the summary says n=2 and 1 failed, and names the killed run."""
    args = [*common(tmp_path, tiny_data), *QUICK, "~callbacks.onnx_model"]
    processes = [start_command(f"seed={seed}", *args) for seed in range(3)]
    victim = processes[2]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # killed once its run is under way
        if any(
            record(r).get("pid") == victim.pid for r in (tmp_path / "train").glob("*") if (r / "metrics.json").is_file()
        ):
            break
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    for process in processes:
        process.wait(timeout=300)
    assert [p.returncode for p in processes] == [0, 0, -signal.SIGKILL]

    result = run_main(summary_main, str(tmp_path / "train"))
    assert result.returncode == 0, result.stderr
    group = next(line for line in result.stdout.splitlines() if line.startswith("| (none)"))
    assert "| 2 (+1 failed) | 0 1 |" in group
    assert result.stdout.count("| killed |") == 1 and result.stdout.count("| ok |") == 2


def test_a_diverged_run_leaves_a_record_the_summary_counts_and_a_refused_one_leaves_nothing(tmp_path, tiny_data):
    args = [*common(tmp_path, tiny_data), *TINY, "logger=none", "~callbacks.onnx_model"]
    refused = run_main(train_main, "model.norm=xyz", *args)
    assert_one_line_error(refused, "model.norm='xyz' is not allowed")
    assert not (tmp_path / "train").exists()  # no folder: it never trained, nothing to count
    diverged = run_main(train_main, "optimizer.lr=8", *args)
    assert_one_line_error(diverged, "training diverged", code=3)
    (run,) = runs_of(tmp_path)
    assert record(run)["status"] == "diverged"

    result = run_main(summary_main, str(tmp_path / "train"))
    assert "| 0 (+1 failed) |" in result.stdout and "| diverged |" in result.stdout


def test_a_run_that_left_no_record_is_counted_as_unfinished(tmp_path: Path, tiny_data: Path):
    ok = run_main(train_main, *common(tmp_path, tiny_data), *QUICK, "~callbacks.onnx_model")
    assert ok.returncode == 0, ok.stderr[-2000:]
    (run,) = runs_of(tmp_path)
    # a copy of the run as a process killed before its start was recorded leaves it
    lost = run.with_name(run.name + "_lost")
    (lost / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (lost / ".hydra" / name).write_text((run / ".hydra" / name).read_text())
    result = run_main(summary_main, str(tmp_path))
    assert "| 1 (+1 failed) |" in result.stdout and "| unfinished |" in result.stdout


def test_sigint_ends_a_sweep_with_its_summary_and_a_job_failing_in_any_way_does_not(tmp_path, tiny_data):
    """Job 0 fails with an error that is not wycifar's own, job 1 is interrupted by Ctrl-C: the
    sweep ends there with exit 130 and a summary of both; job 2 never starts."""
    result = run_main(
        train_main,
        "-m",
        "+callbacks.misbehave._target_=test_counting.Misbehave",
        "+callbacks.misbehave.what=raise,sigint,none",
        *common(tmp_path, tiny_data),
        *QUICK,
        "~callbacks.onnx_model",
        "hydra.sweeper.max_batch_size=1",
    )
    assert result.returncode == 130, result.stderr[-2000:]
    assert "stopped by SIGINT" in result.stderr.strip().splitlines()[-1]
    (root,) = (tmp_path / "train-multirun").iterdir()
    jobs = {row["job"]: row for row in csv.DictReader((root / "jobs.csv").open())}
    assert jobs["0"]["status"] == "error: RuntimeError: a bug in a callback"
    assert "Traceback" in (root / "0" / "train.log").read_text()  # the bug's trace, for whoever fixes it
    assert jobs["1"]["status"] == "interrupted"
    assert "2" not in jobs and not (root / "2").exists()
    # the stopped job is resumable, not failed; with no finished run the table has no accuracy columns
    summary = (root / "summary.md").read_text().splitlines()
    header = next(i for i, line in enumerate(summary) if line.startswith("| overrides |"))
    assert summary[header].count("|") == summary[header + 1].count("|") == 4
    assert sum("| 0 (+1 failed) |" in line for line in summary) == 1
    assert sum("| 0 (+1 stopped) |" in line for line in summary) == 1
    groups = list(csv.DictReader((root / "summary.csv").open()))
    assert sorted((g["failed"], g["stopped"]) for g in groups) == [("0", "1"), ("1", "0")]
    assert (root / "1" / "checkpoints" / "last.ckpt").is_file()


def test_ckpt_path_last_resumes_the_unfinished_run_of_these_overrides_in_its_own_folder(tmp_path, tiny_data):
    args = [*common(tmp_path, tiny_data), *TINY, "logger=none", "callbacks.onnx_model.log_graph=false"]
    signal_in_epoch_2 = [SIGNAL_AT, "+callbacks.signal_at.epoch=1"]
    # seed 1 runs to its end, seeds 2 and 3 are stopped by Ctrl-C in their second epoch
    assert run_main(train_main, "seed=1", *args).returncode == 0
    for seed in (2, 3):
        stopped = run_main(train_main, f"seed={seed}", *args, *signal_in_epoch_2)
        assert stopped.returncode == 130, stopped.stderr[-2000:]
        assert stopped.stderr.strip().splitlines()[-1].startswith("stopped by SIGINT at epoch 2, batch 2")
    runs = {record(run)["seed"]: run for run in runs_of(tmp_path)}
    assert record(runs[2])["status"] == "interrupted"

    # no overrides: no unfinished run was started with none, so it asks, naming them
    asked = run_main(train_main, "ckpt_path=last", *args)
    last = assert_one_line_error(asked, "ckpt_path=last: no unfinished train run has this run's overrides")
    assert "seed=2" in last and "seed=3" in last and "seed=1" not in last
    assert len(runs_of(tmp_path)) == 3  # nothing claimed for the refused run

    # the same overrides: that run, in its folder (its signal is for a batch already done)
    resumed = run_main(train_main, "seed=2", "ckpt_path=last", *args, *signal_in_epoch_2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming the unfinished run {runs[2]}" in resumed.stdout
    assert len(runs_of(tmp_path)) == 3  # the same folder
    assert record(runs[2])["status"] == "ok"
    table = list(csv.DictReader((runs[2] / "epochs.csv").open()))
    assert [row["Epoch"] for row in table] == ["1", "2"]
    assert all(float(row["Time"]) < 60 for row in table)  # the pause between the runs is not an epoch's time
    assert float(table[1]["LR"]) > 0  # the resumed epoch's LR as it started, before the interruption
    assert len(list(runs[2].glob("model_*.onnx"))) == 1 and (runs[2] / "report.md").is_file()

    # a finished run is not resumed: its overrides again start a new run in a new folder
    again = run_main(train_main, "seed=1", "ckpt_path=last", *args)
    last = assert_one_line_error(again, "no unfinished train run has this run's overrides (")
    assert "seed=1 " in last.split("unfinished:")[0] and "seed=3" in last.split("unfinished:")[1]

    result = run_main(summary_main, str(tmp_path / "train"))
    assert result.stdout.count("| ok |") == 2 and result.stdout.count("| interrupted |") == 1


def test_a_partial_test_says_on_how_many_images_and_spans_every_class(tmp_path, tiny_data):
    result = run_main(
        train_main,
        *common(tmp_path, tiny_data),
        *TINY_REPORTS,  # the confusion matrix counts the images tested
        *QUICK_OPTIONS,
        "data.eval_batch_size=20",
        "++trainer.limit_test_batches=1",
        "callbacks.onnx_model.log_graph=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on 20 of the 60 test images only" in result.stdout
    (run,) = runs_of(tmp_path)
    metrics = record(run)["metrics"]
    assert metrics["test/images"] == 20 and metrics["test/split_images"] == 60
    # the model file's name carries no accuracy of part of the split
    (model,) = run.glob("model_*.onnx")
    assert re.fullmatch(r"model_\d+\.onnx", model.name), model.name
    assert "Tested on 20 of the 60 test images only" in (run / "report.md").read_text()
    matrix = list(csv.reader((run / "confusion_matrix.csv").open()))[1:]
    assert len(matrix) == 10 and all(sum(map(int, row[1:])) == 2 for row in matrix)  # 2 images of each class
    summary = run_main(summary_main, str(tmp_path / "train")).stdout
    assert "[tested on 20 of 60 images]" in summary and "(on 20 of 60 images)" in summary


def test_every_prefix_of_the_evaluation_order_spans_every_class():
    labels = torch.arange(10).repeat_interleave(100)  # class by class, as files are listed
    order = evaluation_order(labels)
    assert sorted(order.tolist()) == list(range(1000))
    for n in (10, 20, 64, 500):
        assert set(labels[order[:n]].tolist()) == set(range(10))
    assert torch.equal(order, evaluation_order(labels))  # fixed
    uneven = torch.tensor([0] * 7 + [1] * 2 + [2] * 3)
    assert set(uneven[evaluation_order(uneven)[:3]].tolist()) == {0, 1, 2}


def test_a_nan_step_stops_the_epoch_there_and_no_checkpoint_holds_nan(tmp_path, tiny_data):
    """Weights turned NaN at step 7 (epoch 2 of 3, 5 steps an epoch): the run stops at that step,
    exit 3, with epoch 1's last.ckpt; that checkpoint and a NaN one are treated as they should be."""
    from wycifar.eval import main as eval_main

    args = [*common(tmp_path, tiny_data), *QUICK, "trainer.max_epochs=3", "~callbacks.onnx_model"]
    result = run_main(train_main, *args, POISON)
    last = assert_one_line_error(result, "training diverged: the training loss is nan", code=3)
    assert "at epoch 2, step 8" in last
    (run,) = runs_of(tmp_path)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 5 and record(run)["status"] == "diverged"

    poisoned = tmp_path / "poisoned.ckpt"
    next(v for v in state["state_dict"].values() if v.is_floating_point()).fill_(float("inf"))
    torch.save(state, poisoned)
    resumed = run_main(train_main, *args, f"ckpt_path={poisoned}")
    assert_one_line_error(resumed, "tensors that are not finite")
    evaluated = run_main(eval_main, f"ckpt_path={poisoned}", *common(tmp_path, tiny_data), "trainer.accelerator=cpu")
    assert_one_line_error(evaluated, "tensors that are not finite")


def test_a_checkpoint_of_nan_weights_is_never_written(tmp_path, tiny_data):
    """SIGTERM right after the weights turned NaN, before any step's loss showed it: the resumable
    checkpoint is refused, the good one of the last epoch stays."""
    args = [*common(tmp_path, tiny_data), *QUICK, "trainer.max_epochs=3", "~callbacks.onnx_model"]

    result = run_main(train_main, *args, POISON, "+callbacks.poison.step=8", "+callbacks.poison.signum=15")
    assert result.returncode == 3, result.stderr[-2000:]
    (run,) = runs_of(tmp_path)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_export_of_a_run_replaces_its_model_and_ship_takes_the_one_model(tmp_path, tiny_data):
    from wycifar.add_metadata import main as add_metadata_main
    from wycifar.export import main as export_main
    from wycifar.ship import main as ship_main

    result = run_main(train_main, *common(tmp_path, tiny_data), *QUICK, "callbacks.onnx_model.log_graph=false")
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = runs_of(tmp_path)
    exported = run_main(export_main, str(run))
    assert exported.returncode == 0, exported.stderr
    models = list(run.glob("model_*.onnx"))
    assert [m.name for m in models] == [Path(exported.stdout.strip()).name]
    shipped = run_main(ship_main, str(run), str(tmp_path / "results"))
    assert shipped.returncode == 0, shipped.stderr
    assert [p.name for p in (tmp_path / "results" / "seeds").glob("*.onnx")] == [f"seed0_{models[0].name}"]

    (run / "model_123_0.5000.onnx").write_bytes(models[0].read_bytes())
    assert_one_line_error(run_main(ship_main, str(run), str(tmp_path / "r2")), "holds 2 exported models")
    unnamed = tmp_path / "network.onnx"
    unnamed.write_bytes(b"")
    import onnx

    model = onnx.load(str(models[0]))
    del model.metadata_props[:]
    onnx.save(model, str(unnamed))
    assert_one_line_error(
        run_main(add_metadata_main, str(unnamed), "--data", str(tiny_data)),
        "is not named model_<params>_<accuracy>.onnx",
    )


RANK_SCRIPT = """
import sys
from wycifar.runs.folders import claim_dir
print(claim_dir(sys.argv[1]))
"""


@pytest.mark.parametrize(
    "launcher",
    [
        {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"},
        {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511", "TORCHELASTIC_RUN_ID": "run7"},
    ],
    ids=["srun", "torchrun"],
)
def test_ranks_of_one_launch_share_rank_0s_folder_and_only_it(tmp_path: Path, launcher: dict):
    """Rank 0 finds its plain name taken (another run of that second) and claims `_1`; rank 1,
    started first, waits for that choice instead of taking the plain name."""
    base = tmp_path / "train" / "2026-01-01_00-00-00"
    base.mkdir(parents=True)  # another run's
    rank_var = "SLURM_PROCID" if "SLURM_JOB_ID" in launcher else "RANK"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")}
    started = []
    for rank in (1, 0):
        started.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK_SCRIPT, str(base)],
                env={**env, **launcher, rank_var: str(rank)},
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
        )
        time.sleep(0.5 if rank == 1 else 0)
    folders = [p.communicate(timeout=60)[0].strip() for p in started]
    assert folders == [f"{base}_1", f"{base}_1"]


def test_summary_groups_by_the_set_of_overrides_and_refuses_an_unknown_metric(tmp_path: Path):
    for name, overrides, acc in (("a", ["a=1", "b=2", "seed=0"], 0.5), ("b", ["b=2", "a=1", "seed=1"], 0.7)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(
            json.dumps({"seed": 0, "overrides": overrides, "status": "ok", "metrics": {"test/acc": acc}})
        )
    result = run_main(summary_main, str(tmp_path))
    assert "runs in 1 groups" in result.stdout and "| 2 |" in result.stdout
    assert_one_line_error(run_main(summary_main, str(tmp_path), "--metric", "val/accc"), "--metric 'val/accc' is not")


def test_the_package_imports_without_fcntl_and_from_a_checkout_not_installed(tmp_path: Path):
    windows = (
        "import subprocess, sys, types  # subprocess before msvcrt is faked: it takes that for Windows\n"
        "sys.modules['fcntl'] = None\n"
        "calls = []\n"
        "sys.modules['msvcrt'] = types.SimpleNamespace(LK_LOCK=1, LK_UNLCK=0, locking=lambda *a: calls.append(a[1]))\n"
        "from pathlib import Path\n"
        "from wycifar.files import file_lock\n"
        f"with file_lock(Path({str(tmp_path / 'lock')!r})): pass\n"
        "print(calls)\n"
    )
    locked = subprocess.run([sys.executable, "-c", windows], capture_output=True, text=True, cwd=ROOT)
    assert locked.returncode == 0 and locked.stdout.strip() == "[1, 0]", locked.stderr
    # -S: no site-packages, so no installed wycifar; the checkout on the path only
    plain = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); import wycifar; print(wycifar.__version__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert plain.returncode == 0 and plain.stdout.strip()[0].isdigit(), plain.stderr
