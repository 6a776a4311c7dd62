"""Evaluating a saved model: test it and write every report (`evaluate`). `python -m wycifar.eval`
is the command."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from wycifar.errors import ConfigError, check_choice
from wycifar.process import configure_process
from wycifar.runs.folders import newest_checkpoint, run_data_root, run_of
from wycifar.runs.loggers import close as close_loggers
from wycifar.runs.loggers import log_config
from wycifar.runs.records import override_key
from wycifar.settings import TTA_MODES
from wycifar.training.builders import build_callbacks, build_loggers, build_trainer, instantiate_checked
from wycifar.training.checkpoints import load_module
from wycifar.training.run import accuracy_line, test_metrics

log = logging.getLogger("wycifar.eval")


def use_run_data_root(cfg: DictConfig, checkpoint: Path) -> None:
    """A run's checkpoint is tested on the data the run trained on, unless data.root (or
    WYCIFAR_DATA) says otherwise."""
    given = any(override_key(o) == "data.root" for o in HydraConfig.get().overrides.task)
    run = run_of(checkpoint)
    root = run_data_root(run) if run is not None and not given and "WYCIFAR_DATA" not in os.environ else None
    if root is not None:
        with open_dict(cfg):
            cfg.data.root = root


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict]:
    configure_process(cfg.get("threads"), cfg.get("keep_freed_memory", True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = newest_checkpoint(cfg.ckpt_path, cfg.paths.log_dir)
    if ckpt_path is None:
        raise ConfigError(
            "ckpt_path is empty; give the path of a .ckpt file written by wycifar.train (or ckpt_path=last)"
        )
    use_run_data_root(cfg, Path(ckpt_path))
    if cfg.get("tta") is not None:
        check_choice("tta", cfg.tta, TTA_MODES)
    module = load_module(ckpt_path, tta=cfg.get("tta"))
    datamodule = instantiate_checked(cfg.data, "data", channels_last=module.hparams.get("channels_last", False))
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), has_logger=bool(loggers))
    trainer = build_trainer(cfg.trainer, callbacks, loggers)
    log.info("evaluating %s", ckpt_path)
    try:
        log_config(loggers, cfg)
        results = trainer.test(module, datamodule=datamodule, verbose=False)
    finally:
        close_loggers(loggers)
    metrics = test_metrics(results, datamodule)
    if trainer.is_global_zero and "test/acc" in metrics:
        log.info(accuracy_line(metrics, module.hparams.tta))
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule}
