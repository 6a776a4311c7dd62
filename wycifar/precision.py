"""The `${best_precision:<accelerator>,<gpus>}` config resolver: the fastest precision that trains
as accurately as fp32 on this machine.

bf16 autocast ("bf16-mixed") where the hardware computes in bf16 natively: a CUDA GPU with bf16
units (Ampere and later; not a T4 or V100, where torch emulates bf16, slower than fp32), or a CPU
with AVX512-BF16 or AMX (oneDNN's fast bf16 kernels). Elsewhere "32-true". The chosen value is
printed in every run's header.
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cuda_has_native_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def accelerator_of(accelerator: str = "auto", gpus=None) -> str:
    """The accelerator a run uses once `trainer.gpus` (Lightning 1's spelling) is mapped, as
    builders.map_gpus maps it: 0 is the CPU, any other count a GPU."""
    if gpus is None:
        return str(accelerator)
    return "cpu" if gpus == 0 else "gpu"


def uses_cuda(accelerator: str, cuda_available: bool) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_available)


def precision_rule(accelerator: str, *, cuda_available: bool, cuda_bf16: bool, cpu_bf16: bool) -> str:
    """The precision for `accelerator` given the machine's answers: whether CUDA is there, whether
    its GPU computes bf16 natively, whether the CPU does."""
    if uses_cuda(accelerator, cuda_available):
        return "bf16-mixed" if cuda_available and cuda_bf16 else "32-true"
    if accelerator in ("auto", "cpu"):
        return "bf16-mixed" if cpu_bf16 else "32-true"
    return "32-true"


def best_precision(accelerator: str = "auto", gpus=None) -> str:
    accelerator = accelerator_of(accelerator, gpus)
    cuda_available = torch.cuda.is_available()
    cuda = uses_cuda(accelerator, cuda_available)
    # only the device the run uses is asked (asking the GPU starts CUDA in this process)
    return precision_rule(
        accelerator,
        cuda_available=cuda_available,
        cuda_bf16=cuda and cuda_has_native_bf16(),
        cpu_bf16=not cuda and cpu_has_native_bf16(),
    )
