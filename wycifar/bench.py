"""python -m wycifar.bench [overrides]: how fast, measured three ways in one process.

(a) the data pipeline alone: cached uint8 images -> augmented, normalised batches on the device;
(b) a bare PyTorch training loop (forward, loss, backward, SGD step) on ready batches: the floor;
(c) the project's real Lightning fit, with the default callbacks, for the same number of batches.

Prints images/s for each, the ratios (c)/(b) and (a)/(b), peak memory, an estimate of a full epoch
(50,000 training images plus 10,000 test images), and ends with one JSON line. Same model, batch
size and data for all three; every train config knob applies (model=..., trainer.precision=...,
module.channels_last=..., module.compile=..., data.batch_size=..., threads=...).
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import sys
import time

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from wycifar.builders import build_callbacks, build_loggers, build_module, build_trainer, instantiate_checked
from wycifar.callbacks.gradcam import GradCAMReport
from wycifar.cli import CONFIGS, run_cli, run_command
from wycifar.data.cifar10 import CIFAR10DataModule
from wycifar.data.synthetic import SyntheticCIFAR
from wycifar.errors import ConfigError
from wycifar.process import configure_process

log = logging.getLogger("wycifar.bench")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    dtype = torch.bfloat16 if "bf16" in str(precision) else torch.float16 if str(precision).startswith("16") else None
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def endless(loader):
    """The loader's batches, epoch after epoch: a timed run may be longer than one epoch."""
    while True:
        yield from loader


def bench_data(loader, batches: int, warmup: int, device: torch.device) -> float:
    iterator = endless(loader)
    for _ in range(warmup):
        next(iterator)
    sync(device)
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        x, _ = next(iterator)
        seen += len(x)
    sync(device)
    return seen / (time.perf_counter() - start)


def bench_bare_loop(module, batch_list, warmup: int, device: torch.device, precision: str) -> float:
    net = module.net.to(device).train()
    model = module.compiled(net) if module.hparams.compile else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    seen, start = 0, 0.0
    for step, (x, y) in enumerate(batch_list):
        if step == warmup:
            sync(device)
            start, seen = time.perf_counter(), 0
        with autocast(device, precision):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - start)


class StepTimer(Callback):
    """Times the fit's steps from batch `warmup` on (per-step callbacks and logging included), and
    apart from them the epoch-end work (the report callbacks), which a real epoch pays once per
    391 steps rather than once per `batches`. Kept last in the callback list."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.images = warmup, 0.0, 0
        self.steps_s, self.epoch_end_s, self._last_batch_end = 0.0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()
        if batch_idx >= self.warmup:
            self.images += len(batch[1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # A sync per step would stop a GPU's queue from running ahead: only after the last one.
        if batch_idx + 1 >= trainer.num_training_batches:
            sync(pl_module.device)
        self._last_batch_end = time.perf_counter()
        self.steps_s = self._last_batch_end - self.start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_end_s = time.perf_counter() - self._last_batch_end

    def full_epoch_rate(self, batch_size: int, train_images: int = 50_000) -> float:
        """Images/s over a whole epoch of `train_images`: the measured step rate plus one epoch end."""
        steps = -(-train_images // batch_size)
        per_step = self.steps_s / max(1, self.images / batch_size)
        return train_images / (steps * per_step + self.epoch_end_s)


class EpochTimer(Callback):
    """Wall-clock seconds of each whole epoch: training, validation and every epoch-end callback."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self.end = time.perf_counter()

    @property
    def epoch_s(self) -> list[float]:
        bounds = self.starts + [self.end]
        return [b - a for a, b in zip(bounds, bounds[1:])]


def fit_timed(cfg: DictConfig, module, datamodule, timer: Callback, **trainer_overrides):
    """A real Lightning fit with the configured callbacks and logger plus `timer` (kept last),
    under `cfg.trainer` with `trainer_overrides` on top; returns the trainer and its callbacks."""
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), has_logger=bool(loggers)) + [timer]
    checkpointing = any(type(c).__name__ == "ModelCheckpoint" for c in callbacks)
    trainer_cfg = OmegaConf.merge(
        OmegaConf.to_container(cfg.trainer, resolve=True), {"enable_checkpointing": checkpointing, **trainer_overrides}
    )
    trainer = build_trainer(trainer_cfg, callbacks, loggers)
    trainer.fit(module, datamodule=datamodule)
    return trainer, callbacks


def measure_epochs(cfg: DictConfig, datamodule: CIFAR10DataModule, epochs: int) -> list[float]:
    """A real fit of `epochs` whole epochs (every training batch, then validation on the test
    split) with the configured callbacks; returns each epoch's seconds."""
    timer = EpochTimer()
    whole = {"limit_train_batches": None, "limit_val_batches": None}
    fit_timed(cfg, build_module(cfg), datamodule, timer, max_epochs=epochs, num_sanity_val_steps=0, **whole)
    return timer.epoch_s


def bench_forward(model, batches, device: torch.device, precision: str, count: int) -> float:
    """Images per second of `model`'s forward passes without gradients, from the second batch on."""
    seen, start = 0, 0.0
    with torch.inference_mode(), autocast(device, precision):
        for index, (x, _) in enumerate(batches):
            if index == 1:
                sync(device)
                start, seen = time.perf_counter(), 0
            model(x)
            seen += len(x)
            if index >= count:
                break
    sync(device)
    return seen / (time.perf_counter() - start)


def bench_eval(module, loader, device: torch.device, precision: str, batches: int) -> float:
    net = module.net.to(device).eval()
    model = module.compiled(net) if module.hparams.compile else net
    return bench_forward(model, loader, device, precision, batches)


def time_gradcam(trainer, module, callbacks) -> float | None:
    """One GradCAM figure (drawn every few epochs during a fit), timed on its own."""
    gradcam = next((c for c in callbacks if isinstance(c, GradCAMReport)), None)
    if gradcam is None:
        return None
    start = time.perf_counter()
    gradcam.draw(trainer, module)
    return time.perf_counter() - start


def run_bench(cfg: DictConfig) -> dict:
    bench = cfg.bench
    L.seed_everything(cfg.seed, verbose=False)
    keep_freed = bool(cfg.get("keep_freed_memory", True))
    configure_process(cfg.get("threads"), keep_freed)
    data_kwargs = {k: v for k, v in cfg.data.items() if k != "_target_"}
    sizes = {"train_size": bench.get("train_images", 50_000), "test_size": bench.get("test_images", 10_000)}
    datamodule = SyntheticCIFAR(**sizes, **data_kwargs) if bench.synthetic else instantiate_checked(cfg.data, "data")
    module = build_module(cfg)
    precision = str(cfg.trainer.precision)
    datamodule.prepare_splits()
    # Timed batches are all full: a compiled network meets the epoch's short last batch with a
    # recompile, paid once per run, which a timed window of a few hundred steps would count.
    full_batches = len(datamodule.train_data) // datamodule.batch_size
    if full_batches <= bench.warmup:
        raise ConfigError(
            f"{len(datamodule.train_data)} training images make {full_batches} full batches of {datamodule.batch_size}: "
            f"the timed fit needs more than bench.warmup={bench.warmup} (raise bench.train_images)"
        )

    # (c) the real fit first: it decides the device (trainer.accelerator) for all three.
    timer = StepTimer(bench.warmup)
    trainer, callbacks = fit_timed(
        cfg,
        module,
        datamodule,
        timer,
        max_epochs=1,
        limit_train_batches=min(bench.warmup + bench.batches, full_batches),
        limit_val_batches=0,
    )
    device = trainer.strategy.root_device
    fit_rate = timer.full_epoch_rate(datamodule.batch_size)
    gradcam_s = time_gradcam(trainer, module, callbacks)
    fit_memory = peak_memory_mb(device)

    # (a) and (b) on the same device, data and batch size.
    loader = datamodule.train_dataloader()  # the fit's trainer is attached: its device and rank
    data_rate = bench_data(loader, bench.batches, bench.warmup, device)
    full = (b for b in endless(loader) if len(b[1]) == datamodule.batch_size)
    batch_list = [b for _, b in zip(range(bench.warmup + bench.batches), full)]
    bare_rate = bench_bare_loop(module, batch_list, bench.warmup, device, precision)
    eval_rate = bench_eval(module, datamodule.test_dataloader(), device, precision, bench.eval_batches)
    # module.teacher: its forward pass on each training batch, as the fit runs it (not compiled)
    teacher_rate = None
    if module.teacher_net is not None:
        teacher = module.teacher_net.to(device)
        teacher_rate = bench_forward(teacher, batch_list, device, precision, len(batch_list) - 1)
    epoch_s = 50_000 / fit_rate + 10_000 / eval_rate
    measured = measure_epochs(cfg, datamodule, int(bench.epochs)) if bench.get("epochs") else []
    return {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "keep_freed_memory": keep_freed,
        "batch_size": datamodule.batch_size,
        "precision": precision,
        "channels_last": bool(module.hparams.channels_last),
        "compile": module.hparams.compile_mode if module.hparams.compile else False,
        "batches": bench.batches,
        "data_img_s": round(data_rate, 1),
        "bare_img_s": round(bare_rate, 1),
        "fit_img_s": round(fit_rate, 1),
        "eval_img_s": round(eval_rate, 1),
        "teacher_img_s": None if teacher_rate is None else round(teacher_rate, 1),
        "epoch_end_callbacks_s": round(timer.epoch_end_s, 3),
        "gradcam_figure_s": None if gradcam_s is None else round(gradcam_s, 3),
        "fit_over_bare": round(fit_rate / bare_rate, 3),
        "data_over_bare": round(data_rate / bare_rate, 2),
        "epoch_s_estimate": round(epoch_s, 1),
        "epoch_s_measured": [round(e, 2) for e in measured],
        "epoch_images": [len(datamodule.train_data), len(datamodule.val_data)],
        "peak_memory_mb": round(max(fit_memory, peak_memory_mb(device)), 1),
    }


def report(result: dict) -> str:
    lines = [
        f"device {result['device']}, {result['threads']} threads, batch {result['batch_size']}, "
        f"precision {result['precision']}, channels_last {result['channels_last']}, compile {result['compile']}",
        f"(a) data pipeline        {result['data_img_s']:>10,.0f} img/s",
        f"(b) bare PyTorch loop    {result['bare_img_s']:>10,.0f} img/s",
        f"(c) Lightning fit        {result['fit_img_s']:>10,.0f} img/s   (default callbacks and logger; "
        f"epoch-end reports {result['epoch_end_callbacks_s']:.2f} s once per epoch)",
        f"    evaluation           {result['eval_img_s']:>10,.0f} img/s",
        f"    one GradCAM figure   {result['gradcam_figure_s'] or 0:>10.2f} s",
    ]
    if result["teacher_img_s"]:
        lines.append(
            f"    teacher forward      {result['teacher_img_s']:>10,.0f} img/s   (module.teacher, once per training "
            f"step: {result['bare_img_s'] / result['teacher_img_s']:.2f} of a bare step's time)"
        )
    lines += [
        f"(c)/(b) = {result['fit_over_bare']:.3f}   (the fit's speed against the bare loop's)",
        f"(a)/(b) = {result['data_over_bare']:.1f}    (how much faster the data comes than it is used)",
        f"estimated epoch (50,000 train + 10,000 test): {result['epoch_s_estimate']:.1f} s",
        f"peak memory: {result['peak_memory_mb']:,.0f} MB",
    ]
    if result["epoch_s_measured"]:
        epochs = result["epoch_s_measured"]
        lines.insert(
            -1,
            f"measured epochs (real fit, {result['epoch_images'][0]:,} train + {result['epoch_images'][1]:,} validation "
            f"images each): {', '.join(f'{e:.1f}' for e in epochs)} s"
            + (
                f"; after the first: {sorted(epochs[1:])[len(epochs[1:]) // 2]:.1f} s (median)"
                if len(epochs) > 1
                else ""
            ),
        )
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="bench")
def hydra_main(cfg: DictConfig) -> None:
    result = run_cli(lambda: run_bench(cfg))
    print(report(result), flush=True)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


def main() -> None:
    run_command(hydra_main)


if __name__ == "__main__":
    main()
