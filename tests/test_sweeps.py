"""Hydra multirun with its summary table, Optuna, the submitit launcher, DDP on 2 CPU processes."""

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY, TINY_REPORTS, compose_train, make_image_folder, run_main

from wycifar.ship import main as ship_main
from wycifar.summary import main as summary_main
from wycifar.train import main as train_main
from wycifar.training.run import train

QUICK = [
    *TINY,
    "trainer.max_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
    "~callbacks.onnx_model",
    "++callbacks.gradcam=null",
]


def run_train(*overrides):
    """`python -m wycifar.train OVERRIDES`, its main() run in this process."""
    return run_main(train_main, *overrides)


def sweep_root(log_dir: Path) -> Path:
    roots = list(log_dir.glob("train-multirun/*"))
    assert len(roots) == 1, roots
    return roots[0]


def run_sweep(log_dir: Path, data: Path, *overrides: str) -> tuple[Path, list[dict]]:
    """A sweep on the tiny data into log_dir: its root folder and the rows of its jobs.csv."""
    result = run_train(
        *overrides, f"data.root={data}", f"paths.log_dir={log_dir}", f"paths.cache_dir={log_dir}/cache", *QUICK
    )
    assert result.returncode == 0, result.stderr[-2000:]
    root = sweep_root(log_dir)
    return root, list(csv.DictReader((root / "jobs.csv").open()))


def test_multirun_writes_job_folders_and_a_sorted_summary_past_failing_jobs(tmp_path: Path, tiny_data: Path):
    root, rows = run_sweep(tmp_path, tiny_data, "-m", "model.norm=gn,xyz,bn", "optimizer.lr=0.1,30")
    jobs = sorted((p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
    assert jobs == [str(n) for n in range(6)]
    for job in jobs:
        assert (root / job / ".hydra" / "overrides.yaml").is_file()
    # a bad setting and a diverged run are each recorded, and the sweep goes on to the next job
    status = {r["overrides"]: r["status"] for r in rows}
    for lr in ("0.1", "30"):
        assert status[f"model.norm=xyz optimizer.lr={lr}"].startswith(
            "error: model.norm='xyz' is not allowed; choose one of: bn, gn, ln"
        )
    for norm in ("gn", "bn"):
        assert status[f"model.norm={norm} optimizer.lr=30"] == "diverged"
    diverged = [json.loads(f.read_text()) for f in root.glob("*/metrics.json")]
    diverged = [r for r in diverged if r["status"] == "diverged"]
    assert len(diverged) == 2 and all(
        r["error"].startswith("training diverged: the training loss is") for r in diverged
    )
    done = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["overrides"] for r in done) == ["model.norm=bn optimizer.lr=0.1", "model.norm=gn optimizer.lr=0.1"]
    best = [float(r["val_acc_best"]) for r in done]
    assert best == sorted(best, reverse=True) and rows[: len(done)] == done  # finished jobs first, best first
    for row in done:
        assert (root / str(row["job"]) / "checkpoints" / "last.ckpt").is_file()
        record = json.loads((root / str(row["job"]) / "metrics.json").read_text())
        assert float(row["test_acc"]) == pytest.approx(record["metrics"]["test/acc"])
        assert int(row["params"]) == 8005 and float(row["time_s"]) > 0
    for row in rows:
        assert (row["status"] == "ok") == (root / str(row["job"]) / "report.md").is_file()
    table = (root / "summary.md").read_text()
    assert table.count("| ok |") == 2 and table.count("| diverged |") == 2 and "sorted by val/acc_best" in table


def test_optuna_sweep_of_two_trials(tmp_path: Path, tiny_data: Path):
    root, rows = run_sweep(
        tmp_path,
        tiny_data,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    optimization = (root / "optimization_results.yaml").read_text()
    assert "best_value" in optimization and "best_params" in optimization
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert any("optimizer.lr=" in r["overrides"] for r in rows)


@pytest.mark.slow  # the launcher of the slurm extra: kept out of the default suite for its time
def test_submitit_local_launcher(tmp_path: Path, tiny_data: Path):
    root, rows = run_sweep(tmp_path, tiny_data, "-m", "hydra/launcher=local", "model.norm=bn,gn")
    assert (root / ".submitit").is_dir()
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)


def test_slurm_launcher_config_composes(tmp_path: Path):
    cfg = compose_train(tmp_path, ["hydra/launcher=slurm", "hydra.launcher.partition=a100"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "a100" and launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1
    assert launcher.timeout_min > 0 and launcher.mem_gb > 0


@pytest.mark.slow  # two spawned training processes: about 40 s on 2 cores
def test_ddp_sim_trains_and_reports_once(tmp_path: Path):
    data = make_image_folder(tmp_path / "data", train_per_class=16, test_per_class=6)
    cfg = compose_train(
        tmp_path,
        [
            *TINY,
            "trainer=ddp_sim",
            f"data.root={data}",
            "trainer.max_epochs=2",
            "callbacks.progress_bar.refresh_rate=0",
        ],
    )
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.world_size == 2 and "test/acc" in metrics
    run = tmp_path / "run"
    assert len(list(run.glob("model_*.onnx"))) == 1
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) >= 1
    rows = list(csv.DictReader((run / "epochs.csv").open()))
    assert [r["Epoch"] for r in rows] == ["1", "2"]
    lines = (run / "confusion_matrix.csv").read_text().splitlines()[1:]
    assert sum(int(v) for line in lines for v in line.split(",")[1:]) == 60  # each test image once, both ranks
    # validation is the test split (data.val_size=0): no checkpoint is kept for its score
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]


def test_ship_copies_a_run_into_results(tmp_path: Path, tiny_data: Path, capsys):
    result = run_train(
        f"data.root={tiny_data}",
        f"hydra.run.dir={tmp_path}/run",
        f"paths.cache_dir={tmp_path}/cache",
        *TINY_REPORTS,  # a run with every report, as ship copies them
        "trainer.max_epochs=1",
        "callbacks.progress_bar.refresh_rate=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # `python -m wycifar.ship` is `ship_main` with the command line's arguments
    with pytest.raises(SystemExit) as ship:
        ship_main([str(tmp_path / "run"), str(tmp_path / "results" / "tiny"), "--model"])
    assert ship.value.code == 0, capsys.readouterr().err[-2000:]
    shipped = tmp_path / "results" / "tiny"
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    acc = f"{record['metrics']['test/acc']:.4f}"
    ckpt = shipped / f"model_8005_{acc}.ckpt"
    assert ckpt.is_file() and ckpt.stat().st_size < 200_000
    for name in ["epochs.md", "curves.png", "gradcam.png", "misclassified.png", "confusion_matrix.png", "report.md"]:
        assert (shipped / name).is_file(), name
    assert len(list(shipped.glob("model_*.onnx.svg"))) == 1
    # the run's seed (0) joins the recipe's seeds: its epoch table, ONNX model and job record,
    # which wycifar.summary reads
    assert sorted(p.name for p in (shipped / "seeds").iterdir()) == [
        "seed0.csv",
        "seed0.metrics.json",
        f"seed0_model_8005_{acc}.onnx",
    ]
    assert (shipped / "seeds" / "seed0.csv").read_text() == (tmp_path / "run" / "epochs.csv").read_text()
    summary = run_main(summary_main, shipped / "seeds")
    assert summary.returncode == 0 and f"| (none) | 1 | 0 | {100 * float(acc):.2f}% |" in summary.stdout
    # not a run folder: one line, exit 2, nothing written
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        ship_main([str(tmp_path / "results"), str(tmp_path / "elsewhere")])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and err.count("\n") == 1 and "not a wycifar.train run folder" in err
    assert not (tmp_path / "elsewhere").exists()
