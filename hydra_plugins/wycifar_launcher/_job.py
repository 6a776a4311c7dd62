"""One sweep job in a process of its own: `python -m hydra_plugins.wycifar_launcher._job JOB.pkl`.

The launcher composed the job's config (Hydra's sweep config, its number set) and pickled it with
a reference to the task function; this runs Hydra's `run_job` on it as the basic launcher would in
its own process (the job's folder, `.hydra/`, logging, job callbacks), then pickles the outcome
beside the job file for the launcher: `<file>.result`. A slot's job server (`_server.py`) runs
`main` in a child it forked, its heavy modules already imported.
"""

import importlib
import importlib.util
import os
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any


def load_task(reference: dict[str, Any]):
    """The task function from (module, qualname, file): imported by module name where it can be,
    else loaded from the script's file; Hydra's decorator unwrapped."""
    module = None
    if reference.get("module") and reference["module"] != "__main__":
        try:
            module = importlib.import_module(reference["module"])
        except ImportError:
            module = None
    if module is None:
        path = reference["file"]
        spec = importlib.util.spec_from_file_location("__wycifar_sweep_task__", path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(Path(path).parent))
        spec.loader.exec_module(module)
    function = module
    for name in reference["qualname"].split("."):
        function = getattr(function, name)
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    return function


def picklable(value: Any) -> Any:
    try:
        pickle.dumps(value)
        return value
    except Exception:
        if isinstance(value, BaseException):
            return RuntimeError(f"{type(value).__name__}: {value}")
        return repr(value)


def main(job_file: str, preloaded: list[str] | None = None) -> int:
    """Run the job; `preloaded`: the modules its process had imported before it (a job server's)."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals
    from hydra.types import HydraContext

    import hydra_plugins.wycifar_launcher.config  # noqa: F401 - the launcher's resolver

    seen = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    payload = pickle.loads(Path(job_file).read_bytes())
    setup_globals()
    for cls, instance in payload.get("singletons", {}).items():
        Singleton._instances[cls] = instance
    task_function = load_task(payload["task"])
    config = payload["config"]
    HydraConfig.instance().set_config(config)
    context = HydraContext(config_loader=None, callbacks=Callbacks(config))
    ret = run_job(
        hydra_context=context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    value = ret._return_value
    if ret.status == JobStatus.FAILED and isinstance(value, BaseException):
        # what the basic launcher's sweeper would show at the sweep's end, here in the job's console.log
        traceback.print_exception(type(value), value, value.__traceback__)
    torch = sys.modules.get("torch")
    result = {
        "status": ret.status.name,
        "return_value": picklable(value),
        "task_name": ret.task_name,
        "working_dir": ret.working_dir,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "environment": seen,
        "preloaded": preloaded or [],
    }
    Path(job_file + ".result.tmp").write_bytes(pickle.dumps(result))
    os.replace(job_file + ".result.tmp", job_file + ".result")
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    code = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
