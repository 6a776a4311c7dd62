"""hydra/launcher=parallel: a sweep's jobs as fresh processes, `hydra.launcher.jobs` at once.

Each job is a new Python process (`_job.py`) that runs Hydra's `run_job` on the job's composed
config, as the basic launcher would: the same folder, `.hydra/`, `train.log` and record. Its
environment is set before torch is imported there: OMP_NUM_THREADS (`threads_per_job`) and
CUDA_VISIBLE_DEVICES (its slot's GPU, round-robin over the GPUs, `jobs_per_gpu` slots each). What
it prints (the progress bar, the epoch table) goes to `console.log` in its folder. A queued job
starts as soon as a slot frees.

With `hydra.launcher.preload` (default `[wycifar.training.run]`: Lightning and torch, seconds of CPU
each time), each slot has a job server (`_server.py`): a process started with the slot's
environment that imports those modules once, then forks each of the slot's jobs, so a job is
still a fresh process of its own (its own pid, session and environment) without paying the
imports. A server that fails or dies leaves its slot to the plain start; `preload: []` is the
plain start throughout.

A job that dies without ending its record (SIGKILL, a segfault, the OOM killer, a non-zero exit)
gets its record ended by the launcher (`killed (SIGKILL)`, `error: exit status N`), and the other
jobs go on; the sweep's summary is rewritten as each job ends. Ctrl-C or SIGTERM to the sweep is
passed to the running jobs (which save a resumable checkpoint and stop), no queued job starts,
the summary is written and the sweep exits with status 130; a second Ctrl-C is passed on again (a
job then stops at once), a third kills the jobs.

Results come back in the sweep's order as Hydra's JobReturn: a job that raised is FAILED with its
exception, as under the basic launcher; a job that died is COMPLETED with no value, its failure
in its record, as wycifar.train returns a job that failed in a known way.
"""

import copy
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.wycifar_launcher._resources import cores, visible_gpus
from hydra_plugins.wycifar_launcher._server import ForkedJob, Server, die_with_parent
from hydra_plugins.wycifar_launcher._view import Counts, JobLine, View, duration

log = logging.getLogger(__name__)

EPOCHS_FILE = "epochs.csv"  # wycifar's epoch table, a row per epoch (Epoch, ..., ValAcc)
CONSOLE_FILE = "console.log"  # what a job printed: its progress bar, its epoch table
LAUNCH_FILE = "launcher.json"  # how the launcher ran a job: its process, threads, GPU, times, exit status
LAUNCHER_DIR = ".launcher"  # at the sweep's root: each job's pickled config and outcome


@dataclass
class Job:
    index: int  # position in this launch's job_overrides
    num: int  # hydra.job.num
    overrides: list[str]
    config: DictConfig
    folder: Path
    file: Path = Path()
    process: subprocess.Popen | ForkedJob | None = None
    slot: int = -1
    threads: int = 1
    gpu: str | None = None
    line: JobLine | None = None
    epochs_mtime: float = 0.0
    result: JobReturn | None = None
    status: str = ""
    shown: str = ""  # the overrides that set it apart from the sweep's other jobs
    extra: dict[str, Any] = field(default_factory=dict)


def task_reference(task_function: TaskFunction) -> dict[str, Any]:
    """Where a job's process finds the task function: its module (the real name of `__main__`
    under `python -m`), its qualified name, and the file as a last resort."""
    module = task_function.__module__
    main = sys.modules.get(module)
    if module == "__main__" and main is not None and getattr(main, "__spec__", None) is not None:
        module = main.__spec__.name
    return {
        "module": module,
        "qualname": task_function.__qualname__,
        "file": getattr(sys.modules.get(task_function.__module__), "__file__", None),
    }


def picklable_singletons() -> dict:
    """Hydra's singletons a job needs (JobRuntime: the task's name; ConfigStore: configs stored
    by the program), those that pickle."""
    found = {}
    for cls, instance in Singleton._instances.items():
        if cls is HydraConfig:
            continue
        try:
            pickle.dumps(instance)
        except Exception:
            continue
        found[cls] = instance
    return found


def device_count(value: Any) -> int:
    """How many devices a trainer.devices / trainer.gpus value asks for; -1 and "auto" count as
    one (each job sees one GPU)."""
    if value is None or isinstance(value, bool):
        return 1 if value is None else int(value)
    if isinstance(value, int):
        return 1 if value < 0 else value
    if isinstance(value, str):
        text = value.strip().strip("[]")
        if text in ("", "auto", "-1"):
            return 1
        if "," in text:
            return len([p for p in text.split(",") if p.strip()])
        return int(text) if text.isdigit() else 1
    try:
        return len(value)
    except TypeError:
        return 1


def devices_asked(config: DictConfig) -> str | None:
    """The override-style setting by which a job asks for more than one device, or None."""
    for key in ("trainer.devices", "trainer.gpus", "trainer.num_nodes"):
        try:
            value = OmegaConf.select(config, key, default=None)
        except Exception:
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        if device_count(value) > 1:
            return f"{key}={value}"
    return None


def signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def last_line(path: Path) -> str:
    """The last non-empty line of a job's console output (where a crash says why)."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in file.read().decode("utf-8", "replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""


class ParallelLauncher(Launcher):
    def __init__(
        self,
        jobs: int = 1,
        jobs_per_gpu: int = 1,
        threads_per_job: int | None = None,
        gpus: Sequence[str] | None = None,
        memory_per_job_gb: float = 2.0,
        view: str = "auto",
        poll_s: float = 0.5,
        preload: Sequence[str] = ("wycifar.training.run",),
    ) -> None:
        super().__init__()
        self.jobs = int(jobs)
        if self.jobs < 1:
            raise ValueError(f"hydra.launcher.jobs={jobs}: give 1 or more")
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.threads_per_job = threads_per_job
        self.gpus = None if gpus is None else [str(g) for g in gpus]
        self.view_mode = view
        self.poll_s = float(poll_s)
        self.preload = [str(name) for name in preload or ()]
        self._servers: dict[int, Server] = {}
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._signals: list[int] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # -- preparing the jobs ------------------------------------------------------------------

    def _sweep_config(self, index: int, overrides: Sequence[str], initial_job_idx: int) -> Job:
        num = initial_job_idx + index
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = num
            config.hydra.job.num = num
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)
        try:
            folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
                OmegaConf.select(config, "hydra.sweep.subdir")
            )
        finally:
            HydraConfig.instance().cfg = saved
        return Job(index=index, num=num, overrides=list(overrides), config=config, folder=folder.absolute())

    def _job_return(self, job: Job, status: JobStatus, value: Any, outcome: dict) -> JobReturn:
        """The JobReturn the basic launcher's run_job would give for this job."""
        config = copy.deepcopy(job.config)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(job.folder)
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret = JobReturn(
            overrides=list(OmegaConf.to_container(config.hydra.overrides.task)),
            cfg=task_cfg,
            hydra_cfg=config,
            working_dir=outcome.get("working_dir") or os.getcwd(),
            task_name=outcome.get("task_name") or OmegaConf.select(config, "hydra.job.name"),
            status=status,
        )
        ret._return_value = value
        return ret

    # -- the sweep ----------------------------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        jobs = [self._sweep_config(i, o, initial_job_idx) for i, o in enumerate(job_overrides)]
        for job in jobs:
            asked = devices_asked(job.config)
            if asked:
                print(
                    f"error: job {job.num} ({' '.join(filter_overrides(job.overrides)) or 'no overrides'}) asks for "
                    f"{asked}; hydra/launcher=parallel runs each job on one device: sweep multi-device jobs "
                    "with the basic launcher (hydra/launcher=basic) or hydra/launcher=slurm",
                    file=sys.stderr,
                    flush=True,
                )
                raise SystemExit(2)

        gpus = self.gpus if self.gpus is not None else visible_gpus()
        slots = min(self.jobs, len(jobs)) or 1
        threads = int(self.threads_per_job or max(1, cores() // slots))
        where = f"GPUs {','.join(gpus)}" if gpus else "the CPU"
        log.info(
            f"Launching {len(jobs)} jobs, {slots} at once, {threads} thread{'s' * (threads != 1)} each, on {where}"
        )
        for job in jobs:
            log.info(f"\t#{job.num} : {' '.join(filter_overrides(job.overrides))}")

        launcher_dir = sweep_dir / LAUNCHER_DIR
        launcher_dir.mkdir(exist_ok=True)
        task = task_reference(self.task_function)
        singletons = picklable_singletons()
        for job in jobs:
            job.file = launcher_dir / f"job{job.num}.pkl"
            job.file.write_bytes(pickle.dumps({"config": job.config, "task": task, "singletons": singletons}))

        # the view names each job by what sets it apart from the others
        common = set.intersection(*(set(filter_overrides(job.overrides)) for job in jobs)) if len(jobs) > 1 else set()
        for job in jobs:
            job.shown = " ".join(o for o in filter_overrides(job.overrides) if o not in common)
        self._best = None
        view = View(self.view_mode)
        counts = Counts(queued=len(jobs))
        queue = deque(jobs)
        free = list(range(slots))
        running: dict[int, Job] = {}
        self._signals = []
        handled = 0
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        last_draw = 0.0
        try:
            if self.preload:  # each slot's server imports while the others do
                for slot in range(slots):
                    env = self._environment(threads, gpus[slot % len(gpus)] if gpus else None)
                    self._servers[slot] = Server(self.preload, env, str(launcher_dir / f"server{slot}.log"))
            while running or (queue and not self._signals):
                if not self._signals:
                    while queue and free:
                        job = queue.popleft()
                        slot = free.pop(0)
                        self._start(job, slot, threads, gpus[slot % len(gpus)] if gpus else None)
                        running[job.num] = job
                        counts.queued -= 1
                        counts.running[job.num] = job.line
                        view.event(f"job {job.num} started: {job.line.overrides or '(no overrides)'}", counts)
                if len(self._signals) > handled:
                    handled = self._forward(running, handled, view, counts, len(queue))
                for job in list(running.values()):
                    code = job.process.poll()
                    if code is None:
                        if self._progress(job):
                            view.epoch(job.line, counts)
                        continue
                    if self._progress(job):  # an epoch that ended since the last look is shown before the job's end
                        view.epoch(job.line, counts)
                    self._finish(job, code, sweep_dir)
                    del running[job.num]
                    del counts.running[job.num]
                    free.append(job.slot)
                    free.sort()
                    self._count(job, counts)
                    took = duration(time.time() - job.line.started)
                    ended = f"job {job.num} ended: {job.status}{self._metric_text(job)} ({took})"
                    view.event(ended if view.mode == "live" else f"{ended}; {counts.line()}", counts)
                if time.time() - last_draw >= 1.0:
                    view.draw(counts)
                    last_draw = time.time()
                if running or (queue and not self._signals):
                    time.sleep(self.poll_s)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for job in running.values():  # only on an error of the launcher's own
                if job.process.poll() is None:
                    job.process.kill()
                    job.process.wait()
            for server in self._servers.values():
                server.close()
            self._servers = {}
            view.close()

        for job in queue:  # never started
            job.file.unlink(missing_ok=True)
        try:
            launcher_dir.rmdir()  # empty once every job has ended
        except OSError:
            pass
        summary = self._write_summary(sweep_dir)
        if self._signals:
            if summary:
                print(summary, end="", flush=True)
            stopped = sum(1 for job in jobs if job.result is not None)
            print(
                f"interrupted by {signal.Signals(self._signals[0]).name}: {stopped} of {len(jobs)} jobs ran "
                f"(a stopped job resumes with ckpt_path=<its folder>/checkpoints/last.ckpt), "
                f"{len(queue)} never started; summary: {sweep_dir / 'summary.md'}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(130)
        return [job.result for job in jobs]

    def _on_signal(self, signum: int, _frame=None) -> None:
        self._signals.append(signum)

    def _forward(self, running: dict[int, Job], handled: int, view: View, counts: Counts, queued: int) -> int:
        """Pass the sweep's Ctrl-C / SIGTERM on to the running jobs; the third one kills them."""
        signum = self._signals[-1]
        name = signal.Signals(signum).name
        if len(self._signals) >= 3:
            for job in running.values():
                job.process.kill()
            view.event(f"{name} again: killing {len(running)} running jobs", counts, always=True)
        else:
            for job in running.values():
                try:
                    job.process.send_signal(signum)
                except ProcessLookupError:
                    pass
            what = "stopping" if len(self._signals) == 1 else "stopping at once"
            view.event(
                f"{name}: {what} {len(running)} running jobs (each saves a resumable checkpoint); "
                f"{queued} queued jobs will not start",
                counts,
                always=True,
            )
        return len(self._signals)

    @staticmethod
    def _environment(threads: int, gpu: str | None) -> dict[str, str]:
        """A slot's environment: its threads and its GPU, set before torch is imported."""
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        return env

    def _start(self, job: Job, slot: int, threads: int, gpu: str | None) -> None:
        job.slot, job.threads, job.gpu = slot, threads, gpu
        job.folder.mkdir(parents=True, exist_ok=True)
        console = job.folder / CONSOLE_FILE
        server = self._servers.get(slot)
        job.process = server.start(str(job.file), str(console)) if server else None
        if server and job.process is None:
            log.warning(f"slot {slot}'s job server failed ({server.error}); its jobs start as plain processes")
            del self._servers[slot]
        if job.process is None:
            command = [sys.executable, "-m", "hydra_plugins.wycifar_launcher._job", str(job.file)]
            with open(console, "ab") as output:
                job.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=self._environment(threads, gpu),
                    start_new_session=True,  # a terminal's Ctrl-C reaches the sweep, which passes it on once
                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
                )
        try:
            max_epochs = OmegaConf.select(job.config, "trainer.max_epochs", default=None)
        except Exception:
            max_epochs = None
        job.line = JobLine(
            num=job.num,
            overrides=job.shown,
            started=time.time(),
            max_epochs=max_epochs if isinstance(max_epochs, int) else None,
        )

    def _progress(self, job: Job) -> bool:
        """Read the job's epoch table if it changed: True where a new epoch ended."""
        path = job.folder / EPOCHS_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return False
        if mtime == job.epochs_mtime:
            return False
        job.epochs_mtime = mtime
        try:
            rows = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
        except OSError:
            return False
        if len(rows) < 2:
            return False
        header, last = rows[0], rows[-1]
        epoch = len(rows) - 1
        if "ValAcc" in header and len(last) == len(header):
            try:
                value = float(last[header.index("ValAcc")])
                job.line.val_acc = value if value == value else job.line.val_acc
            except ValueError:
                pass
        new = epoch != job.line.epoch
        job.line.epoch = epoch
        return new

    def _finish(self, job: Job, code: int, sweep_dir: Path) -> None:
        """The job's JobReturn, and its record ended where the job could not end it."""
        from wycifar.runs import records

        result_file = Path(f"{job.file}.result")
        outcome: dict[str, Any] = {}
        if code == 0 and result_file.is_file():
            outcome = pickle.loads(result_file.read_bytes())
        if outcome.get("status") == JobStatus.FAILED.name:
            error = outcome["return_value"]
            job.result = self._job_return(job, JobStatus.FAILED, error, outcome)
            ended = f"error: {type(error).__name__}: {error}"
            detail = None
        elif outcome:
            job.result = self._job_return(job, JobStatus.COMPLETED, outcome.get("return_value"), outcome)
            ended, detail = None, None
        else:
            ended = f"killed ({signal_name(code)})" if code < 0 else f"error: exit status {code}"
            detail = last_line(job.folder / CONSOLE_FILE) or None
            job.result = self._job_return(job, JobStatus.COMPLETED, None, outcome)
        record = records.read_record(job.folder)
        if ended and (record is None or record.get("status", records.RUNNING) == records.RUNNING):
            if record is None:
                records.write_record(
                    job.folder,
                    {
                        "job": job.num,
                        "overrides": list(filter_overrides(job.overrides)),
                        "metrics": {},
                        "status": ended,
                    }
                    | ({"error": detail} if detail else {}),
                )
            else:
                records.mark_ended(job.folder, ended, detail)
            record = records.read_record(job.folder)
        job.status = records.status_of(record) if record else (ended or "ok")
        job.extra = {"record": record or {}}
        facts = {
            "job": job.num,
            "pid": job.process.pid,
            "slot": job.slot,
            "threads": job.threads,
            "gpu": job.gpu,
            "started": job.line.started,
            "ended": time.time(),
            "exit_status": code,
            "torch_threads": outcome.get("torch_threads"),
            "environment": outcome.get("environment"),
            "start": "forked" if isinstance(job.process, ForkedJob) else "process",
            "server_pid": job.process.server.process.pid if isinstance(job.process, ForkedJob) else None,
            "preloaded": outcome.get("preloaded"),
        }
        try:
            (job.folder / LAUNCH_FILE).write_text(json.dumps(facts, indent=2) + "\n")
        except OSError:
            pass
        for path in (job.file, result_file):
            path.unlink(missing_ok=True)
        self._write_summary(sweep_dir)

    def _metric_text(self, job: Job) -> str:
        metric = OmegaConf.select(self.config, "optimized_metric", default=None)
        value = (job.extra["record"].get("metrics") or {}).get(metric) if metric else None
        return f", {metric} {value:.4f}" if isinstance(value, (int, float)) else ""

    def _count(self, job: Job, counts: Counts) -> None:
        if job.status == "ok":
            counts.done += 1
        elif job.status == "interrupted":
            counts.stopped += 1
        else:
            counts.failed += 1
        metric = OmegaConf.select(self.config, "optimized_metric", default=None)
        value = (job.extra["record"].get("metrics") or {}).get(metric) if metric else None
        if not isinstance(value, (int, float)):
            return
        direction = OmegaConf.select(self.config, "hydra.sweeper.direction", default="maximize")
        lower = isinstance(direction, str) and direction.lower().startswith("min")
        best = getattr(self, "_best", None)
        if best is None or (value < best[0] if lower else value > best[0]):
            self._best = (value, job.num)
            counts.best = f"{metric} {value:.4f} (job {job.num})"

    def _write_summary(self, sweep_dir: Path) -> str | None:
        """summary.md, summary.csv and jobs.csv at the sweep's root, from every job's record."""
        try:
            from wycifar.runs.hydra_callbacks import write_sweep_summary

            return write_sweep_summary(sweep_dir, self.config)
        except Exception as error:  # a summary that cannot be written must not end the sweep
            log.warning(f"the sweep's summary was not written: {type(error).__name__}: {error}")
            return None
