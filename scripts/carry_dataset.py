"""Carry an image-folder dataset (ROOT/{train,test}/<class>/<image>) to another machine in parts of
a bounded size, losslessly, and check there that it decodes to the very same tensors (as wycifar's
loader decodes them: 32x32 RGB).

The real CIFAR-10 is 135 MB of PNG; a call to a lent GPU machine carries 64 MiB. As lossless WebP it
is 106 MB, so two parts of under 55 MB each travel in two calls. Files keep the folder's sorted
order (renamed to their index), so wycifar's loader builds the same tensors, in the same order:

  python scripts/carry_dataset.py pack ../shared/data/cifar10 OUT --max-mb 55   # OUT/part-0.pkl, ...
  python scripts/carry_dataset.py unpack OUT/part-0.pkl DEST                    # once per part
  python scripts/carry_dataset.py check DEST                                    # after the last part
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wycifar.cli import run_cli
from wycifar.data.sources import load_split
from wycifar.errors import ConfigError

SPLITS = ("train", "test")
RECORD_OVERHEAD = 32
HEADER_BYTES = 4096


def encode_webp(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "WEBP", lossless=True, quality=100, method=4)
    return buffer.getvalue()


def tensor_digest(images) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def pack(root: Path, out: Path, max_mb: float, workers: int) -> list[Path]:
    if not max_mb > 0:
        raise ConfigError(f"--max-mb={max_mb} is not allowed; it must be above 0")
    records, expected = [], {}
    for split in SPLITS:
        data = load_split(root, split, download=False)
        expected[split] = {"count": len(data.images), "sha256": tensor_digest(data.images)}
        with ProcessPoolExecutor(workers) as pool:
            blobs = pool.map(encode_webp, data.images.permute(0, 2, 3, 1).numpy(), chunksize=256)
            for index, (blob, label) in enumerate(zip(blobs, data.labels.tolist())):
                records.append((split, data.classes[label], index, blob))
    width = len(str(max(e["count"] for e in expected.values()) - 1))
    parts, current, size = [], [], 0
    for record in records:
        # the image bytes plus what pickling a record adds (about 20 bytes; 32 counted): each file stays under max_mb
        record_size = len(record[3]) + RECORD_OVERHEAD
        if current and size + record_size > max_mb * 1e6 - HEADER_BYTES:
            parts.append(current)
            current, size = [], 0
        current.append(record)
        size += record_size
    parts.append(current)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, part in enumerate(parts):
        path = out / f"part-{number}.pkl"
        # written whole or not at all: an interrupted pack leaves no part that unpacks short
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_bytes(pickle.dumps({"records": part, "width": width, "expected": expected}, protocol=5))
        os.replace(partial, path)
        written.append(path)
    return written


def unpack(part_file: Path, dest: Path) -> int:
    if not part_file.is_file():
        raise ConfigError(f"{part_file}: no such part; expected a part-<n>.pkl written by pack")
    part = pickle.loads(part_file.read_bytes())
    for split, name, index, blob in part["records"]:
        folder = dest / split / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:0{part['width']}d}.webp").write_bytes(blob)
    (dest / "expected.json").write_text(json.dumps(part["expected"]))
    return len(part["records"])


def check(dest: Path) -> list[str]:
    """The splits whose decoded tensors differ from those packed (empty: all match)."""
    if not (dest / "expected.json").is_file():
        raise ConfigError(f"{dest} holds no unpacked part (no expected.json); unpack the parts into it first")
    expected = json.loads((dest / "expected.json").read_text())
    wrong = []
    for split in SPLITS:
        data = load_split(dest, split, download=False)
        if len(data.images) != expected[split]["count"] or tensor_digest(data.images) != expected[split]["sha256"]:
            wrong.append(split)
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("pack")
    p.add_argument("root", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--max-mb", type=float, default=55.0)
    p.add_argument("--workers", type=int, default=2)
    u = verbs.add_parser("unpack")
    u.add_argument("part", type=Path)
    u.add_argument("dest", type=Path)
    c = verbs.add_parser("check")
    c.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "pack":
        for path in run_cli(lambda: pack(args.root, args.out, args.max_mb, args.workers)):
            print(f"{path} {path.stat().st_size / 1e6:.1f} MB")
    elif args.verb == "unpack":
        print(f"{args.dest}: wrote {run_cli(lambda: unpack(args.part, args.dest))} images from {args.part}")
    else:
        wrong = run_cli(lambda: check(args.dest))
        if wrong:
            print(f"error: {args.dest}: {', '.join(wrong)} decode to other images than were packed", file=sys.stderr)
            return 1
        print(f"{args.dest}: every split decodes to the packed images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
