"""The LightningModule: the network, its loss, its optimiser and schedule, and its metrics."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from wycifar.errors import ConfigError, DivergenceError, check_choice, check_number
from wycifar.models import WyCifarNet
from wycifar.models.blocks import is_depthwise
from wycifar.sam import SAM, frozen_norm_statistics

INTERVALS = ("epoch", "step")
DIVERGENCE_CHECK_EVERY = 25
# torch.compile's modes; reduce-overhead replays CUDA graphs on a GPU.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
INDEXED_BATCHES = (
    "module.self_distill needs each training image's index in its batch (x, y, index), "
    "as wycifar.data.CIFAR10DataModule's training loader gives"
)


class WyCifarModule(L.LightningModule):
    """Wraps WyCifarNet(**net). `optimizer` and `scheduler` are Hydra dicts (`_target_`,
    `_partial_`) kept as plain data so that checkpoints hold no pickled objects."""

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        l1_lambda: float = 0.0,
        label_smoothing: float = 0.0,
        decay_norm_and_bias: bool = True,
        decay_depthwise: bool = True,
        tta_flip: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        sam_rho: float = 0.0,
        peer_weight: float = 1.0,
        peer_temperature: float = 2.0,
        self_distill: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"module.label_smoothing={label_smoothing!r} is not allowed; it must be in [0, 1)")
        if l1_lambda < 0:
            raise ConfigError(f"module.l1_lambda={l1_lambda!r} is not allowed; it must be >= 0")
        check_choice("module.compile_mode", compile_mode, COMPILE_MODES)
        if isinstance(sam_rho, bool) or not (isinstance(sam_rho, (int, float)) and sam_rho >= 0):
            raise ConfigError(f"module.sam_rho={sam_rho!r} is not allowed; it must be >= 0 (0: plain steps, no SAM)")
        check_number("module.peer_weight", peer_weight, minimum=0)
        check_number("module.peer_temperature", peer_temperature, minimum=0, inclusive=False)
        check_number("module.self_distill", self_distill, minimum=0, maximum=1)
        if scheduler:
            check_choice("scheduler.interval", scheduler.get("interval", "epoch"), INTERVALS)
        self.net = WyCifarNet(**net)
        # Each of these changes what a training step is; no two of them are combined.
        exclusive = [
            setting
            for setting, on in (
                (f"module.self_distill={self_distill!r}", self_distill),
                (f"module.sam_rho={sam_rho!r}", sam_rho),
                (f"model.peer_heads={len(self.net.peers) + 1}", self.net.peers),
            )
            if on
        ]
        if len(exclusive) > 1:
            raise ConfigError(f"{exclusive[0]} does not work with {exclusive[1]}; use one of them")
        if channels_last:
            # NHWC is 1.7x faster for these convs on the CPU; the loader yields NHWC batches to match.
            self.net = self.net.to(memory_format=torch.channels_last)
        # torch.compile fuses the norm/ReLU/add passes. Kept in a dict so that it is not registered
        # as a second submodule (checkpoints hold `net.*` only); compiled on first use.
        self._compiled: dict[str, torch.nn.Module] = {}
        num_classes = self.net.num_classes
        # The training metrics take per-image values with no checks: MulticlassAccuracy's argument
        # checks and bincount, and MeanMetric's NaN check, each wait for the GPU on every step.
        # (Divergence is caught in training_step; validation and test keep the checked metrics.)
        self.train_acc = MeanMetric(nan_strategy="disable")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_tta = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self._sam: SAM | None = None
        # module.self_distill: each training image's softmax from the last time it was seen, [images,
        # classes]; saved in checkpoints beside the state dict (it is not part of the network)
        self.past_probs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._as_run("net", self.net)(x)

    def compiled(self, net: Callable) -> Callable:
        return torch.compile(net, mode=self.hparams.compile_mode)

    def _as_run(self, name: str, fn: Callable) -> Callable:
        """`fn` itself, or with module.compile=true its compiled form, compiled on first use."""
        if not self.hparams.compile:
            return fn
        if name not in self._compiled:
            self._compiled[name] = self.compiled(fn)
        return self._compiled[name]

    def peer_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[network, peer 1, ...] logits (model.peer_heads), the shared trunk run once."""
        return self._as_run("peers", self.net.forward_peers)(x, 1.0 / (len(self.net.peers) + 1))

    def peer_loss(self, heads: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Online distillation (deep mutual learning, Zhang et al. 2018; collaborative learning,
        Song & Chai 2018): each head learns the labels and, softened by the temperature, the mean
        of the other heads' logits, which is not trained through. Summed over the heads."""
        temperature, total = self.hparams.peer_temperature, 0.0
        logits = [z.float() for z in heads]
        for index, z in enumerate(logits):
            others = torch.stack([o for j, o in enumerate(logits) if j != index]).mean(0).detach()
            target = (others / temperature).softmax(1)
            distill = F.kl_div((z / temperature).log_softmax(1), target, reduction="batchmean")
            total = total + self._loss(z, y) + self.hparams.peer_weight * temperature**2 * distill
        return total

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.hparams.label_smoothing, reduction=reduction)

    def self_distill_weight(self) -> float:
        """module.self_distill's weight this epoch: 0 in the first, rising linearly by epoch."""
        return self.hparams.self_distill * self.current_epoch / self.trainer.max_epochs

    def self_distill_targets(self, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Progressive self-knowledge distillation (PS-KD, Kim et al. 2021): each image's target is
        its label blended with the network's own prediction for it the last time it was seen (the
        previous epoch), by a weight rising from 0 to module.self_distill. Stores this step's
        predictions in its place (from every rank under DDP: the next epoch shards differently)."""
        weight = self.self_distill_weight()
        targets = F.one_hot(y, logits.shape[1]).float()
        if weight:
            targets = (1 - weight) * targets + weight * self.past_probs[index]
        probs, stored_index = logits.detach().float().softmax(1), index
        if self.trainer.world_size > 1:
            probs = self.all_gather(probs).flatten(0, 1)
            stored_index = self.all_gather(index).flatten(0, 1)
        self.past_probs[stored_index] = probs
        return targets

    def on_fit_start(self) -> None:
        if not self.hparams.self_distill:
            return
        if not (self.trainer.max_epochs and self.trainer.max_epochs > 0):
            raise ConfigError(
                f"module.self_distill={self.hparams.self_distill} needs trainer.max_epochs (its weight rises by epoch), "
                f"not {self.trainer.max_epochs!r}"
            )
        train_data = getattr(self.trainer.datamodule, "train_data", None)
        if train_data is None:
            raise ConfigError(INDEXED_BATCHES)
        shape = (len(train_data), self.net.num_classes)
        if self.past_probs is None:
            self.past_probs = torch.zeros(shape, device=self.device)
        elif self.past_probs.shape != shape:
            raise ConfigError(
                f"the checkpoint resumed holds module.self_distill's predictions for {len(self.past_probs)} training "
                f"images, this run trains on {len(train_data)}; resume it on the data it trained on"
            )
        self.past_probs = self.past_probs.to(self.device)

    def l1_penalty(self) -> torch.Tensor:
        return sum(p.abs().sum() for name, p in self.net.named_parameters() if p.ndim > 1)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        # (x, y) or (x, y, image indices): wycifar's training loader adds the indices
        x, y = batch[0], batch[1]
        # SAM's second pass, at the perturbed weights, only supplies a gradient: the norm
        # statistics, checks and metrics are those of the weights being trained
        perturbed = self._sam is not None and self._sam.perturbed
        heads = None
        with frozen_norm_statistics(self.net) if perturbed else nullcontext():
            if self.net.peers:
                heads = self.peer_logits(x)
                logits = heads[0]
            else:
                logits = self(x)
        targets = y
        if self.hparams.self_distill:
            if len(batch) < 3:
                raise ConfigError(INDEXED_BATCHES)
            targets = self.self_distill_targets(logits, y, batch[2])
        per_image_loss = self._loss(logits, targets, reduction="none")
        loss = per_image_loss.mean() if heads is None else self.peer_loss(heads, y)
        if not perturbed:
            self._check_and_log(loss, per_image_loss, logits, y, batch_idx)
        if self.hparams.l1_lambda:
            loss = loss + self.hparams.l1_lambda * self.l1_penalty()
        return loss

    def _check_and_log(
        self, loss: torch.Tensor, per_image_loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, batch_idx: int
    ) -> None:
        # Reading the loss on a GPU waits for the step to finish; a diverged run stays non-finite,
        # so there it is read every DIVERGENCE_CHECK_EVERY steps.
        checked = loss.device.type == "cpu" or batch_idx % DIVERGENCE_CHECK_EVERY == 0
        if checked and not torch.isfinite(loss):
            raise DivergenceError(
                f"training diverged: loss is {loss.item()} at epoch {self.current_epoch + 1}, step {self.global_step} "
                f"(LR {self.trainer.optimizers[0].param_groups[0]['lr']:g}); the last good checkpoint is kept, "
                "lower the learning rate"
            )
        self.train_loss(per_image_loss.detach())
        self.train_acc((logits.detach().argmax(1) == y).float())
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

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
        self.test_loss(self._loss(logits, y), weight=len(y))
        self.test_acc(logits, y)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        if self.hparams.tta_flip:
            probs = logits.float().softmax(1) + self(x.flip(3)).float().softmax(1)
            self.test_acc_tta(probs, y)
            self.log("test/acc_tta", self.test_acc_tta, on_step=False, on_epoch=True)
        return {"probs": logits.detach().float().softmax(1), "target": y}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.past_probs is not None:
            checkpoint["self_distill_probs"] = self.past_probs.cpu()
        # Dropout draws from torch's global generator: keep its state so that a resumed run
        # continues exactly as an uninterrupted one would.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
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
        if "torch_rng_state" in checkpoint and fitting:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if self.hparams.self_distill and fitting:
            if "self_distill_probs" not in checkpoint:
                raise ConfigError(
                    f"module.self_distill={self.hparams.self_distill} cannot resume a checkpoint without its stored "
                    "predictions (it trained without module.self_distill); start a new run"
                )
            self.past_probs = checkpoint["self_distill_probs"]
        if self.net.peers and not fitting:
            # Test, evaluation, export and prediction run the network alone: its peers only trained it.
            self.drop_peers()
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("net.peers.")
            }
            checkpoint["hyper_parameters"] = dict(self.hparams)
        if self.net.reparam and not fitting:
            # Test, evaluation, export and prediction run the plain network the branches fold into.
            net_state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
            self.net.load_state_dict(net_state)
            self.fold_branches()
            checkpoint["state_dict"] = self.state_dict()
            checkpoint["hyper_parameters"] = dict(self.hparams)

    def drop_peers(self) -> None:
        """model.peer_heads' training-time peers removed, in place: the network alone is left."""
        if self.net.drop_peers():
            self.hparams.net = {**self.hparams.net, "peer_heads": 1}
            self._compiled.clear()

    def fold_branches(self) -> None:
        """model.reparam's training-time branches folded into the plain network, in place."""
        if self.net.fold_branches():
            self.hparams.net = {**self.hparams.net, "reparam": False}
            self._compiled.clear()

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).float().softmax(1)

    def parameter_groups(self) -> list[dict]:
        """Weight decay on conv weights only when `decay_norm_and_bias` is off: norm scales and
        biases are then exempt, as they should be (decaying them only shrinks the activations).
        `decay_depthwise` off exempts the depthwise filters too (MobileNet's advice: they hold
        few parameters each)."""
        exempt: set[int] = set()
        if not self.hparams.decay_norm_and_bias:
            exempt |= {id(p) for p in self.net.parameters() if p.ndim <= 1}
        if not self.hparams.decay_depthwise:
            exempt |= {id(m.weight) for m in self.net.modules() if is_depthwise(m)}
        trainable = [p for p in self.parameters() if p.requires_grad]
        if not exempt:
            return [{"params": trainable}]
        decay = [p for p in trainable if id(p) not in exempt]
        no_decay = [p for p in trainable if id(p) in exempt]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self) -> dict:
        optimizer = instantiate(self.hparams.optimizer, _convert_="all")(self.parameter_groups())
        if self.hparams.sam_rho:
            if getattr(self.trainer.strategy.precision_plugin, "scaler", None) is not None:
                # fp16's gradient scaler steps the optimiser without the closure SAM needs
                raise ConfigError(
                    f"module.sam_rho={self.hparams.sam_rho} does not work with "
                    f"trainer.precision={self.trainer.precision} (a gradient scaler); use bf16-mixed or 32-true"
                )
            optimizer = self._sam = SAM(optimizer, self.hparams.sam_rho)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler_cfg = dict(self.hparams.scheduler)
        interval = scheduler_cfg.pop("interval", "epoch")
        if interval == "step":
            total_steps = int(self.trainer.estimated_stepping_batches)
            steps_per_epoch = max(1, total_steps // max(1, self.trainer.max_epochs))
        else:
            total_steps, steps_per_epoch = max(1, self.trainer.max_epochs), 1
        scheduler = instantiate(scheduler_cfg, _convert_="all")(
            optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
