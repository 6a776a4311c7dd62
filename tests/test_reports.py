"""Every report of a run exists and is real: decoded, parsed, run and read back."""

import csv
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from conftest import TINY_REPORTS, compose_train, evaluate_checkpoint, make_image_folder
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wycifar.callbacks.gradcam import GradCAMReport, gradcam_maps
from wycifar.errors import ConfigError
from wycifar.runs import folders
from wycifar.training.checkpoints import load_module, load_teacher
from wycifar.training.evaluate import evaluate
from wycifar.training.run import train

EPOCHS = 3
PNGS = ["curves.png", "gradcam.png", "misclassified.png", "confusion_matrix.png"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    data = make_image_folder(tmp / "data")
    cfg = compose_train(
        tmp,
        [
            *TINY_REPORTS,
            f"data.root={data}",
            f"trainer.max_epochs={EPOCHS}",
            "callbacks.gradcam.every_n_epochs=2",
            "callbacks.curves.min_interval_s=3600",
            "scheduler=onecycle",
            "optimizer.lr=0.05",
        ],
    )
    metrics, objects = train(cfg)
    return {"dir": tmp / "run", "metrics": metrics, "data": data, "tmp": tmp, "cfg": cfg, **objects}


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_every_artifact_exists_and_decodes(run):
    folder = run["dir"]
    for name in PNGS:
        with Image.open(folder / name) as image:
            image.verify()
        with Image.open(folder / name) as image:
            assert image.size[0] > 200 and image.size[1] > 150, name
    summary = (folder / "summary.txt").read_text()
    assert "Total params: 8,005" in summary and "Receptive field" in summary and "Using Normalization: bn" in summary
    report = (folder / "report.md").read_text()
    for name in PNGS + ["Total params: 8,005", "| Epoch | LR", next(folder.glob("model_*.onnx.svg")).name]:
        assert name in report, name


def test_onnx_is_named_like_the_reference_and_matches_pytorch(run):
    acc = run["metrics"]["test/acc"]
    path = run["dir"] / f"model_8005_{acc:.4f}.onnx"
    assert path.is_file()
    net = run["module"].net.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_svg_parses_and_names_the_operators(run):
    svg = next(run["dir"].glob("model_*.onnx.svg"))
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    model = onnx.load(str(svg.with_suffix("")))
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "Erf", "Add", "AveragePool"} <= ops  # GELU and the averaging skips of the default network
    for op in ops:
        assert op in text, op
    assert "dilations=[9, 9]" in text


def test_epoch_table_matches_what_the_trainer_logged(run):
    rows = list(csv.DictReader((run["dir"] / "epochs.csv").open()))
    assert [int(r["Epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    acc = events(run["dir"])
    val_acc = [e.value for e in acc.Scalars("val/acc")]
    train_loss = [e.value for e in acc.Scalars("train/loss")]
    assert len(val_acc) == EPOCHS
    for row, va, tl in zip(rows, val_acc, train_loss):
        assert math.isclose(float(row["ValAcc"]), 100 * va, rel_tol=1e-5)
        assert math.isclose(float(row["TrainLoss"]), tl, rel_tol=1e-5)
        assert float(row["Time"]) > 0
    table = (run["dir"] / "epochs.md").read_text()
    title = "| Epoch | LR       | Time    | TrainLoss | TrainAcc | ValLoss  | ValAcc |"
    lines = table.splitlines()
    assert re.fullmatch(r"\|(-+\|){7}", lines[lines.index(title) + 1])
    assert [len(cell) for cell in lines[lines.index(title) + 1].split("|")] == [len(c) for c in title.split("|")]
    assert len([line for line in table.splitlines() if line.startswith("|     ")]) == EPOCHS


def test_tensorboard_holds_scalars_images_and_real_hparams(run):
    acc = events(run["dir"])
    tags = acc.Tags()
    for tag in ["train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc", "lr-SGD/pg1"]:
        assert tag in tags["scalars"], tag
    assert len(acc.Scalars("lr-SGD/pg1")) >= EPOCHS * 5  # one per step
    for tag in ["report/curves", "report/gradcam", "report/misclassified", "report/confusion_matrix"]:
        assert tag in tags["images"], tag
    assert "hp_metric" not in tags["scalars"]
    assert "hp/test_acc" in tags["scalars"]
    assert acc.Scalars("hp/test_acc")[-1].value == pytest.approx(run["metrics"]["test/acc"])
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugin and "_hparams_/session_start_info" in plugin
    # one key set: the HPARAMS tab shows the flattened config that hparams.yaml and every logger hold
    from tensorboard.plugins.hparams import plugin_data_pb2

    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    shown = dict(session.session_start_info.hparams)
    (saved,) = (run["dir"] / "tensorboard").rglob("hparams.yaml")
    assert set(shown) == set(yaml.safe_load(saved.read_text())) and "model/norm" in shown
    assert shown["optimizer/lr"].number_value == pytest.approx(OmegaConf.select(run["cfg"], "optimizer.lr"))


def test_curves_redrawn_at_most_every_min_interval_and_after_the_last_epoch(run):
    # min_interval_s=3600: drawn after the first epoch, then only after the last (every epoch in it).
    steps = [image.step for image in events(run["dir"]).Images("report/curves")]
    assert len(steps) == 2 and steps[-1] == run["trainer"].global_step, steps


def test_confusion_matrix_counts_every_test_image(run):
    lines = (run["dir"] / "confusion_matrix.csv").read_text().splitlines()
    assert lines[0].startswith("true\\predicted,airplane")
    counts = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert counts.shape == (10, 10) and counts.sum() == 60
    assert counts.sum(1).tolist() == [6] * 10
    assert np.trace(counts) / 60 == pytest.approx(run["metrics"]["test/acc"])


def test_eval_reproduces_the_test_accuracy(run, tmp_path):
    best = run["trainer"].checkpoint_callback.best_model_path
    threads = torch.get_num_threads()
    try:
        metrics = evaluate_checkpoint(tmp_path, best, run["data"], ["threads=1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert metrics["test/acc"] == pytest.approx(run["metrics"]["test/acc"], abs=1e-6)
    for name in ["gradcam.png", "misclassified.png", "confusion_matrix.png", "report.md", "summary.txt"]:
        assert (tmp_path / "run" / name).is_file(), name
    bad = compose_train(tmp_path / "bad", [f"ckpt_path={best}", "threads=0"], config_name="eval")
    with pytest.raises(ConfigError, match="threads=0 is not allowed; it must be a whole number >= 1"):
        evaluate(bad)


def test_gradcam_under_inference_mode_keeps_train_state(run):
    module = load_module(run["trainer"].checkpoint_callback.best_model_path)
    net = module.net
    net.train()
    x = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        heatmaps, probs = gradcam_maps(net, net.gradcam_layer, x)
    assert net.training
    assert heatmaps.shape == (3, 32, 32) and np.isfinite(heatmaps).all() and heatmaps.max() > 0
    assert probs.shape == (3, 10)
    net.eval()
    gradcam_maps(net, net.gradcam_layer, x)
    assert not net.training


def test_no_figures_during_sanity_check(tmp_path):
    data = make_image_folder(tmp_path / "data", train_per_class=4, test_per_class=2)
    cfg = compose_train(
        tmp_path,
        [
            *TINY_REPORTS,
            f"data.root={data}",
            "trainer.max_epochs=1",
            "trainer.num_sanity_val_steps=1",
            "trainer.limit_train_batches=1",
            "test=false",
            "callbacks.gradcam.every_n_epochs=5",
        ],
    )
    _, objects = train(cfg)
    folder = tmp_path / "run"
    assert not (folder / "gradcam.png").exists()  # only epoch 1 ran: not a multiple of 5, and no sanity figure
    assert (folder / "curves.png").exists()
    assert isinstance(next(c for c in objects["trainer"].callbacks if isinstance(c, GradCAMReport)), GradCAMReport)


def test_epochs_without_validation_show_no_stale_validation_numbers(tmp_path):
    """trainer.check_val_every_n_epoch=2: epoch 1 has no validation; its row and curve point
    must not repeat another epoch's numbers."""
    from wycifar.callbacks.curves import LearningCurves
    from wycifar.callbacks.epoch_table import EpochTable

    data = make_image_folder(tmp_path / "data", train_per_class=4, test_per_class=2)
    overrides = [*TINY_REPORTS, f"data.root={data}", "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2"]
    cfg = compose_train(tmp_path, [*overrides, "test=false", "callbacks=[model_checkpoint,reports]", "logger=none"])
    _, objects = train(cfg)
    rows = list(csv.DictReader((tmp_path / "run" / "epochs.csv").open()))
    validated = [not math.isnan(float(row["ValAcc"])) for row in rows]
    assert validated == [False, True, False, True]
    table = next(c for c in objects["trainer"].callbacks if isinstance(c, EpochTable))
    assert table.format_row(table.rows[0]).endswith("| -        |      - |")
    curves = next(c for c in objects["trainer"].callbacks if isinstance(c, LearningCurves))
    assert [epoch for epoch, _ in curves.history["val/acc"]] == [2, 4]
    assert [epoch for epoch, _ in curves.history["train/acc"]] == [1, 2, 3, 4]


def test_reports_follow_their_names_into_report_md_and_ship(tmp_path, caplog):
    """A report file named by its callback's config is the one report.md shows and ship copies."""
    from wycifar.ship import ship

    data = make_image_folder(tmp_path / "data", train_per_class=8, test_per_class=4)
    names = ["+callbacks.gradcam.filename=cam.png", "+callbacks.confusion_matrix.filename=cm.png"]
    cfg = compose_train(tmp_path, [*TINY_REPORTS, f"data.root={data}", "trainer.max_epochs=1", "logger=none", *names])
    train(cfg)
    run = tmp_path / "run"
    (run / ".hydra").mkdir()  # what Hydra writes for a run from the command line
    OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), run / ".hydra" / "config.yaml")
    assert {"cam.png", "cm.png", "cm.csv"} <= {p.name for p in run.iterdir()}
    assert not (run / "gradcam.png").exists() and not (run / "confusion_matrix.png").exists()
    report = (run / "report.md").read_text()
    assert "](cam.png)" in report and "](cm.png)" in report and "not drawn in this run" not in report
    # a run of an older version names a callback since renamed: shipped all the same, with a word
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    config.callbacks.onnx = {"_target_": "wycifar.callbacks.onnx_export.OnnxExport"}
    OmegaConf.save(config, run / ".hydra" / "config.yaml")
    # a seed alone: its table, model and record in seeds/, the recipe's model and reports untouched
    seed = {p.relative_to(tmp_path / "results").as_posix() for p in ship(run, tmp_path / "results")}
    assert "seeds/seed0.csv" in seed and any(p.startswith("seeds/seed0_model_") for p in seed)
    assert all(p.startswith("seeds/") for p in seed)
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["seeds"]
    # with its checkpoint: the same weights, loadable as a teacher
    kept = [p for p in ship(run, tmp_path / "results", checkpoint=True) if p.suffix == ".ckpt"]
    onnx_name = next(p for p in seed if p.endswith(".onnx")).removeprefix("seeds/")
    assert [p.name for p in kept] == [onnx_name.replace(".onnx", ".ckpt")]
    teacher, tested = load_teacher(kept[0]).state_dict(), load_module(folders.tested_checkpoint(run)).net.state_dict()
    assert teacher.keys() == tested.keys() and all(torch.equal(teacher[k], tested[k]) for k in tested)
    assert "callbacks.onnx (wycifar.callbacks.onnx_export.OnnxExport) is not in this version" in caplog.text
    shipped = {p.name for p in ship(run, tmp_path / "results", model=True)}
    assert {"cam.png", "cm.png", "cm.csv", "report.md", "epochs.md", "summary.txt"} <= shipped


def test_a_renderer_that_fails_leaves_no_drawing_and_no_error(tmp_path, monkeypatch):
    """The SVG is optional: a `dot` that exits non-zero is a warning, and nothing half-drawn is left."""
    from wycifar.models import drawing

    monkeypatch.setattr(drawing, "find_dot", lambda: "/bin/false")
    assert drawing.render_svg("digraph { a -> b }", tmp_path / "net.svg") is False
    assert list(tmp_path.iterdir()) == []
