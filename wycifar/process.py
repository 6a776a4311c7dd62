"""Process-wide settings for training on the CPU: torch's thread count and glibc's allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch

from wycifar.console import quiet_notices
from wycifar.errors import check_whole_number

log = logging.getLogger("wycifar.process")

# glibc mallopt() parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Keep freed blocks in the heap instead of handing them back to the OS.

    glibc serves every block over its mmap threshold (128 KiB to 32 MiB) with a fresh mmap and
    unmaps it on free, so each training step's activations fault their pages in again: a step of
    the network at batch 128 faults a median of 12,000-27,000 pages, none with this
    (tests/test_process.py's script). Returns False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 256 << 20) and mallopt(M_TRIM_THRESHOLD, 1 << 30))


def configure_process(threads: int | None, keep_freed: bool) -> None:
    quiet_notices()
    torch.set_float32_matmul_precision("high")
    if threads is not None:
        check_whole_number("threads", threads)
        torch.set_num_threads(threads)
    if keep_freed and not keep_freed_memory():
        log.info("keep_freed_memory: not a glibc C library here, the allocator is left as it is")
