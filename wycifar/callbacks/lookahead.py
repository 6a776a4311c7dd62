"""Lookahead (Zhang et al., 2019): the optimiser's weights are pulled back towards a slow copy."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from wycifar.errors import ConfigError, check_whole_number


class Lookahead(Callback):
    """Every `k` optimiser steps the slow weights move `alpha` of the way to the current (fast)
    weights, and training goes on from the slow weights. Kept as a callback rather than an
    optimiser wrapper so the schedule, SAM and Lightning's optimiser loop see the plain optimiser."""

    def __init__(self, k: int = 5, alpha: float = 0.5):
        check_whole_number("callbacks.lookahead.k", k)
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"callbacks.lookahead.alpha={alpha!r} is invalid: allowed 0 < alpha <= 1")
        self.k = k
        self.alpha = alpha
        self.slow: list[torch.Tensor] | None = None
        self._synced_step = 0

    def _params(self, pl_module) -> list[torch.Tensor]:
        return [p for p in pl_module.parameters() if p.requires_grad]

    def on_train_start(self, trainer, pl_module) -> None:
        # here, not in on_fit_start: a resumed fit has restored this callback's state and the step count by now
        if self.slow is None:
            self.slow = [p.detach().clone() for p in self._params(pl_module)]
            self._synced_step = trainer.global_step
        else:
            self.slow = [s.to(p.device) for s, p in zip(self.slow, self._params(pl_module), strict=True)]

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # global_step counts optimiser steps: with gradient accumulation it stands still for a few batches
        if step == self._synced_step or step % self.k:
            return
        self._synced_step = step
        for slow, fast in zip(self.slow, self._params(pl_module), strict=True):
            slow.lerp_(fast.detach(), self.alpha)
            fast.copy_(slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow, "synced_step": self._synced_step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.slow = state_dict["slow"]
        self._synced_step = state_dict["synced_step"]
