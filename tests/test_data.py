"""The data module: sources, cache, batched augmentation, loader sharding."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, make_image_folder
from PIL import Image

from wycifar.data import CIFAR10DataModule, TensorLoader
from wycifar.data.augment import AugmentConfig, augment_batch, cutout, random_crop, random_flip, shift_scale_rotate
from wycifar.data.sources import load_split
from wycifar.errors import ConfigError


def test_folder_source_decodes_and_caches(tmp_path: Path):
    root = make_image_folder(tmp_path / "data", train_per_class=3, test_per_class=2)
    split = load_split(root, "train", cache_dir=tmp_path / "cache")
    assert split.images.dtype == torch.uint8 and split.images.shape == (30, 3, 32, 32)
    assert split.classes == CLASSES and split.labels.tolist() == [i for i in range(10) for _ in range(3)]
    cached = list((tmp_path / "cache").glob("train-*.pt"))
    assert len(cached) == 1
    # the cache is what a second load returns, without decoding (prove it by editing the cache)
    blob = torch.load(cached[0], weights_only=True)
    blob["images"][0] = 7
    torch.save(blob, cached[0])
    assert (load_split(root, "train", cache_dir=tmp_path / "cache").images[0] == 7).all()
    # a changed file list invalidates it
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "cat" / "new.png")
    assert len(load_split(root, "train", cache_dir=tmp_path / "cache")) == 31


def test_one_folder_is_one_cache_however_it_is_spelled_and_a_stale_one_is_replaced(tmp_path: Path, caplog):
    root = make_image_folder(tmp_path / "data", train_per_class=2, test_per_class=1)
    cache = tmp_path / "cache"
    load_split(root, "train", cache_dir=cache)
    load_split(tmp_path / "data" / ".." / "data" / "", "train", cache_dir=cache)  # another spelling
    (tmp_path / "link").symlink_to(root)
    load_split(tmp_path / "link", "train", cache_dir=cache)  # and another
    assert len(list(cache.glob("train-*.pt"))) == 1
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "cat" / "new.png")
    assert len(load_split(root, "train", cache_dir=cache)) == 21
    (cached,) = cache.glob("train-*.pt")  # replaced in place, not kept beside the new one
    assert len(torch.load(cached, weights_only=True)["labels"]) == 21
    # a cache that cannot be read is rebuilt from the images, with a one-line notice
    cached.write_bytes(b"not a tensor file")
    with caplog.at_level("WARNING", logger="wycifar.data"):
        assert len(load_split(root, "train", cache_dir=cache)) == 21
    (notice,) = [r.getMessage() for r in caplog.records if r.name == "wycifar.data"]
    assert f"the decode cache {cached} cannot be read" in notice and "decoding the images again" in notice
    assert "\n" not in notice and len(torch.load(cached, weights_only=True)["labels"]) == 21


def test_the_cache_goes_to_the_users_cache_folder(tmp_path: Path, monkeypatch):
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        assert compose("train").paths.cache_dir == str(tmp_path / "xdg" / "wycifar")
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert compose("train").paths.cache_dir == str(tmp_path / "home" / ".cache" / "wycifar")
        assert compose("train", overrides=["data.cache_dir=/elsewhere"]).data.cache_dir == "/elsewhere"


def test_other_modes_and_sizes_are_converted(tmp_path: Path):
    root = make_image_folder(tmp_path / "data", train_per_class=1, test_per_class=1)
    Image.fromarray(np.full((40, 50), 200, np.uint8), mode="L").save(root / "train" / "cat" / "gray.png")
    Image.fromarray(np.full((32, 32, 4), 90, np.uint8), mode="RGBA").save(root / "train" / "dog" / "rgba.png")
    split = load_split(root, "train")
    assert split.images.shape == (12, 3, 32, 32)
    gray = split.images[CLASSES.index("cat") * 1 + 1]
    assert (gray == 200).all()


def test_bad_layouts_and_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_split(tmp_path / "nowhere", "train", source="folder")
    root = make_image_folder(tmp_path / "data", train_per_class=1, test_per_class=1)
    (root / "train" / "cat" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"cannot read image .*cat/0000.png"):
        load_split(root, "train")
    with pytest.raises(ConfigError, match="data.source='imagenet'"):
        load_split(root, "train", source="imagenet")


def test_offline_torchvision_source_says_where_it_looked(tmp_path: Path):
    with pytest.raises(ConfigError, match=str(tmp_path / "empty")):
        load_split(tmp_path / "empty", "train", source="torchvision", download=False)


def batch(n=8, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_random_crop_shifts_each_image():
    x = batch()
    out = random_crop(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # every output is a shifted window of its own zero-padded input
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        assert any(torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32]) for dy in range(9) for dx in range(9))
    assert not torch.equal(out, x)


def test_crop_border_reflection_mirrors_the_image_into_the_padding():
    x = batch()
    out = random_crop(x, 2, torch.Generator().manual_seed(0), border="reflection")
    mirrored = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(len(x)):
        assert any(
            torch.equal(out[i], mirrored[i, :, dy : dy + 32, dx : dx + 32]) for dy in range(5) for dx in range(5)
        )
    # a constant image stays constant when mirrored; zero padding lets the mean colour (0) in
    ones = torch.ones(16, 3, 32, 32)
    assert torch.equal(random_crop(ones, 2, torch.Generator().manual_seed(1), border="reflection"), ones)
    assert random_crop(ones, 2, torch.Generator().manual_seed(1)).min() == 0
    with pytest.raises(ConfigError, match="data.augment.crop_border='wrap' is not allowed; choose one of: zeros"):
        AugmentConfig(crop_border="wrap")
    with pytest.raises(ConfigError, match="data.augment.crop_padding=32 is not allowed with crop_border=reflection"):
        CIFAR10DataModule(root="unused", augment={"crop_padding": 32, "crop_border": "reflection"})


def test_flip_and_cutout_and_ssr():
    x = batch()
    flipped = random_flip(x, 1.0)
    assert torch.equal(flipped, x.flip(3))
    assert torch.equal(random_flip(x, 0.0), x)
    holes = cutout(x, 1.0, 8, 8, torch.Generator().manual_seed(1))
    zeroed = (holes == 0).all(1).flatten(1).sum(1)
    assert ((zeroed > 0) & (zeroed <= 64)).all()
    assert torch.equal(shift_scale_rotate(x, 0.0, 0.15, 0.15, 10), x)
    moved = shift_scale_rotate(x, 1.0, 0.15, 0.15, 10, torch.Generator().manual_seed(2))
    assert moved.shape == x.shape and not torch.allclose(moved, x)


def test_ssr_border_mirrors_instead_of_filling():
    ones = torch.ones(16, 3, 32, 32)
    zero_filled = shift_scale_rotate(ones, 1.0, 0.15, 0.15, 10, torch.Generator().manual_seed(4))
    mirrored = shift_scale_rotate(ones, 1.0, 0.15, 0.15, 10, torch.Generator().manual_seed(4), border="reflection")
    assert zero_filled.min() < 0.5  # the mean colour crept in at the borders
    assert torch.allclose(mirrored, ones, atol=1e-5)  # a mirrored constant image stays constant
    with pytest.raises(ConfigError, match="data.augment.ssr_border='wrap' is not allowed; choose one of: zeros"):
        AugmentConfig(ssr_border="wrap")


def test_cutout_holes_are_squares_clipped_at_the_borders():
    ones = torch.ones(2000, 1, 32, 32)
    holes = cutout(ones, 1.0, 8, 16, torch.Generator().manual_seed(5)) == 0
    rows, cols = holes.any(3).squeeze(1), holes.any(2).squeeze(1)  # N,32 each
    heights, widths = rows.sum(1), cols.sum(1)
    assert heights.max() <= 16 and widths.max() <= 16 and heights.min() >= 1
    # each hole is the full rectangle of its rows and columns
    assert torch.equal(holes.flatten(1).sum(1), heights * widths)
    inside = (rows[:, 0] == 0) & (rows[:, -1] == 0) & (cols[:, 0] == 0) & (cols[:, -1] == 0)
    # away from the borders a hole is a square of 8-16 px a side; at them it is clipped
    assert torch.equal(heights[inside], widths[inside]) and heights[inside].min() >= 8
    assert (heights[~inside] < 8).any() or (heights[~inside] != widths[~inside]).any()


def test_augment_is_reproducible_and_validated():
    cfg = AugmentConfig(crop_padding=4, flip_p=0.5, cutout_p=0.5, ssr_p=0.3)
    a = augment_batch(batch(), cfg, torch.Generator().manual_seed(3))
    b = augment_batch(batch(), cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="data.augment.flip_p=1.5"):
        AugmentConfig(flip_p=1.5)


def test_loader_normalises_shuffles_by_epoch_and_shards():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(100)
    loader = TensorLoader(images, labels, 16, train=True, seed=1)
    assert len(loader) == 7
    epoch0 = torch.cat([y for _, y in loader])
    assert sorted(epoch0.tolist()) == list(range(100))
    assert epoch0.tolist() == torch.cat([y for _, y in loader]).tolist()  # same epoch, same order
    loader.set_epoch(1)
    assert epoch0.tolist() != torch.cat([y for _, y in loader]).tolist()
    x, _ = next(iter(TensorLoader(images, labels, 100, train=False)))
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.allclose(x, (images.float() / 255 - mean) / std, atol=1e-5)
    # DDP: two ranks see disjoint halves of every epoch; evaluation shards count each image once
    shards = [
        torch.cat([y for _, y in TensorLoader(images, labels, 16, train=True, seed=1, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist()) and len(shards[0]) == len(shards[1]) == 50
    evals = [
        torch.cat([y for _, y in TensorLoader(images[:99], labels[:99], 16, train=False, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert sorted(evals[0].tolist() + evals[1].tolist()) == list(range(99))


def test_datamodule_splits(tmp_path: Path):
    root = make_image_folder(tmp_path / "data", train_per_class=5, test_per_class=2)
    dm = CIFAR10DataModule(root=str(root), val_size=10, cache_dir=None)
    dm.setup("fit")
    assert len(dm.train_data) == 40 and len(dm.val_data) == 10 and len(dm.test_data) == 20
    assert dm.classes == CLASSES
    no_val = CIFAR10DataModule(root=str(root), val_size=0)
    no_val.setup("fit")
    assert no_val.val_data is no_val.test_data
    with pytest.raises(ConfigError, match="data.batch_size=0"):
        CIFAR10DataModule(root=str(root), batch_size=0)
    with pytest.raises(ConfigError, match="data.val_size=50"):
        bad = CIFAR10DataModule(root=str(root), val_size=50)
        bad.setup("fit")
