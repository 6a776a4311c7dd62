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
import time
from dataclasses import dataclass
from pathlib import Path

from wycifar.errors import ConfigError
from wycifar.files import atomic_write_text
from wycifar.runs.records import OK, RUNNING, is_training_run, read_record, recipe, status_of, unrecorded_run

# A model file: model_<parameters>_<test accuracy, 4 decimals>.<suffix> (.onnx, .ckpt)
MODEL_NAME = re.compile(r"model_(?P<params>\d+)_(?P<acc>\d\.\d+)\.(?P<suffix>\w+)$")
# any exported model's file name, tested (with its accuracy) or not
MODEL_FILE = re.compile(r"model_\d+(_\d\.\d+)?\.onnx")


def model_name(params: int, accuracy: float | None, suffix: str) -> str:
    """The file name of a model of `params` parameters and this test accuracy (None: not tested)."""
    return f"model_{params}_{accuracy:.4f}.{suffix}" if accuracy is not None else f"model_{params}.{suffix}"


def parse_model_name(name: str) -> tuple[int, float, str] | None:
    """(parameters, accuracy, suffix) of a model file's name, or None for another name."""
    found = MODEL_NAME.search(name)
    return (int(found["params"]), float(found["acc"]), found["suffix"]) if found else None


def tested_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint whose weights the run tested: its best epoch by validation accuracy where it
    kept one (data.val_size > 0), else its last epoch."""
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    last = run_dir / "checkpoints" / "last.ckpt"
    return best[-1] if best else last if last.is_file() else None


def run_model(folder: Path) -> Path | None:
    """The one exported model of a run folder (model_<params>[_<acc>].onnx), or None. A folder
    holding several is refused: no file is picked by how its name sorts."""
    found = sorted(p for p in Path(folder).glob("model_*.onnx") if MODEL_FILE.fullmatch(p.name))
    if len(found) > 1:
        raise ConfigError(
            f"{folder} holds {len(found)} exported models ({', '.join(p.name for p in found)}); a run folder "
            "holds one: remove the others"
        )
    return found[0] if found else None


def keep_only_model(folder: Path, model: Path) -> None:
    """After `model` is written into `folder`: any other exported model there goes, with its drawing."""
    for other in Path(folder).glob("model_*.onnx"):
        if other.name != model.name and MODEL_FILE.fullmatch(other.name):
            other.unlink(missing_ok=True)
            other.with_name(other.name + ".svg").unlink(missing_ok=True)


# What a run leaves in its folder: Hydra's config, checkpoints, the job record, TensorBoard events.
# (A sweep's root: the sweep config and the summary.)
RUN_MARKERS = (".hydra", "checkpoints", "metrics.json", "tensorboard")
SWEEP_MARKERS = ("multirun.yaml", "summary.md", "summary.csv", "jobs.csv")


def launch_rank() -> int:
    """This process's rank in a multi-process launch (torchrun, srun, nodes started by hand); 0 alone."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return int(os.environ.get("NODE_RANK", "0") or 0) + int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_secondary_rank() -> bool:
    """A process started beside rank 0 of the same run (by Lightning's DDP, torchrun, SLURM or by
    hand on another node): it uses the folder rank 0 claimed and claims none of its own."""
    return launch_rank() != 0


def launch_id() -> str | None:
    """What every process of one multi-process launch shares and no other launch does: SLURM's job
    and step, torchrun's run id and rendezvous address; None for a process started alone."""
    env = os.environ
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '0')}"
    if int(env.get("WORLD_SIZE", "1") or 1) > 1 or env.get("NODE_RANK") not in (None, "0"):
        parts = (env.get("TORCHELASTIC_RUN_ID", ""), env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", ""))
        if any(parts):
            return "ddp-" + "-".join(parts)
    return None


# how long a rank waits for rank 0's folder, and how old a shared choice may be to be this launch's
CLAIM_WAIT_S = 300.0
CLAIM_FRESH_S = 600.0


def _claims_file(base: str, launch: str) -> Path:
    return Path(base).parent / ".claims" / re.sub(r"[^\w.-]", "_", launch)


def _shared_claim(base: str, launch: str) -> str:
    """The folder rank 0 of this launch claimed, read from the file it shares it through."""
    path, deadline = _claims_file(base, launch), time.monotonic() + CLAIM_WAIT_S
    while time.monotonic() < deadline:
        try:
            if time.time() - path.stat().st_mtime < CLAIM_FRESH_S:
                return path.read_text().strip()
        except OSError:
            pass
        time.sleep(0.2)
    raise ConfigError(
        f"rank {launch_rank()} waited {CLAIM_WAIT_S:.0f} s for rank 0 to name the run's folder in {path}; "
        "start rank 0 too, on a file system all ranks share, or give hydra.run.dir=..."
    )


def claim_dir(base: str, resume: str = "") -> str:
    """The first of `base`, `base_1`, `base_2`, ... that this call creates; `resume` (a run's
    folder that this run continues) where given.

    Registered as the `claim_dir` resolver with use_cache, so one run resolves it once: its config
    and every sweep job's config (Hydra copies the resolver cache into each job's config) name the
    same folder. The ranks of one multi-process launch (torchrun, srun, nodes by hand) share rank
    0's choice through a file beside the folders. Where the parent cannot be created the name is
    returned as it is, and the output folder check reports the folder as not writable."""
    if resume:
        return resume
    launch = launch_id()
    if launch is not None and is_secondary_rank():
        return _shared_claim(base, launch)
    if is_secondary_rank():  # Lightning's own DDP children are given rank 0's folder
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
        if launch is not None:
            atomic_write_text(_claims_file(base, launch), candidate + "\n")
        return candidate
    raise AssertionError("unreachable")


def holds_results(folder: Path, markers: tuple[str, ...] = RUN_MARKERS) -> list[str]:
    """The markers of an earlier run that `folder` holds (none for a new or empty folder)."""
    return [name for name in markers if (folder / name).exists()]


def newest_checkpoint(ckpt_path: str | None, log_dir: str | Path) -> str | None:
    """For evaluating: `last` means the newest last.ckpt under the log folder, a path itself."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        found = sorted(Path(log_dir).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"ckpt_path=last found no checkpoints/last.ckpt under {log_dir}; give the path of a .ckpt file"
            )
        return str(found[-1])
    return str(existing_checkpoint(ckpt_path))


def existing_checkpoint(ckpt_path: str) -> Path:
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist; give the path of a .ckpt file (or ckpt_path=last)")
    return path


@dataclass(frozen=True)
class Resume:
    """Where a training resumes from: the checkpoint, and the folder of the run it continues
    (None: the checkpoint starts a new run, in a folder of its own)."""

    checkpoint: Path
    run: Path | None


def run_of(checkpoint: Path) -> Path | None:
    """The training run folder a checkpoint lies in (<run>/checkpoints/x.ckpt), if any."""
    run = checkpoint.resolve().parent.parent
    return run if checkpoint.resolve().parent.name == "checkpoints" and is_training_run(run) else None


def run_data_root(run: Path) -> str | None:
    """The data folder a run trained on (its config's data.root), where it names one."""
    from omegaconf import OmegaConf

    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        return None
    root = OmegaConf.select(OmegaConf.load(config), "data.root", throw_on_resolution_failure=False)
    return None if root is None or "${" in str(root) else str(root)


def run_overrides(run: Path) -> list[str]:
    return list((read_record(run) or unrecorded_run(run)).get("overrides", []))


def resumable(run: Path) -> bool:
    """`run` did not finish and no other process is running it."""
    record = read_record(run)
    status = status_of(record)
    return status != OK and not (status == RUNNING and (record or {}).get("pid") != os.getpid())


def continues(run: Path, overrides: list[str]) -> bool:
    """A run with these overrides is `run` itself, resumed: resumable, the same recipe and seed."""
    return resumable(run) and recipe(run_overrides(run)) == recipe(overrides)


def unfinished_runs(log_dir: str | Path, task: str) -> list[Path]:
    """The task's runs (single runs and sweep jobs) with a last.ckpt that did not finish, oldest first."""
    root = Path(log_dir)
    found = [*root.glob(f"{task}/*/checkpoints/last.ckpt"), *root.glob(f"{task}-multirun/*/*/checkpoints/last.ckpt")]
    return [
        ckpt.parent.parent
        for ckpt in sorted(found, key=lambda p: p.stat().st_mtime)
        if is_training_run(ckpt.parent.parent) and resumable(ckpt.parent.parent)
    ]


def config_resume(config) -> Resume | None:
    """What a composed config's `ckpt_path` resumes (find_resume with the config's log folder,
    task and overrides): for conf/hydra's run.dir and the check of a given folder."""
    from omegaconf import OmegaConf

    return find_resume(
        OmegaConf.select(config, "ckpt_path"),
        OmegaConf.select(config, "paths.log_dir"),
        OmegaConf.select(config, "task_name"),
        list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or []),
    )


def find_resume(ckpt_path: str | None, log_dir: str | Path, task: str, overrides: list[str]) -> Resume | None:
    """What `ckpt_path` resumes, for a run of `task` with these overrides.

    `last`: the newest unfinished run of the task with the same recipe and seed (never another
    run's checkpoint); where none has them, one line naming the unfinished runs and their overrides.
    A path: a checkpoint of an unfinished run with the same overrides continues that run in its
    folder; any other checkpoint starts a new run from its weights."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path != "last":
        checkpoint = existing_checkpoint(ckpt_path)
        run = run_of(checkpoint)
        return Resume(checkpoint, run if run is not None and continues(run, overrides) else None)
    unfinished = unfinished_runs(log_dir, task)
    matching = [run for run in unfinished if recipe(run_overrides(run)) == recipe(overrides)]
    if matching:
        return Resume(matching[-1] / "checkpoints" / "last.ckpt", matching[-1])
    if not unfinished:
        raise ConfigError(
            f"ckpt_path=last found no unfinished {task} run under {log_dir} (one with checkpoints/last.ckpt "
            "that did not end ok); give the path of a .ckpt file"
        )
    wanted = " ".join(recipe(overrides)) or "no overrides"
    listed = "; ".join(f"{run} (`{' '.join(recipe(run_overrides(run))) or 'no overrides'}`)" for run in unfinished[-5:])
    raise ConfigError(
        f"ckpt_path=last: no unfinished {task} run has this run's overrides ({wanted}); unfinished: {listed}. "
        "Repeat a run's overrides with ckpt_path=last, or give ckpt_path=<its checkpoints/last.ckpt>"
    )
