"""Train the reference recipe through a pipeline independent of wycifar's data and training code.

`experiment=seed` stays under the reference's 88.72% (README, Results). Before blaming the
reference's run, this rules out a fault of our own: everything but the network (pinned layer for
layer by the tests) is done here the way the reference's code did it, with none of wycifar's
loader, batched augmentation, LightningModule, scheduler or trainer:

- images decoded by torchvision's ImageFolder, augmented one at a time on the CPU by
  albumentations 1.0.3 (the library the reference used, of its time): Normalize, then
  ShiftScaleRotate(0.15, 0.15, 10, p=0.3) with its default mirrored border, HorizontalFlip(p=0.3),
  CoarseDropout (one hole of 8-16 px a side, filled with 0 = the mean colour, p=0.5);
- a torch DataLoader (batch 128, shuffled, last batch kept) and a plain PyTorch loop: Nesterov SGD,
  weight decay 9.765625e-07 on every parameter, the LR and momentum set at the start of each epoch
  from (0, 0.1), (4, 0.5), (18, 0.05), (24, 0) and (0, 0.95), (4, 0.85), (18, 0.95), (24, 0.95);
  the training loss and accuracy accumulated over the epoch's batches, as its log prints them.

  pip install -e '.[reference]'      # albumentations 1.0.3
  python scripts/reference_pipeline.py ../shared/data/cifar10 OUT [--seed 0] [--precision bf16]

OUT gets epochs.csv (the columns of wycifar's, so scripts/compare_reference.py reads it) and
metrics.json. --limit N trains and tests on N images of each split, taken evenly across its classes
(a quick check).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from wycifar.callbacks.common import atomic_write_text
from wycifar.callbacks.epoch_table import COLUMNS
from wycifar.cli import run_cli
from wycifar.errors import ConfigError, check_choice, check_whole_number
from wycifar.models import WyCifarNet

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
LR_POINTS = ((0, 0.1), (4, 0.5), (18, 0.05), (24, 0.0))
MOMENTUM_POINTS = ((0, 0.95), (4, 0.85), (18, 0.95), (24, 0.95))
WEIGHT_DECAY = 9.765625e-07
PRECISIONS = ("bf16", "fp32")


def interpolate(points: tuple[tuple[float, float], ...], epoch: float) -> float:
    xs, ys = zip(*points)
    return float(np.interp(epoch, xs, ys))


def transforms(train: bool):
    import albumentations as A  # the optional extra: only this script needs it

    steps = [A.Normalize(mean=MEAN, std=STD)]
    if train:
        steps += [
            A.ShiftScaleRotate(shift_limit=0.15, scale_limit=0.15, rotate_limit=10, p=0.3),
            A.HorizontalFlip(p=0.3),
            A.CoarseDropout(
                max_holes=1, max_height=16, max_width=16, min_holes=1, min_height=8, min_width=8, fill_value=0, p=0.5
            ),
        ]
    return A.Compose(steps)


class AlbumentedImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, train: bool) -> None:
        self.images, self.labels, self.transform = images, labels, transforms(train)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(image=self.images[index])["image"]
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), int(self.labels[index])


def decode(root: Path, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise ConfigError(f"data root {str(root)!r} has no {split}/ folder; give an image folder (train/, test/)")
    dataset = ImageFolder(folder)
    samples = dataset.samples if limit is None else dataset.samples[:: max(1, len(dataset.samples) // limit)][:limit]
    images = np.stack([np.asarray(dataset.loader(path).convert("RGB")) for path, _ in samples])
    return images, np.array([label for _, label in samples])


def run_epoch(model, loader, optimizer, autocast) -> tuple[float, float]:
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(images.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return loss_sum / len(loader), 100.0 * correct / seen


@torch.no_grad()
def evaluate(model, loader, autocast) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        with autocast():
            logits = model(images.contiguous(memory_format=torch.channels_last))
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return loss_sum / seen, 100.0 * correct / seen


def train(args: argparse.Namespace) -> dict:
    check_choice("--precision", args.precision, PRECISIONS)
    check_whole_number("--epochs", args.epochs)
    if args.limit is not None:
        check_whole_number("--limit", args.limit)
    root = Path(args.data_root)
    train_images, train_labels = decode(root, "train", args.limit)
    test_images, test_labels = decode(root, "test", args.limit)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)  # albumentations draws from Python's random
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    train_loader = DataLoader(
        AlbumentedImages(train_images, train_labels, train=True),
        batch_size=128,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    test_loader = DataLoader(AlbumentedImages(test_images, test_labels, train=False), batch_size=1000)
    # channels_last: a CPU speed setting (README, Performance), the same arithmetic
    model = WyCifarNet(dropout=0.0).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR_POINTS[0][1], momentum=0.95, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    bf16 = args.precision == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for epoch in range(args.epochs):
        position = epoch * 24 / args.epochs  # the schedule's epoch index, its 24 epochs stretched over ours
        lr = interpolate(LR_POINTS, position)
        for group in optimizer.param_groups:
            group["lr"], group["momentum"] = lr, interpolate(MOMENTUM_POINTS, position)
        start = time.perf_counter()
        train_loss, train_acc = run_epoch(model, train_loader, optimizer, autocast)
        val_loss, val_acc = evaluate(model, test_loader, autocast)
        rows.append([epoch + 1, lr, time.perf_counter() - start, train_loss, train_acc, val_loss, val_acc])
        print(
            f"| {epoch + 1:5d} | {lr:.6f} | {rows[-1][2]:6.1f}s | {train_loss:.6f} | {train_acc:6.2f} % "
            f"| {val_loss:.6f} | {val_acc:.2f}% |",
            flush=True,
        )
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        atomic_write_text(out / "epochs.csv", table.getvalue())
    metrics = {"test/acc": rows[-1][6], "train/acc": rows[-1][4], "seed": args.seed, "precision": args.precision}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", help="image folder with train/<class>/ and test/<class>/")
    parser.add_argument("out", help="folder for epochs.csv and metrics.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs", type=int, default=24, help="the schedule is stretched over them (24: the reference)"
    )
    parser.add_argument("--precision", default="bf16", help="bf16 (autocast) or fp32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--limit", type=int, default=None, help="images per split, evenly across its classes (a quick check)"
    )
    args = parser.parse_args(argv)
    metrics = run_cli(lambda: train(args))
    print(f"test accuracy {metrics['test/acc']:.2f}%, training accuracy {metrics['train/acc']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
