"""An exponential moving average of the weights, with a warm-up so the first epochs are usable."""

from __future__ import annotations

from functools import partial

import torch
from lightning.pytorch.callbacks import WeightAveraging

from wycifar.errors import check_number, check_whole_number


def warmup_ema(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, *, decay: float):
    # A fixed decay of 0.999 would keep ~1000 steps of the random initialisation in the average:
    # validation sits near chance for the first epochs. (1 + n) / (10 + n) forgets the start fast.
    effective = torch.clamp((1.0 + num_averaged) / (10.0 + num_averaged), max=decay).to(averaged.dtype)
    return averaged + (current - averaged) * (1.0 - effective)


class WarmupEMA(WeightAveraging):
    """Lightning's weight averaging (validation, checkpoints and test use the average) with an
    exponential average whose decay warms up, updated every `update_every_n_steps` steps."""

    def __init__(self, decay: float = 0.999, update_every_n_steps: int = 1, **kwargs):
        check_number("callbacks.ema.decay", decay, minimum=0, inclusive=False, maximum=1, exclusive_max=True)
        check_whole_number("callbacks.ema.update_every_n_steps", update_every_n_steps)
        super().__init__(avg_fn=partial(warmup_ema, decay=decay), **kwargs)
        self.update_every_n_steps = update_every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.update_every_n_steps == 0

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Lightning's callback would put the raw weights (`current_model_state`) back into the
        # module whenever the average exists, so testing a checkpoint after the fit tested the raw
        # model. Only resuming a fit needs them; elsewhere the checkpoint's state_dict, the
        # average, is what is tested and exported.
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
