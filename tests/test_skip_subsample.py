"""model.skip_subsample: how the 1x1 skip of a downsampling unit halves the map."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_onnx_is_the_network, compose_train, evaluate_checkpoint

from wycifar.errors import ConfigError
from wycifar.models import WyCifarNet
from wycifar.models.blocks import WyConv2d
from wycifar.models.summary import summarize
from wycifar.training.run import train


@pytest.mark.parametrize("size", [32, 15])
def test_avg_skip_is_the_1x1_conv_of_the_2x2_window_means(size: int):
    torch.manual_seed(0)
    strided = WyConv2d(8, 16, kernel_size=1, stride=2, padding=0)
    averaged = WyConv2d(8, 16, kernel_size=1, stride=2, padding=0, avg_pool=True)
    averaged.load_state_dict(strided.state_dict())
    x = torch.randn(2, 8, size, size)
    weight = strided.layers[0].weight
    # an odd map keeps its last row and column as a window of its own, as the strided skip does
    expected_means = F.avg_pool2d(x, 2, ceil_mode=True)
    assert expected_means.shape[-1] == (size + 1) // 2
    assert torch.allclose(averaged(x), F.conv2d(expected_means, weight), atol=1e-6)
    assert torch.allclose(strided(x), F.conv2d(x[:, :, ::2, ::2], weight), atol=1e-6)
    assert not torch.allclose(averaged(x), strided(x), atol=1e-3)
    # a window cut by the border is the mean of the pixels inside it: a flat image stays flat
    flat = torch.full((1, 8, size, size), 0.5)
    assert torch.allclose(averaged(flat), strided(flat), atol=1e-6)


@pytest.mark.parametrize("downsample", ["dilated", "strided"])
def test_skip_subsample_keeps_the_reference_network_layer_for_layer(downsample: str):
    subsample = "avg"
    reference, changed = WyCifarNet(downsample=downsample), WyCifarNet(downsample=downsample, skip_subsample=subsample)
    assert changed.state_dict().keys() == reference.state_dict().keys()
    assert sum(p.numel() for p in changed.parameters()) == 95_653
    rows = lambda net: [(r.name, r.output_shape, r.params) for r in summarize(net).rows]  # noqa: E731
    assert rows(changed) == rows(reference)
    changed.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    # the same weights give other outputs: the skips see the window means
    assert not torch.allclose(changed.eval()(x), reference.eval()(x), atol=1e-4)


def test_skip_subsample_run_trains_tests_exports_and_evaluates(tmp_path: Path, tiny_data: Path):
    subsample, note = "avg", "(each 2x2 window averaged before it)"
    overrides = [*TINY, f"data.root={tiny_data}", f"model.skip_subsample={subsample}"]
    metrics, objects = train(compose_train(tmp_path, overrides))
    module = objects["module"]
    assert module.hparams.net["skip_subsample"] == subsample
    assert f"Using 1*1 Skip Connection: True {note}" in (tmp_path / "run" / "summary.txt").read_text()
    assert_onnx_is_the_network(tmp_path / "run", module.net, sum(p.numel() for p in module.net.parameters()))
    best = objects["trainer"].checkpoint_callback.best_model_path
    eval_metrics = evaluate_checkpoint(tmp_path / "eval", best, tiny_data)
    assert eval_metrics["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_bad_skip_subsample_is_refused():
    with pytest.raises(ConfigError, match=r"model.skip_subsample='max' is not allowed; choose one of: stride, avg$"):
        WyCifarNet(skip_subsample="max")
