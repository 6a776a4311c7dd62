"""Network architecture: the tested model exported to ONNX, checked in onnxruntime, drawn as SVG."""

from __future__ import annotations

import contextlib
import copy
import html
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import onnx
import torch
from lightning.pytorch.callbacks import Callback

from wycifar.callbacks.common import run_dir, tensorboard
from wycifar.data.normalize import normalize_uint8
from wycifar.errors import DivergenceError
from wycifar.files import atomic_path
from wycifar.run_dirs import model_name

log = logging.getLogger("wycifar.onnx")


@contextlib.contextmanager
def tracing_quietly():
    """The ONNX exporter and TensorBoard's graph trace the network with torch.jit.trace, which
    torch deprecates for its users; the warning is not this program's user's to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated")
        yield


def export_onnx(net: torch.nn.Module, path: Path, image_size: int, in_channels: int = 3) -> None:
    """Export in eval mode (as Lightning's to_onnx does not) with a dynamic batch axis."""
    was_training = net.training
    net.eval()
    try:
        example = torch.zeros(1, in_channels, image_size, image_size, device=next(net.parameters()).device)
        with atomic_path(path) as tmp, torch.inference_mode(False), torch.no_grad(), tracing_quietly():
            torch.onnx.export(
                net,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
            onnx.checker.check_model(str(tmp))
    finally:
        net.train(was_training)


def check_onnx(net: torch.nn.Module, path: Path, x: torch.Tensor, atol: float = 1e-3, rtol: float = 1e-4) -> float:
    """Largest |onnxruntime - PyTorch| logit difference on `x`; raises if above
    atol + rtol * max|logit| (ONNX Runtime folds BatchNorm into the convolutions). PyTorch runs a
    CPU copy of `net` in fp32, as onnxruntime does: on a GPU, cuDNN's TF32 convolutions alone
    differ from fp32 by more than the bound (1.7-3.3e-3 on an H100)."""
    import onnxruntime as ort

    reference = copy.deepcopy(net).float().cpu().eval()
    with torch.inference_mode(False), torch.no_grad():
        expected = reference(x.float().cpu()).numpy()
    if not np.isfinite(expected).all():
        raise DivergenceError(
            "training diverged: the trained network's outputs are not finite (nan/inf) in fp32, its weights "
            "blew up; lower the learning rate"
        )
    runtime = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = runtime.run(None, {"image": x.float().cpu().contiguous().numpy()})[0]
    error = float(np.abs(got - expected).max())
    bound = atol + rtol * float(np.abs(expected).max())
    if not error <= bound:
        raise RuntimeError(f"ONNX model {path} differs from PyTorch by {error:.2e} (> {bound:.2e})")
    return error


def onnx_to_dot(model: onnx.ModelProto, title: str) -> str:
    """A DOT graph of the ONNX nodes: one box per operator, edges along the tensors between them."""
    graph = model.graph
    initialisers = {i.name: i for i in graph.initializer}
    producer: dict[str, str] = {}
    lines = [
        "digraph onnx {",
        f'  graph [rankdir=TB, label="{html.escape(title)}", labelloc=t, fontsize=16];',
        '  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe", fontname="Helvetica", fontsize=10];',
    ]
    for value in graph.input:
        if value.name not in initialisers:
            lines.append(f'  "in:{value.name}" [label="input: {value.name}", shape=oval, fillcolor="#d4edda"];')
            producer[value.name] = f"in:{value.name}"
    for index, node in enumerate(graph.node):
        node_id = f"n{index}"
        details = []
        for attr in node.attribute:
            if attr.name in ("dilations", "strides", "group", "kernel_shape", "pads"):
                value = onnx.helper.get_attribute_value(attr)
                details.append(f"{attr.name}={list(value) if hasattr(value, '__len__') else value}")
        weights = [initialisers[i] for i in node.input if i in initialisers]
        if weights:
            details.append("W" + "x".join(str(d) for d in weights[0].dims))
        label = "\\n".join([node.op_type, *details])
        lines.append(f'  {node_id} [label="{label}"];')
        for tensor in node.input:
            if tensor in producer:
                lines.append(f'  "{producer[tensor]}" -> {node_id};')
        for tensor in node.output:
            producer[tensor] = node_id
    for value in graph.output:
        lines.append(f'  "out:{value.name}" [label="output: {value.name}", shape=oval, fillcolor="#f8d7da"];')
        if value.name in producer:
            lines.append(f'  "{producer[value.name]}" -> "out:{value.name}";')
    lines.append("}")
    return "\n".join(lines)


def find_dot() -> str | None:
    """Graphviz's `dot`, or the graphviz-pure wheel's dot-compatible binary installed beside Python."""
    for candidate in (
        shutil.which("dot"),
        shutil.which("graphviz-pure"),
        str(Path(sys.executable).parent / "graphviz-pure"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def render_svg(dot_source: str, svg_path: Path) -> bool:
    dot = find_dot()
    if dot is None:
        log.warning(
            "no graph renderer found (install graphviz or the graphviz-pure wheel): %s not drawn", svg_path.name
        )
        return False
    with atomic_path(svg_path) as tmp:
        result = subprocess.run(
            [dot, "-Tsvg", "-o", str(tmp)], input=dot_source, text=True, capture_output=True, timeout=120
        )
        if result.returncode != 0 or not tmp.is_file():
            log.warning("%s could not draw %s: %s", dot, svg_path.name, result.stderr.strip().splitlines()[-1:] or "")
            return False
    return True


class OnnxExport(Callback):
    """After testing (the best weights, in train()), writes model_<params>_<test acc>.onnx and .onnx.svg."""

    def __init__(self, check_images: int = 16, log_graph: bool = True) -> None:
        self.check_images, self.log_graph = check_images, log_graph
        self.onnx_path: Path | None = None
        self.svg_path: Path | None = None
        self.max_error: float | None = None

    def check_batch(self, trainer: L.Trainer, net: torch.nn.Module) -> torch.Tensor:
        """Real normalised test images when the data module has them, else random ones."""
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "test_data", None) is None:
            return torch.randn(self.check_images, net.in_channels, net.image_size, net.image_size)
        return normalize_uint8(datamodule.test_data.images[: self.check_images], datamodule.mean, datamodule.std)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        net = pl_module.net
        params = sum(p.numel() for p in net.parameters())
        acc = trainer.callback_metrics.get("test/acc")
        name = model_name(params, None if acc is None else float(acc), "onnx")
        path = run_dir(trainer) / name
        export_onnx(net, path, net.image_size, net.in_channels)
        self.max_error = check_onnx(net, path, self.check_batch(trainer, net))
        self.onnx_path = path
        log.info("exported %s (onnxruntime matches PyTorch: max |diff| %.1e)", path.name, self.max_error)
        svg = path.with_name(path.name + ".svg")
        title = f"{type(net).__name__}: {params:,} parameters" + (
            f", test accuracy {100 * float(acc):.2f}%" if acc is not None else ""
        )
        if render_svg(onnx_to_dot(onnx.load(str(path)), title), svg):
            self.svg_path = svg
        writer = tensorboard(trainer)
        if writer is not None and self.log_graph:
            was_training = net.training
            net.eval()
            try:
                with torch.inference_mode(False), torch.no_grad(), tracing_quietly():
                    writer.add_graph(
                        net, torch.zeros(1, net.in_channels, net.image_size, net.image_size, device=pl_module.device)
                    )
                writer.flush()
            finally:
                net.train(was_training)
