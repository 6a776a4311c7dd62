"""Where INT8 loses: onnxruntime's per-node profile of a model's FP32 ONNX file and its QOperator
U8S8 per-tensor INT8 version, one thread, batch 256, five runs each.

python experiments/int8_profile.py CHECKPOINT --data DIR
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from wycifar.data.normalize import normalize_uint8
from wycifar.data.sources import load_split
from wycifar.export import load_saved
from wycifar.resolvers import user_cache_dir


class Batches(CalibrationDataReader):
    def __init__(self, x, batch: int = 20):
        self.parts = iter([{"image": x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.parts, None)


def profile(path: Path, x, prefix: Path, runs: int = 5) -> dict[str, tuple]:
    """Each node's kernel time per run in ms: name -> (op, ms, output shape)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"image": x})
    nodes: dict[str, list] = {}
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            args = event["args"]
            node = nodes.setdefault(event["name"], [args["op_name"], 0.0, args.get("output_type_shape"), args])
            node[1] += event["dur"] / runs / 1000
    return {name: tuple(value) for name, value in nodes.items()}


def conv_kind(op: str, shape, args: dict) -> str:
    """depthwise or dense, from the weights' bytes per output channel (depthwise: 9 weights and a
    bias; dense: at least one weight per input channel for each of 32 or more input channels)."""
    (dims,) = shape[0].values()
    channels = max(dims[1], dims[-1])  # NCHW or NHWC
    per_channel = int(args.get("parameter_size", 0)) / channels / (4 if op == "Conv" else 1)
    return "depthwise" if per_channel < 16 else "dense"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    saved = load_saved(args.checkpoint, args.data)
    x = normalize_uint8(saved.test.images[:256], saved.mean, saved.std).numpy()
    train = load_split(Path(args.data), "train", cache_dir=user_cache_dir(), download=False)
    calib = normalize_uint8(train.images[:520], saved.mean, saved.std).numpy()
    scratch = Path(tempfile.mkdtemp())
    fp32, prepared, int8 = scratch / "fp32.onnx", scratch / "prepared.onnx", scratch / "int8.onnx"
    saved.export(fp32)
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(int8),
        Batches(calib),
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=False,
    )
    for name, path in (("FP32", fp32), ("INT8", int8)):
        nodes = profile(path, x, scratch / name)
        by_op: dict[str, float] = {}
        for op, ms, shape, node_args in nodes.values():
            key = f"{op} ({conv_kind(op, shape, node_args)})" if "Conv" in op else op
            by_op[key] = by_op.get(key, 0.0) + ms
        print(f"{name}: {sum(by_op.values()):.1f} ms per batch of 256")
        for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1]):
            print(f"  {op:26} {ms:8.2f} ms")
        for op, ms, shape, node_args in nodes.values():
            if "Conv" in op:
                kind = conv_kind(op, shape, node_args)
                print(f"    {op:12} {kind:9} {ms:7.2f} ms  {node_args.get('parameter_size')} B  output {shape}")


if __name__ == "__main__":
    main()
