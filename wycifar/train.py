"""python -m wycifar.train [overrides]: train (and test) a WyCifar network from the Hydra config."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from wycifar.builders import (
    build_callbacks,
    build_loggers,
    build_module,
    build_trainer,
    instantiate_checked,
)
from wycifar.callbacks.graceful_stop import GracefulStop
from wycifar.callbacks.graceful_stop import message as stop_message
from wycifar.checkpoints import check_resumable
from wycifar.cli import CONFIGS, run_cli, run_command
from wycifar.errors import DivergenceError, InterruptedRun, WycifarError
from wycifar.files import atomic_write_text
from wycifar.loggers import close as close_loggers
from wycifar.loggers import log_config
from wycifar.process import configure_process
from wycifar.run_dirs import resolve_ckpt_path

log = logging.getLogger("wycifar.train")


def accuracy_line(metrics: dict[str, float], tta: str) -> str:
    line = f"test accuracy: {100 * metrics['test/acc']:.2f}%"
    if "test/acc_tta" in metrics:
        line += f" (with {tta} TTA: {100 * metrics['test/acc_tta']:.2f}%)"
    return line


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
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir)
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
    metrics["time/fit_s"] = time.perf_counter() - started

    if cfg.get("test", True):
        tested = weights_to_test(trainer, datamodule, ckpt_path, trained=cfg.get("train", True))
        results = trainer.test(module, datamodule=datamodule, ckpt_path=tested, verbose=False, weights_only=True)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
        if "test/acc" in metrics and trainer.is_global_zero:
            log.info(accuracy_line(metrics, module.hparams.tta))
    return metrics


def write_job_record(
    cfg: DictConfig, metrics: dict[str, float], params: int | None, status: str, error: str | None = None
) -> None:
    """metrics.json in the run folder: what the sweep summary and scripts read."""
    hydra_cfg = HydraConfig.get()
    record = {
        "job": hydra_cfg.job.get("num", 0) if hydra_cfg.mode == RunMode.MULTIRUN else 0,
        "seed": cfg.get("seed"),
        "overrides": list(hydra_cfg.overrides.task),
        "params": params,
        "metrics": metrics,
        "status": status,
    } | ({"error": error} if error else {})
    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "metrics.json", json.dumps(record, indent=2) + "\n")


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # One bad job must not end the sweep: record it and go on.
        try:
            metrics, objects = train(cfg)
        except WycifarError as error:
            log.error("%s", error)
            status = "diverged" if isinstance(error, DivergenceError) else f"error: {error}"
            write_job_record(cfg, {}, None, status, error=str(error))
            return None
    else:
        metrics, objects = run_cli(lambda: train(cfg))
    params = sum(p.numel() for p in objects["module"].net.parameters())
    if objects["trainer"].is_global_zero:
        write_job_record(cfg, metrics, params, "ok")
    return metrics.get(cfg.get("optimized_metric") or "", None)


def main() -> None:
    run_command(hydra_main)


if __name__ == "__main__":
    main()
