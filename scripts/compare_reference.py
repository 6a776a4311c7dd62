"""Compare runs' epoch tables with the reference's training log, epoch by epoch and over windows.

The reference published one run; a gap at its last epoch alone could be a seed's luck. Averaging
the validation and training accuracy over windows of epochs (a run's mid-training epochs are noisy
one by one, much less so ten at a time) says whether the reference's curve lies inside the runs'
spread or outside it (given three runs or more):

  python scripts/compare_reference.py results/seed results/seed_seed1 outputs/seed/<date>_<time>
  python scripts/compare_reference.py RUN --per-epoch          # the differences epoch by epoch

A RUN is a run folder holding epochs.csv (written by wycifar.train) or the CSV file itself; every
run must have as many epochs as the reference's log.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from wycifar.cli import run_cli
from wycifar.errors import ConfigError

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "seed-README.md"
# the reference's log: | Epoch | LR | Time | TrainLoss | TrainAcc | ValLoss | ValAcc |
LOG_ROW = re.compile(
    r"^\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|[^|]*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*%\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*%\s*\|\s*$"
)
WINDOWS = ((9, 18), (19, 24))
# the spread of two runs is too rough a yardstick to say how far outside it the reference lies
MIN_RUNS_FOR_SPREAD = 3


@dataclass
class Curve:
    name: str
    train_acc: list[float]
    val_acc: list[float]
    val_loss: list[float]


def window_mean(values: list[float], first: int, last: int) -> float:
    """The mean over epochs first..last, counted from 1 as the tables count them."""
    return statistics.fmean(values[first - 1 : last])


def read_reference(path: Path) -> Curve:
    if not path.is_file():
        raise ConfigError(f"--reference={str(path)!r} does not exist; give the reference README holding its log")
    rows = [m.groups() for m in map(LOG_ROW.match, path.read_text().splitlines()) if m]
    if not rows or [int(r[0]) for r in rows] != list(range(1, len(rows) + 1)):
        raise ConfigError(f"--reference={str(path)!r} holds no epoch log (| Epoch | LR | ... | ValAcc | rows from 1)")
    return Curve("reference", [float(r[3]) for r in rows], [float(r[5]) for r in rows], [float(r[4]) for r in rows])


def read_run(path: Path) -> Curve:
    file = path / "epochs.csv" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"run {str(path)!r} has no epochs.csv; give a run folder written by wycifar.train or its CSV")
    with file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return Curve(
            str(path),
            [float(r["TrainAcc"]) for r in rows],
            [float(r["ValAcc"]) for r in rows],
            [float(r["ValLoss"]) for r in rows],
        )
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{str(file)!r} is not an epoch table (columns TrainAcc, ValAcc, ValLoss)") from None


def check_lengths(reference: Curve, runs: list[Curve]) -> None:
    for run in runs:
        if len(run.val_acc) != len(reference.val_acc):
            raise ConfigError(
                f"run {run.name!r} has {len(run.val_acc)} epochs; the reference has {len(reference.val_acc)}: "
                "compare runs of the same length"
            )


def windows_for(epochs: int) -> list[tuple[str, int, int]]:
    windows = [(f"{first}-{last}", first, last) for first, last in WINDOWS if last <= epochs]
    return windows + [("last", epochs, epochs)]


def report(reference: Curve, runs: list[Curve], per_epoch: bool) -> list[str]:
    windows = windows_for(len(reference.val_acc))
    width = max(len(curve.name) for curve in (reference, *runs))
    lines = ["run".ljust(width) + "".join(f" | val {label:>5}  train {label:>5}" for label, _, _ in windows)]

    def row(curve: Curve) -> str:
        cells = "".join(
            f" | {window_mean(curve.val_acc, a, b):8.2f}%  {window_mean(curve.train_acc, a, b):10.2f}%"
            for _, a, b in windows
        )
        return curve.name.ljust(width) + cells

    lines.append(row(reference))
    lines.extend(row(run) for run in runs)
    if len(runs) >= MIN_RUNS_FOR_SPREAD:
        for label, first, last in windows:
            values = [window_mean(run.val_acc, first, last) for run in runs]
            mean, sd = statistics.fmean(values), statistics.stdev(values)
            ref = window_mean(reference.val_acc, first, last)
            where = f"{(ref - mean) / sd:+.1f} sd from their mean" if sd > 0 else "their spread is 0"
            lines.append(
                f"validation accuracy, epochs {label}: {len(runs)} runs {mean:.2f}% mean, sd {sd:.2f}, "
                f"range {min(values):.2f}-{max(values):.2f}%; the reference's {ref:.2f}% is {where}"
            )
    if per_epoch:
        for run in runs:
            lines.append(f"{run.name}: run minus reference per epoch (val acc, train acc, val loss)")
            for epoch, (va, tr, vl) in enumerate(zip(run.val_acc, run.train_acc, run.val_loss), start=1):
                lines.append(
                    f"  {epoch:3d}  {va - reference.val_acc[epoch - 1]:+6.2f}  "
                    f"{tr - reference.train_acc[epoch - 1]:+6.2f}  {vl - reference.val_loss[epoch - 1]:+7.3f}"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or their epochs.csv)")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the README holding the reference's log")
    parser.add_argument("--per-epoch", action="store_true", help="also print each run's differences epoch by epoch")
    args = parser.parse_args(argv)

    def body() -> list[str]:
        reference = read_reference(args.reference)
        runs = [read_run(path) for path in args.runs]
        check_lengths(reference, runs)
        return report(reference, runs, args.per_epoch)

    print("\n".join(run_cli(body)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
