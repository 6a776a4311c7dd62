"""python -m wycifar.bench prints the three rates, their ratios and one JSON line (no timing asserts)."""

import json

import pytest
from conftest import ROOT, compose_train, run_main

from wycifar.bench import main as bench_main
from wycifar.bench.training import run_bench
from wycifar.errors import ConfigError


def bench(tmp_path, *overrides):
    """python -m wycifar.bench (its main(), in this process) on a tiny CPU setting, its run folder
    in tmp_path; stdout lines and the JSON figures."""
    result = run_main(
        bench_main,
        "data.batch_size=16",
        "model.base_width=8",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path}",
        "callbacks.progress_bar.refresh_rate=0",
        *overrides,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    return lines, json.loads(lines[-1])


def test_bench_prints_measured_ratios(tmp_path):
    """With a teacher (the shipped default model, wider than this student) it also times the
    teacher's forward pass, the cost distillation adds to each step."""
    teacher = next((ROOT / "results" / "default").glob("model_*.ckpt"))
    lines, figures = bench(
        tmp_path,
        "bench.batches=3",
        "bench.warmup=1",
        "bench.eval_batches=2",
        "data.eval_batch_size=64",
        f"module.teacher={teacher}",
    )
    for key in ["data_img_s", "bare_img_s", "fit_img_s", "eval_img_s", "peak_memory_mb", "epoch_s_estimate"]:
        assert figures[key] > 0, key
    assert figures["teacher_img_s"] > 0
    share = figures["bare_img_s"] / figures["teacher_img_s"]
    (line,) = [line for line in lines if line.strip().startswith("teacher forward")]
    assert f"{figures['teacher_img_s']:,.0f} img/s" in line and f"{share:.2f} of a bare step's time" in line
    assert figures["fit_over_bare"] == pytest.approx(figures["fit_img_s"] / figures["bare_img_s"], rel=1e-2)
    assert figures["data_over_bare"] == pytest.approx(figures["data_img_s"] / figures["bare_img_s"], rel=1e-2)
    assert figures["batch_size"] == 16 and figures["gradcam_figure_s"] > 0
    text = "\n".join(lines)
    assert "(c)/(b) =" in text and "(a)/(b) =" in text and "peak memory" in text


@pytest.mark.slow  # a whole fit in a fresh process, ~12 s on 2 cores
def test_bench_times_whole_epochs_on_request(tmp_path):
    lines, figures = bench(
        tmp_path,
        "bench.batches=2",
        "bench.warmup=1",
        "bench.eval_batches=1",
        "bench.epochs=2",
        "bench.train_images=160",
        "bench.test_images=64",
        "data.eval_batch_size=32",
    )
    assert len(figures["epoch_s_measured"]) == 2 and min(figures["epoch_s_measured"]) > 0
    assert figures["epoch_images"] == [160, 64] and figures["teacher_img_s"] is None
    assert "measured epochs (real fit, 160 train + 64 validation images each)" in "\n".join(lines)
    # The run folder holds the epoch table the measured fit wrote: 2 epochs of 10 batches each.
    rows = (tmp_path / "epochs.csv").read_text().strip().splitlines()
    assert len(rows) == 3, rows
    # Whole epochs validate too (the timed (c) batches skip validation): no nan validation columns.
    assert all("nan" not in row for row in rows[1:]), rows


@pytest.mark.slow  # ~10 s on 2 cores
def test_bench_runs_past_one_epoch_and_rejects_too_few_batches(tmp_path):
    # 64 images make 4 full batches of 16: (a) and (b) cycle the loader for their 6 batches.
    _, figures = bench(
        tmp_path,
        "bench.batches=5",
        "bench.warmup=1",
        "bench.eval_batches=1",
        "bench.train_images=64",
        "bench.test_images=32",
        "data.eval_batch_size=32",
    )
    assert figures["data_img_s"] > 0 and figures["bare_img_s"] > 0 and figures["fit_img_s"] > 0
    cfg = compose_train(
        tmp_path / "few",
        ["data.batch_size=16", "bench.train_images=20", "bench.warmup=5", "trainer.accelerator=cpu"],
        config_name="bench",
    )
    with pytest.raises(ConfigError) as error:
        run_bench(cfg)
    assert "20 training images make 1 full batches of 16" in str(error.value) and "bench.warmup=5" in str(error.value)
