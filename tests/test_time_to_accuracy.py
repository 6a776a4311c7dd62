"""scripts/time_to_accuracy.py: real trainings, timed, their accuracy read back from the run folders."""

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_image_folder, run_command

SCRIPT = ROOT / "scripts" / "time_to_accuracy.py"
TINY_CLI = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "data.batch_size=32",
    "model.base_width=8",
    "callbacks=[model_checkpoint,reports]",
    "++callbacks.gradcam=null",
    "~callbacks.onnx_model",
    "logger=none",
]


@pytest.mark.slow
def test_each_seed_is_timed_and_its_accuracy_read_back(tmp_path: Path):
    data = make_image_folder(tmp_path / "data", train_per_class=8, test_per_class=4)
    out = tmp_path / "tta"
    args = [sys.executable, SCRIPT, "--seeds", "3", "--out", out, "--", *TINY_CLI, f"data.root={data}"]
    result = run_command(*args, module=None, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = json.loads((out / "time_to_accuracy.json").read_text())["runs"]
    metrics = json.loads((out / "seed3" / "metrics.json").read_text())["metrics"]
    assert run["seed"] == 3 and run["epochs"] == 1
    assert run["test_acc"] == pytest.approx(100 * metrics["test/acc"])
    assert run["wall_s"] > run["epochs_s"] > 0
    assert f"| 3 | {run['wall_s']:.0f} | 1 |" in result.stdout
    assert "mean over 1 seeds" in result.stdout


@pytest.mark.slow
def test_a_failing_training_stops_with_its_log_named(tmp_path: Path):
    args = [sys.executable, SCRIPT, "--seeds", "0", "--out", tmp_path, "--", "model.norm=xyz"]
    result = run_command(*args, module=None, cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    assert f"error: seed 0 failed with exit status 2; its output is in {tmp_path}/seed0.log" in result.stderr
    assert "model.norm='xyz' is not allowed" in (tmp_path / "seed0.log").read_text()
