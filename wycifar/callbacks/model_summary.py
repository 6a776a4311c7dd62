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


def net_summary(pl_module: L.LightningModule) -> Summary:
    net = pl_module.net
    return summarize(net, (net.in_channels, net.image_size, net.image_size))


def short_text(pl_module: L.LightningModule, summary: Summary, path) -> str:
    """What the terminal shows: the knobs, the size and the receptive field, and where the rest is."""
    rf = summary.convs[-1].receptive_field if summary.convs else 1
    return "\n".join(
        [
            knobs_header(dict(pl_module.hparams.get("net", {})), summary),
            f"Parameters: {summary.total_params:,} (trainable {summary.trainable_params:,}); receptive field "
            f"{rf} px at the last convolution",
            f"The layer table and every convolution's receptive field: {path}",
        ]
    )


def summary_text(pl_module: L.LightningModule, summary: Summary | None = None) -> str:
    summary = summary or net_summary(pl_module)
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
    """Writes the whole summary to summary.txt in the run folder as a run starts, and prints its
    short form (knobs, parameters, receptive field)."""

    def __init__(self, filename: str = "summary.txt") -> None:
        self.filename = filename
        self.done = False

    def outputs(self) -> dict[str, str]:
        return {"summary": self.filename}

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done or not trainer.is_global_zero:
            return
        summary = net_summary(pl_module)
        path = run_dir(trainer) / self.filename
        atomic_write_text(path, summary_text(pl_module, summary) + "\n")
        log.info("\n%s", short_text(pl_module, summary, path))
        self.done = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)
