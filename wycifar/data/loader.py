"""A data loader that keeps the whole split as one uint8 tensor on the training device.

Each batch is gathered, converted to float, normalised and augmented in a handful of tensor ops,
so there are no worker processes and no per-image Python. Shuffling and augmentation draw from
generators seeded with (seed, epoch): a resumed run sees the same batches as an uninterrupted one.
Under DDP each rank takes its own shard (`rank::world_size`) of the same permutation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from wycifar.data.augment import AugmentConfig, augment_batch
from wycifar.data.normalize import CIFAR10_MEAN, CIFAR10_STD, channel_stats


class TensorLoader:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        augment: AugmentConfig | None = None,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment if train else None
        self.mean, self.std = channel_stats(mean, std, self.device, scale=255)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epoch = 0
        self._skip: tuple[int, int] | None = None
        # Lightning's fit loop calls `dataloader.sampler.set_epoch(epoch)` before every epoch.
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # Lightning treats a loader with state_dict/load_state_dict as resumable mid-epoch. The position
    # itself is saved by the data module, which knows how many batches the trainer completed (a
    # loader only knows how many it handed out, one more with prefetching).
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """The next pass over `epoch` starts after its first `batches_done` batches."""
        self._skip = (epoch, batches_done)

    def _shard_size(self) -> int:
        n = len(self.labels)
        # Training shards are padded to equal length so that every rank runs the same number of
        # steps (DDP needs it); evaluation shards are exact so each image is counted once.
        return math.ceil(n / self.world_size) if self.train else len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        size = self._shard_size()
        return math.ceil(size / self.batch_size)

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=generator)
        total = self._shard_size() * self.world_size
        order = torch.cat([order, order[: total - n]])
        return order[self.rank :: self.world_size]

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        x = (batch.float() - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        indices = self._indices().to(self.device)
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = self._skip[1]
        self._skip = None
        for b in range(start, len(self)):
            idx = indices[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.normalize(self.images[idx])
            if self.augment is not None:
                # one generator per batch: a resumed epoch draws the same augmentations
                # drawn where the batch lives: a CPU generator would cost a blocking copy per draw on a GPU
                generator = torch.Generator(device=self.device).manual_seed(
                    ((self.seed * 100_003 + self.epoch) * 7_919 + self.rank) * 1_000_003 + b
                )
                x = augment_batch(x, self.augment, generator).contiguous(memory_format=self.memory_format)
            yield x, self.labels[idx]
