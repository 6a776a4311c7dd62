"""Hydra callbacks: check the output folder before anything runs; summarise a multirun sweep."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from wycifar.errors import ConfigError
from wycifar.files import atomic_write_text
from wycifar.run_dirs import SWEEP_MARKERS, holds_results, is_inside, is_secondary_rank, resolve_ckpt_path


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
    """After a multirun, writes summary.md and summary.csv at the sweep's root: one row per job
    (number, overrides, parameters, best validation accuracy, test accuracy, time), best first by
    the optimised metric. Each job leaves its figures in metrics.json in its own folder."""

    def __init__(self, filename: str = "summary") -> None:
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        metric = OmegaConf.select(config, "optimized_metric", default="val/acc_best") or "val/acc_best"
        records = [(f.parent.name, json.loads(f.read_text())) for f in sorted(root.glob("*/metrics.json"))]
        # Overrides every job shares go in the title; the table shows what the jobs vary.
        override_lists = [record.get("overrides", []) for _, record in records]
        common = [o for o in override_lists[0] if all(o in other for other in override_lists)] if records else []
        rows = []
        for folder, record in records:
            metrics = record.get("metrics", {})
            rows.append(
                {
                    "job": record.get("job", folder),
                    "overrides": " ".join(o for o in record.get("overrides", []) if o not in common),
                    "params": record.get("params"),
                    "val_acc_best": metrics.get("val/acc_best"),
                    "test_acc": metrics.get("test/acc"),
                    "time_s": metrics.get("time/fit_s"),
                    "status": record.get("status", "ok"),
                    "_key": metrics.get(metric),
                }
            )
        rows.sort(key=lambda r: (r["_key"] is None, -(r["_key"] or 0.0)))
        columns = ["job", "overrides", "params", "val_acc_best", "test_acc", "time_s", "status"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(root / f"{self.filename}.csv", buffer.getvalue())

        def pct(value: Any) -> str:
            return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else ""

        def num(value: Any) -> str:
            return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else ""

        lines = [
            f"Sweep {root} ({len(rows)} jobs), sorted by {metric}",
            f"Common to all jobs: `{' '.join(common)}`" if common else "",
            "",
            "| job | overrides | params | best val acc | test acc | time (s) | status |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['job']} | `{r['overrides']}` | {num(r['params'])} | {pct(r['val_acc_best'])} | "
            f"{pct(r['test_acc'])} | {num(r['time_s'])} | {r['status']} |"
            for r in rows
        ]
        atomic_write_text(root / f"{self.filename}.md", "\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)
