"""python -m wycifar.predict with a trained checkpoint; safe checkpoint loading."""

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, compose_train, make_image_folder, run_main
from PIL import Image

from wycifar.predict import bundled_model
from wycifar.predict import main as predict_main
from wycifar.training.checkpoints import load_module, slim_checkpoint
from wycifar.training.run import train


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    data = make_image_folder(tmp / "data")
    cfg = compose_train(
        tmp,
        [
            *TINY,
            f"data.root={data}",
            "trainer.max_epochs=6",
            "scheduler=onecycle",
            "optimizer.lr=0.05",
            "callbacks=model_checkpoint",
            "logger=none",
        ],
    )
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    ckpt = tmp / "full.ckpt"
    trainer.save_checkpoint(ckpt)
    slim = slim_checkpoint(ckpt, tmp / "results" / "tiny" / f"model_8005_{metrics['test/acc']:.4f}.ckpt")
    return {"slim": slim, "full": ckpt, "data": data, "tmp": tmp, "acc": metrics["test/acc"]}


def run_predict(*args):
    """`python -m wycifar.predict ARGS`, its main() run in this process."""
    return run_main(predict_main, *args)


def test_slim_checkpoint_is_small_and_loads_weights_only(model):
    assert model["slim"].stat().st_size < model["full"].stat().st_size
    blob = torch.load(model["slim"], weights_only=True)
    assert set(blob) <= {
        "state_dict",
        "hyper_parameters",
        "pytorch-lightning_version",
        "epoch",
        "global_step",
        "wycifar",
    }
    assert blob["wycifar"]["classes"][3] == "cat"
    module = load_module(model["slim"])
    full = load_module(model["full"])
    for key, value in full.state_dict().items():
        assert torch.equal(value, module.state_dict()[key])


def test_predict_prints_class_and_top3_and_survives_bad_files(model, tmp_path):
    good = sorted((model["data"] / "test" / "cat").glob("*.png"))[0]
    big = tmp_path / "big.jpg"
    Image.open(good).convert("RGB").resize((97, 61)).save(big)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((40, 40), 128, np.uint8), mode="L").save(gray)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    result = run_predict(good, bad, big, gray, tmp_path / "missing.png", "--ckpt", model["slim"])
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(good), str(big), str(gray)]
    for line in lines:
        assert line.count("%") == 3
    percents = [float(p.split()[-1].rstrip("%)")) for p in lines[0].split("(", 1)[1].split(",")]
    assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.05
    errors = result.stderr.strip().splitlines()
    assert any(line.startswith("error: cannot read image") and "notes.txt" in line for line in errors)
    assert any("missing.png: no such file" in line for line in errors)
    assert "Traceback" not in result.stderr


def test_predict_classifies_like_the_model(model):
    """The CLI's answers agree with the test accuracy the trainer measured on the same images."""
    files = sorted((model["data"] / "test").glob("*/*.png"))
    result = run_predict(*files, "--ckpt", model["slim"])
    assert result.returncode == 0, result.stderr
    predicted = [line.split(": ")[1].split(" (")[0] for line in result.stdout.strip().splitlines()]
    truth = [f.parent.name for f in files]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy == pytest.approx(model["acc"], abs=1e-6)


def test_the_default_model_is_the_bundled_one_of_the_default_recipe():
    bundled = bundled_model()
    assert (
        bundled.parent.resolve() == (ROOT / "results" / "default").resolve()
    )  # this checkout's, installed as wycifar.bundled
    assert bundled.name == next((ROOT / "results" / "default").glob("model_*.ckpt")).name
