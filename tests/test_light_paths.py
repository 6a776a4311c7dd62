"""The commands' light paths answer without torch, Lightning, torchmetrics, matplotlib or GradCAM:
help, a refused key or group option, the summary, the exporter's and shipper's help, ONNX prediction."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_image_folder

HEAVY = ("torch", "lightning", "torchmetrics", "matplotlib", "pytorch_grad_cam")
PRELUDE = (
    "import runpy, sys\n"
    f"for name in {HEAVY!r}: sys.modules[name] = None  # unimportable, as if not installed\n"
    "module, sys.argv = sys.argv[1], sys.argv[1:]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def light(module: str, *args, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` with the heavy packages unimportable."""
    return subprocess.run(
        [sys.executable, "-c", PRELUDE, module, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "module,args,code,expected",
    [
        ("wycifar.train", ["--help"], 0, "Config groups (group=option):"),
        ("wycifar.train", ["model.nrom=gn"], 2, "error: model.nrom is not a setting of train; did you mean model.norm"),
        (
            "wycifar.train",
            ["model=dws_dilatd"],
            2,
            "error: model=dws_dilatd is not allowed; choose one of: dws_dilated",
        ),
        ("wycifar.train", ["-m", "model.norm=bn,gn", "optimizer.lrr=0.1,0.2"], 2, "did you mean optimizer.lr"),
        ("wycifar.eval", ["--help"], 0, "python -m wycifar.eval ckpt_path=<file.ckpt>"),
        ("wycifar.bench", ["--help"], 0, "python -m wycifar.bench deploy RUN_OR_CKPT"),
        ("wycifar.bench", ["deploy", "--help"], 0, "usage:"),
        ("wycifar.export", ["--help"], 0, "usage: wycifar-export"),
        ("wycifar.ship", ["--help"], 0, "usage:"),
        ("wycifar.add_metadata", ["--help"], 0, "usage: python -m wycifar.add_metadata"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_command_answers_without_the_heavy_packages(tmp_path: Path, module, args, code, expected):
    result = light(module, *args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == code and expected in output, output[-2000:]
    assert "Traceback" not in output
    if code:  # refused: nothing written
        assert not list(tmp_path.iterdir())
    if "--help" in args:
        assert len(result.stdout.splitlines()) <= 40  # one screen


def test_summary_and_onnx_prediction_answer_without_the_heavy_packages(tmp_path: Path):
    run = tmp_path / "train" / "run"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(
        json.dumps({"seed": 0, "overrides": [], "status": "ok", "metrics": {"test/acc": 0.9}})
    )
    result = light("wycifar.summary", tmp_path / "train")
    assert result.returncode == 0 and "| ok |" in result.stdout, result.stderr

    image_root = make_image_folder(tmp_path / "images", train_per_class=1, test_per_class=1, num_classes=1)
    (image,) = (image_root / "test").rglob("*.png")
    (model,) = (ROOT / "results" / "default").glob("model_*.onnx")
    result = light("wycifar.predict", "--onnx", model, image)
    assert result.returncode == 0 and result.stdout.startswith(f"{image}: "), result.stderr


@pytest.mark.slow  # about 12 s: Lightning's import and each light path once; the light paths answer in the default suite
def test_the_startup_benchmark_prints_each_light_path_against_lightnings_import(capsys):
    from wycifar.bench.startup import PATHS, main

    main(["--rounds", "1"])
    out = capsys.readouterr().out
    for name in ["import lightning", *PATHS]:
        assert re.search(rf"^{re.escape(name)}\s+\d+\.\d\d\s+\d+\.\d\dx$", out, re.M), name
    assert "left in the scratch folder: runs" in out  # no light path wrote anything
