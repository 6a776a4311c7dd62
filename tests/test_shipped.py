"""What results/ ships: each recipe's model loads as the 95,653-parameter network and its ONNX twin
gives the same logits; every seed's epoch table and ONNX model agree with each other and, on the
real test images, with the accuracy in the model's name."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_CIFAR, ROOT, compose_train

from wycifar.deploy.runtime import Classifier
from wycifar.models.onnx import check_onnx
from wycifar.runs.folders import MODEL_NAME, parse_model_name
from wycifar.training.checkpoints import load_module

RESULTS = ROOT / "results"

RECIPES = ["default", "reference", "reference_readme", "speedrun"]
SHIPPED_CKPTS = sorted(RESULTS.glob("*/model_*.ckpt"))
# a recipe's distilled seeds (`module.teacher`) stand apart from its plain ones, in <recipe>/<variant>/seeds/
SEED_MODELS = sorted(RESULTS.glob("*/seeds/seed*_model_*.onnx")) + sorted(RESULTS.glob("*/*/seeds/seed*_model_*.onnx"))
SEED_CKPTS = sorted(RESULTS.glob("**/seeds/seed*_model_*.ckpt"))
SEED_MODEL = re.compile(r"seed(\d+)_model_(\d+)_(\d\.\d+)\.onnx$")


def recipe_of(path: Path) -> str:
    return path.relative_to(RESULTS).parts[0]


def seed_model_id(path: Path) -> str:
    """default-seed0, default-distilled-seed0, ..."""
    *folders, name = path.relative_to(RESULTS).parts
    return "-".join([*(f for f in folders if f != "seeds"), name.split("_")[0]])


def test_every_recipe_ships_a_model_and_its_seeds():
    assert sorted(p.parent.name for p in SHIPPED_CKPTS) == RECIPES
    for recipe in RECIPES:
        assert list((RESULTS / recipe / "seeds").glob("seed*.csv")), recipe
        assert "Run folder" not in (RESULTS / recipe / "report.md").read_text()


@pytest.mark.parametrize("ckpt", SHIPPED_CKPTS, ids=lambda p: p.parent.name)
def test_shipped_model_matches_its_onnx_twin_and_its_report(ckpt: Path):
    named = MODEL_NAME.search(ckpt.name)
    params, acc = named["params"], named["acc"]
    reported = re.search(r"\| test/acc \| (\d\.\d+) \|", (ckpt.parent / "report.md").read_text())
    assert reported is not None and reported.group(1) == acc
    net = load_module(ckpt).eval().net
    assert sum(p.numel() for p in net.parameters()) == int(params) == 95_653
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert check_onnx(net, ckpt.with_suffix(".onnx"), x, atol=1e-4, rtol=0.0) <= 1e-4
    # the recipe's model is one of its seeds
    assert list((ckpt.parent / "seeds").glob(f"seed*_{ckpt.with_suffix('.onnx').name}"))


@pytest.mark.parametrize("onnx_path", SEED_MODELS, ids=seed_model_id)
def test_each_seed_model_is_the_last_epoch_of_its_table(onnx_path: Path, tmp_path: Path):
    seed, _, acc = SEED_MODEL.search(onnx_path.name).groups()
    with open(onnx_path.parent / f"seed{seed}.csv") as f:
        rows = list(csv.DictReader(f))
    recipe = recipe_of(onnx_path)
    cfg = compose_train(tmp_path, [] if recipe == "default" else [f"experiment={recipe}"])
    assert len(rows) == cfg.trainer.max_epochs
    # validation is the test split, so the last epoch is tested: its ValAcc is the model's test
    # accuracy (and, for these runs, also the best epoch's)
    assert float(rows[-1]["ValAcc"]) == pytest.approx(100 * float(acc), abs=0.006)
    assert max(float(r["ValAcc"]) for r in rows) == pytest.approx(100 * float(acc), abs=0.006)


@pytest.mark.parametrize("ckpt", SEED_CKPTS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_each_kept_seed_checkpoint_is_its_onnx_model(ckpt: Path):
    """A seed's weights kept for module.teacher (wycifar.ship --checkpoint) are those of its ONNX model,
    whatever its width (a wider teacher's are kept too)."""
    net = load_module(ckpt).eval().net
    assert sum(p.numel() for p in net.parameters()) == parse_model_name(ckpt.name)[0]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert check_onnx(net, ckpt.with_suffix(".onnx"), x, atol=1e-4, rtol=0.0) <= 1e-4


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    """The real test images decoded and normalised here, with none of wycifar's data code."""
    from PIL import Image

    classes = sorted(p.name for p in (REAL_CIFAR / "test").iterdir())
    files = [(f, label) for label, c in enumerate(classes) for f in sorted((REAL_CIFAR / "test" / c).iterdir())]
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    images = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f, _ in files])
    x = ((images - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    return x, np.array([label for _, label in files])


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CIFAR.is_dir(), reason="real CIFAR-10 not found")
@pytest.mark.parametrize("onnx_path", SEED_MODELS, ids=seed_model_id)
def test_each_seed_model_scores_its_accuracy_on_the_real_test_images(onnx_path: Path, test_images):
    """In onnxruntime, with none of wycifar's network or training code."""
    import onnxruntime as ort

    x, labels = test_images
    assert len(labels) == 10_000
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    predicted = np.concatenate(
        [session.run(None, {"image": x[i : i + 500]})[0].argmax(1) for i in range(0, len(x), 500)]
    )
    accuracy = float((predicted == labels).mean())
    # the runs tested in bf16-mixed, onnxruntime computes in fp32: a few images apart at most
    named = float(SEED_MODEL.search(onnx_path.name).group(3))
    assert accuracy == pytest.approx(named, abs=0.0015)
    # the file's own, in its metadata: as its run tested it (the name's), or as wycifar.add_metadata
    # measured the file in onnxruntime
    assert Classifier(onnx_path).accuracy in (pytest.approx(named, abs=1e-4), pytest.approx(accuracy, abs=1e-4))


@pytest.mark.parametrize("onnx_path", sorted(RESULTS.rglob("*.onnx")), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_shipped_onnx_model_carries_its_metadata(onnx_path: Path):
    """Each works with wycifar-predict --onnx and wycifar.deploy.runtime alone."""
    model = Classifier(onnx_path)
    assert model.classes == sorted(model.classes) and len(model.classes) == 10 and model.image_size == 32
    assert model.accuracy == pytest.approx(parse_model_name(onnx_path.name)[1], abs=0.0015)
