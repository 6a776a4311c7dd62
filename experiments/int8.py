"""INT8 against FP32 in onnxruntime, one thread, one process: which static quantisation pays.

python experiments/int8.py CHECKPOINT --data DIR [--calibration 520] [--images 1000]

Exports the checkpoint's FP32 ONNX model, quantises it several ways with onnxruntime's
quantize_static (calibrated on the first training images, un-augmented), and prints for each file:
test accuracy (all test images), size, batch-1 median latency over --images test images and
batch-256 throughput, the timing rounds interleaved so that each variant sees the same machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from wycifar.data.normalize import normalize_uint8
from wycifar.data.sources import load_split
from wycifar.export import accuracy, load_saved
from wycifar.resolvers import user_cache_dir


class Batches(CalibrationDataReader):
    def __init__(self, x: np.ndarray, batch: int = 20):
        self.parts = iter([{"image": x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.parts, None)


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]


VARIANTS = {
    "qop_u8s8_pc": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8, per_channel=True),
    "qop_u8s8_pc_reduce": dict(
        quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8, per_channel=True, reduce_range=True
    ),
    "qop_u8s8_pc_dw_fp32": dict(
        quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8, per_channel=True, skip_depthwise=True
    ),
    "qop_u8s8_pt": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8, per_channel=False),
    "qdq_s8s8_pc_entropy": dict(
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.Entropy,
    ),
}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--calibration", type=int, default=520)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    saved = load_saved(args.checkpoint, args.data)
    x = normalize_uint8(saved.test.images, saved.mean, saved.std).numpy()
    labels = saved.test.labels.numpy()
    train = load_split(Path(args.data), "train", cache_dir=user_cache_dir(), download=False)
    calib = normalize_uint8(train.images[: args.calibration], saved.mean, saved.std).numpy()

    scratch = Path(tempfile.mkdtemp())
    files = {"fp32": scratch / "fp32.onnx"}
    saved.export(files["fp32"])
    prepared = scratch / "prepared.onnx"
    quant_pre_process(str(files["fp32"]), str(prepared), skip_symbolic_shape=True)
    for name, options in VARIANTS.items():
        options = dict(options)
        exclude = depthwise_convs(onnx.load(str(prepared))) if options.pop("skip_depthwise", False) else []
        files[name] = scratch / f"{name}.onnx"
        quantize_static(
            str(prepared),
            str(files[name]),
            Batches(calib),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            **options,
        )

    sessions = {name: session(path) for name, path in files.items()}
    rows = {
        name: {
            "acc": round(100 * accuracy(lambda b, s=s: s.run(None, {"image": b})[0], x, labels), 2),
            "kb": round(path.stat().st_size / 1024, 1),
            "b1_ms": [],
            "b256_img_s": [],
        }
        for (name, path), s in zip(files.items(), sessions.values())
    }
    big = np.ascontiguousarray(x[:256])
    for s in sessions.values():  # warm-up
        s.run(None, {"image": big})
    for _ in range(args.rounds):
        for name, s in sessions.items():
            lat = []
            for i in range(args.images):
                start = time.perf_counter()
                s.run(None, {"image": x[i : i + 1]})
                lat.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(3):
                s.run(None, {"image": big})
            rows[name]["b256_img_s"].append(3 * 256 / (time.perf_counter() - start))
            rows[name]["b1_ms"].append(1000 * float(np.median(lat)))
    base = rows["fp32"]
    print(f"{'model':24} {'acc %':>7} {'KB':>7} {'b1 ms':>7} {'b256 img/s':>11} {'b1 x':>6} {'b256 x':>7}")
    for name, row in rows.items():
        row["b1_ms"] = round(min(row["b1_ms"]), 3)
        row["b256_img_s"] = round(max(row["b256_img_s"]), 1)
    for name, row in rows.items():
        print(
            f"{name:24} {row['acc']:7.2f} {row['kb']:7.1f} {row['b1_ms']:7.3f} {row['b256_img_s']:11.1f}"
            f" {base['b1_ms'] / row['b1_ms']:6.2f} {row['b256_img_s'] / base['b256_img_s']:7.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
