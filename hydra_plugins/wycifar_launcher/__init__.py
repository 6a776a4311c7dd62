"""hydra/launcher=parallel: a sweep's jobs as fresh processes, several at once (wycifar's launcher).

`config.py` holds the launcher's options (registered with Hydra's ConfigStore when Hydra scans
its plugins), `parallel_launcher.py` the Launcher, `_resources.py` the machine's cores, GPUs and
memory, `_job.py` the process that runs one job, `_view.py` what the terminal shows.

No module here uses `from __future__ import annotations`: Hydra's plugin scan imports each one
without entering it in sys.modules, where a dataclass cannot read annotations given as strings.
"""


def register() -> None:
    """Make hydra/launcher=parallel known to Hydra in this process: its options (ConfigStore), its
    `parallel_jobs` resolver and its class (Hydra's plugin registry). Hydra's own plugin scan does
    this for an installed wheel; a package installed in editable mode is not seen by that scan, so
    wycifar's commands call this before composing their config."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.wycifar_launcher import config  # noqa: F401 - registers the options and resolver
    from hydra_plugins.wycifar_launcher.parallel_launcher import ParallelLauncher

    Plugins.instance().register(ParallelLauncher)
