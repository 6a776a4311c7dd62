"""hydra/launcher=parallel's options, registered with Hydra's ConfigStore.

`hydra.launcher.jobs` defaults to ${parallel_jobs:...}, resolved when the sweep starts (one per GPU
times jobs_per_gpu, else one per core, fewer where memory would not hold them), so other configs
can follow it: conf/hparams_search/optuna.yaml runs `hydra.sweeper.n_jobs` trials at once, equal to
the launcher's jobs.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional  # noqa: UP035 - OmegaConf reads typing's generics

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from hydra_plugins.wycifar_launcher._resources import default_jobs

OmegaConf.register_new_resolver(
    "parallel_jobs", lambda per_gpu=1, memory_gb=2.0: default_jobs(int(per_gpu), float(memory_gb)), replace=True
)


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.wycifar_launcher.parallel_launcher.ParallelLauncher"
    # jobs running at once
    jobs: Any = "${parallel_jobs:${.jobs_per_gpu},${.memory_per_job_gb}}"
    # jobs sharing one GPU (the default `jobs` is the GPUs times this)
    jobs_per_gpu: int = 1
    # each job's CPU threads (OMP_NUM_THREADS, torch's threads); null: the cores divided among the jobs
    threads_per_job: Optional[int] = None  # noqa: UP045 - OmegaConf reads typing's forms
    # the GPUs to spread jobs over, as CUDA_VISIBLE_DEVICES names them; null: every visible one
    gpus: Optional[List[str]] = None  # noqa: UP006, UP045
    # the memory a job needs, for the default `jobs`
    memory_per_job_gb: float = 2.0
    # the terminal: auto (live on a terminal, else plain lines), live, plain (a line per event), quiet
    view: str = "auto"
    # seconds between looks at the jobs' folders
    poll_s: float = 0.5
    # modules each slot's job server imports once, then forks the slot's jobs (a fresh process each,
    # without paying the imports again); []: each job a plain new Python process
    preload: List[str] = field(default_factory=lambda: ["wycifar.training.run"])  # noqa: UP006


ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf, provider="wycifar")
