"""python -m wycifar.ship RUN_DIR DEST: copy a finished run's reports and model into results/.

DEST gets the epoch table, curves, GradCAM, mistakes and confusion matrix, the summary, the ONNX
model and its SVG, report.md, metrics.json, and the best checkpoint slimmed to weights and
hyperparameters (model_<params>_<test acc>.ckpt, what `wycifar.predict` looks for).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from wycifar.checkpoints import slim_checkpoint
from wycifar.cli import run_cli
from wycifar.errors import ConfigError

ONNX_NAME = re.compile(r"model_(?P<params>\d+)_(?P<acc>\d\.\d+)\.onnx$")
FILES = [
    "epochs.md",
    "epochs.csv",
    "curves.png",
    "gradcam.png",
    "misclassified.png",
    "confusion_matrix.png",
    "confusion_matrix.csv",
    "summary.txt",
    "report.md",
    "metrics.json",
]


def ship(run_dir: Path, dest: Path) -> list[Path]:
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    onnx = sorted(run_dir.glob("model_*.onnx"))
    named = ONNX_NAME.match(onnx[-1].name) if onnx else None
    if not best or named is None:
        raise ConfigError(
            f"{run_dir} has no best checkpoint or model_<params>_<acc>.onnx: not a finished wycifar.train run"
        )
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES + [onnx[-1].name, onnx[-1].name + ".svg"]:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
            written.append(dest / name)
    # the same name as the run's ONNX model: parameters and test accuracy of these weights
    written.append(slim_checkpoint(best[-1], dest / f"model_{named['params']}_{named['acc']}.ckpt"))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wycifar.ship", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    for path in run_cli(lambda: ship(args.run_dir, args.dest)):
        print(path)
    sys.exit(0)


if __name__ == "__main__":
    main()
