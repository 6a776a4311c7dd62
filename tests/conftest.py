"""Shared test helpers: a tiny learnable image-folder dataset and Hydra composition into tmp_path."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

import wycifar.runs.resolvers  # noqa: F401 - the resolvers conf/ uses, as every command registers them

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"
REAL_CIFAR = SHARED / "data" / "cifar10"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

os.environ.setdefault("PYTHONHASHSEED", "0")

# Under pytest-xdist (`make test` runs a worker per core) each worker and the commands it starts
# compute on one thread: two workers' thread pools on two cores would spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def start_command(*args, module: str | None = "wycifar.train", cwd: Path = ROOT, env: dict | None = None):
    """`python -m <module> ARGS` (or, with module=None, the command ARGS) as a user starts it, running."""
    command = [sys.executable, "-m", module, *map(str, args)] if module else list(map(str, args))
    return subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for a started command: its exit status and what it printed."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_command(*args, module: str | None = "wycifar.train", cwd: Path = ROOT, timeout: float = 600, env=None):
    """Run a command to its end: returns its exit status, stdout and stderr (CompletedProcess)."""
    return finish(start_command(*args, module=module, cwd=cwd, env=env), timeout)


def run_main(main, *args) -> subprocess.CompletedProcess:
    """A command's `main()` called in this process with ARGS as its command line, as
    `python -m <module> ARGS` runs it but without a Python start: its exit status and what it
    printed (CompletedProcess, as run_command)."""
    from hydra.core.global_hydra import GlobalHydra

    saved_argv, out, err, code = sys.argv, io.StringIO(), io.StringIO(), 0
    sys.argv = [main.__module__, *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str, code: int = 2) -> str:
    """The command exited with `code` and no traceback, its last line `error: ...` holding `fragment`."""
    assert result.returncode == code, (result.returncode, result.stderr[-1500:])
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and fragment in last, last
    return last


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A noisy image whose colour and stripe direction identify its class (learnable in a few steps)."""
    hue = np.array([(label * 37) % 256, (label * 91 + 60) % 256, (label * 53 + 120) % 256], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx * np.cos(label) + yy * np.sin(label)) * 0.6)[..., None] * 60
    image = hue[None, None, :] * 0.7 + stripes + rng.normal(0, 25, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(
    root: Path, train_per_class: int = 16, test_per_class: int = 6, num_classes: int = 10, size: int = 32, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in range(num_classes):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(class_image(label, rng, size)).save(folder / f"{i:04d}.png")
    return root


def link_real_subset(root: Path, train_per_class: int, test_per_class: int) -> Path:
    """A small image folder of real CIFAR-10 files (symbolic links into ../shared)."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CLASSES:
            src = REAL_CIFAR / split / name
            dst = root / split / name
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted(src.iterdir())[:count]:
                (dst / f.name).symlink_to(f)
    return root


def compose_train(tmp_path: Path, overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose the real config as `python -m wycifar.train` would, with every output in tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides or [], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


TINY_REPORTS = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "model.base_width=8",
    "trainer.log_every_n_steps=1",
]
# The figures (curves, GradCAM, mistakes, confusion matrix) are 3 of a tiny run's 4 seconds, and
# TensorBoard's graph of the network another 0.3: a test that does not look at them leaves them out
# (`++`: whether or not its callbacks have them; an entry without `_target_` builds nothing).
NO_FIGURES = [f"++callbacks.{name}=null" for name in ("curves", "gradcam", "misclassified", "confusion_matrix")]
TINY = [*TINY_REPORTS, *NO_FIGURES, "++callbacks.onnx_model.log_graph=false"]


def evaluate_checkpoint(tmp_path: Path, ckpt: str | Path, data_root: Path, extra: list[str] | None = None) -> dict:
    """`python -m wycifar.eval ckpt_path=<ckpt>` on the CPU, composed into tmp_path; its metrics."""
    from wycifar.training.evaluate import evaluate

    overrides = [f"ckpt_path={ckpt}", f"data.root={data_root}", "trainer.accelerator=cpu", "data.eval_batch_size=64"]
    metrics, _ = evaluate(compose_train(tmp_path, overrides + (extra or []), config_name="eval"))
    return metrics


def assert_resume_matches_straight(tmp_path: Path, overrides: list[str]) -> Path:
    """Train one epoch of two and stop, resume it, train two straight: the two final checkpoints
    must hold the same weights. Returns the stopped run's last checkpoint for further checks."""
    import torch
    from lightning.pytorch.callbacks import Callback

    from wycifar.training.run import train

    class StopAfterFirstEpoch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    first = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    runs = {
        "a": ([], [StopAfterFirstEpoch()]),
        "b": ([f"ckpt_path={first}"], []),  # resumes a
        "c": ([], []),
    }
    for name, (extra, callbacks) in runs.items():
        train(compose_train(tmp_path / name, [*overrides, "trainer.max_epochs=2", "test=false", *extra]), callbacks)
    final = {n: torch.load(tmp_path / n / "run" / "checkpoints" / "last.ckpt", weights_only=True) for n in "bc"}
    resumed, straight = final["b"]["state_dict"], final["c"]["state_dict"]
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    return first


def assert_onnx_is_the_network(run: Path, net, params: int):
    """The run's exported ONNX model is named for `params` and gives `net`'s eval logits in
    onnxruntime. Returns (x, logits) for further checks."""
    import onnxruntime as ort
    import torch

    (onnx_path,) = run.glob("model_*.onnx")
    assert onnx_path.name.startswith(f"model_{params}_")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = net.eval()(x)
    (logits,) = ort.InferenceSession(str(onnx_path)).run(None, {"image": x.numpy()})
    assert abs(logits - expected.numpy()).max() < 1e-3
    return x, expected


def assert_shipped_is_the_network(best: Path, shipped: Path, x, expected, plain_keys: set[str]) -> dict:
    """`best` shipped (slim_checkpoint) holds the plain network's keys and gives `expected` for `x`.
    Returns the shipped checkpoint's raw dict."""
    import torch

    from wycifar.training.checkpoints import load_module, read_checkpoint, slim_checkpoint

    raw = read_checkpoint(slim_checkpoint(best, shipped))
    assert raw["state_dict"].keys() == {f"net.{k}" for k in plain_keys}
    with torch.no_grad():
        assert torch.allclose(load_module(shipped).eval().net(x), expected, atol=1e-5)
    return raw


@pytest.fixture
def tiny_data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny"))


def pytest_runtest_setup(item):
    if "real_data" in item.fixturenames and not REAL_CIFAR.is_dir():
        pytest.skip(f"real CIFAR-10 not found at {REAL_CIFAR}")


@pytest.fixture
def real_data() -> Path:
    return REAL_CIFAR
