"""BatchNorm statistics recomputed over the training images as the test sees them: un-augmented."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback, WeightAveraging
from torch.optim.swa_utils import update_bn

from wycifar.errors import ConfigError, check_whole_number


class PreciseBN(Callback):
    """Before validation in each of the last `last_epochs` epochs of a fit, every BatchNorm's
    running mean and variance are replaced by their averages over all the training images, plain
    (no crop, flip or hole), in shuffled batches, with the weights as they are then (torch's
    update_bn: the batches' means and variances averaged with equal weight).

    During training the running statistics are a momentum-0.1 average over the last few dozen
    augmented batches; the test images are plain. Validation, the checkpoint saved after it and
    so the tested and exported model use the recomputed statistics; training itself uses batch
    statistics and is unchanged. Costs one forward pass over the training images per epoch it runs.
    `before_test`: recompute them before testing instead (`python -m wycifar.eval precise_bn=true`
    on a checkpoint trained without this callback).
    """

    def __init__(self, last_epochs: int = 1, before_test: bool = False):
        check_whole_number("callbacks.precise_bn.last_epochs", last_epochs)
        self.last_epochs = last_epochs
        self.before_test = before_test

    @staticmethod
    def recompute(trainer, pl_module) -> None:
        with trainer.precision_plugin.forward_context():
            update_bn(trainer.datamodule.plain_train_dataloader(), pl_module)

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.before_test:
            return
        # Lightning's weight averaging swaps its own BatchNorm buffers in for validation, so the
        # recomputed ones would never be used.
        if any(isinstance(callback, WeightAveraging) for callback in trainer.callbacks):
            raise ConfigError(
                "callbacks.precise_bn does not combine with weight averaging (callbacks.ema): "
                "validation would use the average's statistics; drop one of them"
            )
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            raise ConfigError(
                f"callbacks.precise_bn needs trainer.max_epochs to know the last epochs; got {trainer.max_epochs!r}"
            )

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.current_epoch < trainer.max_epochs - self.last_epochs:
            return
        self.recompute(trainer, pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        if self.before_test:
            self.recompute(trainer, pl_module)
