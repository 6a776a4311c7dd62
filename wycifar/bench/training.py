"""The three measurements of `python -m wycifar.bench` (data, bare loop, Lightning fit) and the
evaluation and teacher rates, on one model, batch size and data set."""

from __future__ import annotations

import platform
import time

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from wycifar.bench.timers import EpochTimer, StepTimer, autocast, endless, peak_memory_mb, sync
from wycifar.callbacks.gradcam import GradCAMReport
from wycifar.data.cifar10 import CIFAR10DataModule
from wycifar.data.synthetic import SyntheticCIFAR
from wycifar.errors import ConfigError
from wycifar.process import configure_process
from wycifar.training.builders import build_callbacks, build_loggers, build_module, build_trainer, instantiate_checked


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


def bench_datamodule(cfg: DictConfig) -> CIFAR10DataModule:
    """CIFAR-shaped random data of bench.train_images and bench.test_images (bench.synthetic), else
    the configured data set; split, with enough full batches for the timed fit."""
    bench = cfg.bench
    if bench.synthetic:
        data_kwargs = {k: v for k, v in cfg.data.items() if k != "_target_"}
        datamodule = SyntheticCIFAR(train_size=bench.train_images, test_size=bench.test_images, **data_kwargs)
    else:
        datamodule = instantiate_checked(cfg.data, "data")
    datamodule.prepare_splits()
    full_batches = len(datamodule.train_data) // datamodule.batch_size
    if full_batches <= bench.warmup:
        raise ConfigError(
            f"{len(datamodule.train_data)} training images make {full_batches} full batches of {datamodule.batch_size}: "
            f"the timed fit needs more than bench.warmup={bench.warmup} (raise bench.train_images)"
        )
    return datamodule


def run_bench(cfg: DictConfig) -> dict:
    """Every figure the benchmark prints, as one flat dict (its JSON line)."""
    bench = cfg.bench
    L.seed_everything(cfg.seed, verbose=False)
    keep_freed = bool(cfg.get("keep_freed_memory", True))
    configure_process(cfg.get("threads"), keep_freed)
    datamodule = bench_datamodule(cfg)
    module = build_module(cfg)
    precision = str(cfg.trainer.precision)
    train_images, eval_images = len(datamodule.train_data), len(datamodule.val_data)
    # Timed batches are all full: a compiled network meets the epoch's short last batch with a
    # recompile, paid once per run, which a timed window of a few hundred steps would count.
    full_batches = train_images // datamodule.batch_size

    # (c) the real fit first: it decides the device (trainer.accelerator) for all three.
    timer = StepTimer(bench.warmup)
    limit = min(bench.warmup + bench.batches, full_batches)
    trainer, callbacks = fit_timed(
        cfg, module, datamodule, timer, max_epochs=1, limit_train_batches=limit, limit_val_batches=0
    )
    device = trainer.strategy.root_device
    fit_rate = timer.full_epoch_rate(datamodule.batch_size, train_images)
    gradcam_s = time_gradcam(trainer, module, callbacks)
    fit_memory = peak_memory_mb(device)

    # (a) and (b) on the same device, data and batch size.
    loader = datamodule.train_dataloader()  # the fit's trainer is attached: its device and rank
    data_rate = bench_data(loader, bench.batches, bench.warmup, device)
    full = (b for b in endless(loader) if len(b[1]) == datamodule.batch_size)
    batch_list = [b for _, b in zip(range(bench.warmup + bench.batches), full)]
    bare_rate = bench_bare_loop(module, batch_list, bench.warmup, device, precision)
    eval_rate = bench_eval(module, datamodule.test_dataloader(), device, precision, bench.eval_batches)
    # module.teacher: its forward pass on each training batch, as the fit runs it (compiled with the student)
    teacher_rate = None
    if module.teacher_net is not None:
        module.teacher_net.to(device)
        teacher_rate = bench_forward(module.teacher_logits, batch_list, device, precision, len(batch_list) - 1)
    measured = measure_epochs(cfg, datamodule, int(bench.epochs)) if bench.get("epochs") else []
    rates = {"data": data_rate, "bare": bare_rate, "fit": fit_rate, "eval": eval_rate}
    return {
        **setup_figures(device, module, datamodule, precision, keep_freed, bench.batches),
        **{f"{name}_img_s": round(rate, 1) for name, rate in rates.items()},
        "teacher_img_s": None if teacher_rate is None else round(teacher_rate, 1),
        "epoch_end_callbacks_s": round(timer.epoch_end_s, 3),
        "gradcam_figure_s": None if gradcam_s is None else round(gradcam_s, 3),
        "fit_over_bare": round(fit_rate / bare_rate, 3),
        "data_over_bare": round(data_rate / bare_rate, 2),
        "epoch_s_estimate": round(train_images / fit_rate + eval_images / eval_rate, 1),
        "epoch_s_measured": [round(e, 2) for e in measured],
        "epoch_images": [train_images, eval_images],
        "peak_memory_mb": round(max(fit_memory, peak_memory_mb(device)), 1),
    }


def setup_figures(device, module, datamodule, precision: str, keep_freed: bool, batches: int) -> dict:
    """What was measured: the device, threads and the run's settings."""
    return {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "keep_freed_memory": keep_freed,
        "batch_size": datamodule.batch_size,
        "precision": precision,
        "channels_last": bool(module.hparams.channels_last),
        "compile": module.hparams.compile_mode if module.hparams.compile else False,
        "batches": batches,
    }
