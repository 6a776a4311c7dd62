"""Time to accuracy: whole trainings, each timed from the command to its printed test accuracy.

    python scripts/time_to_accuracy.py --seeds 0 1 2 -- experiment=speedrun trainer.gpus=1

runs `python -m wycifar.train seed=<s> <overrides>` once per seed, one after the other, each in
OUT/seed<s> (--out, default outputs/time_to_accuracy/<date_time>), and prints a row per seed (wall
time of the whole command: start-up, data, compiling, every epoch, test, reports; the summed epoch
times; single-view and TTA test accuracy) and the seeds' mean ± sd: the rows of the time-to-accuracy
table in docs/performance.md. Exits non-zero if a training fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


def run_seed(seed: int, overrides: list[str], out: Path) -> dict:
    run_dir = out / f"seed{seed}"
    command = [sys.executable, "-m", "wycifar.train", f"seed={seed}", *overrides, f"hydra.run.dir={run_dir}"]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with (out / f"seed{seed}.log").open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"error: seed {seed} failed with exit status {code}; its output is in {out}/seed{seed}.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    with (run_dir / "epochs.csv").open() as f:
        epochs = [float(row["Time"]) for row in csv.DictReader(f)]
    return {
        "seed": seed,
        "wall_s": wall,
        "epochs": len(epochs),
        "epochs_s": sum(epochs),
        "test_acc": 100 * metrics["test/acc"],
        "test_acc_tta": 100 * metrics["test/acc_tta"] if "test/acc_tta" in metrics else float("nan"),
    }


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="wycifar.train overrides (after --)")
    args = parser.parse_args(argv)
    out = args.out or Path("outputs/time_to_accuracy") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| seed | wall s | epochs | epochs s | test acc % | TTA % |")
    for seed in args.seeds:
        row = run_seed(seed, args.overrides, out)
        rows.append(row)
        print(
            f"| {row['seed']} | {row['wall_s']:.0f} | {row['epochs']} | {row['epochs_s']:.0f} "
            f"| {row['test_acc']:.2f} | {row['test_acc_tta']:.2f} |",
            flush=True,
        )
    print(
        f"mean over {len(rows)} seeds: wall {mean_sd([r['wall_s'] for r in rows])} s, "
        f"test acc {mean_sd([r['test_acc'] for r in rows])}%, TTA {mean_sd([r['test_acc_tta'] for r in rows])}%"
    )
    (out / "time_to_accuracy.json").write_text(json.dumps({"overrides": args.overrides, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
