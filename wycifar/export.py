"""python -m wycifar.export RUN_OR_CHECKPOINT [--data DIR] [--out DIR]: a saved model as an ONNX file.

Writes model_<params>_<acc>.onnx, `acc` being that file's own accuracy on the test split as
onnxruntime computes it, with the metadata wycifar.deploy.runtime needs (classes, input size,
normalisation, accuracy). A run folder gives its tested checkpoint and its data folder; a
checkpoint needs --data. (An ONNX file without that metadata gets it from python -m wycifar.add_metadata.)
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
        help="a run folder (outputs/train/<run>) or a .ckpt file",
    )
    parser.add_argument("--data", default=None, help="the CIFAR-10 folder (default: the run's data.root)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the run folder)")
    args = parser.parse_args(argv)
    from wycifar.deploy.saved import export

    print(run_cli(lambda: export(args.target, args.data, args.out)), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
