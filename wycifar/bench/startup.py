"""python -m wycifar.bench startup [--rounds N]: how soon each command answers where it needs no
training, against `python -c "import lightning"` measured in the same run.

Each light path (help, a misspelt setting, a wrong option, a value not allowed, the summary, the exporter's and the
shipper's help) runs as a user starts it, in a fresh Python, in a scratch folder; the table gives
each one's median wall time and its ratio to Lightning's import. It measures and prints; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = {
    "train --help": ["-m", "wycifar.train", "--help"],
    "train model.nrom=gn (refused)": ["-m", "wycifar.train", "model.nrom=gn"],
    "train model=dws_dilatd (refused)": ["-m", "wycifar.train", "model=dws_dilatd"],
    "train model.norm=xyz (refused)": ["-m", "wycifar.train", "model.norm=xyz"],
    "eval --help": ["-m", "wycifar.eval", "--help"],
    "bench --help": ["-m", "wycifar.bench", "--help"],
    "export --help": ["-m", "wycifar.export", "--help"],
    "ship --help": ["-m", "wycifar.ship", "--help"],
    "add_metadata --help": ["-m", "wycifar.add_metadata", "--help"],
    "summary of one run": ["-m", "wycifar.summary", "runs"],
}
BASELINE = ["-c", "import lightning"]


def wall_time(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wycifar.bench startup", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, interleaved (default 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        (cwd / "runs" / "run").mkdir(parents=True)
        record = {"seed": 0, "overrides": [], "status": "ok", "metrics": {"test/acc": 0.9}}
        (cwd / "runs" / "run" / "metrics.json").write_text(json.dumps(record))
        times: dict[str, list[float]] = {name: [] for name in ["import lightning", *PATHS]}
        for _ in range(args.rounds):  # interleaved, so that a noisy moment falls on all alike
            times["import lightning"].append(wall_time(BASELINE, cwd))
            for name, command in PATHS.items():
                times[name].append(wall_time(command, cwd))
        left = sorted(p.name for p in cwd.iterdir())
    baseline = statistics.median(times["import lightning"])
    print(f"{'command':<36} {'median s':>9} {'/ import lightning':>19}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<36} {median:>9.2f} {median / baseline:>18.2f}x")
    print(f"left in the scratch folder: {', '.join(left)}")
    print(json.dumps({name: statistics.median(values) for name, values in times.items()}))


if __name__ == "__main__":
    main()
