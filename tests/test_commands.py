"""The console commands, run from a folder outside the repository, with Hydra's options; optional
parts that are not installed stop with one line naming the extra."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_command, run_main

from wycifar import cli
from wycifar.train import main as train_main

BIN = Path(sys.executable).parent


def command(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console command NAME, run from `cwd` as a user would."""
    return run_command(BIN / name, *args, module=None, cwd=cwd, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["wycifar-train", "wycifar-eval", "wycifar-bench", "wycifar-predict", "wycifar-export"]
)
def test_each_console_command_is_installed_and_answers_help(tmp_path: Path, name: str):
    result = command(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("powered by Hydra" in result.stdout) == (name not in ("wycifar-predict", "wycifar-export"))


def test_configs_come_with_the_package_and_a_users_own_folder_adds_to_them(tmp_path: Path):
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "wide.yaml").write_text("# @package _global_\nmodel:\n  base_width: 48\ntask_name: wide\n")
    own = command(
        "wycifar-train", "--config-dir", str(tmp_path / "my_conf"), "experiment=wide", "model.activation=relu",
        "--cfg", "job", cwd=tmp_path,
    )  # fmt: skip
    assert own.returncode == 0, own.stderr
    # the package's configs (batch 64), the user's experiment and a command-line override, composed
    for line in ("batch_size: 64", "base_width: 48", "task_name: wide", "activation: relu"):
        assert line in own.stdout, line
    # the same entry point's search path, asked in this process (no second Python start)
    search = run_main(train_main, "--info", "searchpath")
    assert search.returncode == 0 and "pkg://wycifar.conf" in search.stdout, search.stderr


def test_an_option_without_its_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.EXTRAS, "hparams_search=optuna", ("hydra_plugins.not_installed_here", "sweeps"))
    with pytest.raises(SystemExit) as info:
        cli.require_extras(["seed=1", "hparams_search=optuna"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err == "error: hparams_search=optuna needs wycifar's 'sweeps' extra: pip install 'wycifar[sweeps]'\n"
    # a plugin whose namespace package is missing altogether, as in an install without any extra
    monkeypatch.setitem(cli.EXTRAS, "hydra/launcher=slurm", ("no_plugins_here.hydra_submitit_launcher", "slurm"))
    with pytest.raises(SystemExit):
        cli.require_extras(["hydra/launcher=slurm"])
    assert "pip install 'wycifar[slurm]'" in capsys.readouterr().err
    cli.require_extras(["hydra/launcher=local", "hparams_search=grid"])  # installed here, or not an extra's
