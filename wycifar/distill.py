"""Knowledge distillation: training against a trained network's softened predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wycifar.errors import ConfigError


def load_teacher(path: str, num_classes: int) -> torch.nn.Module:
    """The network of a wycifar checkpoint, frozen in evaluation mode."""
    from wycifar.checkpoints import load_module  # imports this package's module, which imports us

    try:
        net = load_module(path).net.eval().requires_grad_(False)
    except ConfigError as error:
        raise ConfigError(f"module.teacher: {error}") from None
    if net.num_classes != num_classes:
        raise ConfigError(
            f"module.teacher={path!r} predicts {net.num_classes} classes; the student predicts {num_classes}"
        )
    return net


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the predictions softened by `temperature`, times its square so
    that the gradients keep their size whatever the temperature (Hinton et al., 2015)."""
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2
