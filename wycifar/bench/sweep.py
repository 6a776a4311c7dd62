"""python -m wycifar.bench sweep [--data ROOT] [options] [-- OVERRIDES]: the parallel launcher against
the basic one, on the same sweep of short real trainings.

The sweep: `--jobs` trainings (seeds 0, 1, ...) of `--batches` batches each, `logger=none`,
`callbacks=none`, no validation or test. It runs twice, each a `python -m wycifar.train -m` of its
own: with Hydra's basic launcher (one job after another in one process, `threads=--threads`), then
with `hydra/launcher=parallel` (`--at-once` jobs at once, `--threads-per-job` threads each). A
one-batch training before both fills the decode cache. Prints each sweep's wall time and images
per second, the ratio (basic time / parallel time: the parallel launcher's speed-up), then one JSON
line. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep_command(args: argparse.Namespace, out: Path, extra: list[str]) -> list[str]:
    seeds = ",".join(str(s) for s in range(args.jobs))
    return [
        sys.executable,
        "-m",
        "wycifar.train",
        "-m",
        f"seed={seeds}",
        f"data.root={args.data}",
        f"data.batch_size={args.batch_size}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.batches}",
        "trainer.limit_val_batches=0",
        "test=false",
        "logger=none",
        "callbacks=none",
        f"hydra.sweep.dir={out}",
        *extra,
    ]


def timed(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as output:
        code = subprocess.call(command, stdout=output, stderr=subprocess.STDOUT)
    took = time.perf_counter() - started
    if code != 0:
        sys.exit(f"error: {' '.join(command[2:4])} ... exited with status {code}; its output is in {log}")
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wycifar.bench sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("WYCIFAR_DATA", "data/cifar10"), help="CIFAR-10's folder")
    parser.add_argument("--jobs", type=int, default=4, help="trainings in the sweep (default 4)")
    parser.add_argument("--batches", type=int, default=400, help="training batches each (default 400)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="the basic launcher's torch threads (default 2)")
    parser.add_argument("--at-once", type=int, default=2, help="the parallel launcher's jobs at once (default 2)")
    parser.add_argument("--threads-per-job", type=int, default=1, help="its threads per job (default 1)")
    parser.add_argument("--out", default=None, help="where the sweeps and their logs go (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="more overrides for every training (after --)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="wycifar_bench_sweep_"))
    out.mkdir(parents=True, exist_ok=True)

    warm = [
        sys.executable,
        "-m",
        "wycifar.train",
        f"data.root={args.data}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "test=false",
        "logger=none",
        "callbacks=none",
        f"hydra.run.dir={out}/warm",
    ]
    timed(warm, out / "warm.log")
    basic = timed(sweep_command(args, out / "basic", [f"threads={args.threads}", *args.overrides]), out / "basic.log")
    parallel_overrides = [
        "hydra/launcher=parallel",
        f"hydra.launcher.jobs={args.at_once}",
        f"hydra.launcher.threads_per_job={args.threads_per_job}",
        "hydra.launcher.view=quiet",
        *args.overrides,
    ]
    parallel = timed(sweep_command(args, out / "parallel", parallel_overrides), out / "parallel.log")

    images = args.jobs * args.batches * args.batch_size
    result = {
        "jobs": args.jobs,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "basic_s": round(basic, 1),
        "basic_threads": args.threads,
        "parallel_s": round(parallel, 1),
        "parallel_at_once": args.at_once,
        "parallel_threads_per_job": args.threads_per_job,
        "basic_img_s": round(images / basic, 1),
        "parallel_img_s": round(images / parallel, 1),
        "speedup": round(basic / parallel, 3),
    }
    print(
        f"{args.jobs} jobs of {args.batches} batches of {args.batch_size}: basic launcher ({args.threads} threads) "
        f"{basic:.1f} s, {images / basic:.0f} img/s; parallel launcher ({args.at_once} at once, "
        f"{args.threads_per_job} thread{'s' * (args.threads_per_job != 1)} each) {parallel:.1f} s, "
        f"{images / parallel:.0f} img/s; speed-up {basic / parallel:.2f}x (logs in {out})",
        flush=True,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
