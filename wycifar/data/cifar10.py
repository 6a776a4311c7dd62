"""CIFAR-10 as a LightningDataModule: decoded once, held as uint8 tensors on the training device."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from wycifar.data.augment import AugmentConfig
from wycifar.data.loader import TensorLoader
from wycifar.data.normalize import CIFAR10_MEAN, CIFAR10_STD
from wycifar.data.sources import Split, load_split
from wycifar.errors import ConfigError
from wycifar.settings import check_data


def evaluation_order(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed order of a split's images in which every prefix spans every class it can: the classes
    take turns, each class's images in a seeded shuffle. Files are listed class by class, so a test
    cut short (trainer.limit_test_batches) would otherwise see the first classes only."""
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    classes = labels[shuffled]
    by_class = torch.argsort(classes, stable=True)
    counts = torch.bincount(classes)
    rank = torch.empty_like(classes)
    rank[by_class] = torch.arange(len(classes)) - (torch.cumsum(counts, 0) - counts)[classes[by_class]]
    return shuffled[torch.argsort(rank * len(counts) + classes)]


class CIFAR10DataModule(L.LightningDataModule):
    """train: the 50,000 training images, less `val_size` held out for validation.
    val: the held-out images, or the test split when `val_size` is 0 (as the reference, whose
    ValAcc column is the test accuracy). test: the 10,000 test images, in `evaluation_order`.
    The defaults are the reference's (batch 128); conf/data's are the default recipe's (batch 64).
    """

    def __init__(
        self,
        root: str = "data/cifar10",
        source: str = "auto",
        download: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 0,
        image_size: int = 32,
        augment: dict | None = None,
        channels_last: bool = False,
        on_device: bool = True,
        seed: int = 0,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        check_data(
            {
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
                "image_size": image_size,
                "val_size": val_size,
            }
        )
        try:
            self.augment = AugmentConfig(**(augment or {}))
        except TypeError as error:
            raise ConfigError(
                f"data.augment: {error}; allowed keys: {', '.join(AugmentConfig.__dataclass_fields__)}"
            ) from None
        if self.augment.crop_border == "reflection" and self.augment.crop_padding >= image_size:
            raise ConfigError(
                f"data.augment.crop_padding={self.augment.crop_padding} is not allowed with crop_border=reflection; "
                f"a mirror needs it below data.image_size={image_size}"
            )
        self.root, self.source, self.download = root, source, download
        self.cache_dir = cache_dir
        self.batch_size, self.eval_batch_size, self.val_size = batch_size, eval_batch_size, val_size
        self.image_size, self.channels_last, self.on_device, self.seed = image_size, channels_last, on_device, seed
        self.mean, self.std = tuple(mean), tuple(std)
        # (epoch, batches done) of a checkpoint written mid-epoch: the loader resumes there
        self.resume_at: tuple[int, int] | None = None
        self.train_data: Split | None = None
        self.val_data: Split | None = None
        self.test_data: Split | None = None

    @property
    def classes(self) -> list[str]:
        self.prepare_splits()
        return self.test_data.classes

    def prepare_splits(self) -> None:
        if self.test_data is not None:
            return
        kwargs = dict(source=self.source, image_size=self.image_size, cache_dir=self.cache_dir, download=self.download)
        train = load_split(Path(self.root), "train", **kwargs)
        test = load_split(Path(self.root), "test", **kwargs)
        order = evaluation_order(test.labels)
        self.test_data = Split(test.images[order], test.labels[order], test.classes)
        if train.classes != self.test_data.classes:
            raise ConfigError(
                f"train classes {train.classes} differ from test classes {self.test_data.classes} under {self.root}"
            )
        if self.val_size >= len(train):
            raise ConfigError(
                f"data.val_size={self.val_size} is not allowed; it must be below the {len(train)} training images"
            )
        if self.val_size:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            val_idx, train_idx = order[: self.val_size], order[self.val_size :]
            self.val_data = Split(train.images[val_idx], train.labels[val_idx], train.classes)
            train = Split(train.images[train_idx], train.labels[train_idx], train.classes)
        else:
            self.val_data = self.test_data
        self.train_data = train

    def setup(self, stage: str | None = None) -> None:
        self.prepare_splits()

    @property
    def device(self) -> torch.device:
        if self.on_device and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def _loader(self, split: Split, train: bool) -> TensorLoader:
        return TensorLoader(
            split.images,
            split.labels,
            self.batch_size if train else self.eval_batch_size,
            train=train,
            augment=self.augment,
            mean=self.mean,
            std=self.std,
            seed=self.seed,
            rank=self.trainer.global_rank if self.trainer else 0,
            world_size=self.trainer.world_size if self.trainer else 1,
            channels_last=self.channels_last,
            device=self.device,
        )

    def train_dataloader(self) -> TensorLoader:
        loader = self._loader(self.train_data, train=True)
        if self.resume_at is not None:
            loader.resume_at(*self.resume_at)
            self.resume_at = None
        return loader

    def state_dict(self) -> dict:
        """Where the training loader is within its epoch (saved in checkpoints by Lightning)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": trainer.current_epoch, "batches_done": progress.completed}

    def load_state_dict(self, state_dict: dict) -> None:
        if "epoch" in state_dict:
            self.resume_at = (int(state_dict["epoch"]), int(state_dict["batches_done"]))

    def val_dataloader(self) -> TensorLoader:
        return self._loader(self.val_data, train=False)

    def test_dataloader(self) -> TensorLoader:
        return self._loader(self.test_data, train=False)
