"""What every command line shares: a user's error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from wycifar.errors import ConfigError, WycifarError

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


# Hydra's own flags: these compose nothing of the user's to check first
HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc", "--version")


def run_command(hydra_main: Callable[[], object], config_name: str) -> None:
    """A Hydra command line (`python -m wycifar.<name>`, `wycifar-<name>`): extras checked, then the
    overrides composed and checked in one pass (a misspelt key or group option is one line naming
    the closest, exit 2, before any folder exists or torch is imported), then Hydra's run."""
    from hydra_plugins.wycifar_launcher import register

    register()  # hydra/launcher=parallel, also where wycifar is installed in editable mode
    args = sys.argv[1:]
    require_extras(args)
    if not any(arg.split("=", 1)[0] in HYDRA_FLAGS for arg in args):
        run_cli(lambda: check_overrides(config_name, args))
    hydra_main()


def check_overrides(config_name: str, args: list[str]) -> None:
    """Compose the config with these overrides as Hydra will (each value of a sweep in turn), turn
    what Hydra refuses into one ConfigError, and check every value (settings.py)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import wycifar.runs.resolvers  # noqa: F401 - the resolvers conf/ names
    from wycifar.settings import check_settings

    variants = override_variants([arg for arg in args if not arg.startswith("-")])
    multirun = "-m" in args or "--multirun" in args
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIGS.removeprefix("pkg://"), version_base="1.3"):
            for overrides in variants:
                try:
                    cfg = compose(config_name, overrides=overrides)
                except Exception as error:  # noqa: BLE001 - Hydra's and OmegaConf's many kinds
                    raise ConfigError(explain_refusal(error, config_name, compose)) from None
                # a sweep's job with a value not allowed fails alone and is listed (the sweep goes on)
                if config_name in ("train", "bench") and not multirun:
                    check_settings(cfg)
    finally:
        GlobalHydra.instance().clear()


def override_variants(overrides: list[str]) -> list[list[str]]:
    """The overrides with each sweep (`a=1,2`) at its first value, then once for each other value
    of each sweep: every value is composed once. Sweeps over a range of numbers (Optuna's
    intervals) are left to the sweeper."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base, extra = [], []
    for override in parsed:
        if not override.is_sweep_override():
            base.append(override.input_line)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - an interval has no values to list
            continue
        key = override.input_line.split("=", 1)[0]
        base.append(f"{key}={values[0]}")
        extra += [(len(base) - 1, f"{key}={value}") for value in values[1:]]
    variants = [base]
    for index, override in extra:
        variant = list(base)
        variant[index] = override
        variants.append(variant)
    return variants


def explain_refusal(error: Exception, config_name: str, compose: Callable) -> str:
    """One line for a config Hydra refuses: a key that does not exist (with the closest ones), a
    group option that does not exist (with the choices), or Hydra's own first line."""
    import difflib
    import re

    text = str(error)
    missing_key = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if missing_key:
        key = missing_key.group(1)
        keys = config_keys(compose(config_name, overrides=[]))
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "python -m wycifar.train --help lists the groups"
        return f"{key} is not a setting of {config_name}; {hint}"
    missing_option = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing_option:
        group, option = missing_option.groups()
        choices = re.findall(r"^\t(\S+)$", text.split("Available options", 1)[-1].split("Config search path")[0], re.M)
        return f"{group}={option} is not allowed; choose one of: {', '.join(choices)}"
    return text.strip().splitlines()[0]


def config_keys(cfg, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (groups and settings)."""
    from omegaconf import DictConfig

    keys = []
    for key, child in cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else []:
        if prefix == "" and key == "hydra":
            continue
        keys.append(f"{prefix}{key}")
        keys += config_keys(child, f"{prefix}{key}.")
    return keys


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
