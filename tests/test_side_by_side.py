"""Runs started together: each gets a folder and results of its own; a folder holding a run is not reused."""

import json
import multiprocessing
from pathlib import Path

import pytest
from conftest import NO_FIGURES, assert_one_line_error, compose_train, finish, run_main, start_command

from wycifar.runs.folders import claim_dir
from wycifar.runs.hydra_callbacks import CheckOutputDir
from wycifar.train import main as train_main

QUICK = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "model.base_width=8",
    "threads=1",
    "callbacks.progress_bar.refresh_rate=0",
    *NO_FIGURES,
]


def test_processes_claiming_one_name_at_once_each_get_a_folder(tmp_path: Path):
    base = str(tmp_path / "train" / "2026-01-01_00-00-00")
    # spawned, not forked: a fork of this process (threads left by earlier tests) can deadlock
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        claimed = pool.map(claim_dir, [base] * 8)
    assert sorted(claimed) == sorted([base] + [f"{base}_{n}" for n in range(1, 8)])
    assert all(Path(c).is_dir() for c in claimed)


def test_runs_composed_in_the_same_second_name_folders_of_their_own(tmp_path: Path):
    """The run and sweep folders of conf/hydra as Hydra resolves them: once per run (a second look
    gives the same folder), a new one for each run."""
    configs = [compose_train(tmp_path) for _ in range(3)]  # paths.log_dir is tmp_path
    runs = [str(cfg.hydra.run.dir) for cfg in configs]
    assert len(set(runs)) == 3 and [str(cfg.hydra.run.dir) for cfg in configs] == runs
    assert all(Path(run).is_dir() and Path(run).parent == tmp_path / "train" for run in runs)
    sweeps = {str(cfg.hydra.sweep.dir) for cfg in configs}
    assert len(sweeps) == 3 and all(Path(s).parent == tmp_path / "train-multirun" for s in sweeps)


def test_trainings_sweeps_and_evaluations_started_together_keep_apart(tmp_path: Path, tiny_data: Path):
    """The loop users write (`for s in 0 1; do python -m wycifar.train seed=$s & done`) beside a
    sweep, all logging to one MLflow store, then two evaluations of one checkpoint at once: every
    run its own folder, files and MLflow run."""
    pytest.importorskip("mlflow")
    common = [f"data.root={tiny_data}", f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache", *QUICK]
    trainings = [start_command(f"seed={seed}", "logger=mlflow", *common) for seed in range(2)]
    # the sweep's second job diverges: it is recorded as such and the sweep goes on
    sweep = start_command("-m", "optimizer.lr=0.05,30", "seed=9", "logger=mlflow", *common)
    for process in [*trainings, sweep]:
        result = finish(process)
        assert result.returncode == 0, result.stderr[-2000:]

    runs = sorted((tmp_path / "train").iterdir())
    assert len(runs) == 2, runs
    for run in runs:
        record = json.loads((run / "metrics.json").read_text())
        assert record["status"] == "ok" and f"seed={record['seed']}" in record["overrides"]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no best-*-v1.ckpt
        assert len(list(run.glob("model_*.onnx"))) == 1
        assert "Error" not in (run / "train.log").read_text()
    assert {json.loads((run / "metrics.json").read_text())["seed"] for run in runs} == {0, 1}
    assert not list(tmp_path.glob("**/.*.tmp*"))  # no temporary file left behind

    (sweep_root,) = (tmp_path / "train-multirun").iterdir()
    job = {n: json.loads((sweep_root / n / "metrics.json").read_text()) for n in ("0", "1")}
    assert job["0"]["status"] == "ok" and job["0"]["seed"] == 9
    assert job["1"]["status"] == "diverged" and "training diverged: the training loss is" in job["1"]["error"]
    assert not list((sweep_root / "1").glob("model_*.onnx"))
    assert "| diverged |" in (sweep_root / "summary.md").read_text()

    # one store, created by whichever process came first: every run landed, each whole
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stored = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert sorted(r.data.params["seed"] for r in stored) == ["0", "1", "9", "9"]
    assert sorted(r.info.status for r in stored) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]

    ckpt = runs[0] / "checkpoints" / "last.ckpt"
    evaluations = [
        start_command(f"ckpt_path={ckpt}", *common[:3], "trainer.accelerator=cpu", *NO_FIGURES, module="wycifar.eval")
        for _ in range(2)
    ]
    for process in evaluations:
        result = finish(process)
        assert result.returncode == 0, result.stderr[-2000:]
    folders = sorted((tmp_path / "eval").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert len(list(folder.glob("model_*.onnx"))) == 1 and (folder / "report.md").is_file()

    # a folder given by hand that holds a run: refused before anything is written into it
    log_before = (runs[1] / "train.log").read_text()
    result = run_main(train_main, f"hydra.run.dir={runs[1]}", *common)
    assert_one_line_error(result, f"hydra.run.dir={runs[1]} already holds another run's results")
    assert (runs[1] / "train.log").read_text() == log_before


def test_a_given_folder_is_refused_when_it_holds_a_run_unless_resuming_from_it(tmp_path: Path, capsys):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
    other = tmp_path / "elsewhere.ckpt"
    other.write_bytes(b"another")

    def on_run_start(*overrides: str, run_dir: Path = folder) -> int | None:
        cfg = compose_train(tmp_path / "compose", [f"hydra.run.dir={run_dir}", *overrides])
        try:
            CheckOutputDir().on_run_start(cfg)
        except SystemExit as stop:
            return stop.code
        return None

    assert on_run_start() == 2
    assert "already holds another run's results (checkpoints)" in capsys.readouterr().err
    assert on_run_start(f"ckpt_path={other}") == 2
    assert on_run_start(f"ckpt_path={folder}/checkpoints/last.ckpt") is None
    assert on_run_start(f"ckpt_path={folder}/checkpoints/last.ckpt", "train=false") == 2
    assert on_run_start(run_dir=tmp_path / "new") is None  # a new folder is fine
