"""python -m wycifar.summary FOLDER... [--out DIR]: the runs below the folders, mean ± sd over seeds.

Reads every metrics.json in or below the folders (run folders, sweeps, outputs/train; a shipped
seed's seed<N>.metrics.json), puts the runs whose overrides differ only in `seed` in one row (n,
mean ± sd, min-max of each accuracy; sd is the sample standard deviation), and lists the runs one
by one below. Overrides of where or how fast a run ran (data.root, paths, threads, ...) and any
given with --ignore do not split groups. A sweep writes the
same tables as summary.md, summary.csv (one row per group) and jobs.csv (one row per job).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wycifar.cli import run_cli
from wycifar.runs.records import WHERE_NOT_WHAT
from wycifar.runs.summary import RunSummary, check_metric, find_records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wycifar-summary", description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="run folders, sweeps, or folders holding them")
    parser.add_argument("--metric", default="test/acc", help="sort by this metric (default: test/acc)")
    parser.add_argument("--out", type=Path, default=None, help="also write summary.md, summary.csv, jobs.csv here")
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="an override key (or group, e.g. trainer) that does not split groups; "
        f"always left out: {', '.join(WHERE_NOT_WHAT)}",
    )

    def summarise() -> str:
        records = find_records(args.folders)
        check_metric(args.metric, records)
        summary = RunSummary(records, args.metric, ignore=tuple(args.ignore))
        title = "Runs in " + ", ".join(map(str, args.folders))
        if args.out is None:
            return summary.markdown(title)
        args.out.mkdir(parents=True, exist_ok=True)
        return summary.write(args.out, title)

    args = parser.parse_args(argv)
    print(run_cli(summarise), end="", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
