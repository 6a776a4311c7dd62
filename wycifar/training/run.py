"""Training a run: fit and test from the composed config (`train`), and the run's record written
as it starts and however it ends (`train_and_record`). `python -m wycifar.train` is the command."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from wycifar.callbacks.graceful_stop import GracefulStop
from wycifar.callbacks.graceful_stop import message as stop_message
from wycifar.errors import ConfigError, DivergenceError, InterruptedRun, WycifarError, first_line
from wycifar.process import configure_process
from wycifar.runs.folders import find_resume, is_secondary_rank
from wycifar.runs.loggers import close as close_loggers
from wycifar.runs.loggers import log_config
from wycifar.runs.records import INTERRUPTED, OK, partial_test, started, write_record
from wycifar.training.builders import (
    build_callbacks,
    build_loggers,
    build_module,
    build_trainer,
    instantiate_checked,
)
from wycifar.training.checkpoints import check_resumable

log = logging.getLogger("wycifar.train")


def accuracy_line(metrics: dict[str, float], tta: str) -> str:
    line = f"test accuracy: {100 * metrics['test/acc']:.2f}%"
    if "test/acc_tta" in metrics:
        line += f" (with {tta} TTA: {100 * metrics['test/acc_tta']:.2f}%)"
    partial = partial_test(metrics)
    if partial:
        line += f", on {partial[0]:,} of the {partial[1]:,} test images only"
    return line


def test_metrics(results: list[dict], datamodule) -> dict[str, float]:
    """trainer.test's metrics, with the size of the split they could have covered."""
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    if metrics and getattr(datamodule, "test_data", None) is not None:
        metrics["test/split_images"] = float(len(datamodule.test_data))
    return metrics


def weights_to_test(trainer: L.Trainer, datamodule, ckpt_path: str | None, trained: bool) -> str | None:
    """The checkpoint to test, or None for the weights in memory. After a fit with a held-out
    validation split (data.val_size > 0): the best epoch by validation accuracy. With none,
    validation is the test split, so no epoch is chosen on it: the last epoch's model is tested."""
    if not trained:
        return ckpt_path
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if getattr(datamodule, "val_size", 0) > 0 and best:
        log.info("testing the best epoch by validation accuracy: %s", best)
        return best
    log.info("testing the last epoch's model (data.val_size=0: validation is the test split, so no epoch is chosen)")
    return None


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint `ckpt_path` names (`last`: this recipe's newest unfinished run), said in one line."""
    resume = find_resume(cfg.get("ckpt_path"), cfg.paths.log_dir, cfg.task_name, list(HydraConfig.get().overrides.task))
    if resume is None:
        return None
    if resume.run is not None:
        log.info("resuming the unfinished run %s from %s", resume.run, resume.checkpoint.name)
    else:
        log.info("starting a new run from the weights and state of %s", resume.checkpoint)
    return str(resume.checkpoint)


def train(cfg: DictConfig, extra_callbacks: list | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test (weights_to_test says which weights), the loggers given the composed config
    first and closed last. Returns (metrics, objects)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    configure_process(cfg.get("threads"), cfg.get("keep_freed_memory", True))
    datamodule = instantiate_checked(cfg.data, "data")
    module = build_module(cfg)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(
        cfg.get("callbacks"), has_logger=bool(loggers), validation_is_test=datamodule.val_size == 0
    ) + list(extra_callbacks or [])
    trainer = build_trainer(cfg.trainer, callbacks, loggers)
    ckpt_path = resume_checkpoint(cfg)
    if ckpt_path:
        check_resumable(ckpt_path, module)
    try:
        log_config(loggers, cfg)
        metrics = fit_and_test(cfg, trainer, module, datamodule, callbacks, ckpt_path)
    finally:
        close_loggers(loggers)
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "cfg": cfg}


def fit_and_test(cfg: DictConfig, trainer: L.Trainer, module, datamodule, callbacks: list, ckpt_path) -> dict:
    """trainer.fit (unless train=false), then trainer.test (unless test=false): the metrics."""
    started = time.perf_counter()
    if cfg.get("train", True):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            stop = next((c for c in callbacks if isinstance(c, GracefulStop)), None)
            batch = trainer.fit_loop.epoch_loop.batch_progress.current.completed
            path = stop.path if stop else "the last checkpoint"
            raise InterruptedRun(stop_message("SIGTERM", trainer.current_epoch, batch, path)) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    before = getattr(module, "fit_s_before", 0.0) if cfg.get("train", True) else 0.0
    if before is not None:  # a resumed run counts its earlier parts too
        metrics["time/fit_s"] = before + time.perf_counter() - started

    if cfg.get("test", True):
        tested = weights_to_test(trainer, datamodule, ckpt_path, trained=cfg.get("train", True))
        results = trainer.test(module, datamodule=datamodule, ckpt_path=tested, verbose=False, weights_only=True)
        metrics.update(test_metrics(results, datamodule))
        if "test/acc" in metrics and trainer.is_global_zero:
            log.info(accuracy_line(metrics, module.hparams.tta))
    return metrics


def job_record(cfg: DictConfig) -> dict:
    """What every record of this run holds: its job number, seed and overrides."""
    hydra_cfg = HydraConfig.get()
    return {
        "job": hydra_cfg.job.get("num", 0) if hydra_cfg.mode == RunMode.MULTIRUN else 0,
        "seed": cfg.get("seed"),
        "overrides": list(hydra_cfg.overrides.task),
    }


def ended_status(error: BaseException) -> str:
    """The record's status for a run that raised `error`."""
    if isinstance(error, DivergenceError):
        return "diverged"
    if isinstance(error, (InterruptedRun, KeyboardInterrupt, SystemExit)):
        # SystemExit: Lightning's own ending after a second Ctrl-C
        return INTERRUPTED
    return f"error: {first_line(error) if isinstance(error, WycifarError) else f'{type(error).__name__}: {first_line(error)}'}"


# what a run leaves in its folder before it trains (Hydra's config, the log, its record)
BEFORE_TRAINING = {".hydra", "train.log", "metrics.json"}


def remove_if_refused(folder: Path, log_dir: Path) -> None:
    """A single run refused before it trained (a value not allowed, data not found) leaves nothing:
    its folder goes where it holds only what every run writes first (empty folders aside), so
    that the summaries and `ckpt_path=last` never meet it. A sweep's jobs keep theirs: the sweep
    lists them."""
    kept = {
        path.relative_to(folder).parts[0]
        for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).parts[0] not in BEFORE_TRAINING
    }
    if kept:
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:  # outputs/<task>, outputs: where this run made them and left them empty
        if not parent.is_relative_to(log_dir) or any(parent.iterdir()):
            break
        parent.rmdir()


def train_and_record(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """train(), its run's record (metrics.json) written as it starts and as it ends, however it
    ends: ok with its metrics, diverged, interrupted or error. Ctrl-C outside the training loop
    is an interrupted run too; a single run refused before training leaves no folder."""
    folder, primary = Path(cfg.paths.output_dir), not is_secondary_rank()
    base = job_record(cfg)
    if primary:
        write_record(folder, started(base))
    try:
        metrics, objects = train(cfg)
    except KeyboardInterrupt:
        error = InterruptedRun("stopped by SIGINT before training began; nothing to resume")
        if primary:
            write_record(folder, base | {"status": ended_status(error), "error": str(error)})
        raise error from None
    except BaseException as error:
        if primary and isinstance(error, ConfigError) and HydraConfig.get().mode != RunMode.MULTIRUN:
            remove_if_refused(folder.resolve(), Path(cfg.paths.log_dir).resolve())
        elif primary:
            write_record(folder, base | {"status": ended_status(error), "error": first_line(error)})
        raise
    if objects["trainer"].is_global_zero:
        params = sum(p.numel() for p in objects["module"].net.parameters())
        write_record(folder, base | {"params": params, "metrics": metrics, "status": OK})
    return metrics, objects
