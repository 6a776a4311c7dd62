"""The console commands, run from a folder outside the repository, with Hydra's options; optional
parts that are not installed stop with one line naming the extra."""

import subprocess
import sys
from pathlib import Path

import pytest

from wycifar import cli

BIN = Path(sys.executable).parent


def command(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wycifar-train", "wycifar-eval", "wycifar-bench", "wycifar-predict"])
def test_each_console_command_is_installed_and_answers_help(tmp_path: Path, name: str):
    result = command(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("powered by Hydra" in result.stdout) == (name != "wycifar-predict")


def test_configs_come_with_the_package_and_a_users_own_folder_adds_to_them(tmp_path: Path):
    job = command("wycifar-train", "--cfg", "job", "model.activation=relu", cwd=tmp_path)
    assert job.returncode == 0 and "activation: relu" in job.stdout and "batch_size: 64" in job.stdout
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "wide.yaml").write_text("# @package _global_\nmodel:\n  base_width: 48\ntask_name: wide\n")
    own = command(
        "wycifar-train", "--config-dir", str(tmp_path / "my_conf"), "experiment=wide", "--cfg", "job", cwd=tmp_path
    )
    assert own.returncode == 0 and "base_width: 48" in own.stdout and "task_name: wide" in own.stdout, own.stderr
    search = command("wycifar-train", "--info", "searchpath", cwd=tmp_path)
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
