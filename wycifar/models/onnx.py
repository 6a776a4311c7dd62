"""The network as an ONNX file: exported in evaluation mode, and checked against PyTorch in onnxruntime.

Plain functions of a network and a path, for a training run's callback and for exporting a saved
model alike.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from wycifar.errors import DivergenceError
from wycifar.files import atomic_path
from wycifar.models.modes import eval_mode


@contextlib.contextmanager
def tracing_quietly():
    """The ONNX exporter and TensorBoard's graph trace the network with torch.jit.trace, which
    torch deprecates for its users; the warning is not this program's user's to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated")
        yield


def write_onnx(
    net: torch.nn.Module, path: Path, image_size: int, in_channels: int = 3, metadata: dict[str, str] | None = None
) -> None:
    """Export in eval mode (as Lightning's to_onnx does not) with a dynamic batch axis, and
    `metadata` (wycifar.onnx_metadata.model_metadata) in the model's metadata_props."""
    with eval_mode(net):
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
            if metadata:
                model = onnx.load(str(tmp))
                onnx.helper.set_model_props(model, metadata)
                onnx.save(model, str(tmp))
            onnx.checker.check_model(str(tmp))


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
