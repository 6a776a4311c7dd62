"""The config resolvers conf/ uses, registered with OmegaConf on import (by every command's cli)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.types import RunMode
from omegaconf import OmegaConf

from wycifar.runs.folders import claim_dir, config_resume


def user_cache_dir() -> str:
    """$XDG_CACHE_HOME/wycifar, else ~/.cache/wycifar: the decode cache, outside any installed package."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "wycifar")


def best_precision(accelerator: str = "auto", gpus=None) -> str:
    from wycifar.precision import best_precision as best  # torch, only where a config asks

    return best(accelerator, gpus)


def resume_dir(*, _root_) -> str:
    """The folder of the run a training continues (conf/hydra's run.dir gives it to claim_dir), or
    "" for a new run: a fresh run, an evaluation, a sweep job, or a checkpoint of another recipe."""
    select = OmegaConf.select
    if not select(_root_, "train", default=False) or select(_root_, "hydra.mode") == RunMode.MULTIRUN:
        return ""
    resume = config_resume(_root_)
    return str(resume.run) if resume and resume.run else ""


OmegaConf.register_new_resolver("resume_dir", resume_dir, replace=True)


def cudnn_benchmark(deterministic=None) -> bool:
    """cuDNN autotuning on unless the run asks to be deterministic (trainer.deterministic true or
    warn), whichever trainer config chose the GPU; a CPU run ignores it."""
    return not deterministic


OmegaConf.register_new_resolver("best_precision", best_precision, replace=True)
OmegaConf.register_new_resolver("cudnn_benchmark", cudnn_benchmark, replace=True)
OmegaConf.register_new_resolver("user_cache_dir", user_cache_dir, replace=True)
# cached: a run resolves its folder once, and its sweep jobs inherit it (conf/hydra/default.yaml)
OmegaConf.register_new_resolver("claim_dir", claim_dir, use_cache=True, replace=True)
