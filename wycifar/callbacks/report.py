"""report.md: everything the reference README shows, on one page, generated from this run's files."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from wycifar.callbacks.common import run_dir
from wycifar.files import atomic_write_text
from wycifar.runs.folders import run_model
from wycifar.runs.records import partial_test

log = logging.getLogger("wycifar.report")


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}\n"


def outputs_of(callbacks: Iterable) -> dict[str, str]:
    """The files report callbacks write into the run folder, by role: their `outputs()`."""
    files: dict[str, str] = {}
    for callback in callbacks:
        if callable(getattr(callback, "outputs", None)):
            files.update(callback.outputs())
    return files


def configured_outputs(callbacks_cfg: DictConfig | dict | None) -> dict[str, str]:
    """The same for a run's composed `callbacks` config (its .hydra/config.yaml): each report
    callback is built from its config (building one reads and writes nothing) and asked."""
    callbacks = []
    for name, cfg in (callbacks_cfg or {}).items():
        if not isinstance(cfg, (DictConfig, dict)) or "_target_" not in cfg:
            continue
        module, _, attr = str(cfg["_target_"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError):
            # a run of an older version: a callback since renamed or removed
            log.warning("callbacks.%s (%s) is not in this version: its files are left out", name, cfg["_target_"])
            continue
        if callable(getattr(cls, "outputs", None)):
            callbacks.append(instantiate(cfg))
    return outputs_of(callbacks)


def build_report(folder: Path, metrics: dict[str, float], files: dict[str, str]) -> str:
    model = run_model(folder)
    parts = ["# WyCifar run report\n"]
    results = [
        f"| {k} | {v:.0f} |" if k.endswith("images") else f"| {k} | {v:.4f} |"
        for k, v in sorted(metrics.items())
        if k.startswith(("test/", "val/acc_best"))
    ]
    if results:
        partial = partial_test(metrics)
        note = (
            f"\n\nTested on {partial[0]:,} of the {partial[1]:,} test images only (trainer.limit_test_batches)."
            if partial
            else ""
        )
        parts.append(_section("Results", "| metric | value |\n|---|---|\n" + "\n".join(results) + note))
    network = []
    if model is not None and model.with_name(model.name + ".svg").is_file():
        network.append(f"![network]({model.name}.svg)")
    if model is not None:
        network.append(f"ONNX model: `{model.name}`")
    parts.append(_section("1. Network Architecture", "\n\n".join(network) or "_not exported in this run_"))

    def present(role: str) -> str | None:
        return files[role] if role in files and (folder / files[role]).exists() else None

    summary = folder / files.get("summary", "")
    parts.append(
        _section(
            "2. Parameters And Model Summary",
            f"```\n{summary.read_text().rstrip()}\n```" if present("summary") else "_no summary_",
        )
    )
    parts.append(
        _section(
            "3. Model Performance",
            f"![curves]({present('curves')})" if present("curves") else "_no training in this run_",
        )
    )
    epochs = present("epochs_md")
    parts.append(
        _section("4. Training Logs", (folder / epochs).read_text().rstrip() if epochs else "_no training in this run_")
    )
    for number, (title, role) in enumerate(
        (
            ("GradCam Output", "gradcam"),
            ("Incorrect Predictions", "misclassified"),
            ("Confusion Matrix", "confusion_matrix"),
        ),
        start=5,
    ):
        image = present(role)
        parts.append(_section(f"{number}. {title}", f"![{role}]({image})" if image else "_not drawn in this run_"))
    return "\n".join(parts)


class RunReport(Callback):
    """Written after testing; keep it last in the callbacks so the other reports exist by then."""

    def __init__(self, filename: str = "report.md") -> None:
        self.filename = filename

    def outputs(self) -> dict[str, str]:
        return {"report": self.filename}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = run_dir(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        test_data = getattr(trainer.datamodule, "test_data", None) if trainer.datamodule is not None else None
        if test_data is not None:
            metrics["test/split_images"] = float(len(test_data))
        atomic_write_text(folder / self.filename, build_report(folder, metrics, outputs_of(trainer.callbacks)))
        log.info("report: %s", folder / self.filename)
