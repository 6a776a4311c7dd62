"""CIFAR-shaped random data: the speed of the real thing with no files (wycifar.bench, tests)."""

from __future__ import annotations

import torch

from wycifar.data.cifar10 import CIFAR10DataModule
from wycifar.data.sources import Split

CLASSES = [f"class{i}" for i in range(10)]


def synthetic_split(count: int, image_size: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    return Split(images, torch.randint(0, 10, (count,), generator=generator), CLASSES)


class SyntheticCIFAR(CIFAR10DataModule):
    """Random uint8 images and labels (50,000 train, 10,000 test by default) in the data module's
    place: on the device, batched and augmented as the real data is."""

    def __init__(self, train_size: int = 50_000, test_size: int = 10_000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_size, self.test_size = train_size, test_size

    def prepare_splits(self) -> None:
        if self.test_data is None:
            self.train_data = synthetic_split(self.train_size, self.image_size, 0)
            self.test_data = self.val_data = synthetic_split(self.test_size, self.image_size, 1)
