"""The LightningModule: the network, its loss, its optimiser and schedule, and its metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from wycifar.errors import ConfigError
from wycifar.models import WyCifarNet
from wycifar.settings import check_module
from wycifar.training.distill import soft_target_loss
from wycifar.training.tta import tta_probs


def rng_generators(device: torch.device) -> dict[str, tuple[Callable, Callable]]:
    """The global generators a step on `device` draws from, as (get_state, set_state) pairs: the
    CPU's, and the GPU's where the module trains on one (that device's only: under DDP each rank
    restores rank 0's, as every rank was seeded alike)."""
    generators = {"torch": (torch.get_rng_state, torch.set_rng_state)}
    if device.type == "cuda":
        generators["cuda"] = (
            lambda: torch.cuda.get_rng_state(device),
            lambda state: torch.cuda.set_rng_state(state, device),
        )
    return generators


TRAIN_METRICS = ("train_loss", "train_acc")


def stopped_mid_epoch(checkpoint: dict) -> bool:
    """Whether the checkpoint was written inside an epoch (Ctrl-C, SIGTERM, a validation's), not
    at its end: the epoch's training sums it holds are then the ones the resumed epoch goes on with."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return progress.get("processed", 0) < progress.get("started", 0)


class WyCifarModule(L.LightningModule):
    """Wraps WyCifarNet(**net). `optimizer` and `scheduler` are Hydra dicts (`_target_`,
    `_partial_`) kept as plain data so that checkpoints hold no pickled objects. The optimiser's
    `lr` is the peak learning rate; the schedule gives fractions of it. The defaults are the
    reference's (no label smoothing, decay on every parameter); conf/train.yaml's `module` holds the
    default recipe's."""

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        l1_lambda: float = 0.0,
        label_smoothing: float = 0.0,
        decay_norm_and_bias: bool = True,
        tta: str = "none",
        teacher: torch.nn.Module | None = None,
        distill_temperature: float = 4.0,
        distill_weight: float = 0.5,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        super().__init__()
        # the teacher is a network, built by builders.build_module: not a hyperparameter
        self.save_hyperparameters(logger=False, ignore=["teacher"])
        check_module(
            {
                "label_smoothing": label_smoothing,
                "l1_lambda": l1_lambda,
                "compile_mode": compile_mode,
                "tta": tta,
                "distill_temperature": distill_temperature,
                "distill_weight": distill_weight,
            },
            scheduler,
        )
        self.net = WyCifarNet(**net)
        if channels_last:
            # NHWC is 1.7x faster for these convs on the CPU; the loader yields NHWC batches to match.
            self.net = self.net.to(memory_format=torch.channels_last)
        # Kept out of the module's children so that checkpoints hold `net.*` only; compiled on first use.
        self._compiled: list[torch.nn.Module] = []
        num_classes = self.net.num_classes
        # Kept out of the children too: a distilled checkpoint holds the student only.
        self._teacher: list[torch.nn.Module] = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self._compiled_teacher: list[torch.nn.Module] = []
        if teacher is not None and getattr(teacher, "num_classes", num_classes) != num_classes:
            raise ConfigError(
                f"module.teacher predicts {teacher.num_classes} classes; the student predicts {num_classes}"
            )
        # The training metrics take per-image values with no checks: MulticlassAccuracy's argument
        # checks and MeanMetric's NaN check each wait for the GPU on every step. (Divergence is
        # caught from the epoch's loss by callbacks.divergence; validation and test keep the checked metrics.)
        self.train_acc = MeanMetric(nan_strategy="disable")
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_tta = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # how many images the test saw: an accuracy on part of the split says so
        self.test_images = SumMetric()
        self.val_acc_best = MaxMetric()
        # seconds of fitting before this process (a resumed run's earlier parts; None: not recorded)
        self.fit_s_before: float | None = 0.0
        self._fit_started: float | None = None

    @property
    def teacher_net(self) -> torch.nn.Module | None:
        """The frozen network of `module.teacher`, if any."""
        return self._teacher[0] if self._teacher else None

    def compiled(self, net: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(net, mode=self.hparams.compile_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.hparams.compile:
            return self.net(x)
        if not self._compiled:
            self._compiled.append(self.compiled(self.net))
        return self._compiled[0](x)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits, compiled as the student is: beside a compiled student an eager
        teacher's kernel launches would set the pace of a step."""
        if not self.hparams.compile:
            return self.teacher_net(x)
        if not self._compiled_teacher:
            self._compiled_teacher.append(self.compiled(self.teacher_net))
        return self._compiled_teacher[0](x)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.hparams.label_smoothing, reduction=reduction)

    def l1_penalty(self) -> torch.Tensor:
        return sum(p.abs().sum() for p in self.net.parameters() if p.ndim > 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        per_image_loss = self._loss(logits, y, reduction="none")
        loss = per_image_loss.mean()
        self.train_loss(per_image_loss.detach())
        self.train_acc((logits.detach().argmax(1) == y).float())
        if self.teacher_net is not None:
            with torch.no_grad():
                teacher_logits = self.teacher_logits(x)
            weight = self.hparams.distill_weight
            loss = (1 - weight) * loss + weight * soft_target_loss(
                logits, teacher_logits, self.hparams.distill_temperature
            )
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.hparams.l1_lambda:
            loss = loss + self.hparams.l1_lambda * self.l1_penalty()
        return loss

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        for teacher in self._teacher:
            teacher.to(self.device)

    def on_train_start(self) -> None:
        # The sanity check must not leave its numbers in the best-accuracy tracker.
        self.val_loss.reset()
        self.val_acc.reset()
        self.val_acc_best.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss(self._loss(logits, y), weight=len(y))
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=False, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Returns the class probabilities, for the report callbacks (confusion matrix, mistakes)."""
        x, y = batch
        logits = self(x)
        # Everything read from `logits` is taken now: under CUDA graphs (compile_mode=reduce-overhead)
        # the next call of the network, a TTA view's, overwrites the memory they live in.
        self.test_loss(self._loss(logits, y), weight=len(y))
        self.test_acc(logits, y)
        probs = logits.detach().float().softmax(1)
        del logits
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        self.test_images(len(y))
        self.log("test/images", self.test_images, on_step=False, on_epoch=True)
        if self.hparams.tta != "none":
            self.test_acc_tta(tta_probs(self, x, probs, self.hparams.tta), y)
            self.log("test/acc_tta", self.test_acc_tta, on_step=False, on_epoch=True)
        return {"probs": probs, "target": y}

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).float().softmax(1)

    def _training_device(self) -> torch.device:
        """Where the module trains: the strategy's device (on_load_checkpoint runs before the
        module is moved there)."""
        if self._trainer is not None:
            return self._trainer.strategy.root_device
        return self.device

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Dropout draws from torch's global generators, the CPU's and, on a GPU, the device's: keep
        # their states so that a resumed run continues exactly as an uninterrupted one would.
        checkpoint["rng_states"] = {name: get() for name, (get, _) in rng_generators(self._training_device()).items()}
        # The fit time so far, this process's and any earlier parts': a resumed run's counts them all.
        if self._fit_started is not None and self.fit_s_before is not None:
            checkpoint["fit_s"] = self.fit_s_before + time.perf_counter() - self._fit_started
        # The epoch's training sums so far, over every rank: a run stopped mid-epoch and resumed
        # reports that epoch's loss and accuracy over all its batches, not only the ones after it.
        checkpoint["train_metrics"] = {}
        for name in TRAIN_METRICS:
            metric = getattr(self, name)
            with metric.sync_context(should_unsync=True):
                checkpoint["train_metrics"][name] = {
                    k: v.detach().cpu().clone() for k, v in metric.metric_state.items()
                }
        # What prediction needs besides the weights: class names and input normalisation.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "test_data", None) is not None:
            checkpoint["wycifar"] = {
                "classes": list(datamodule.classes),
                "mean": list(datamodule.mean),
                "std": list(datamodule.std),
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        fitting = self._trainer is not None and self._trainer.state.fn == "fit"
        if not fitting:
            return
        states = checkpoint.get("rng_states", {})
        if "torch_rng_state" in checkpoint:  # checkpoints written before the CUDA state was kept
            states = {"torch": checkpoint["torch_rng_state"]}
        generators = rng_generators(self._training_device())
        for name, state in states.items():
            if name in generators:  # a GPU run's checkpoint resumed on a CPU leaves the CUDA state out
                generators[name][1](state)
        self.fit_s_before = checkpoint.get("fit_s")  # written before fit times were kept: unknown
        if stopped_mid_epoch(checkpoint) and self.global_rank == 0:  # the sums are every rank's: once
            for name, state in checkpoint.get("train_metrics", {}).items():
                metric = getattr(self, name)
                for key, value in state.items():
                    setattr(metric, key, value.to(self._training_device()))

    def parameter_groups(self) -> list[dict]:
        """With `decay_norm_and_bias` off, weight decay on conv weights only: decaying norm scales
        and biases only shrinks the activations."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        if self.hparams.decay_norm_and_bias:
            return [{"params": trainable}]
        return [
            {"params": [p for p in trainable if p.ndim > 1]},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> dict:
        optimizer = instantiate(self.hparams.optimizer, _convert_="all")(self.parameter_groups())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler_cfg = dict(self.hparams.scheduler)
        interval = scheduler_cfg.pop("interval", "epoch")
        epochs = max(1, self.trainer.max_epochs)
        # whole epochs of steps, so that the schedule's epoch axis stays the trainer's
        total_steps = (
            epochs * max(1, int(self.trainer.estimated_stepping_batches) // epochs) if interval == "step" else epochs
        )
        scheduler = instantiate(scheduler_cfg, _convert_="all")(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
