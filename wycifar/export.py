"""python -m wycifar.export RUN_OR_CHECKPOINT [--data DIR] [--out DIR]: a saved model as an ONNX file.

Writes model_<params>_<acc>.onnx, `acc` being that file's own accuracy on the test split as
onnxruntime computes it, with the metadata wycifar.runtime needs (classes, input size,
normalisation, accuracy). A run folder gives its tested checkpoint and its data folder; a
checkpoint needs --data. An .onnx file that wycifar exported without metadata gets them (in place,
or into --out), with CIFAR-10's classes and normalisation and its own measured accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wycifar.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wycifar-export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "target",
        type=Path,
        help="a run folder (outputs/train/<run>), a .ckpt file, or an .onnx file to add metadata to",
    )
    parser.add_argument("--data", default=None, help="the CIFAR-10 folder (default: the run's data.root)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the run folder)")
    args = parser.parse_args(argv)
    from wycifar.saved_models import add_metadata, export

    if args.target.suffix == ".onnx":
        path = run_cli(lambda: add_metadata(args.target, args.data, args.out))
    else:
        path = run_cli(lambda: export(args.target, args.data, args.out))
    print(path, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
