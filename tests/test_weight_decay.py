from pathlib import Path

import torch
from conftest import compose_train
from hydra.utils import instantiate

from wycifar.training.builders import build_module


def is_depthwise(module: torch.nn.Module) -> bool:
    """A convolution with one filter group per input channel."""
    return isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def decay_after_one_step(tmp_path: Path, overrides: list[str]) -> tuple[torch.nn.Module, dict[str, bool]]:
    """The network, and name -> whether one SGD step with zero gradients shrank that parameter
    (weight decay only)."""
    cfg = compose_train(tmp_path, overrides)
    module = build_module(cfg)
    optimizer = instantiate(module.hparams.optimizer, _convert_="all")(module.parameter_groups())
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    for norm in module.net.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):  # away from their 1/0 init, so decay would show
            torch.nn.init.constant_(norm.weight, 0.5)
            torch.nn.init.constant_(norm.bias, 0.5)
    before = {name: p.detach().clone() for name, p in module.net.named_parameters()}
    optimizer.step()
    return module.net, {name: not torch.equal(before[name], p) for name, p in module.net.named_parameters()}


def test_weight_decay_reaches_exactly_the_weights_it_should(tmp_path: Path):
    net, decayed = decay_after_one_step(tmp_path, [])
    depthwise = {f"{name}.weight" for name, m in net.named_modules() if is_depthwise(m)}
    assert len(depthwise) == 12  # two depthwise-separable convs in each of six residual units
    for name, shrank in decayed.items():
        assert shrank == (net.get_parameter(name).ndim > 1), name
    assert any(decayed[name] for name in depthwise)


def test_decay_norm_and_bias_on_decays_everything(tmp_path: Path):
    _, decayed = decay_after_one_step(tmp_path, ["module.decay_norm_and_bias=true"])
    assert all(decayed.values())


def test_adamw_decouples_decay_and_keeps_the_same_exemptions(tmp_path: Path):
    net, decayed = decay_after_one_step(tmp_path, ["optimizer=adamw"])
    for name, shrank in decayed.items():
        assert shrank == (net.get_parameter(name).ndim > 1), name
