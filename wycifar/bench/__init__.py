"""python -m wycifar.bench [overrides]: how fast, measured three ways in one process.
(`python -m wycifar.bench deploy RUN_OR_CHECKPOINT ...`: the deployed model, wycifar.bench.deploy;
`python -m wycifar.bench sweep ...`: hydra/launcher=parallel against the basic launcher, wycifar.bench.sweep;
`python -m wycifar.bench startup`: how soon the commands answer where they need no training.)

(a) the data pipeline alone: cached uint8 images -> augmented, normalised batches on the device;
(b) a bare PyTorch training loop (forward, loss, backward, SGD step) on ready batches: the floor;
(c) the project's real Lightning fit, with the default callbacks, for the same number of batches.

Prints images/s for each, the ratios (c)/(b) and (a)/(b), peak memory, an estimate of a full epoch
(all the training images plus the test images), and ends with one JSON line. Same model, batch
size and data for all three; every train config knob applies (model=..., trainer.precision=...,
module.channels_last=..., module.compile=..., data.batch_size=..., threads=...).
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

from wycifar.cli import CONFIGS, run_cli, run_command

__all__ = ["main", "report", "run_bench"]


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="bench")
def hydra_main(cfg: DictConfig) -> None:
    from wycifar.bench.report import report
    from wycifar.bench.training import run_bench

    result = run_cli(lambda: run_bench(cfg))
    print(report(result), flush=True)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


def main() -> None:
    if sys.argv[1:2] == ["deploy"]:  # wycifar-bench deploy RUN_OR_CHECKPOINT ...: wycifar.bench.deploy
        from wycifar.bench.deploy import main as deploy_main

        deploy_main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["sweep"]:  # wycifar-bench sweep ...: the parallel launcher against the basic one
        from wycifar.bench.sweep import main as sweep_main

        sweep_main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["startup"]:  # wycifar-bench startup: how soon the light paths answer
        from wycifar.bench.startup import main as startup_main

        startup_main(sys.argv[2:])
        return
    run_command(hydra_main, "bench")
