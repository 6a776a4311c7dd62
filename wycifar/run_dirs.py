"""Run folders and the names in them: each run claims a folder of its own, a folder holding a run is
never reused by accident, and model files are named `model_<params>_<acc>`.

`outputs/<task>/<date_time>` names a folder by the second its run started, so runs started in the
same second (a shell loop with `&`, SLURM jobs on several nodes sharing a file system) would share
it. `claim_dir` creates the folder with an exclusive mkdir, atomic on local and network file
systems, and adds `_1`, `_2`, ... to the name when another run got there first.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

from wycifar.errors import ConfigError

# A model file: model_<parameters>_<test accuracy, 4 decimals>.<suffix> (.onnx, .ckpt)
MODEL_NAME = re.compile(r"model_(?P<params>\d+)_(?P<acc>\d\.\d+)\.(?P<suffix>\w+)$")


def model_name(params: int, accuracy: float | None, suffix: str) -> str:
    """The file name of a model of `params` parameters and this test accuracy (None: not tested)."""
    return f"model_{params}_{accuracy:.4f}.{suffix}" if accuracy is not None else f"model_{params}.{suffix}"


def parse_model_name(name: str) -> tuple[int, float, str] | None:
    """(parameters, accuracy, suffix) of a model file's name, or None for another name."""
    found = MODEL_NAME.search(name)
    return (int(found["params"]), float(found["acc"]), found["suffix"]) if found else None


# What a run leaves in its folder: Hydra's config, checkpoints, the job record, TensorBoard events.
# (A sweep's root: the sweep config and the summary.)
RUN_MARKERS = (".hydra", "checkpoints", "metrics.json", "tensorboard")
SWEEP_MARKERS = ("multirun.yaml", "summary.md", "summary.csv", "jobs.csv")


def is_secondary_rank() -> bool:
    """A process that Lightning (DDP) or SLURM started beside rank 0 of the same run: it uses the
    folder rank 0 claimed (Lightning passes it as hydra.run.dir) and claims none of its own."""
    return any(os.environ.get(name, "0") != "0" for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def claim_dir(base: str) -> str:
    """The first of `base`, `base_1`, `base_2`, ... that this call creates.

    Registered as the `claim_dir` resolver with use_cache, so one run resolves it once: its config
    and every sweep job's config (Hydra copies the resolver cache into each job's config) name the
    same folder. Where the parent cannot be created the name is returned as it is, and the output
    folder check reports the folder as not writable."""
    if is_secondary_rank():
        return base
    try:
        Path(base).parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return base
    for n in itertools.count():
        candidate = base if n == 0 else f"{base}_{n}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        except OSError:
            return base
        return candidate
    raise AssertionError("unreachable")


def holds_results(folder: Path, markers: tuple[str, ...] = RUN_MARKERS) -> list[str]:
    """The markers of an earlier run that `folder` holds (none for a new or empty folder)."""
    return [name for name in markers if (folder / name).exists()]


def is_inside(path: str | Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def resolve_ckpt_path(ckpt_path: str | None, log_dir: str | Path) -> str | None:
    """`last` means the newest last.ckpt of any earlier run under the log folder."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        found = sorted(Path(log_dir).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"ckpt_path=last found no checkpoints/last.ckpt under {log_dir}; give the path of a .ckpt file"
            )
        return str(found[-1])
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist; give the path of a .ckpt file (or ckpt_path=last)")
    return str(path)
