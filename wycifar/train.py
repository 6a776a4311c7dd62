"""python -m wycifar.train [overrides]: train (and test) a WyCifar network from the Hydra config."""

from __future__ import annotations

import logging
import time
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from wycifar.builders import build_callbacks, build_loggers, build_module, build_trainer, resolve_ckpt_path
from wycifar.cli import run_cli

log = logging.getLogger("wycifar.train")


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test with the best checkpoint. Returns (metrics, objects)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = build_module(cfg)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), has_logger=bool(loggers))
    trainer = build_trainer(cfg.trainer, callbacks, loggers)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir)

    started = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["time/fit_s"] = time.perf_counter() - started

    if cfg.get("test", True):
        best = (
            trainer.checkpoint_callback.best_model_path
            if trainer.checkpoint_callback and cfg.get("train", True)
            else ""
        )
        if not best:
            best = ckpt_path
        if best and cfg.get("train", True):
            log.info("testing the best checkpoint: %s", best)
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
        if "test/acc" in metrics and trainer.is_global_zero:
            line = f"test accuracy: {100 * metrics['test/acc']:.2f}%"
            if "test/acc_tta" in metrics:
                line += f" (with flip TTA: {100 * metrics['test/acc_tta']:.2f}%)"
            log.info(line)
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "cfg": cfg}


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_cli(lambda: train(cfg)[0])
    value = metrics.get(cfg.get("optimized_metric") or "", None)
    return value


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
