"""Running an exported model with numpy, Pillow and onnxruntime alone: no torch, Lightning or Hydra.

Every ONNX model wycifar exports carries what it takes to use it in its metadata: the class names,
the input size, the normalisation's mean and std, and its test accuracy. The input is what the
network was trained on: NCHW float32, each channel standardised with that mean and std.

    from wycifar.deploy.runtime import Classifier
    model = Classifier("model_95653_0.9085.onnx")
    probabilities = model.probabilities(images)   # uint8 [N, H, W, 3] -> float [N, classes]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wycifar.errors import ConfigError, first_line
from wycifar.images import decode_image
from wycifar.onnx_metadata import PREFIX, REQUIRED


class Classifier:
    """An exported wycifar model in an onnxruntime session. A file that is not an ONNX model, a
    truncated one, one without wycifar's metadata or of another input shape is a ConfigError
    naming it (exit status 2 from the command line)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"model {str(self.path)!r} does not exist; give an .onnx file exported by wycifar")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise ConfigError(
                f"model {str(self.path)!r} is not an ONNX model or is truncated ({first_line(error)[:160]})"
            ) from None
        stored = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in REQUIRED if PREFIX + key not in stored]
        if missing:
            raise ConfigError(
                f"model {str(self.path)!r} has no wycifar metadata ({', '.join(missing)} missing): "
                "use a model exported by wycifar"
            )
        meta = {key[len(PREFIX) :]: json.loads(value) for key, value in stored.items() if key.startswith(PREFIX)}
        self.classes: list[str] = list(meta["classes"])
        self.image_size = int(meta["image_size"])
        self.accuracy: float | None = meta.get("accuracy")
        self.mean = np.asarray(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255)
        self.std = np.asarray(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(255)
        (self.input,) = self.session.get_inputs()
        shape = self.input.shape
        expected = [3, self.image_size, self.image_size]
        if len(shape) != 4 or list(shape[1:]) != expected:
            raise ConfigError(
                f"model {str(self.path)!r} takes input {shape}, not [batch, {', '.join(map(str, expected))}] images"
            )

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], standardised as in training."""
        x = images.transpose(0, 3, 1, 2).astype(np.float32)
        return (x - self.mean) / self.std

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities [N, classes] of uint8 [N, H, W, 3] images of the model's size."""
        (logits,) = self.session.run(None, {self.input.name: self.preprocess(images)})
        logits = logits.astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def read(self, path: str | Path) -> np.ndarray:
        """One image file as a uint8 [H, W, 3] array of the model's size (any size or mode Pillow reads)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        return decode_image(path, self.image_size)


def ranked_line(path: str, probabilities: np.ndarray, classes: list[str], top_k: int) -> str:
    """`cat.png: cat (cat 81.2%, dog 9.5%, frog 3.1%)`: the line wycifar-predict prints for an image."""
    order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(probabilities))]
    ranked = ", ".join(f"{classes[i]} {100 * probabilities[i]:.1f}%" for i in order)
    return f"{path}: {classes[order[0]]} ({ranked})"
