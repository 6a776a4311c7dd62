"""A run's record, `metrics.json` in its folder: what the summaries, `ckpt_path=last` and the
launchers read to know how a run ended.

A run writes its record twice: when its folder is claimed (status `running`, with its process id
and host) and when it ends (`ok`, `diverged`, `interrupted` or `error: ...`, with its metrics). A
run killed outright (SIGKILL, out of memory) never writes the second: its record still says
`running`, and `status_of` reads it as `killed` once no such process lives on that host. A folder
holding a run (Hydra's `.hydra`) with no record at all is `unfinished`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from wycifar.files import atomic_write_text

RECORD = "metrics.json"
OK = "ok"
RUNNING = "running"
INTERRUPTED = "interrupted"  # stopped by Ctrl-C or SIGTERM with a resumable checkpoint: not a failure
KILLED = "killed"
UNFINISHED = "unfinished"


def write_record(folder: str | Path, record: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RECORD, json.dumps(record, indent=2) + "\n")


def read_record(folder: str | Path) -> dict | None:
    """The record in `folder`, or None where there is none (or it cannot be read)."""
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def started(record: dict) -> dict:
    """`record` as a running run's: its process and host, for telling a live run from a killed one."""
    return {**record, "status": RUNNING, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there: take it as alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else (or this platform cannot tell): not dead
    return True


def status_of(record: dict | None) -> str:
    """How the run ended: the record's status, `killed` for a `running` record whose process is gone
    (on this host; another host's runs are taken at their word), `unfinished` for no record."""
    if record is None:
        return UNFINISHED
    status = str(record.get("status", OK))
    if status == RUNNING and record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        if record["pid"] != os.getpid() and not process_alive(record["pid"]):
            return KILLED
    return status


def mark_ended(folder: str | Path, status: str, error: str | None = None) -> dict:
    """For a launcher whose job died without ending its record: the record (or a new one) with
    this status (e.g. `killed (SIGKILL)`), unless the job wrote its own end first."""
    record = read_record(folder) or {}
    if record.get("status", RUNNING) != RUNNING and record.get("status") is not None:
        return record
    record = {k: v for k, v in record.items() if k not in ("pid",)} | {"status": status}
    if error:
        record["error"] = error
    write_record(folder, record)
    return record


def partial_test(metrics: dict) -> tuple[int, int] | None:
    """(images tested, images in the test split) where a run's test covered part of the split
    (`test/images` below `test/split_images`), else None."""
    tested, whole = metrics.get("test/images"), metrics.get("test/split_images")
    if tested is None or whole is None or tested >= whole:
        return None
    return int(tested), int(whole)


def is_training_run(folder: Path) -> bool:
    """`folder` holds a wycifar.train run (Hydra's record of a `train` job), not an evaluation."""
    hydra_yaml = folder / ".hydra" / "hydra.yaml"
    if not hydra_yaml.is_file():
        return False
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.name") == "train"
    except Exception:  # noqa: BLE001 - a half-written hydra.yaml is no run of ours
        return False


def unrecorded_run(folder: Path) -> dict:
    """The record of a run that wrote none (killed before its start was recorded, or made by an
    older wycifar): its overrides and seed from Hydra's files, status `unfinished`."""
    from omegaconf import OmegaConf

    overrides = (
        OmegaConf.load(folder / ".hydra" / "overrides.yaml") if (folder / ".hydra" / "overrides.yaml").is_file() else []
    )
    config = OmegaConf.load(folder / ".hydra" / "config.yaml") if (folder / ".hydra" / "config.yaml").is_file() else {}
    return {
        "job": 0,
        "seed": OmegaConf.select(config, "seed") if config else None,
        "overrides": list(overrides),
        "status": UNFINISHED,
    }


# Overrides that say where or how fast a run ran, or where it resumed from, not what it trained:
# left out when runs are compared (grouped in a summary, matched to resume one)
WHERE_NOT_WHAT = (
    "paths",
    "hydra",
    "data.root",
    "data.cache_dir",
    "threads",
    "callbacks.progress_bar",
    "logger",
    "ckpt_path",
)


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def is_ignored(override: str, ignored: tuple[str, ...]) -> bool:
    key = override_key(override)
    return any(key == prefix or key.startswith(prefix + ".") for prefix in ignored)


def recipe(overrides: list[str], ignored: tuple[str, ...] = WHERE_NOT_WHAT) -> tuple[str, ...]:
    """What a run trained, as its overrides: sorted, without those that say where or how fast."""
    return tuple(sorted(o for o in overrides if not is_ignored(o, ignored)))
