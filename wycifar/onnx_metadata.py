"""What a wycifar ONNX model carries in its metadata_props: the class names, the input size, the
normalisation's mean and std and its test accuracy, as JSON strings under the `wycifar.` prefix.
Written by the training's ONNX callback and wycifar.export, read by wycifar.deploy.runtime."""

from __future__ import annotations

import json

PREFIX = "wycifar."
REQUIRED = ("classes", "image_size", "mean", "std")


def model_metadata(
    classes: list[str], image_size: int, mean: tuple[float, ...], std: tuple[float, ...], accuracy: float | None
) -> dict[str, str]:
    """The ONNX metadata_props a model carries (string values, JSON where not a plain number)."""
    values = {"classes": classes, "image_size": image_size, "mean": list(mean), "std": list(std)}
    if accuracy is not None:
        values["accuracy"] = round(float(accuracy), 4)
    return {PREFIX + key: json.dumps(value) for key, value in values.items()}
