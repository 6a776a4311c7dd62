"""python -m wycifar.bench.deploy RUN_OR_CHECKPOINT [--data DIR] [--images N]: the model as it is deployed.

PyTorch eager and the exported ONNX model in onnxruntime, side by side in one process: test
accuracy, file size, parameters, batch-1 latency (median and p99 over N test images), batch-256
throughput and the process's peak memory while each ran, on one thread and on all cores. Prints a
table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wycifar.cli import run_cli

Backend = Callable[[np.ndarray], np.ndarray]  # normalised float32 NCHW -> logits


def peak_rss_mb(reset: bool = False) -> float | None:
    """The process's peak resident memory (VmHWM) in MB; `reset` starts a new peak (Linux)."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def timed(backend: Backend, x: np.ndarray, images: int, batch: int = 256) -> dict:
    """Batch-1 latency over the first `images` images and batch-`batch` throughput, after a warm-up."""
    for i in range(10):
        backend(x[i : i + 1])
    latencies = []
    for i in range(images):
        start = time.perf_counter()
        backend(x[i % len(x) : i % len(x) + 1])
        latencies.append(time.perf_counter() - start)
    big = np.resize(x, (batch, *x.shape[1:]))
    backend(big)
    start, rounds = time.perf_counter(), 3
    for _ in range(rounds):
        backend(big)
    ms = np.array(latencies) * 1000
    return {
        "b1_median_ms": round(float(np.median(ms)), 3),
        "b1_p99_ms": round(float(np.percentile(ms, 99)), 3),
        f"b{batch}_img_s": round(rounds * batch / (time.perf_counter() - start), 1),
    }


def onnxruntime_backend(session) -> Backend:
    return lambda batch: session.run(None, {"image": batch})[0]


def run(target: Path, data: str | None, images: int) -> list[dict]:
    import onnxruntime as ort
    import torch

    from wycifar.data.normalize import normalize_uint8
    from wycifar.deploy.saved import accuracy, load_saved

    saved = load_saved(target, data)
    net = saved.net
    x = normalize_uint8(saved.test.images, saved.mean, saved.std).numpy()
    labels = saved.test.labels.numpy()

    def pytorch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(batch)).numpy()

    rows, accuracies = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        saved.write_onnx(onnx_path)
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            backends = {
                "PyTorch eager": (pytorch, saved.checkpoint),
                "ONNX FP32, onnxruntime": (onnxruntime_backend(session), onnx_path),
            }
            for name, (backend, file) in backends.items():
                peak_rss_mb(reset=True)
                if name not in accuracies:  # the same weights at any thread count: measured once
                    accuracies[name] = round(accuracy(backend, x, labels), 4)
                row = {"model": name, "threads": threads, "test_acc": accuracies[name]}
                row |= {"size_kb": round(file.stat().st_size / 1024), "params": saved.params}
                row |= timed(backend, x, images)
                row["peak_rss_mb"] = peak_rss_mb()
                rows.append(row)
    return rows


def table(rows: list[dict], images: int) -> str:
    lines = [
        f"| model | threads | test acc | file | params | batch 1, median | p99 ({images} images) | batch 256 | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['threads']} | {100 * r['test_acc']:.2f}% | {r['size_kb']:,} KB | {r['params']:,} | "
        f"{r['b1_median_ms']:.2f} ms | {r['b1_p99_ms']:.2f} ms | {r['b256_img_s']:,.0f} img/s | "
        f"{r['peak_rss_mb'] or 0:,.0f} MB |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wycifar-bench deploy", description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="a run folder (outputs/train/<run>) or a .ckpt file")
    parser.add_argument("--data", default=None, help="the CIFAR-10 folder (default: the run's data.root)")
    parser.add_argument("--images", type=int, default=1000, help="batch-1 latency over this many images")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images={args.images} is not allowed; it must be >= 1")
    rows = run_cli(lambda: run(args.target, args.data, args.images))
    print(table(rows, args.images), flush=True)
    print(json.dumps(rows), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
