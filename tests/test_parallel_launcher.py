"""hydra/launcher=parallel: jobs as processes of their own, two at once, each with its folder,
threads and environment; a killed or raising job fails alone; Ctrl-C stops the sweep with its
summary; plain lines where the output is not a terminal."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import TINY, compose_train, finish, start_command

from hydra_plugins.wycifar_launcher import register
from hydra_plugins.wycifar_launcher.parallel_launcher import devices_asked
from wycifar.runs.records import read_record

PARALLEL = ["-m", "hydra/launcher=parallel", "hydra.launcher.jobs=2", "hydra.launcher.threads_per_job=1"]
QUICK = [
    *TINY,
    "trainer.max_epochs=1",
    "logger=none",
    "callbacks.progress_bar.refresh_rate=0",
    "~callbacks.onnx_model",
    "++callbacks.gradcam=null",
]

# A Hydra app that starts in a second (no torch): it records its start, then ends as `x` says.
APP = """
import importlib, json, os, signal, sys, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from wycifar.runs.records import started, write_record


@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir)
    base = {"job": hydra_cfg.job.num, "overrides": list(hydra_cfg.overrides.task), "metrics": {}}
    write_record(folder, started(base))
    for name in cfg.imports:
        importlib.import_module(name)
    seen = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    (folder / "seen.json").write_text(json.dumps(seen | {"start": time.time(), "pid": os.getpid(), "sid": os.getsid(0)}))
    if cfg.x == "kill":
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.x == "raise":
        raise RuntimeError("boom")
    time.sleep(cfg.sleep)
    (folder / "seen.json").write_text(json.dumps(json.loads((folder / "seen.json").read_text()) | {"end": time.time()}))
    write_record(folder, base | {"status": "ok", "metrics": {"score": float(cfg.score)}})
    return float(cfg.score)


if __name__ == "__main__":
    from hydra_plugins.wycifar_launcher import register

    register()
    main()
"""

APP_CONFIG = """
x: ok
score: 0.5
sleep: 2.0
imports: []
optimized_metric: score
trainer:
  devices: 1
hydra:
  job:
    chdir: false
"""


def make_app(tmp_path: Path) -> Path:
    (tmp_path / "app.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.py").write_text(APP)
    return tmp_path / "app.py"


def run_app(tmp_path: Path, *overrides: str, env: dict | None = None):
    sweep = tmp_path / "sweep"
    process = start_command(
        sys.executable, make_app(tmp_path), *PARALLEL, f"hydra.sweep.dir={sweep}", *overrides, module=None, env=env
    )
    return finish(process, timeout=120), sweep


def jobs_csv(sweep: Path) -> dict[str, dict]:
    return {row["job"]: row for row in csv.DictReader((sweep / "jobs.csv").open())}


def log_times(log: Path) -> tuple[datetime, datetime]:
    stamps = [line[1:24] for line in log.read_text().splitlines() if line.startswith("[20")]
    parse = [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in stamps]
    return parse[0], parse[-1]


def test_real_jobs_run_two_at_once_and_sigint_stops_the_sweep(tmp_path: Path, tiny_data: Path):
    """Real trainings, two at once, each a process with one thread and its own folder as the basic
    launcher makes it (what it printed in console.log); a job that ends frees its slot for the next;
    plain lines on a pipe. Then Ctrl-C: the running jobs save a resumable checkpoint and stop, the
    queued one never starts, the summary is written, exit 130."""
    process = start_command(
        *PARALLEL,
        f"data.root={tiny_data}",
        f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path}/cache",
        *QUICK,
        "trainer.max_epochs=1,200,201,202",  # after QUICK's max_epochs
    )
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:  # job 2 started when job 0 ended, and trains
        roots = list(tmp_path.glob("train-multirun/*"))
        if roots and all((roots[0] / job / "epochs.csv").is_file() for job in ("1", "2")):
            break
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    result = finish(process, timeout=120)
    assert result.returncode == 130, result.stderr[-3000:]
    (sweep,) = tmp_path.glob("train-multirun/*")

    folder = sweep / "0"
    assert "- trainer.max_epochs=1\n" in (folder / ".hydra" / "overrides.yaml").read_text()
    assert read_record(folder)["status"] == "ok"
    assert "test accuracy:" in (folder / "console.log").read_text()  # what the job printed
    launched = json.loads((folder / "launcher.json").read_text())
    assert launched["exit_status"] == 0 and launched["threads"] == 1 and launched["torch_threads"] == 1
    assert launched["environment"]["OMP_NUM_THREADS"] == "1"
    # forked by its slot's server, which had imported Lightning; job 2 took job 0's slot and server
    assert launched["start"] == "forked" and launched["preloaded"] == ["wycifar.training.run"]
    assert json.loads((sweep / "2" / "launcher.json").read_text())["server_pid"] == launched["server_pid"]
    (start0, end0), (start1, end1) = log_times(sweep / "0" / "train.log"), log_times(sweep / "1" / "train.log")
    assert start0 < end1 and start1 < end0, "jobs 0 and 1 did not overlap"
    assert log_times(sweep / "2" / "train.log")[0] > end0  # two at once, no more

    for job in ("1", "2"):
        assert read_record(sweep / job)["status"] == "interrupted"
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert json.loads((sweep / job / "launcher.json").read_text())["threads"] == 1
    assert not (sweep / "3").exists()
    assert {job: row["status"] for job, row in jobs_csv(sweep).items()} == {
        "0": "ok",
        "1": "interrupted",
        "2": "interrupted",
    }
    assert "interrupted by SIGINT" in result.stderr and "1 never started" in result.stderr
    # not a terminal: a plain line per event, the varying override naming the job
    out = result.stdout
    assert "job 0 started: trainer.max_epochs=1\n" in out and "job 0 epoch 1/1" in out
    assert "job 0 ended: ok, val/acc_best " in out and "job 1 ended: interrupted" in out
    # the epochs the launcher saw end (a tiny epoch can end between two of its looks)
    assert re.search(r"job 2 epoch \d+/201, val acc", out) and "\x1b[" not in out
    assert not (sweep / ".launcher").exists()


def test_a_killed_job_and_a_raising_job_fail_alone(tmp_path: Path):
    # the jobs are forked from slot servers, as by default, that preload a light module: the app needs no Lightning
    result, sweep = run_app(tmp_path, "x=ok,kill,raise,fine", "score=0.5", "sleep=2", "hydra.launcher.preload=[json]")
    # a job that raised is FAILED, as under the basic launcher: the sweeper reports it at the end
    assert result.returncode == 1 and "boom" in result.stderr, result.stderr[-3000:]
    rows = jobs_csv(sweep)
    assert rows["0"]["status"] == "ok" and rows["3"]["status"] == "ok"
    assert rows["1"]["status"] == "killed (SIGKILL)"
    assert rows["2"]["status"] == "error: RuntimeError: boom"
    assert read_record(sweep / "1")["status"] == "killed (SIGKILL)"
    assert (sweep / "summary.md").is_file() and "killed (SIGKILL)" in (sweep / "summary.md").read_text()
    assert "job 1 ended: killed (SIGKILL)" in result.stdout
    assert "job 3 ended: ok, score 0.5000" in result.stdout and "best score 0.5000 (job 0)" in result.stdout
    seen = {job: json.loads((sweep / job / "seen.json").read_text()) for job in ("0", "3")}
    assert all(s["OMP_NUM_THREADS"] == "1" for s in seen.values())
    launched = json.loads((sweep / "1" / "launcher.json").read_text())
    assert launched["start"] == "forked"  # the killed job was one of a slot server's


# A module that notes each process that imports it.
HEAVY = """
import os
from pathlib import Path

with open(Path(__file__).with_name("imports.txt"), "a") as notes:
    notes.write(f"{os.getpid()}\\n")
"""


def test_a_slot_server_imports_once_and_forks_fresh_jobs(tmp_path: Path):
    """With a preload, each slot's server imports it once and forks the slot's jobs: each job a
    process of its own (pid, session, environment) that finds the module imported; a server that
    cannot import leaves its jobs to the plain start."""
    (tmp_path / "heavy.py").write_text(HEAVY)
    notes, env = tmp_path / "imports.txt", {"PYTHONPATH": str(tmp_path)}
    sweep_args = ("score=0.1,0.2,0.3,0.4", "sleep=0.5", "imports=[heavy]")
    result, sweep = run_app(tmp_path, *sweep_args, "hydra.launcher.preload=[heavy]", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    launched = [json.loads((sweep / str(job) / "launcher.json").read_text()) for job in range(4)]
    seen = [json.loads((sweep / str(job) / "seen.json").read_text()) for job in range(4)]
    servers = {facts["server_pid"] for facts in launched}
    assert sorted(map(int, notes.read_text().split())) == sorted(servers) and len(servers) == 2  # one import a slot
    assert len({facts["pid"] for facts in launched} | servers) == 6  # every job a process of its own
    for facts, job in zip(launched, seen):
        assert facts["start"] == "forked" and facts["preloaded"] == ["heavy"] and facts["exit_status"] == 0
        assert job["pid"] == facts["pid"] == job["sid"]  # its own session
        assert job["OMP_NUM_THREADS"] == facts["environment"]["OMP_NUM_THREADS"] == "1"
    assert not (sweep / ".launcher").exists()

    notes.unlink()
    result, sweep = run_app(tmp_path, *sweep_args, "hydra.launcher.preload=[heavy,no_such_module]", env=env)
    assert result.returncode == 0 and "job server failed (importing no_such_module" in result.stdout + result.stderr
    launched = [json.loads((sweep / str(job) / "launcher.json").read_text()) for job in range(4)]
    assert all(facts["start"] == "process" and facts["preloaded"] == [] for facts in launched)
    assert {facts["pid"] for facts in launched} <= set(map(int, notes.read_text().split()))  # each imported it


def test_a_job_asking_for_more_than_one_device_is_refused_before_the_sweep(tmp_path: Path):
    result, sweep = run_app(tmp_path, "trainer.devices=1,2")
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: job 1 (trainer.devices=2) asks for trainer.devices=2")
    assert not (sweep / "0").exists()


@pytest.mark.parametrize(
    ("devices", "refused"), [(1, False), ("auto", False), (-1, False), (2, True), ([0, 1], True), ("0,1", True)]
)
def test_devices_asked(tmp_path: Path, devices, refused: bool):
    from omegaconf import OmegaConf

    assert bool(devices_asked(OmegaConf.create({"trainer": {"devices": devices}}))) == refused


def test_optuna_runs_as_many_trials_at_once_as_the_launcher_jobs(tmp_path: Path):
    register()
    parallel = compose_train(tmp_path, ["hparams_search=optuna", "hydra/launcher=parallel", "hydra.launcher.jobs=3"])
    assert parallel.hydra.sweeper.n_jobs == 3 and parallel.hydra.launcher.threads_per_job is None
    assert compose_train(tmp_path, ["hparams_search=optuna"]).hydra.sweeper.n_jobs == 1
    default = compose_train(tmp_path, ["hydra/launcher=parallel"]).hydra.launcher.jobs
    assert isinstance(default, int) and 1 <= default <= max(1, len(os.sched_getaffinity(0)))
