"""Inference without torch: an exported model with its metadata, in onnxruntime alone."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, TINY, assert_one_line_error, compose_train, make_image_folder, run_command, run_main
from omegaconf import OmegaConf

from wycifar.add_metadata import main as add_metadata_main
from wycifar.deploy.runtime import Classifier
from wycifar.export import main as export_main
from wycifar.predict import main as predict_main
from wycifar.training.run import train


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained run: its ONNX model (with metadata), its last checkpoint and its test images."""
    tmp = tmp_path_factory.mktemp("runtime")
    data = make_image_folder(tmp / "data")
    # fp32 as onnxruntime computes: a bf16 run's accuracy on these 60 images can differ by one image
    overrides = [
        *TINY,
        f"data.root={data}",
        "trainer.max_epochs=4",
        "trainer.precision=32-true",
        "logger=none",
        "++callbacks.gradcam=null",
    ]
    cfg = compose_train(tmp, overrides)
    metrics, _ = train(cfg)
    (tmp / "run" / ".hydra").mkdir()  # what Hydra writes for a run from the command line
    OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), tmp / "run" / ".hydra" / "config.yaml")
    (onnx_path,) = (tmp / "run").glob("model_*.onnx")
    images = sorted((data / "test").glob("*/*.png"))
    run = tmp / "run"
    return {"onnx": onnx_path, "ckpt": run / "checkpoints" / "last.ckpt", "images": images, "acc": metrics, "run": run}


def test_the_model_carries_what_it_takes_to_use_it(exported):
    model = Classifier(exported["onnx"])
    assert model.classes[:3] == ["airplane", "automobile", "bird"] and len(model.classes) == 10
    assert model.image_size == 32
    assert model.mean.ravel() / 255 == pytest.approx([0.4914, 0.4822, 0.4465])
    assert model.std.ravel() / 255 == pytest.approx([0.2470, 0.2435, 0.2616])
    assert model.accuracy == pytest.approx(exported["acc"]["test/acc"], abs=1e-4)
    assert exported["onnx"].name == f"model_8005_{model.accuracy:.4f}.onnx"


def test_onnx_and_pytorch_predict_the_same_lines(exported):
    """The same preprocessing as training on both paths: the same class and top-3 for every image."""
    images = [str(p) for p in exported["images"]]
    torch_path = run_main(predict_main, *images, "--ckpt", exported["ckpt"])
    onnx_path = run_main(predict_main, *images, "--onnx", exported["onnx"])
    assert torch_path.returncode == onnx_path.returncode == 0, onnx_path.stderr
    torch_lines, onnx_lines = torch_path.stdout.splitlines(), onnx_path.stdout.splitlines()
    assert len(onnx_lines) == len(images) == 60
    assert [line.split(" (")[0] for line in onnx_lines] == [line.split(" (")[0] for line in torch_lines]
    assert onnx_lines == torch_lines  # the probabilities agree to the printed 0.1%


def test_predict_with_onnx_imports_no_torch_lightning_or_hydra(exported, tmp_path):
    """The command as a user runs it, in a Python where torch, Lightning and Hydra cannot be imported."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'lightning', 'hydra', 'omegaconf', 'torchvision'):\n"
        "            raise ImportError(f'{name} is not installed here')\n"
        "sys.meta_path.insert(0, Refuse())\n"
    )
    images = [str(p) for p in exported["images"][:3]]
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    result = run_command("--onnx", exported["onnx"], *images, module="wycifar.predict", env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == images
    refused = run_command("--ckpt", exported["ckpt"], images[0], module="wycifar.predict", env=env, timeout=120)
    assert refused.returncode != 0 and "torch is not installed here" in refused.stderr  # the blocker works


def bad_models(exported, folder: Path) -> dict[str, tuple[Path, str]]:
    """Models that must be refused, each with the words of its one-line error."""
    text = folder / "notes.onnx"
    text.write_text("not a model")
    truncated = folder / "truncated.onnx"
    truncated.write_bytes(exported["onnx"].read_bytes()[:2000])
    bare = onnx.load(str(exported["onnx"]))
    del bare.metadata_props[:]
    no_metadata = folder / "bare.onnx"
    onnx.save(bare, str(no_metadata))
    other = onnx.load(str(exported["onnx"]))
    other.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1  # a grey-image model
    other_shape = folder / "grey.onnx"
    onnx.save(other, str(other_shape))
    return {
        "text": (text, "is not an ONNX model or is truncated"),
        "truncated": (truncated, "is not an ONNX model or is truncated"),
        "no metadata": (no_metadata, "has no wycifar metadata (classes, image_size, mean, std missing)"),
        "other input shape": (other_shape, "takes input ['batch', 1, 32, 32], not [batch, 3, 32, 32] images"),
        "missing": (folder / "absent.onnx", "does not exist"),
    }


def test_bad_models_and_images_are_one_line_each(exported, tmp_path):
    image = str(exported["images"][0])
    for name, (path, words) in bad_models(exported, tmp_path).items():
        result = run_main(predict_main, "--onnx", path, image)
        last = assert_one_line_error(result, words)
        assert str(path) in last, name
        assert result.stdout == ""
    unreadable = tmp_path / "photo.jpg"
    unreadable.write_text("not an image")
    result = run_main(predict_main, "--onnx", exported["onnx"], unreadable, image, tmp_path / "gone.png")
    assert result.returncode == 2
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [image]  # the others still predicted
    errors = result.stderr.strip().splitlines()
    assert errors[0].startswith(f"error: cannot read image {unreadable}") and errors[1].endswith(
        "gone.png: no such file"
    )


def test_a_model_exported_without_metadata_gets_them(exported, tmp_path):
    """python -m wycifar.add_metadata MODEL.onnx --data DIR: CIFAR-10's classes and normalisation,
    and the file's own accuracy, which must agree with the one in its name; the exporter takes no
    ONNX file."""
    data = exported["images"][0].parents[2]
    bare = onnx.load(str(exported["onnx"]))
    del bare.metadata_props[:]
    old = tmp_path / "old" / exported["onnx"].name
    old.parent.mkdir()
    onnx.save(bare, str(old))
    assert_one_line_error(run_main(export_main, old, "--data", data), "python -m wycifar.add_metadata")
    result = run_main(add_metadata_main, old, "--data", data, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / old.name)
    model = Classifier(tmp_path / old.name)
    assert model.accuracy == pytest.approx(Classifier(exported["onnx"]).accuracy, abs=1e-4)
    assert model.classes == Classifier(exported["onnx"]).classes
    assert_one_line_error(
        run_main(add_metadata_main, tmp_path / old.name, "--data", data), "already carries wycifar metadata"
    )
    misnamed = old.with_name("model_8005_0.0100.onnx")
    old.rename(misnamed)
    last = assert_one_line_error(run_main(add_metadata_main, misnamed, "--data", data), "not the 1.00% in its name")
    assert "export its checkpoint instead" in last and not (tmp_path / misnamed.name).exists()


def test_metadata_is_plain_json_strings(exported):
    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    assert json.loads(props["wycifar.classes"])[9] == "truck"
    assert json.loads(props["wycifar.image_size"]) == 32
    assert isinstance(json.loads(props["wycifar.accuracy"]), float)


def test_export_names_the_file_by_its_own_accuracy_in_onnxruntime(exported, tmp_path):
    """python -m wycifar.export RUN: the run's checkpoint and data folder; the accuracy in the name
    and the metadata is the exported file's own, on the test split."""
    result = run_main(export_main, exported["run"], "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    (path,) = tmp_path.glob("model_*.onnx")
    assert result.stdout.strip() == str(path)
    model = Classifier(path)
    images = np.stack([model.read(p) for p in exported["images"]])
    labels = np.array([model.classes.index(p.parent.name) for p in exported["images"]])
    measured = float((model.probabilities(images).argmax(1) == labels).mean())
    assert path.name == f"model_8005_{measured:.4f}.onnx" and model.accuracy == pytest.approx(measured, abs=1e-4)
    assert model.classes == Classifier(exported["onnx"]).classes
    no_data = run_main(export_main, exported["ckpt"])
    assert_one_line_error(no_data, "--data is needed for")
    not_a_run = run_main(export_main, tmp_path, "--data", tmp_path)
    assert_one_line_error(not_a_run, "not a wycifar.train run")


@pytest.mark.slow  # the shipped model exported against the 10,000 real test images: about 30 s
def test_the_shipped_model_exported_predicts_as_pytorch_on_real_images(tmp_path, real_data):
    import torch

    from wycifar.data.normalize import normalize_uint8
    from wycifar.training.checkpoints import load_module

    ckpt = next((ROOT / "results" / "default").glob("model_*.ckpt"))
    result = run_main(export_main, ckpt, "--data", real_data, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    model = Classifier(result.stdout.strip())
    files = [f for c in model.classes for f in sorted((real_data / "test" / c).iterdir())[:100]]
    images = np.stack([model.read(f) for f in files])
    onnx_classes = model.probabilities(images).argmax(1)
    net = load_module(ckpt).eval().net
    with torch.no_grad():
        x = normalize_uint8(
            torch.from_numpy(images).permute(0, 3, 1, 2), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
        )
        torch_classes = net(x).argmax(1).numpy()
    assert len(files) == 1000 and (onnx_classes == torch_classes).all()
    assert abs(model.accuracy - float(ckpt.stem.split("_")[-1])) <= 0.0015  # bf16 in training, fp32 here


def test_the_deploy_benchmark_measures_both_backends_side_by_side(exported):
    """python -m wycifar.bench deploy RUN: PyTorch eager and the ONNX model, one and all threads."""
    from wycifar.bench import main as bench_main

    result = run_main(bench_main, "deploy", exported["run"], "--images", 20)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(r["model"], r["threads"]) for r in rows][:2] == [("PyTorch eager", 1), ("ONNX FP32, onnxruntime", 1)]
    assert {r["params"] for r in rows} == {8005}
    # the same network: the same accuracy on the 60 test images in both backends and thread counts
    assert len({r["test_acc"] for r in rows}) == 1
    assert rows[0]["test_acc"] == pytest.approx(exported["acc"]["test/acc"], abs=1e-4)
    for row in rows:
        assert row["b1_p99_ms"] >= row["b1_median_ms"]
        line = f"| {row['model']} | {row['threads']} | {100 * row['test_acc']:.2f}% |"
        assert line in result.stdout
