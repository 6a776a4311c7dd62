"""scripts/reference_pipeline.py: the reference recipe trained without wycifar's data and training code."""

import csv
import json

import numpy as np
import pytest
from conftest import load_script, make_image_folder

pytest.importorskip("albumentations")  # the `reference` extra, part of `dev`

reference_pipeline = load_script("reference_pipeline")


def test_trains_and_writes_a_table_compare_reference_reads(tmp_path, capsys):
    # five batches an epoch: fewer, and the reference's peak LR of 0.5 leaves BatchNorm's running
    # statistics too few steps to settle
    data = make_image_folder(tmp_path / "data", train_per_class=64, test_per_class=10)
    out = tmp_path / "run"
    assert reference_pipeline.main([str(data), str(out), "--epochs", "12", "--threads", "1"]) == 0
    with (out / "epochs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["Epoch"]) for r in rows] == list(range(1, 13))
    # twelve epochs stretched over the reference's 24: its epoch indices 0, 2, 4, ..., 22
    assert [round(float(r["LR"]), 6) for r in rows[:4]] == [0.1, 0.3, 0.5, 0.435714]
    assert [round(float(r["LR"]), 6) for r in rows[-3:]] == [0.05, 0.033333, 0.016667]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(float(rows[-1]["ValAcc"]))
    assert float(rows[-1]["ValAcc"]) > 50  # ten classes: chance is 10%
    assert f"test accuracy {metrics['test/acc']:.2f}%" in capsys.readouterr().out

    curve = load_script("compare_reference").read_run(out)
    assert curve.val_acc == [float(r["ValAcc"]) for r in rows]


def test_augmentation_is_the_reference_codes():
    """One hole in half the images, 8-16 px a side, inside the image, filled with the mean colour (0)."""
    import random

    random.seed(0)
    transform = reference_pipeline.transforms(train=True)
    image = np.full((32, 32, 3), 200, dtype=np.uint8)  # flat: shifting, scaling and mirroring keep it flat
    normalised = (200 / 255 - np.array(reference_pipeline.MEAN)) / np.array(reference_pipeline.STD)
    holes = 0
    for _ in range(2000):
        out = transform(image=image)["image"]
        hole = np.all(out == 0, axis=2)
        assert np.allclose(out[~hole], normalised, atol=1e-4)
        if hole.any():
            holes += 1
            rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
            assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
            assert hole.sum() == len(rows) * len(cols)  # one rectangle, wholly inside the image
    assert 0.45 < holes / 2000 < 0.55


def test_limit_takes_images_evenly_across_the_classes(real_data):
    images, labels = reference_pipeline.decode(real_data, "test", limit=500)
    assert images.shape == (500, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [50] * 10


def test_test_images_are_only_normalised():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = reference_pipeline.transforms(train=False)(image=image)["image"]
    expected = (image / 255 - np.array(reference_pipeline.MEAN)) / np.array(reference_pipeline.STD)
    assert np.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp16"], "error: --precision='fp16' is not allowed; choose one of: bf16, fp32"),
        (["--epochs", "0"], "error: --epochs=0 is not allowed; it must be a whole number >= 1"),
        (["--limit", "0"], "error: --limit=0 is not allowed; it must be a whole number >= 1"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tiny_data, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        reference_pipeline.main([str(tiny_data), str(tmp_path / "run"), *args])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "run").exists()


def test_a_folder_without_splits_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reference_pipeline.main([str(tmp_path), str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: data root {str(tmp_path)!r} has no train/ folder; give an image folder (train/, test/)"
    )
