"""The steps of scripts/gpu_check.sh that are Python: its data, the host-sync count, each run's
row and the table.

  python scripts/gpu_check.py data DEST TRAIN_PER_CLASS TEST_PER_CLASS
      CIFAR-shaped PNGs under DEST/train/<class>/ and DEST/test/<class>/ whose colour and stripes
      give their class away (a network learns them in an epoch), unless DEST holds them already.
  python scripts/gpu_check.py syncs RESULTS DATA STEPS1 STEPS2 -- OVERRIDES...
      short fits of the train command in this process, default callbacks and [default,ema], each
      at STEPS1 and STEPS2 training steps, counting the host syncs of the fit with
      torch.cuda.set_sync_debug_mode("warn") (without CUDA the fits run and nothing is counted).
  python scripts/gpu_check.py run RESULTS PART NAME RUN_DIR EXIT WALL_S [--sweep]
      a finished command's row: exit status, wall time, test accuracy, epoch times and the reports
      missing from its folder; with --sweep, a sweep's: its jobs, images/s and each job's time.
  python scripts/gpu_check.py bench RESULTS NAME EXIT WALL_S LOG
      python -m wycifar.bench's row: its rates and measured epochs, from the log's JSON line.
  python scripts/gpu_check.py table RESULTS
      the rows as one markdown table (also written to table.md beside RESULTS).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SYNC_WARNING = "called a synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode("warn")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# what a finished training run's folder holds (README, Outputs)
REPORTS = [
    "summary.txt",
    "epochs.csv",
    "epochs.md",
    "curves.png",
    "gradcam.png",
    "misclassified.png",
    "confusion_matrix.png",
    "confusion_matrix.csv",
    "metrics.json",
    "report.md",
    "model_*.onnx",
]


def make_data(dest: Path, train_per_class: int, test_per_class: int) -> None:
    from PIL import Image

    counts = {"train": train_per_class, "test": test_per_class}
    if all(len(list((dest / split).glob("*/*.png"))) == 10 * n for split, n in counts.items()):
        print(f"data: {dest} (there already)")
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for split, count in counts.items():
        for label, name in enumerate(CLASSES):
            folder = dest / split / name
            folder.mkdir(parents=True, exist_ok=True)
            hue = np.array([(label * 37) % 256, (label * 91 + 60) % 256, (label * 53 + 120) % 256], np.float32)
            stripes = np.sin((xx * np.cos(label) + yy * np.sin(label)) * 0.6)[..., None] * 60
            base = hue * 0.7 + stripes
            for i in range(count):
                image = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i:05d}.png", compress_level=1)
    print(f"data: {dest}, {10 * train_per_class} training and {10 * test_per_class} test images (synthetic)")


def compose(overrides: list[str], output_dir: Path):
    """The train command's config, as `python -m wycifar.train OVERRIDES` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import wycifar.runs.resolvers  # noqa: F401 - conf/'s resolvers

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="wycifar.conf", version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def count_syncs(results: Path, data: str, steps: tuple[int, int], overrides: list[str]) -> None:
    """Host syncs of whole short fits at two step counts: their difference over the steps between
    is the syncs of one training step (start-up and epoch-end ones cancel)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    from wycifar.training.builders import build_callbacks, build_module, build_trainer, instantiate_checked

    cuda = torch.cuda.is_available()

    class SyncWarnings(Callback):
        """torch's sync debug mode on from the fit's first step to its end."""

        def on_train_start(self, trainer, pl_module):
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_end(self, trainer, pl_module):
            if cuda:
                torch.cuda.set_sync_debug_mode(0)

    out = results.parent / "b"
    fits = iter(range(1_000_000))

    def fit(callbacks: str, n: int) -> int:
        """A fit of the train command's objects (data, module, the configured callbacks, trainer),
        no logger; its host syncs: torch's warnings from Python, and the lines its C++ handler
        prints for those in threads with no Python (the autograd engine's)."""
        quick = ["trainer.max_epochs=1", f"trainer.limit_train_batches={n}", "trainer.limit_val_batches=0"]
        cfg = compose([*overrides, f"data.root={data}", f"callbacks={callbacks}", *quick], out / f"fit{next(fits)}")
        L.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate_checked(cfg.data, "data")
        module = build_module(cfg)
        fit_callbacks = build_callbacks(cfg.callbacks, has_logger=False, validation_is_test=datamodule.val_size == 0)
        trainer = build_trainer(cfg.trainer, [*fit_callbacks, SyncWarnings()], [])
        with tempfile.TemporaryFile("w+") as printed, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sys.stderr.flush()
            stderr = os.dup(2)
            os.dup2(printed.fileno(), 2)
            try:
                trainer.fit(module, datamodule=datamodule)
            finally:
                sys.stderr.flush()
                os.dup2(stderr, 2)
                os.close(stderr)
            printed.seek(0)
            return printed.read().count(SYNC_WARNING) + sum(SYNC_WARNING in str(w.message) for w in caught)

    # once uncounted: what a process does once (CUDA's start, cuDNN's autotuning) is not a step's
    fit("default", steps[0])
    for callbacks in ("default", "[default,ema]"):
        counts, start = [], time.perf_counter()
        for n in steps:
            counts.append(fit(callbacks, n))
        per_step = (counts[1] - counts[0]) / (steps[1] - steps[0]) if cuda else None
        row = {
            "part": "b syncs",
            "name": f"callbacks={callbacks}",
            "status": "ok",
            "wall_s": round(time.perf_counter() - start, 1),
            "figures": (
                f"{counts[0]} syncs in {steps[0]} steps, {counts[1]} in {steps[1]}: {per_step:g} per step"
                if cuda
                else f"fits of {steps[0]} and {steps[1]} steps ran; syncs not counted (no CUDA)"
            ),
        }
        append(results, row)


def run_row(results: Path, part: str, name: str, run_dir: Path, code: int, wall_s: float) -> None:
    """A finished training command's row; FAIL where it exited non-zero or left a report out."""
    missing = [r for r in REPORTS if not list(run_dir.glob(r))]
    record = read_json(run_dir / "metrics.json")
    metrics = record.get("metrics", record)  # the run's record holds them under "metrics"
    figures = []
    if "test/acc" in metrics:
        figures.append(f"test acc {100 * metrics['test/acc']:.2f}%")
    if "test/acc_tta" in metrics:
        figures.append(f"with TTA {100 * metrics['test/acc_tta']:.2f}%")
    times = epoch_times(run_dir / "epochs.csv")
    if times:
        figures.append("epochs " + ", ".join(f"{t:.1f}" for t in times) + " s")
    if missing:
        figures.append("missing: " + ", ".join(missing))
    status = "ok" if code == 0 and not missing else f"FAIL (exit {code})" if code else "FAIL"
    append(results, {"part": part, "name": name, "status": status, "wall_s": wall_s, "figures": "; ".join(figures)})


def sweep_row(results: Path, part: str, name: str, sweep_dir: Path, code: int, wall_s: float) -> None:
    """A finished sweep's row: its jobs that ended well, the images they trained per second of the
    sweep's wall time, and how long a job took from its start to its end (launcher.json)."""
    jobs = sorted(p.parent for p in sweep_dir.glob("*/.hydra"))
    launches = [read_json(job / "launcher.json") for job in jobs]
    ok = [job for job, launch in zip(jobs, launches) if launch.get("exit_status") == 0]
    images = sum(trained_images(job) for job in ok)
    took = [launch["ended"] - launch["started"] for launch in launches if "ended" in launch and "started" in launch]
    gpus = sorted({str(launch.get("gpu")) for launch in launches if launch})
    figures = [f"{len(ok)} of {len(jobs)} jobs ended well"]
    if wall_s > 0:
        figures.append(f"{images / wall_s:,.0f} img/s")
    if took:
        figures.append(f"a job {min(took):.1f}-{max(took):.1f} s")
    figures.append(f"GPU {', '.join(gpus)}")
    failed = code != 0 or not jobs or len(ok) < len(jobs)
    status = "ok" if not failed else f"FAIL (exit {code})" if code else "FAIL"
    append(results, {"part": part, "name": name, "status": status, "wall_s": wall_s, "figures": "; ".join(figures)})


def bench_row(results: Path, name: str, code: int, wall_s: float, log: Path) -> None:
    """python -m wycifar.bench's row, from the JSON line it ends with."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")] if log.is_file() else []
    r = json.loads(lines[-1]) if lines else {}
    rates = {"data": "data_img_s", "bare loop": "bare_img_s", "fit": "fit_img_s", "eval": "eval_img_s"}
    figures = [f"{label} {r[key]:,.0f} img/s" for label, key in rates.items() if r.get(key)]
    if r.get("fit_over_bare"):
        figures.append(f"fit/bare {r['fit_over_bare']:.2f}")
    if r.get("epoch_s_measured"):
        figures.append("epochs " + ", ".join(f"{t:.2f}" for t in r["epoch_s_measured"]) + " s")
    status = "ok" if code == 0 and r else f"FAIL (exit {code})"
    append(
        results, {"part": "e bench", "name": name, "status": status, "wall_s": wall_s, "figures": "; ".join(figures)}
    )


def trained_images(run: Path) -> int:
    """Training images an epoch of this run saw: the split's size, or limit_train_batches x batch."""
    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        return 0
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config)
    epochs = int(OmegaConf.select(cfg, "trainer.max_epochs") or 1)
    limit = OmegaConf.select(cfg, "trainer.limit_train_batches")
    batch = int(OmegaConf.select(cfg, "data.batch_size") or 0)
    total = training_images(str(OmegaConf.select(cfg, "data.root")))
    return epochs * (min(total, int(limit) * batch) if isinstance(limit, int) else total)


@functools.cache
def training_images(root: str) -> int:
    train = Path(root) / "train"
    return sum(1 for _ in train.glob("*/*.*")) if train.is_dir() else 50_000


def epoch_times(path: Path) -> list[float]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [float(row["Time"]) for row in csv.DictReader(f) if row.get("Time")]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def append(results: Path, row: dict) -> None:
    with results.open("a") as f:
        f.write(json.dumps(row) + "\n")


def table(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.is_file() else []
    lines = ["| part | command | status | wall s | figures |", "|---|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['name']} | {r['status']} | {r['wall_s']} | {r['figures']} |" for r in rows]
    text = "\n".join(lines)
    (results.parent / "table.md").write_text(text + "\n")
    return text


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "data":
        make_data(Path(args[0]), int(args[1]), int(args[2]))
    elif command == "syncs":
        split = args.index("--")
        results, data, s1, s2 = args[:split]
        count_syncs(Path(results), data, (int(s1), int(s2)), args[split + 1 :])
    elif command == "run":
        results, part, name, run_dir, code, wall = args[:6]
        row = sweep_row if "--sweep" in args else run_row
        row(Path(results), part, name, Path(run_dir), int(code), float(wall))
    elif command == "bench":
        results, name, code, wall, log = args[:5]
        bench_row(Path(results), name, int(code), float(wall), Path(log))
    elif command == "table":
        print(table(Path(args[0])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
