"""Knowledge distillation: training against a trained network's softened predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def softened(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Predictions softened by `temperature`, as log-probabilities."""
    return F.log_softmax(logits.float() / temperature, dim=1)


def mean_of_views(log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Several views' predictions of each image (the image and its mirror) as one: their
    probabilities averaged, as flip TTA averages them, returned as log-probabilities."""
    if len(log_probs) == 1:
        return log_probs[0]
    return torch.logsumexp(torch.stack(tuple(log_probs)), dim=0) - math.log(len(log_probs))


def soft_target_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the predictions softened by `temperature` (the teacher's
    already, by `softened`), times its square so that the gradients keep their size whatever the
    temperature (Hinton et al., 2015)."""
    student = softened(student_logits, temperature)
    return F.kl_div(student, teacher_log_probs, log_target=True, reduction="batchmean") * temperature**2
