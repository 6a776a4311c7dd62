"""Parameters and model summary: the knobs, the reference-style layer table, receptive fields."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback

from wycifar.callbacks.common import run_dir
from wycifar.files import atomic_write_text
from wycifar.models.summary import Summary, summarize

log = logging.getLogger("wycifar.summary")


SKIP_SUBSAMPLE_NOTES = {"avg": " (each 2x2 window averaged before it)"}


def knobs_header(net_config: dict, summary: Summary) -> str:
    dilations = [
        f"{c.dilation} (kernel {c.effective_kernel}, map {c.output_size}x{c.output_size})"
        for c in summary.convs
        if c.dilation > 1
    ]
    strides = [f"stride {c.stride} (map {c.output_size}x{c.output_size})" for c in summary.convs if c.stride > 1]
    lines = [
        f"Using Normalization: {net_config.get('norm')}",
        f"Using 1*1 Skip Connection: {net_config.get('skip_1x1')}"
        + SKIP_SUBSAMPLE_NOTES.get(net_config.get("skip_subsample"), ""),
        f"Convolution Type: {net_config.get('conv')}",
        f"Number of Blocks: {net_config.get('num_blocks')}",
        f"Units Per Block: {net_config.get('units_per_block')}",
        f"Base Width: {net_config.get('base_width')}",
        f"Dropout: {net_config.get('dropout')}",
        f"Downsampling: {net_config.get('downsample')}: " + (", ".join(dilations or strides) or "none"),
    ]
    return "\n".join(["-" * 64, *lines, "-" * 64])


def summary_text(pl_module: L.LightningModule) -> str:
    net = pl_module.net
    summary = summarize(net, (net.in_channels, net.image_size, net.image_size))
    return "\n".join(
        [
            knobs_header(dict(pl_module.hparams.get("net", {})), summary),
            summary.table(),
            "Receptive field and output size after every convolution on the main path",
            "(k: kernel, s: stride, p: padding, d: dilation, k_eff: dilated kernel, RF: receptive field in input pixels)",
            summary.receptive_field_table(),
        ]
    )


class ModelSummaryReport(Callback):
    """Prints the summary as a run starts and writes it to summary.txt in the run folder."""

    def __init__(self, filename: str = "summary.txt") -> None:
        self.filename = filename
        self.done = False

    def outputs(self) -> dict[str, str]:
        return {"summary": self.filename}

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done or not trainer.is_global_zero:
            return
        text = summary_text(pl_module)
        log.info("\n%s", text)
        atomic_write_text(run_dir(trainer) / self.filename, text + "\n")
        self.done = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)
