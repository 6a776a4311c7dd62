"""Hydra callbacks: check the output folder before anything runs; summarise a multirun sweep."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from wycifar.errors import ConfigError
from wycifar.run_dirs import SWEEP_MARKERS, holds_results, is_inside, is_secondary_rank, resolve_ckpt_path
from wycifar.summary import Summary


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
    """The run trains on from a checkpoint inside `folder` (ckpt_path given, or `last` found there)."""
    if not OmegaConf.select(config, "train", default=False):
        return False
    try:
        ckpt_path = resolve_ckpt_path(OmegaConf.select(config, "ckpt_path"), OmegaConf.select(config, "paths.log_dir"))
    except ConfigError:
        return False
    return ckpt_path is not None and is_inside(ckpt_path, folder)


class CheckOutputDir(Callback):
    """Before the run starts, with one line and exit status 2: its folder cannot be written, or it
    holds an earlier run's results that this run would overwrite (unless it resumes from there)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = str(config.hydra.run.dir)
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


class SweepSummary(Callback):
    """After a multirun, writes summary.md, summary.csv and jobs.csv at the sweep's root: the jobs
    that differ only in seed in one row (mean ± sd of each accuracy, n, min-max), then one row per
    job, best first by the optimised metric (wycifar.summary). Each job leaves its figures in
    metrics.json in its own folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        metric = OmegaConf.select(config, "optimized_metric", default="val/acc_best") or "val/acc_best"
        records = [(f.parent, json.loads(f.read_text())) for f in sorted(root.glob("*/metrics.json"))]
        if not records:
            return
        text = Summary(records, metric, root=root).write(root, f"Sweep {root}")
        print(text, end="", flush=True)
