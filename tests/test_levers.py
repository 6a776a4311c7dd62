"""Levers of the training recipe: patch-whitening initialisation, BatchNorm momentum."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_train, make_image_folder

from wycifar.data import CIFAR10DataModule
from wycifar.data.loader import normalize_uint8
from wycifar.errors import ConfigError
from wycifar.models import WyCifarNet
from wycifar.models.whitening import channel_zca_filters
from wycifar.train import train


def neighbour_correlation(x: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1].item()


def test_zca_filters_decorrelate_neighbouring_pixels():
    smooth = F.avg_pool2d(torch.randn(200, 3, 36, 36), 5, stride=1)  # neighbours strongly correlated
    filters = channel_zca_filters(smooth)
    assert filters.shape == (3, 1, 3, 3)
    white = F.conv2d(smooth, filters, groups=3)
    assert neighbour_correlation(smooth) > 0.7
    assert abs(neighbour_correlation(white)) < 0.2


def test_whitened_first_layer_is_set_from_the_training_images(tmp_path: Path):
    data = make_image_folder(tmp_path / "data")
    # LR 0: the first layer keeps its initialisation through the fit
    quiet = ["trainer.max_epochs=1", "test=false", "callbacks=[model_checkpoint]", "logger=none", "optimizer.lr=0"]
    cfg = compose_train(tmp_path, [*TINY, f"data.root={data}", *quiet, "module.whiten_first_layer=true"])
    train(cfg)
    weights = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    first = weights["net.blocks.0.units.0.conv1.layers.0.weight"]
    datamodule = CIFAR10DataModule(root=str(data), cache_dir=str(tmp_path / "cache"))
    datamodule.prepare_splits()
    images = datamodule.train_data.images
    assert len(images) < 5000  # all of them, in every class
    images = normalize_uint8(images, datamodule.mean, datamodule.std)
    assert torch.allclose(first, channel_zca_filters(images), atol=1e-5)


def test_whitening_needs_a_depthwise_first_layer(tmp_path: Path):
    data = make_image_folder(tmp_path / "data")
    cfg = compose_train(tmp_path, [*TINY, f"data.root={data}", "model.conv=vanilla", "module.whiten_first_layer=true"])
    with pytest.raises(ConfigError, match=r"module.whiten_first_layer=true needs an undilated square depthwise"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bn_momentum_reaches_every_batchnorm():
    net = WyCifarNet(bn_momentum=0.4)
    momenta = {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.4}
    with pytest.raises(ConfigError, match=r"model.bn_momentum=0 is not allowed"):
        WyCifarNet(bn_momentum=0)
