"""python -m wycifar.train [overrides]: train (and test) a WyCifar network from the Hydra config.

A thin command over wycifar.training.run: torch and Lightning are imported only once the config has
composed and passed its checks, so --help and a refused value answer at once.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from wycifar.cli import CONFIGS, fail, run_cli, run_command


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from wycifar.training.run import train_and_record

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        metrics, _ = run_cli(lambda: train_and_record(cfg))
        return metrics.get(cfg.get("optimized_metric") or "", None)
    return sweep_job(cfg)


def sweep_job(cfg: DictConfig) -> float | None:
    """A sweep job: a failure ends this job and is in its record; Ctrl-C or SIGTERM ends the sweep."""
    import logging

    from wycifar.errors import InterruptedRun, WycifarError
    from wycifar.runs.hydra_callbacks import write_sweep_summary
    from wycifar.training.run import train_and_record

    log = logging.getLogger("wycifar.train")
    try:
        metrics, _ = train_and_record(cfg)
    except InterruptedRun as error:
        write_sweep_summary(Path(HydraConfig.get().sweep.dir), cfg)
        fail(str(error), error.exit_code, error.prefix)
    except WycifarError as error:
        log.error("%s", error)
        return None
    except Exception:  # noqa: BLE001 - not ours: its traceback goes to the job's log, the sweep goes on
        log.exception("job %s failed", HydraConfig.get().job.get("num", 0))
        return None
    return metrics.get(cfg.get("optimized_metric") or "", None)


def main() -> None:
    run_command(hydra_main, "train")


if __name__ == "__main__":
    main()
