"""The run's loggers (conf/logger): Lightning's own TensorBoard, CSV, MLflow and W&B loggers, set
up for wycifar runs, and the run's files sent to whichever of them take files.

Every logger gets the composed config as parameters (`log_config`), the metrics Lightning logs
each epoch, the LR and the test metrics. MLflow and W&B are extras (`wycifar[mlflow]`,
`wycifar[wandb]`): without one, its logger stops the run before training, in one line.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from wycifar.errors import ConfigError
from wycifar.files import file_lock
from wycifar.runs.folders import is_secondary_rank

log = logging.getLogger("wycifar.loggers")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def require(package: str, logger: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"logger={logger} needs the {package} package, which is not installed: pip install 'wycifar[{logger}]'"
        )


def run_name(output_dir: str | Path, log_dir: str | Path) -> str:
    """The run's folder as the trackers name it: `<date_time>` for a run, `<date_time>/<job>` for a
    sweep's job (the path below outputs/<task>/ or outputs/<task>-multirun/)."""
    output, root = Path(output_dir).resolve(), Path(log_dir).resolve()
    try:
        parts = output.relative_to(root).parts[1:]
    except ValueError:
        parts = ()
    return "/".join(parts) if parts else output.name


def recipe_tags() -> dict[str, str]:
    """The recipe of the run as tags: its experiment (`default` without one), the config groups
    chosen and the command line's overrides."""
    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    choices = {k: str(v) for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    tags = {"recipe": choices.pop("experiment", "default")}
    tags.update({k: v for k, v in choices.items() if k in ("model", "optimizer", "scheduler", "trainer", "data")})
    tags["overrides"] = " ".join(hydra_cfg.overrides.task)[:5000]
    return tags


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as `group/key` -> value, resolved (lists as text); a value whose
    interpolation cannot be resolved in this config (eval's has no `module`) is kept as written."""
    flat: dict[str, Any] = {}

    def walk(node: DictConfig, written: dict, prefix: str) -> None:
        for key in node.keys():
            if not prefix and key in ("hydra", "logger"):
                continue
            try:
                value = node[key]
                if isinstance(value, ListConfig):
                    value = OmegaConf.to_container(value, resolve=True)
            except OmegaConfBaseException:
                value = written[key]
            if isinstance(value, DictConfig):
                walk(value, written[key], f"{prefix}{key}/")
            else:
                scalar = isinstance(value, (int, float, str, bool)) or value is None
                flat[f"{prefix}{key}"] = value if scalar else str(value)

    walk(cfg, OmegaConf.to_container(cfg, resolve=False), "")
    return flat


def log_config(loggers: Iterable[Logger], cfg: DictConfig) -> None:
    """Every logger's parameters: the composed config (TensorBoard keeps them in hparams.yaml;
    its HPARAMS tab gets them with the final metrics from HyperparametersReport)."""
    params = flat_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)


def sqlite_file(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> None:
    """Create the store and the experiment once, whatever number of runs start at the same time:
    a SQLite store is created under a file lock beside it (two processes creating its tables at
    once would fail), and an experiment another process created first is taken as it is."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    database = sqlite_file(tracking_uri)
    with file_lock(database.with_name(database.name + ".lock") if database else None):
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            raise ConfigError(
                f"logger.mlflow.experiment_name={name!r} is a deleted experiment in {tracking_uri}; "
                "restore it (mlflow experiments restore) or choose another name"
            )
        if experiment is None:
            try:
                client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # another process created it since
                if client.get_experiment_by_name(name) is None:
                    raise


def mlflow_logger(
    experiment_name: str,
    tracking_uri: str,
    artifact_location: str,
    output_dir: str,
    log_dir: str,
    **kwargs: Any,
) -> MLFlowLogger:
    """Lightning's MLFlowLogger: one experiment per task, one run per run folder (named as it),
    tagged with the recipe. A relative SQLite path or artifact folder is taken from where the
    command runs, so sweep jobs and DDP processes share one store."""
    require("mlflow", "mlflow")
    database = sqlite_file(tracking_uri)
    if database is not None:
        database = database.expanduser().absolute()
        database.parent.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{database}"
    if "://" not in artifact_location:
        artifact_location = Path(artifact_location).expanduser().absolute().as_uri()
    if not is_secondary_rank():
        logging.getLogger("alembic").setLevel(logging.WARNING)
        ensure_experiment(tracking_uri, experiment_name, artifact_location)
    tags = recipe_tags() | dict(kwargs.pop("tags", None) or {})
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name(output_dir, log_dir),
        tracking_uri=tracking_uri,
        tags=tags,
        **kwargs,
    )


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str, output_dir: str, log_dir: str, **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger writing into the run folder (wandb/), named as the folder, tagged
    with the recipe. Offline unless the user has logged in or set WANDB_MODE: `wandb sync
    <run folder>/wandb/offline-run-*` sends it later."""
    require("wandb", "wandb")
    offline = not os.environ.get("WANDB_MODE") and not wandb_logged_in()
    tags = recipe_tags()
    return WandbLogger(
        project=project,
        name=run_name(output_dir, log_dir),
        save_dir=output_dir,
        offline=offline,
        tags=[tags["recipe"]] if tags else None,
        **kwargs,
    )


def log_files(loggers: Iterable[Logger], paths: Iterable[Path], folder: str) -> None:
    """The files into each logger that takes files: MLflow's artifacts (under `folder`), W&B's
    media (images) and files (the rest). TensorBoard and CSV take none (the figures reach
    TensorBoard as images, log_figure)."""
    paths = [Path(p) for p in paths if p is not None and Path(p).is_file()]
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=folder)
        elif isinstance(logger, WandbLogger):
            for path in paths:
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    logger.log_image(key=f"{folder}/{path.stem}", images=[str(path)])
                else:
                    logger.experiment.save(str(path), base_path=str(path.parent), policy="now")


def log_figure(loggers: Iterable[Logger], path: Path, tag: str, step: int) -> None:
    """A report figure saved at `path` (a PNG): TensorBoard shows that image, the others take the
    file. The figure is drawn once, for the file; TensorBoard gets the same pixels."""
    loggers = list(loggers)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            logger.experiment.add_image(tag, pixels, global_step=step, dataformats="HWC")
            logger.experiment.flush()
    log_files(loggers, [path], tag.split("/")[0])


def close(loggers: Iterable[Logger]) -> None:
    """End each logger's run in this process, so that the next job of a sweep starts a new one
    (a W&B run stays open until the process ends)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
            logger._experiment = None
