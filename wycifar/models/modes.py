"""Running a network in evaluation mode for a while, then putting it back as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def eval_mode(net: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`net` in evaluation mode (BatchNorm's running statistics, no dropout) inside the block, and
    back in the mode it was in afterwards, also when the block raises."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)
