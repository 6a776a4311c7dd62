"""Runs' records in tables: the runs whose overrides differ only in `seed` in one row (n, failed,
stopped (resumable), running, mean ± sd, min-max of each accuracy; sd is the sample standard
deviation), then the runs one by one (`RunSummary`), read from the folders that hold them
(`find_records`). `python -m wycifar.summary` and every sweep's summary.md, summary.csv and
jobs.csv are made with these.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from wycifar.errors import ConfigError
from wycifar.files import atomic_write_text
from wycifar.runs.records import (
    INTERRUPTED,
    OK,
    RECORD,
    RUNNING,
    WHERE_NOT_WHAT,
    is_ignored,
    is_training_run,
    override_key,
    partial_test,
    status_of,
    unrecorded_run,
)

# metrics.json key -> (CSV column, table heading)
ACCURACIES = {
    "test/acc": ("test_acc", "test acc"),
    "test/acc_tta": ("test_acc_tta", "TTA acc"),
    "val/acc_best": ("val_acc_best", "best val acc"),
}
JOB_COLUMNS = [
    "job",
    "folder",
    "overrides",
    "seed",
    "params",
    "val_acc_best",
    "test_acc",
    "test_images",
    "time_s",
    "status",
]


def find_records(folders: list[Path]) -> list[tuple[Path, dict]]:
    """(run, its record) for each run in or below `folders`, each once, in path order: a run
    folder's metrics.json, a shipped seed's seed<N>.metrics.json (wycifar.ship), or a training run's
    folder with no record at all (status `unfinished`). A record's status is as `records.status_of`
    reads it: a run whose process is gone without ending its record is `killed`."""
    found: dict[Path, dict] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder; give run folders or folders holding them (outputs/train)")
        for path in sorted(folder.rglob("*metrics.json")):
            run = path.parent if path.name == "metrics.json" else path.with_name(path.name.split(".")[0])
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ConfigError(f"{path} is not a wycifar job record (metrics.json): {error}") from None
            found[run.resolve()] = record | {"status": status_of(record)}
        for hydra_dir in sorted(folder.rglob(".hydra")):
            run = hydra_dir.parent
            if run.resolve() not in found and not (run / RECORD).exists() and is_training_run(run):
                found[run.resolve()] = unrecorded_run(run)
    if not found:
        raise ConfigError(f"no metrics.json in or below {', '.join(map(str, folders))}: no wycifar runs there")
    return sorted(found.items())


def is_seed(override: str) -> bool:
    return override_key(override) == "seed"


def spread(values: list[float]) -> dict[str, float | None]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


class RunSummary:
    """Runs' records grouped by their overrides without the seed."""

    def __init__(
        self,
        records: list[tuple[Path, dict]],
        metric: str = "test/acc",
        root: Path | None = None,
        ignore: tuple[str, ...] = (),
    ):
        self.records, self.metric, self.root = records, metric, root
        self.ignored = WHERE_NOT_WHAT + tuple(ignore)
        lists = [r.get("overrides", []) for _, r in records]
        # overrides every run shares go in the title; the tables show what the runs vary
        self.common = [o for o in lists[0] if all(o in other for other in lists)] if lists else []

    def varied(self, record: dict) -> str:
        """The record's overrides that not every run shares (the per-run table shows them)."""
        return " ".join(sorted(o for o in record.get("overrides", []) if o not in self.common))

    def recipe(self, record: dict) -> str:
        """What groups runs: the overrides not every run shares, without the seed and without
        those that say where or how fast the run ran."""
        kept = sorted(
            o
            for o in record.get("overrides", [])
            if o not in self.common and not is_seed(o) and not is_ignored(o, self.ignored)
        )
        # an accuracy on part of the test split is never averaged with whole-split ones
        partial = partial_test(record.get("metrics") or {})
        return " ".join(kept + ([f"[tested on {partial[0]:,} of {partial[1]:,} images]"] if partial else []))

    def jobs(self) -> list[dict]:
        rows = []
        for folder, record in self.records:
            metrics = record.get("metrics", {})
            rows.append(
                {
                    "job": record.get("job", 0),
                    "folder": str(folder.relative_to(self.root)) if self.root else str(folder),
                    "overrides": self.varied(record),
                    "seed": record.get("seed"),
                    "params": record.get("params"),
                    "val_acc_best": metrics.get("val/acc_best"),
                    "test_acc": metrics.get("test/acc"),
                    "test_images": metrics.get("test/images"),
                    "_partial": partial_test(record.get("metrics") or {}),
                    "time_s": metrics.get("time/fit_s"),
                    "status": record.get("status", "ok"),
                    "_key": metrics.get(self.metric),
                }
            )
        rows.sort(key=lambda r: (r["_key"] is None, -(r["_key"] or 0.0)))
        return rows

    def groups(self) -> list[dict]:
        grouped: dict[str, list[dict]] = {}
        for _, record in self.records:
            grouped.setdefault(self.recipe(record), []).append(record)
        rows = []
        for overrides, members in grouped.items():
            done = [r for r in members if r.get("status", OK) == OK]
            running = sum(r.get("status") == RUNNING for r in members)
            stopped = sum(r.get("status") == INTERRUPTED for r in members)  # resumable, not failed
            row: dict[str, Any] = {
                "overrides": overrides,
                "n": len(done),
                "failed": len(members) - len(done) - running - stopped,
                "stopped": stopped,
                "running": running,
                "seeds": " ".join(str(seed) for seed in sorted((r.get("seed") for r in done), key=str)),
            }
            for key, (column, _) in ACCURACIES.items():
                values = [r["metrics"][key] for r in done if r.get("metrics", {}).get(key) is not None]
                for stat, value in (spread(values) if values else {}).items():
                    row[f"{column}_{stat}"] = value
            rows.append(row)
        column = ACCURACIES.get(self.metric, (self.metric,))[0]
        rows.sort(key=lambda r: (r.get(f"{column}_mean") is None, -(r.get(f"{column}_mean") or 0.0)))
        return rows

    def group_columns(self) -> list[str]:
        stats = [f"{c}_{s}" for c, _ in ACCURACIES.values() for s in ("mean", "sd", "min", "max")]
        return ["overrides", "n", "failed", "stopped", "running", "seeds", *stats]

    def markdown(self, title: str) -> str:
        groups, jobs = self.groups(), self.jobs()
        shown = [(key, column, heading) for key, (column, heading) in ACCURACIES.items()]
        shown = [s for s in shown if any(f"{s[1]}_mean" in g for g in groups)]
        header = ["overrides", "n", "seeds", *(f"{h} ({s})" for _, _, h in shown for s in ("mean ± sd", "min-max"))]
        lines = [
            f"{title}: {len(jobs)} runs in {len(groups)} groups (runs differing only in seed), sorted by {self.metric}",
            f"Common to all runs: `{' '.join(self.common)}`" if self.common else "",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for g in groups:
            cells = [f"`{g['overrides']}`" if g["overrides"] else "(none)", str(g["n"]), g["seeds"]]
            for _, column, _ in shown:
                if f"{column}_mean" not in g:
                    cells += ["", ""]
                    continue
                sd = g[f"{column}_sd"]
                cells.append(f"{100 * g[f'{column}_mean']:.2f}%" + (f" ± {100 * sd:.2f}" if sd is not None else ""))
                cells.append(f"{100 * g[f'{column}_min']:.2f}-{100 * g[f'{column}_max']:.2f}%")
            extra = [f"{g[k]} {k}" for k in ("failed", "stopped", "running") if g[k]]
            if extra:
                cells[1] += f" (+{', '.join(extra)})"
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "| job | folder | overrides | params | best val acc | test acc | time (s) | status |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['job']} | {r['folder']} | {f'`{o}`' if (o := r['overrides']) else '(none)'} | {_number(r['params'])} | {_percent(r['val_acc_best'])} | "
            f"{_percent(r['test_acc'])}{_on_images(r['_partial'])} | {_number(r['time_s'])} | {r['status']} |"
            for r in jobs
        ]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, title: str) -> str:
        """summary.md, summary.csv (groups) and jobs.csv into `folder`; returns the markdown."""
        text = self.markdown(title)
        atomic_write_text(folder / "summary.csv", _csv(self.groups(), self.group_columns()))
        atomic_write_text(folder / "jobs.csv", _csv(self.jobs(), JOB_COLUMNS))
        atomic_write_text(folder / "summary.md", text)
        return text


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else ""


def _on_images(partial: tuple[int, int] | None) -> str:
    return f" (on {partial[0]:,} of {partial[1]:,} images)" if partial else ""


def _number(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else ""


def check_metric(metric: str, records: list[tuple[Path, dict]]) -> None:
    """--metric names a metric the runs recorded (or one of the accuracies every summary shows)."""
    known = set(ACCURACIES) | {key for _, record in records for key in (record.get("metrics") or {})}
    if metric not in known:
        raise ConfigError(
            f"--metric {metric!r} is not a metric of these runs; choose one of: {', '.join(sorted(known))}"
        )
