"""Where CIFAR-10 comes from: an image-folder tree or torchvision's download, decoded once to uint8.

Both sources give the same thing: `Split(images uint8 [N, 3, H, W], labels int64 [N], classes)`.
Decoding 60,000 PNGs takes a while on 2 cores, so the decoded tensors are cached in a file keyed
by the source's file list; later runs load that file in well under a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wycifar.errors import ConfigError, check_choice, first_line
from wycifar.files import atomic_path
from wycifar.images import decode_image

log = logging.getLogger("wycifar.data")

SOURCES = ("auto", "folder", "torchvision")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
CACHE_FORMAT = 2


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def is_image_folder(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def resolve_source(root: Path, source: str) -> str:
    check_choice("data.source", source, SOURCES)
    if source != "auto":
        return source
    return "folder" if is_image_folder(root) else "torchvision"


def _list_folder_split(split_dir: Path) -> tuple[list[Path], list[int], list[str]]:
    if not split_dir.is_dir():
        raise ConfigError(
            f"data split folder {split_dir} does not exist; expected <root>/train/<class>/*.png and <root>/test/<class>/*.png"
        )
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise ConfigError(f"{split_dir} holds no class folders; expected {split_dir}/<class>/*.png")
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(f for f in (split_dir / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ConfigError(f"class folder {split_dir / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
        labels += [index] * len(found)
    return files, labels, classes


def _decode_all(files: list[Path], image_size: int, what: str = "images") -> torch.Tensor:
    """Every file decoded, saying how far it got: a first run decodes 60,000 PNGs (about 20 s on
    2 cores) before anything else shows."""
    step = max(len(files) // 4, 2500)
    arrays = []
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        for done, array in enumerate(pool.map(lambda f: decode_image(f, image_size), files, chunksize=256), 1):
            arrays.append(array)
            if len(files) >= step and (done % step == 0 or done == len(files)):
                log.info(
                    "decoding %s (once: later runs read the cache): %s of %s", what, f"{done:,}", f"{len(files):,}"
                )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _fingerprint(root: Path, files: list[Path], image_size: int) -> str:
    """What the cached tensors were decoded from: the files (by their place under root), their
    sizes and modification times, and the image size."""
    digest = hashlib.sha1(f"{CACHE_FORMAT}:{image_size}".encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cache_path(cache_dir: Path, root: Path, split: str, image_size: int) -> Path:
    """One cache file per folder, split and image size: the folder by its resolved path, so that
    two spellings of it share one cache, and a changed folder replaces its cache in place."""
    key = hashlib.sha1(f"{root.resolve()}:{image_size}".encode()).hexdigest()[:16]
    return cache_dir / f"{split}-{key}.pt"


def _read_cache(cache_file: Path, fingerprint: str) -> Split | None:
    """The cached split, or None where there is none, it is stale, or it cannot be read."""
    if not cache_file.exists():
        return None
    try:
        cached = torch.load(cache_file, weights_only=True)
        if cached.get("fingerprint") != fingerprint:
            return None
        return Split(cached["images"], cached["labels"], list(cached["classes"]))
    except Exception as error:  # noqa: BLE001 - any damage to a cache only means decoding again
        log.warning("the decode cache %s cannot be read (%s); decoding the images again", cache_file, first_line(error))
        return None


def load_folder_split(root: Path, split: str, image_size: int, cache_dir: Path | None) -> Split:
    files, labels, classes = _list_folder_split(root / split)

    def decode() -> Split:
        images = _decode_all(files, image_size, f"the {split} images of {root}")
        return Split(images, torch.tensor(labels, dtype=torch.int64), classes)

    if cache_dir is None:
        return decode()
    cache_file = cache_path(Path(cache_dir), root, split, image_size)
    fingerprint = _fingerprint(root, files, image_size)
    data = _read_cache(cache_file, fingerprint)
    if data is None:
        data = decode()
        record = {"images": data.images, "labels": data.labels, "classes": data.classes, "fingerprint": fingerprint}
        _atomic_torch_save(record, cache_file)
    return data


def load_torchvision_split(root: Path, split: str, download: bool) -> Split:
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=(split == "train"), download=download)
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        raise ConfigError(
            f"CIFAR-10 not found under {root} ({error}); set data.root to a folder holding "
            "cifar-10-batches-py or train/<class>/ and test/<class>/ image folders, or allow data.download=true on a networked machine"
        ) from None
    except OSError as error:  # no network
        raise ConfigError(
            f"could not download CIFAR-10 into {root}: {error}; this machine seems offline. "
            "Point data.root at a local copy (train/<class>/*.png, test/<class>/*.png)"
        ) from None
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes))


def load_split(
    root: str | Path,
    split: str,
    *,
    source: str = "auto",
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> Split:
    root = Path(root).expanduser()
    kind = resolve_source(root, source)
    if kind == "folder":
        if not root.exists():
            raise ConfigError(
                f"data.root={str(root)!r} does not exist; it must hold train/<class>/ and test/<class>/ image folders"
            )
        return load_folder_split(root, split, image_size, Path(cache_dir).expanduser() if cache_dir else None)
    return load_torchvision_split(root, split, download)
