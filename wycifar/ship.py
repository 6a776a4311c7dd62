"""python -m wycifar.ship RUN_DIR RECIPE_DIR [--model] [--checkpoint]: keep a finished run under results/.

Every shipped run adds its seed's epoch table, ONNX model and job record to RECIPE_DIR/seeds/
(seed<N>.csv, seed<N>_model_<params>_<test acc>.onnx, seed<N>.metrics.json), from which a
recipe's mean is checked (`python -m wycifar.summary RECIPE_DIR/seeds`). With --checkpoint the
seed's tested checkpoint, slimmed to weights and hyperparameters, goes beside its ONNX model
(seed<N>_model_<params>_<test acc>.ckpt): a teacher for `module.teacher`.
With --model the run also becomes the recipe's model: its reports (epoch table, curves, GradCAM,
mistakes, confusion matrix, summary, report.md, network SVG), its ONNX model and its tested
checkpoint slimmed to weights and hyperparameters (model_<params>_<test acc>.ckpt, what
`wycifar.predict` looks for) go into RECIPE_DIR, replacing the model there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from wycifar.cli import run_cli
from wycifar.errors import ConfigError
from wycifar.runs.folders import model_name, parse_model_name, run_model, tested_checkpoint


def run_config(run_dir: Path) -> DictConfig:
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{run_dir} has no .hydra/config.yaml: not a wycifar.train run folder")
    return OmegaConf.load(config)


def ship(run_dir: Path, dest: Path, model: bool = False, checkpoint: bool = False) -> list[Path]:
    from wycifar.callbacks.report import configured_outputs  # Lightning's, only where a run is shipped
    from wycifar.training.checkpoints import slim_checkpoint

    config = run_config(run_dir)
    reports = configured_outputs(config.get("callbacks"))
    tested = tested_checkpoint(run_dir)
    onnx = run_model(run_dir)
    table = reports.get("epochs_csv", "epochs.csv")
    if tested is None or onnx is None or not (run_dir / table).is_file():
        raise ConfigError(
            f"{run_dir} has no checkpoint, {table} or model_<params>_<acc>.onnx: not a finished wycifar.train run"
        )
    if parse_model_name(onnx.name) is None:
        raise ConfigError(
            f"{run_dir}'s model {onnx.name} carries no accuracy: it was tested on part of the test split; "
            "ship a run tested on the whole split (or export it: python -m wycifar.export RUN)"
        )
    params, accuracy, _ = parse_model_name(onnx.name)
    seed = int(config.seed)
    seeds = dest / "seeds"
    seeds.mkdir(parents=True, exist_ok=True)
    for old in [*seeds.glob(f"seed{seed}_model_*.onnx"), *seeds.glob(f"seed{seed}_model_*.ckpt")]:
        old.unlink()
    written = [Path(shutil.copy2(run_dir / table, seeds / f"seed{seed}.csv"))]
    written.append(Path(shutil.copy2(onnx, seeds / f"seed{seed}_{onnx.name}")))
    if (run_dir / "metrics.json").is_file():
        written.append(Path(shutil.copy2(run_dir / "metrics.json", seeds / f"seed{seed}.metrics.json")))
    if checkpoint:  # a teacher for module.teacher, or weights to evaluate again
        written.append(slim_checkpoint(tested, seeds / f"seed{seed}_{model_name(params, accuracy, 'ckpt')}"))
    if not model:
        return written
    for old in [*dest.glob("model_*.ckpt"), *dest.glob("model_*.onnx"), *dest.glob("model_*.onnx.svg")]:
        old.unlink()
    for name in [*reports.values(), onnx.name, onnx.name + ".svg"]:
        if (run_dir / name).is_file():
            written.append(Path(shutil.copy2(run_dir / name, dest / name)))
    # the same name as the run's ONNX model: parameters and test accuracy of these weights
    written.append(slim_checkpoint(tested, dest / model_name(params, accuracy, "ckpt")))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wycifar.ship", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's folder (outputs/train/<date_time>)")
    parser.add_argument("dest", type=Path, help="the recipe's folder, e.g. results/default")
    parser.add_argument("--model", action="store_true", help="also make this run the recipe's model and reports")
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="also keep the seed's checkpoint in seeds/ (a teacher for module.teacher)",
    )
    args = parser.parse_args(argv)
    for path in run_cli(lambda: ship(args.run_dir, args.dest, args.model, args.checkpoint)):
        print(path)
    sys.exit(0)


if __name__ == "__main__":
    main()
