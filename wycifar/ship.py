"""python -m wycifar.ship RUN_DIR DEST: copy a finished run's reports and model into results/.

DEST gets the epoch table, curves, GradCAM, mistakes and confusion matrix, the summary, the ONNX
model and its SVG, report.md, metrics.json, and the best checkpoint slimmed to weights and
hyperparameters (model_<params>_<test acc>.ckpt, what `wycifar.predict` looks for).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from wycifar.checkpoints import slim_checkpoint
from wycifar.cli import run_cli
from wycifar.errors import ConfigError

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
    if not (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir} holds no metrics.json: not a finished wycifar.train run")
    record = json.loads((run_dir / "metrics.json").read_text())
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    onnx = sorted(run_dir.glob("model_*.onnx"))
    if not best or not onnx:
        raise ConfigError(f"{run_dir} has no best checkpoint or ONNX model")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES + [onnx[-1].name, onnx[-1].name + ".svg"]:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
            written.append(dest / name)
    acc = record["metrics"]["test/acc"]
    written.append(slim_checkpoint(best[-1], dest / f"model_{record['params']}_{acc:.4f}.ckpt"))
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
