"""report.md: everything the reference README shows, on one page, generated from this run's files."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from wycifar.callbacks.common import run_dir
from wycifar.files import atomic_write_text

log = logging.getLogger("wycifar.report")


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}\n"


def build_report(folder: Path, metrics: dict[str, float]) -> str:
    svgs = sorted(folder.glob("model_*.onnx.svg"))
    onnx_files = sorted(folder.glob("model_*.onnx"))
    parts = ["# WyCifar run report\n"]
    results = [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if k.startswith(("test/", "val/acc_best"))]
    if results:
        parts.append(_section("Results", "| metric | value |\n|---|---|\n" + "\n".join(results)))
    network = []
    if svgs:
        network.append(f"![network]({svgs[-1].name})")
    if onnx_files:
        network.append(f"ONNX model: `{onnx_files[-1].name}`")
    parts.append(_section("1. Network Architecture", "\n\n".join(network) or "_not exported in this run_"))
    summary = folder / "summary.txt"
    parts.append(
        _section(
            "2. Parameters And Model Summary",
            f"```\n{summary.read_text().rstrip()}\n```" if summary.exists() else "_no summary_",
        )
    )
    parts.append(
        _section(
            "3. Model Performance",
            "![curves](curves.png)" if (folder / "curves.png").exists() else "_no training in this run_",
        )
    )
    epochs = folder / "epochs.md"
    parts.append(
        _section("4. Training Logs", epochs.read_text().rstrip() if epochs.exists() else "_no training in this run_")
    )
    for number, (title, image) in enumerate(
        (
            ("GradCam Output", "gradcam.png"),
            ("Incorrect Predictions", "misclassified.png"),
            ("Confusion Matrix", "confusion_matrix.png"),
        ),
        start=5,
    ):
        body = f"![{image[:-4]}]({image})" if (folder / image).exists() else "_not drawn in this run_"
        parts.append(_section(f"{number}. {title}", body))
    return "\n".join(parts)


class RunReport(Callback):
    """Written after testing; keep it last in the callbacks so the other reports exist by then."""

    def __init__(self, filename: str = "report.md") -> None:
        self.filename = filename

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = run_dir(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        atomic_write_text(folder / self.filename, build_report(folder, metrics))
        log.info("report: %s", folder / self.filename)
