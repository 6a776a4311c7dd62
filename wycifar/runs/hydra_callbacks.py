"""Hydra callbacks: check the output folder before anything runs; summarise a multirun sweep."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from wycifar.errors import ConfigError
from wycifar.runs.folders import SWEEP_MARKERS, config_resume, holds_results, is_secondary_rank
from wycifar.runs.summary import RunSummary, find_records


def _stop(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _check_writable(folder: str, key: str) -> None:
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        _stop(
            f"the output folder {path} ({key}) is not writable: {error.strerror or error}; "
            "choose another with paths.log_dir=... or hydra.run.dir=..."
        )


def _resumes_from(config: DictConfig, folder: Path) -> bool:
    """The run trains on from a checkpoint inside `folder` (ckpt_path names it, or `last` found it:
    conf/hydra's run.dir is then that run's folder)."""
    if not OmegaConf.select(config, "train", default=False):
        return False
    try:
        resume = config_resume(config)
    except ConfigError:
        return False
    return resume is not None and folder.resolve() in resume.checkpoint.resolve().parents


def _run_dir(config: DictConfig) -> str:
    """hydra.run.dir, resolved: a choice its resolvers refuse (ckpt_path=last finding no run of
    this recipe) is one line."""
    try:
        return str(config.hydra.run.dir)
    except Exception as error:  # noqa: BLE001 - OmegaConf wraps the resolver's error
        cause = error
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        _stop(str(cause))
        raise AssertionError("unreachable") from None


class CheckOutputDir(Callback):
    """Before the run starts, with one line and exit status 2: its folder cannot be written, or it
    holds an earlier run's results that this run would overwrite (unless it resumes from there)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = _run_dir(config)
        if not is_secondary_rank():
            found = holds_results(Path(folder))
            if found and not _resumes_from(config, Path(folder)):
                _stop(
                    f"hydra.run.dir={folder} already holds another run's results ({', '.join(found)}); "
                    "give a new folder, or leave hydra.run.dir unset for a fresh one under outputs/"
                )
        _check_writable(folder, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = str(config.hydra.sweep.dir)
        found = holds_results(Path(folder), SWEEP_MARKERS)
        if found:
            _stop(
                f"hydra.sweep.dir={folder} already holds another sweep's results ({', '.join(found)}); "
                "give a new folder, or leave hydra.sweep.dir unset for a fresh one under outputs/"
            )
        _check_writable(folder, "hydra.sweep.dir")


def write_sweep_summary(root: Path, config: DictConfig) -> str | None:
    """summary.md, summary.csv and jobs.csv at a sweep's root from every job's record (killed and
    unfinished jobs included); the markdown, or None while no job has a folder."""
    metric = OmegaConf.select(config, "optimized_metric", default="val/acc_best") or "val/acc_best"
    try:
        records = find_records([root])
    except ConfigError:
        return None
    records = [(folder, record) for folder, record in records if folder.parent == root.resolve()]
    if not records:
        return None
    return RunSummary(records, metric, root=root.resolve()).write(root, f"Sweep {root}")


class SweepSummary(Callback):
    """A sweep's summary.md, summary.csv and jobs.csv at its root: the jobs that differ only in seed
    in one row (mean ± sd of each accuracy, n, failed, min-max), then one row per job, best first
    by the optimised metric (wycifar.summary). Rewritten as each job ends, whatever the launcher,
    and at the sweep's end."""

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN:
            write_sweep_summary(Path(str(config.hydra.sweep.dir)), config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        text = write_sweep_summary(Path(str(config.hydra.sweep.dir)), config)
        if text:
            print(text, end="", flush=True)
