"""python -m wycifar.predict IMAGE [IMAGE ...]: the class and top-3 probabilities of each image.

With a checkpoint (--ckpt, or the bundled model) the network runs in PyTorch; with an exported
model (--onnx) it runs in onnxruntime, and torch, Lightning and Hydra are never imported. Any size
or format Pillow reads is resized to the model's input size. A file that cannot be read gets one
error line and the others are still predicted; the exit status is 2 if any failed.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from wycifar.cli import run_cli
from wycifar.deploy.runtime import Classifier, ranked_line
from wycifar.errors import ConfigError
from wycifar.images import decode_image
from wycifar.runs.folders import parse_model_name

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def bundled_model() -> Path:
    """The default recipe's shipped model, installed with the package (results/default in the
    repository): what predict uses when no --ckpt is given."""
    found = sorted(
        p for p in resources.files("wycifar.bundled").iterdir() if (parse_model_name(p.name) or ())[-1:] == ("ckpt",)
    )
    if not found:
        raise ConfigError("no model is bundled with this installation of wycifar; pass --ckpt <file.ckpt>")
    return Path(str(found[-1]))


def torch_model(ckpt: str | None):
    """(probabilities of a uint8 [1, H, W, 3] image, classes, input size) of a checkpoint's network."""
    import torch

    from wycifar.data.normalize import normalize_uint8
    from wycifar.training.checkpoints import input_normalisation, module_from, read_checkpoint

    ckpt_path = Path(ckpt) if ckpt else bundled_model()
    checkpoint = read_checkpoint(ckpt_path)
    module = module_from(checkpoint, ckpt_path).eval()
    mean, std = input_normalisation(checkpoint)

    def probabilities(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        with torch.no_grad():
            return module(normalize_uint8(x, mean, std)).float().softmax(1).double().numpy()

    return probabilities, checkpoint.get("wycifar", {}).get("classes", CIFAR10_CLASSES), module.net.image_size


def predict(
    paths: list[str], ckpt: str | None = None, top_k: int = 3, out=None, err=None, onnx: str | None = None
) -> int:
    """Prints a line per image; returns the exit status (2 if any image could not be read)."""
    out, err = out or sys.stdout, err or sys.stderr
    if onnx:
        model = Classifier(onnx)
        probabilities, classes, size = model.probabilities, model.classes, model.image_size
    else:
        probabilities, classes, size = torch_model(ckpt)
    failures = 0
    for path in paths:
        try:
            if not Path(path).is_file():
                raise ConfigError(f"{path}: no such file")
            image = decode_image(Path(path), size)
        except ConfigError as error:
            print(f"error: {error}", file=err, flush=True)
            failures += 1
            continue
        print(ranked_line(path, probabilities(image[None])[0], classes, top_k), file=out, flush=True)
    return 2 if failures else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wycifar-predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files (any size or format Pillow reads)")
    parser.add_argument(
        "--ckpt", default=None, help="a wycifar checkpoint (default: the default recipe's shipped model)"
    )
    parser.add_argument("--onnx", default=None, help="an exported ONNX model, run in onnxruntime without torch")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to list (default 3)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k={args.top_k} is not allowed; it must be >= 1")
    if args.onnx and args.ckpt:
        parser.error("give --onnx or --ckpt, not both")
    sys.exit(run_cli(lambda: predict(args.images, args.ckpt, args.top_k, onnx=args.onnx)))


if __name__ == "__main__":
    main()
