"""The `${best_precision:<accelerator>}` config resolver: the fastest precision that trains as
accurately as fp32 on this machine.

bf16 autocast ("bf16-mixed") where the hardware computes in bf16 natively: a CUDA GPU with bf16
support, or a CPU with AVX512-BF16 or AMX (oneDNN's fast bf16 kernels). Elsewhere bf16 is
emulated and slower than fp32, so "32-true". The chosen value is printed in every run's header.
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def best_precision(accelerator: str = "auto") -> str:
    accelerator = str(accelerator)
    use_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("auto", "cpu"):
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    return "32-true"
