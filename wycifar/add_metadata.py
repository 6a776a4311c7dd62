"""python -m wycifar.add_metadata MODEL.onnx --data DIR [--out DIR]: wycifar's metadata for an ONNX model without them.

The model gets what wycifar.deploy.runtime needs: CIFAR-10's classes and normalisation and its
accuracy as onnxruntime measures it on the test split, which must agree with the accuracy in its
name (model_<params>_<acc>.onnx) within half a point; else it was trained with another
normalisation, and its checkpoint is the thing to export (python -m wycifar.export). Written in
place, or into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wycifar.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wycifar.add_metadata", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a wycifar ONNX model without metadata (model_<params>_<acc>.onnx)")
    parser.add_argument("--data", required=True, help="the CIFAR-10 folder holding test/")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: in place)")
    args = parser.parse_args(argv)
    from wycifar.deploy.saved import add_metadata

    print(run_cli(lambda: add_metadata(args.model, args.data, args.out)), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
