"""What the machine has for a sweep: cores, GPUs, memory; the default number of jobs at once."""

import os


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them for a child process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # no torch, or a broken CUDA install: no GPUs
        count = 0
    if visible is not None:
        names = [name.strip() for name in visible.split(",") if name.strip()]
        return names[:count]
    return [str(i) for i in range(count)]


def available_memory_gb() -> float | None:
    """MemAvailable from /proc/meminfo, in GB (None where there is none)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_jobs(jobs_per_gpu: int = 1, memory_per_job_gb: float = 2.0) -> int:
    """One per GPU times jobs_per_gpu on a GPU machine, else one per core; fewer where the
    available memory would not hold that many jobs of memory_per_job_gb each."""
    gpus = visible_gpus()
    jobs = len(gpus) * max(1, int(jobs_per_gpu)) if gpus else cores()
    memory = available_memory_gb()
    if memory is not None and memory_per_job_gb and float(memory_per_job_gb) > 0:
        jobs = min(jobs, int(memory // float(memory_per_job_gb)))
    return max(1, jobs)
