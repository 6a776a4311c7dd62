"""python -m wycifar.predict IMAGE [IMAGE ...]: the class and top-3 probabilities of each image.

Any size or format Pillow reads is resized to the model's input size. A file that cannot be read
gets one error line and the others are still predicted; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import torch

from wycifar.checkpoints import module_from, read_checkpoint
from wycifar.cli import run_cli
from wycifar.data.normalize import CIFAR10_MEAN, CIFAR10_STD, normalize_uint8
from wycifar.data.sources import decode_image
from wycifar.errors import ConfigError
from wycifar.run_dirs import parse_model_name

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


def predict(paths: list[str], ckpt: str | None, top_k: int = 3, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    ckpt_path = Path(ckpt) if ckpt else bundled_model()
    checkpoint = read_checkpoint(ckpt_path)
    module = module_from(checkpoint, ckpt_path).eval()
    extras = checkpoint.get("wycifar", {})
    classes = extras.get("classes", CIFAR10_CLASSES)
    mean, std = tuple(extras.get("mean", CIFAR10_MEAN)), tuple(extras.get("std", CIFAR10_STD))
    size = module.net.image_size
    failures = 0
    for path in paths:
        try:
            if not Path(path).is_file():
                raise ConfigError(f"{path}: no such file")
            image = torch.from_numpy(decode_image(Path(path), size)).permute(2, 0, 1)[None]
        except ConfigError as error:
            print(f"error: {error}", file=err, flush=True)
            failures += 1
            continue
        with torch.no_grad():
            probs = module(normalize_uint8(image, mean, std)).float().softmax(1)[0]
        values, indices = probs.topk(min(top_k, len(probs)))
        ranked = ", ".join(f"{classes[i]} {100 * v:.1f}%" for v, i in zip(values.tolist(), indices.tolist()))
        print(f"{path}: {classes[indices[0]]} ({ranked})", file=out, flush=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wycifar-predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files (any size or format Pillow reads)")
    parser.add_argument(
        "--ckpt", default=None, help="a wycifar checkpoint (default: the default recipe's shipped model)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to list (default 3)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k={args.top_k} is not allowed; it must be >= 1")
    sys.exit(run_cli(lambda: predict(args.images, args.ckpt, args.top_k)))


if __name__ == "__main__":
    main()
