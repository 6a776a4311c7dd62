"""python -m wycifar.eval ckpt_path=<file.ckpt>: test a saved model and write every report.

A thin command over wycifar.training.evaluate, which torch and Lightning come with.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wycifar.cli import CONFIGS, run_cli, run_command


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    from wycifar.training.evaluate import evaluate

    run_cli(lambda: evaluate(cfg))


def main() -> None:
    run_command(hydra_main, "eval")


if __name__ == "__main__":
    main()
