"""Sharpness-aware minimisation (Foret et al., 2021) around any torch optimiser.

Each step evaluates the gradient twice: at the weights w, then at w + rho * g / ||g||, the
nearby point where the loss rises fastest; the wrapped optimiser then steps from w with the
second gradient. It seeks weights whose whole neighbourhood has a low loss, at twice the cost
of a step. The wrapper shares the wrapped optimiser's param_groups, so schedules that set the
learning rate or momentum there drive both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.optim import Optimizer


class SAM(Optimizer):
    def __init__(self, base: Optimizer, rho: float = 0.05) -> None:
        if not rho > 0:
            # the user's knob (module.sam_rho) is checked where it is read; this guards direct use
            raise ValueError(f"SAM needs rho > 0, got {rho!r}")
        # the wrapped defaults too: Lightning's LearningRateMonitor looks there for a momentum
        super().__init__(base.param_groups, {**base.defaults, "rho": rho})
        self.base = base
        self.rho = rho
        self.param_groups = base.param_groups
        self.state = base.state
        # True while the closure runs at the perturbed weights: the training step then leaves
        # its metrics alone, so they describe the weights being trained.
        self.perturbed = False

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss and its gradients")
        with torch.enable_grad():
            loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / (grad_norm + 1e-12)
        offsets = [p.grad * scale for p in params]
        torch._foreach_add_(params, offsets)
        self.perturbed = True
        try:
            with torch.enable_grad():
                closure()
        finally:
            self.perturbed = False
            torch._foreach_sub_(params, offsets)
        self.base.step()
        return loss

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups
        self.state = self.base.state


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch but leave their running statistics (and count)
    alone: SAM's second pass runs at weights that are not the model's, and evaluation should use
    statistics of the weights it evaluates."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
