"""Loggers as config groups (CSV, MLflow, W&B beside TensorBoard), read back from their real stores,
and mean ± sd over seeds (a sweep's summary, wycifar.summary)."""

from __future__ import annotations

import csv
import json
import socket
import statistics
import struct
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import TINY, TINY_REPORTS, assert_one_line_error, finish, run_main, start_command

from wycifar.summary import main as summary_main
from wycifar.train import main as train_main

QUICK = [*TINY, "callbacks.progress_bar.refresh_rate=0"]
WITH_REPORTS = [*TINY_REPORTS, "callbacks.progress_bar.refresh_rate=0"]
REPORT_IMAGES = {"curves", "gradcam", "misclassified", "confusion_matrix"}


def train_into(log_dir: Path, data: Path, *overrides: str, reports: bool = False):
    """`python -m wycifar.train [-m] OVERRIDES` on the tiny data with every output under log_dir, in
    process; with `reports`, the figures too."""
    flags = [o for o in overrides if o.startswith("-")]
    quick = WITH_REPORTS if reports else QUICK
    common = [f"data.root={data}", f"paths.log_dir={log_dir}", f"paths.cache_dir={log_dir}/cache", *quick]
    result = run_main(train_main, *flags, *common, *(o for o in overrides if not o.startswith("-")))
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def only_run(log_dir: Path, task: str = "train") -> Path:
    (run,) = [p for p in (log_dir / task).iterdir() if p.is_dir()]
    return run


def test_csv_logger_has_every_epoch_the_lr_the_test_metrics_and_the_config(tmp_path: Path, tiny_data: Path):
    train_into(tmp_path, tiny_data, "logger=csv", "~callbacks.onnx_model", "++callbacks.gradcam=null")
    run = only_run(tmp_path)
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    epochs = [r for r in rows if r.get("val/acc")]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    table = list(csv.DictReader((run / "epochs.csv").open()))
    assert [float(r["ValAcc"]) for r in table] == pytest.approx([100 * float(r["val/acc"]) for r in epochs])
    assert any(r.get("lr-SGD/pg1") for r in rows) and any(r.get("train/loss") for r in rows)
    timed = [r for r in rows if r.get("epoch/time_s")]
    assert [float(r["epoch/lr"]) for r in timed] == pytest.approx([float(r["LR"]) for r in table])
    assert [float(r["epoch/time_s"]) for r in timed] == pytest.approx([float(r["Time"]) for r in table])
    (test,) = [r for r in rows if r.get("test/acc")]
    record = json.loads((run / "metrics.json").read_text())
    assert float(test["test/acc"]) == pytest.approx(record["metrics"]["test/acc"])
    params = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert params["model/base_width"] == 8 and params["optimizer/lr"] == 0.2 and params["seed"] == 0
    assert not (run / "tensorboard").exists()  # logger=csv replaces TensorBoard


def mlflow_client(log_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{log_dir / 'mlflow.db'}")


def artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_many_loggers_fill_one_mlflow_store_tensorboard_and_csv(tmp_path: Path, tiny_data: Path):
    pytest.importorskip("mlflow")
    train_into(tmp_path, tiny_data, "logger=many", "experiment=reference", "trainer.max_epochs=2", reports=True)
    run = only_run(tmp_path, "reference")  # the recipe's task name: its folder and its experiment
    assert (run / "csv" / "metrics.csv").is_file() and list((run / "tensorboard").glob("events.*"))
    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("reference")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == run.name and mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["recipe"] == "reference" and mlrun.data.tags["model"] == "dws_dilated"
    params = mlrun.data.params
    assert (
        params["model/base_width"] == "8" and params["trainer/max_epochs"] == "2" and params["task_name"] == "reference"
    )
    history = client.get_metric_history(mlrun.info.run_id, "val/acc")
    epochs = list(csv.DictReader((run / "epochs.csv").open()))
    assert [100 * m.value for m in history] == pytest.approx([float(r["ValAcc"]) for r in epochs])
    assert len(client.get_metric_history(mlrun.info.run_id, "lr-SGD")) >= 2
    record = json.loads((run / "metrics.json").read_text())
    assert mlrun.data.metrics["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
    stored = artifacts(client, mlrun.info.run_id)
    (onnx_file,) = run.glob("model_*.onnx")
    assert {f"report/{name}.png" for name in REPORT_IMAGES} | {f"model/{onnx_file.name}"} <= set(stored)
    local = Path(experiment.artifact_location.removeprefix("file://")) / mlrun.info.run_id / "artifacts"
    assert local.is_relative_to(tmp_path / "mlartifacts")
    assert (local / "model" / onnx_file.name).read_bytes() == onnx_file.read_bytes()


def read_wandb_records(path: Path):
    """The protobuf records of a W&B run file (run-<id>.wandb): a 7-byte header (':W&B', magic,
    version), then LevelDB-log records in 32 KiB blocks (crc, length, type; types 1 full, 2 first,
    3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, part = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # padding to the end of the block
            pos += room
            continue
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            part = b""
            yield record


def test_wandb_runs_offline_into_the_run_folder(tmp_path: Path, tiny_data: Path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    train_into(tmp_path, tiny_data, "logger=wandb", "seed=3", reports=True)
    run = only_run(tmp_path)
    (offline,) = (run / "wandb").glob("offline-run-*")
    history, config = [], {}
    for record in read_wandb_records(next(offline.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "run":
            assert record.run.display_name == run.name and list(record.run.tags) == ["default"]
    epochs = list(csv.DictReader((run / "epochs.csv").open()))
    assert [100 * h["val/acc"] for h in history if "val/acc" in h] == pytest.approx(
        [float(r["ValAcc"]) for r in epochs]
    )
    assert any("lr-SGD/pg1" in h for h in history) and any("test/acc" in h for h in history)
    assert config["seed"] == 3 and config["model/base_width"] == 8
    media = {p.name.split("_")[0] for p in (offline / "files" / "media" / "images" / "report").glob("*.png")}
    assert media >= {"curves", "gradcam", "misclassified", "confusion"}
    (onnx_file,) = run.glob("model_*.onnx")
    assert (offline / "files" / onnx_file.name).read_bytes() == onnx_file.read_bytes()


@pytest.mark.parametrize("logger", ["mlflow", "wandb"])
def test_a_logger_without_its_extra_stops_before_training(tmp_path: Path, tiny_data: Path, monkeypatch, logger):
    monkeypatch.setitem(sys.modules, logger, None)  # as if not installed: find_spec None, import fails
    result = run_main(train_main, f"logger={logger}", f"data.root={tiny_data}", f"paths.log_dir={tmp_path}", *QUICK)
    assert_one_line_error(
        result, f"logger={logger} needs the {logger} package, which is not installed: pip install 'wycifar[{logger}]'"
    )
    assert not (tmp_path / "train").exists() and not (tmp_path / "mlflow.db").exists()  # a refused run leaves nothing


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_shows_the_store_and_a_run_can_log_to_that_server(tmp_path: Path, tiny_data: Path):
    """`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` serves the runs wycifar wrote
    there, and logger.mlflow.tracking_uri=http://... logs a run through a server instead."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    train_into(tmp_path, tiny_data, "logger=mlflow", "++callbacks.gradcam=null")
    port = free_port()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ui = start_command(
        Path(sys.executable).parent / "mlflow", "ui", "--backend-store-uri", store, "--port", port, module=None
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert ui.poll() is None, finish(ui).stderr[-2000:]
                time.sleep(1)
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("train").experiment_id
        (direct,) = client.search_runs([experiment])
        assert len(client.get_metric_history(direct.info.run_id, "val/acc")) == 2
        train_into(tmp_path, tiny_data, "logger=mlflow", f"logger.mlflow.tracking_uri={url}", "seed=1")
        runs = client.search_runs([experiment])
        assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
        (served,) = [r for r in runs if r.data.params["seed"] == "1"]
        assert len(client.get_metric_history(served.info.run_id, "val/acc")) == 2
        assert {"report/curves.png", "report/gradcam.png"} <= set(artifacts(client, served.info.run_id))
    finally:
        ui.terminate()
        finish(ui)


def group_rows(path: Path) -> dict[str, dict]:
    return {row["overrides"]: row for row in csv.DictReader(path.open())}


def test_a_sweep_summary_puts_seeds_in_one_row_and_each_job_is_an_mlflow_run(tmp_path: Path, tiny_data: Path):
    pytest.importorskip("mlflow")
    overrides = [
        "model.norm=gn,bn",
        "seed=0,1",
        "trainer.max_epochs=1",
        "~callbacks.onnx_model",
        "++callbacks.gradcam=null",
    ]
    train_into(tmp_path, tiny_data, "-m", "logger=mlflow", *overrides)
    (sweep,) = (tmp_path / "train-multirun").iterdir()
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    groups = group_rows(sweep / "summary.csv")
    assert set(groups) == {"model.norm=gn", "model.norm=bn"}
    for norm in ("gn", "bn"):
        accs = [r["metrics"]["test/acc"] for r in records if f"model.norm={norm}" in r["overrides"]]
        row = groups[f"model.norm={norm}"]
        assert int(row["n"]) == 2 and row["seeds"] == "0 1"
        assert float(row["test_acc_mean"]) == pytest.approx(sum(accs) / 2)
        assert float(row["test_acc_sd"]) == pytest.approx(statistics.stdev(accs))
        assert (float(row["test_acc_min"]), float(row["test_acc_max"])) == pytest.approx((min(accs), max(accs)))
    assert len(list(csv.DictReader((sweep / "jobs.csv").open()))) == 4
    table = (sweep / "summary.md").read_text()
    assert table.index("| overrides | n | seeds |") < table.index("| job | folder |")
    best = max(groups.values(), key=lambda r: float(r["val_acc_best_mean"]))
    first = next(line for line in table.split("| job |")[0].splitlines() if line.startswith("| `"))
    assert first.startswith(f"| `{best['overrides']}` | 2 | 0 1 |")
    # each job is a run of the task's experiment, named as its folder
    client = mlflow_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"{sweep.name}/{n}" for n in range(4)]
    for mlrun in runs:
        job = json.loads((sweep / mlrun.info.run_name.split("/")[1] / "metrics.json").read_text())
        assert mlrun.data.params["seed"] == str(job["seed"])
        assert mlrun.data.metrics["test/acc"] == pytest.approx(job["metrics"]["test/acc"])
        assert len(client.get_metric_history(mlrun.info.run_id, "val/acc")) == 1


def test_summary_of_runs_made_separately(tmp_path: Path, tiny_data: Path):
    quick = ["~callbacks.onnx_model", "++callbacks.gradcam=null", "logger=none", "trainer.max_epochs=1"]
    train_into(tmp_path, tiny_data, "seed=0", *quick)
    train_into(tmp_path, tiny_data, "seed=1", "threads=1", *quick)  # how fast, not what: same group
    train_into(tmp_path, tiny_data, "seed=0", "model.norm=gn", *quick)
    out = tmp_path / "table"
    result = run_main(summary_main, tmp_path / "train", "--out", out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "train").glob("*/metrics.json")]
    plain = [r["metrics"]["test/acc"] for r in records if "model.norm=gn" not in r["overrides"]]
    groups = group_rows(out / "summary.csv")
    assert set(groups) == {"", "model.norm=gn"} and groups["model.norm=gn"]["test_acc_sd"] == ""
    assert groups[""]["n"] == "2" and groups[""]["seeds"] == "0 1"
    assert float(groups[""]["test_acc_mean"]) == pytest.approx(statistics.fmean(plain))
    assert float(groups[""]["test_acc_sd"]) == pytest.approx(statistics.stdev(plain))
    mean, sd = 100 * statistics.fmean(plain), 100 * statistics.stdev(plain)
    assert f"{mean:.2f}% ± {sd:.2f}" in result.stdout and result.stdout == (out / "summary.md").read_text()
    assert len(list(csv.DictReader((out / "jobs.csv").open()))) == 3
    # --ignore: an override that does not split groups
    merged = run_main(summary_main, tmp_path / "train", "--ignore", "model")
    every = [r["metrics"]["test/acc"] for r in records]
    assert f"| (none) | 3 | 0 0 1 | {100 * statistics.fmean(every):.2f}% ± {100 * statistics.stdev(every):.2f}" in (
        merged.stdout
    )


def test_summary_refuses_what_holds_no_runs(tmp_path: Path):
    assert_one_line_error(run_main(summary_main, tmp_path / "missing"), "is not a folder")
    assert_one_line_error(run_main(summary_main, tmp_path), "no metrics.json in or below")
    (tmp_path / "metrics.json").write_text("{not json")
    assert_one_line_error(run_main(summary_main, tmp_path), "is not a wycifar job record")
