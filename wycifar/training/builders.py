"""Turn the composed Hydra config into the objects a run needs: trainer, callbacks, loggers, module."""

from __future__ import annotations

import logging

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import wycifar.runs.resolvers  # noqa: F401 - conf/'s resolvers, before any config is composed
from wycifar.errors import ConfigError, WycifarError, check_whole_number
from wycifar.precision import accelerator_of
from wycifar.settings import check_optimizer
from wycifar.training.checkpoints import load_teacher
from wycifar.training.module import WyCifarModule

log = logging.getLogger(__name__)


def plain(cfg) -> dict:
    """A resolved plain dict (checkpoints must hold no OmegaConf objects)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})


def instantiate_checked(cfg, key: str, **kwargs):
    """hydra.utils.instantiate, with a wycifar error inside passed on as itself and any other
    construction error turned into a one-line ConfigError naming the config key."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, WycifarError):
            raise cause from None
        message = str(cause or error).strip().splitlines()[0]
        raise ConfigError(f"{key}: {message}") from None


def build_module(cfg: DictConfig) -> WyCifarModule:
    """The LightningModule of cfg.model, cfg.optimizer, cfg.scheduler and cfg.module; a
    `module.teacher` checkpoint is read here and handed to it as a frozen network."""
    check_optimizer(plain(cfg.optimizer))
    options = plain(cfg.get("module"))
    teacher_path = options.pop("teacher", None)
    return WyCifarModule(
        net=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")) or None,
        teacher=load_teacher(teacher_path) if teacher_path else None,
        **options,
    )


def build_callbacks(
    callbacks_cfg: DictConfig | None, *, has_logger: bool, validation_is_test: bool = False
) -> list[Callback]:
    """The configured callbacks. With `validation_is_test` (data.val_size=0) a checkpoint kept
    for its validation score would be chosen on the test split: it is left out."""
    callbacks = []
    for name, cb_cfg in (callbacks_cfg or {}).items():
        if not isinstance(cb_cfg, DictConfig) or "_target_" not in cb_cfg:
            continue
        callback = instantiate_checked(cb_cfg, f"callbacks.{name}")
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            log.info("callbacks.%s skipped: the LR monitor needs a logger", name)
            continue
        if validation_is_test and isinstance(callback, ModelCheckpoint) and str(callback.monitor).startswith("val/"):
            log.info(
                "callbacks.%s skipped: with data.val_size=0 its %s would be the test split's", name, callback.monitor
            )
            continue
        callbacks.append(callback)
    return callbacks


def build_loggers(logger_cfg: DictConfig | None) -> list[Logger]:
    return [
        instantiate_checked(c, f"logger.{name}")
        for name, c in (logger_cfg or {}).items()
        if isinstance(c, DictConfig) and "_target_" in c
    ]


def map_gpus(trainer_cfg: dict) -> dict:
    """`trainer.gpus=N`, the design's own spelling (Lightning 2's Trainer has no `gpus`): the
    accelerator and devices it means."""
    cfg = dict(trainer_cfg)
    gpus = cfg.pop("gpus", None)
    if gpus is None:
        return cfg
    if isinstance(gpus, bool) or not isinstance(gpus, (int, str, list)):
        raise ConfigError(f"trainer.gpus={gpus!r} is not allowed; give a number of GPUs (e.g. 1, or -1 for all)")
    # the same rule chooses the default precision (conf/trainer/default.yaml)
    if accelerator_of(cfg.get("accelerator", "auto"), gpus) == "cpu":
        cfg["accelerator"], cfg["devices"] = "cpu", 1
    else:
        cfg["accelerator"], cfg["devices"] = "gpu", gpus
    log.info("trainer.gpus=%s: trainer.accelerator=%s trainer.devices=%s", gpus, cfg["accelerator"], cfg["devices"])
    if cfg["accelerator"] == "cpu":
        return cfg
    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.gpus={gpus} asks for a GPU, but this machine has none (torch.cuda.is_available() is False); "
            "drop trainer.gpus or use trainer.accelerator=cpu"
        )
    return cfg


def build_trainer(trainer_cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger]) -> L.Trainer:
    cfg = map_gpus(plain(trainer_cfg))
    max_epochs = cfg.get("max_epochs")
    if max_epochs is not None:
        check_whole_number("trainer.max_epochs", max_epochs, minimum=0)
    if cfg.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={cfg['accelerator']} asks for a GPU, but this machine has none; use trainer.accelerator=cpu"
        )
    return instantiate_checked(cfg, "trainer", callbacks=callbacks, logger=loggers or False, _convert_="all")
