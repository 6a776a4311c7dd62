"""An exponential moving average of the weights, with a warm-up so the first epochs are usable."""

from __future__ import annotations

import itertools

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import AveragedModel

from wycifar.errors import check_number, check_whole_number


def warmup_decay(num_averaged: int, decay: float) -> float:
    """The share of the average an update keeps after `num_averaged` earlier updates.

    A fixed decay of 0.999 would keep ~1000 steps of the random initialisation in the average:
    validation sits near chance for the first epochs. (1 + n) / (10 + n) forgets the start fast."""
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


def warmup_ema(averaged: torch.Tensor, current: torch.Tensor, num_averaged: int, *, decay: float) -> torch.Tensor:
    """One tensor's next average (what WarmupAverage.update_parameters does to all at once)."""
    return averaged.lerp(current, 1.0 - warmup_decay(num_averaged, decay))


class WarmupAverage(AveragedModel):
    """The averaged copy of the module. Its update reads nothing back from the device: the count
    of updates is a Python number (the `n_averaged` buffer, saved in checkpoints, follows it on the
    CPU), the decay a Python float, and the floating-point tensors are averaged in one foreach lerp.
    Integer buffers (BatchNorm's batch count) are copied."""

    def __init__(self, model: torch.nn.Module, device: torch.device, decay: float) -> None:
        super().__init__(model, device=device, use_buffers=True)
        self.n_averaged = torch.tensor(0, dtype=torch.long)  # on the CPU: follows the Python count, no sync
        self.decay = decay
        self.count = 0

    def update_parameters(self, model: torch.nn.Module) -> None:
        averaged = itertools.chain(self.module.parameters(), self.module.buffers())
        current = itertools.chain(model.parameters(), model.buffers())
        pairs = [(a.detach(), c.detach()) for a, c in zip(averaged, current, strict=True)]
        floats = [(a, c) for a, c in pairs if a.is_floating_point()]
        with torch.no_grad():
            if self.count == 0:
                torch._foreach_copy_([a for a, _ in pairs], [c for _, c in pairs])
            else:
                weight = 1.0 - warmup_decay(self.count, self.decay)
                torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
                for a, c in pairs:
                    if not a.is_floating_point():
                        a.copy_(c)
        self.count += 1
        self.n_averaged.fill_(self.count)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.count = int(self.n_averaged)  # on the CPU: read once, when a fit resumes


class WarmupEMA(WeightAveraging):
    """Lightning's weight averaging (validation, checkpoints and test use the average) with an
    exponential average whose decay warms up, updated every `update_every_n_steps` steps. The
    average is built on the device the module trains on."""

    def __init__(self, decay: float = 0.999, update_every_n_steps: int = 1, **kwargs):
        check_number("callbacks.ema.decay", decay, minimum=0, inclusive=False, maximum=1, exclusive_max=True)
        check_whole_number("callbacks.ema.update_every_n_steps", update_every_n_steps)
        super().__init__(**kwargs)
        self.decay = float(decay)
        self.update_every_n_steps = update_every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.update_every_n_steps == 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Lightning's setup builds the copy on the module's device, and setup runs before the
        # module is moved: on a GPU the average would live on the CPU and every update copy the
        # weights across. The strategy's root device is where the module will train.
        if stage == "fit":
            device = self._device or trainer.strategy.root_device
            self._average_model = WarmupAverage(pl_module, device, self.decay)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Lightning's callback would put the raw weights (`current_model_state`) back into the
        # module whenever the average exists, so testing a checkpoint after the fit tested the raw
        # model. Only resuming a fit needs them; elsewhere the checkpoint's state_dict, the
        # average, is what is tested and exported.
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
