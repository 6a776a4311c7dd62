"""What every command line shares: a user's error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from wycifar.errors import WycifarError

T = TypeVar("T")

# Hydra's config search path: conf/ of the repository, installed with the package as wycifar.conf
CONFIGS = "pkg://wycifar.conf"

# Overrides that need an optional part of wycifar: (the Hydra plugin's module, the extra to install)
EXTRAS = {
    "hparams_search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweeps"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "hydra/launcher=local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def fail(message: str, exit_code: int, prefix: str = "error: ") -> None:
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def run_cli(body: Callable[[], T]) -> T:
    """Run `body`; a WycifarError becomes `error: <message>` and its exit code (WYCIFAR_DEBUG=1 re-raises)."""
    try:
        return body()
    except WycifarError as error:
        if os.environ.get("WYCIFAR_DEBUG"):
            raise
        fail(str(error), error.exit_code, error.prefix)


def run_command(hydra_main: Callable[[], object]) -> None:
    """A Hydra command line (`python -m wycifar.<name>`, `wycifar-<name>`): extras checked first."""
    import torch

    from hydra_plugins.wycifar_launcher import register

    register()  # hydra/launcher=parallel, also where wycifar is installed in editable mode

    require_extras(sys.argv[1:])
    torch.set_float32_matmul_precision("high")
    hydra_main()


def require_extras(argv: list[str]) -> None:
    """One line naming the extra to install, before Hydra looks for a plugin that is not there."""
    for arg in argv:
        needed = EXTRAS.get(arg.lstrip("+~"))
        if needed and not installed(needed[0]):
            fail(f"{arg} needs wycifar's {needed[1]!r} extra: pip install 'wycifar[{needed[1]}]'", 2)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing too
        return False
