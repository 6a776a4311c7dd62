"""An exponential moving average of the weights, with a warm-up so the first epochs are usable."""

from functools import partial

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from wycifar.errors import ConfigError


def warmup_ema(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, *, decay: float):
    # A fixed decay of 0.999 would keep ~1000 steps of the random initialisation in the average:
    # validation sits near chance for the first epochs. (1 + n) / (10 + n) forgets the start fast.
    effective = torch.clamp((1.0 + num_averaged) / (10.0 + num_averaged), max=decay).to(averaged.dtype)
    return averaged + (current - averaged) * (1.0 - effective)


class WarmupEMA(EMAWeightAveraging):
    """Lightning's EMA (validation, checkpoints and test use the average) with a warmed-up decay."""

    def __init__(self, decay: float = 0.999, update_every_n_steps: int = 1, **kwargs):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay!r} is invalid: allowed 0 < decay < 1")
        super().__init__(decay=decay, update_every_n_steps=update_every_n_steps, **kwargs)
        # The parent built a fixed-decay average function; the average model is created in setup().
        self._kwargs["avg_fn"] = partial(warmup_ema, decay=decay)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Lightning's callback would put the raw weights (`current_model_state`) back into the
        # module whenever the average exists, so testing a checkpoint after the fit tested the raw
        # model. Only resuming a fit needs them; elsewhere the checkpoint's state_dict, the
        # average, is what is tested and exported.
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
