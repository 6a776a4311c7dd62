"""Every option of every config group composes and builds."""

from pathlib import Path

import pytest
from conftest import CONF, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

from wycifar.builders import build_callbacks, build_loggers, build_module, map_gpus
from wycifar.models.blocks import ACTIVATIONS, WyResidual

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "experiment", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group} is empty"
    assert {"dws_dilated", "dws_strided", "vanilla"} <= set(options("model"))
    assert {"piecewise", "onecycle"} <= set(options("scheduler"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes(tmp_path: Path, group: str, option: str):
    cfg = compose_train(tmp_path, [f"{group}={option}"])
    assert cfg.paths.output_dir == str(tmp_path / "run")
    if group in ("model", "experiment"):
        module = build_module(cfg)
        params = sum(p.numel() for p in module.net.parameters())
        # every recipe is for the reference network; of the models, all but the plain-conv one
        if group == "experiment" or option in ("dws_dilated", "dws_strided"):
            assert params == 95_653
    if group == "data":
        assert instantiate(cfg.data).batch_size == cfg.data.batch_size
    if group == "callbacks":
        build_callbacks(cfg.callbacks, has_logger=True)
    if group == "logger":
        build_loggers(cfg.logger)
    if group == "trainer":
        trainer_cfg = map_gpus(dict(cfg.trainer))
        assert "gpus" not in trainer_cfg


@pytest.mark.parametrize("norm", ["bn", "gn", "ln"])
@pytest.mark.parametrize("conv", ["vanilla", "depthwise", "depthwise_separable"])
def test_knob_overrides_reach_the_network(tmp_path: Path, norm: str, conv: str):
    cfg = compose_train(
        tmp_path, [f"model.norm={norm}", f"model.conv={conv}", "model.downsample=strided", "model.skip_1x1=false"]
    )
    net = build_module(cfg).net
    assert type(net.blocks[0].units[0].norm1).__name__ == ("BatchNorm2d" if norm == "bn" else "GroupNorm")
    if norm == "ln":
        assert net.blocks[0].units[0].norm1.num_groups == 1
    first = net.blocks[0].units[0].conv1.layers
    assert len(first) == (2 if conv == "depthwise_separable" else 1)
    assert net.blocks[1].units[0].skip is None
    assert net.blocks[1].units[0].conv1.layers[0].stride == (2, 2)


def test_activation_override_reaches_every_unit(tmp_path: Path):
    net = build_module(compose_train(tmp_path, ["model.activation=hardswish"])).net
    units = [m for m in net.modules() if isinstance(m, WyResidual)]
    assert len(units) == 6 and all(unit.activation is ACTIVATIONS["hardswish"] for unit in units)
    assert build_module(compose_train(tmp_path, [])).net.blocks[0].units[0].activation is ACTIVATIONS["relu"]


def test_fast_recipes_differ_from_fast_by_gelu_and_avg_skips_and_nothing_else(tmp_path: Path):
    def recipe(overrides: list[str]) -> dict:
        cfg = OmegaConf.to_container(compose_train(tmp_path, overrides))
        del cfg["hydra"], cfg["task_name"]
        return cfg

    gelu = recipe(["experiment=fast_gelu"])
    assert gelu == recipe(["experiment=fast", "model.activation=gelu"])
    assert gelu != recipe(["experiment=fast"])
    assert gelu["model"]["activation"] == "gelu" and gelu["data"]["batch_size"] == 64
    assert recipe(["experiment=fast_gelu_avgskip"]) == recipe(["experiment=fast_gelu", "model.skip_subsample=avg"])
    assert gelu["model"]["skip_subsample"] == "stride"
    avgskip = recipe(["experiment=fast_avgskip"])
    assert avgskip == recipe(["experiment=fast", "model.skip_subsample=avg"])
    assert avgskip["model"]["activation"] == "relu" and avgskip["model"]["skip_subsample"] == "avg"
    assert recipe(["experiment=fast_gelu_avgskip"]) == recipe(["experiment=fast_avgskip", "model.activation=gelu"])


def test_seed_readme_experiment_is_the_reference_readme_recipe(tmp_path: Path):
    cfg = compose_train(tmp_path, ["experiment=seed_readme"])
    assert cfg.trainer.max_epochs == 24 and cfg.data.batch_size == 128
    assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == pytest.approx(9.765625e-07)
    assert cfg.module.l1_lambda == pytest.approx(1e-7) and cfg.model.dropout == pytest.approx(0.01)
    assert [list(p) for p in cfg.scheduler.points] == [[0, 0.1], [4, 0.5], [18, 0.05], [24, 0.0]]
    assert cfg.scheduler.momentum_points is None and cfg.data.augment.ssr_border == "zeros"


def test_seed_experiment_is_the_reference_code_recipe(tmp_path: Path):
    cfg = compose_train(tmp_path, ["experiment=seed"])
    assert cfg.trainer.max_epochs == 24 and cfg.data.batch_size == 128 and cfg.scheduler.interval == "epoch"
    assert cfg.optimizer.nesterov and cfg.optimizer.weight_decay == pytest.approx(9.765625e-07)
    # Three phases, like the LR: back at 0.95 where the LR is back at its base 0.05 (epoch 18).
    assert [list(p) for p in cfg.scheduler.momentum_points] == [[0, 0.95], [4, 0.85], [18, 0.95], [24, 0.95]]
    assert cfg.module.l1_lambda == 0 and cfg.model.dropout == 0
    assert cfg.data.augment.ssr_border == "reflection" and cfg.data.augment.crop_padding == 0


def test_default_precision_is_bf16_only_where_native(tmp_path: Path, monkeypatch):
    import wycifar.precision

    cfg = compose_train(tmp_path, ["trainer.accelerator=cpu"])
    native = wycifar.precision.cpu_has_native_bf16()
    assert cfg.trainer.precision == ("bf16-mixed" if native else "32-true")
    monkeypatch.setattr(wycifar.precision, "cpu_has_native_bf16", lambda: False)
    assert compose_train(tmp_path, ["trainer.accelerator=cpu"]).trainer.precision == "32-true"
    assert compose_train(tmp_path, ["trainer.precision=32-true"]).trainer.precision == "32-true"
