"""Every option of every config group composes and builds."""

from pathlib import Path

import pytest
from conftest import CONF, compose_train
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from wycifar.errors import ConfigError
from wycifar.models.blocks import ACTIVATIONS, WyResidual
from wycifar.training.builders import build_callbacks, build_loggers, build_module, map_gpus

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
    net = build_module(compose_train(tmp_path, ["model.activation=relu"])).net
    units = [m for m in net.modules() if isinstance(m, WyResidual)]
    assert len(units) == 6 and all(unit.activation is ACTIVATIONS["relu"] for unit in units)
    assert build_module(compose_train(tmp_path, [])).net.blocks[0].units[0].activation is ACTIVATIONS["gelu"]


def recipe(tmp_path: Path, overrides: list[str]) -> dict:
    cfg = OmegaConf.to_container(compose_train(tmp_path, overrides), resolve=True)
    return {k: cfg[k] for k in ("data", "model", "optimizer", "scheduler", "module", "trainer")}


def test_the_defaults_are_the_most_accurate_recipe(tmp_path: Path):
    """What `python -m wycifar.train model=dws_dilated` trains: GELU, averaging skips, batch 64,
    a 2 px mirrored crop and flip, label smoothing 0.1, Nesterov SGD peaking at 0.2 per step."""
    cfg = recipe(tmp_path, [])
    assert cfg == recipe(tmp_path, ["model=dws_dilated"])
    model, data, optimizer = cfg["model"], cfg["data"], cfg["optimizer"]
    assert (model["activation"], model["skip_subsample"], model["dropout"]) == ("gelu", "avg", 0.0)
    assert data["batch_size"] == 64 and cfg["trainer"]["max_epochs"] == 24
    augment = data["augment"]
    assert (augment["crop_padding"], augment["crop_border"], augment["flip_p"]) == (2, "reflection", 0.5)
    assert augment["cutout_p"] == 0 and augment["ssr_p"] == 0
    assert optimizer["nesterov"] and (optimizer["lr"], optimizer["momentum"], optimizer["weight_decay"]) == (
        0.2,
        0.9,
        2.5e-4,
    )
    assert cfg["module"]["label_smoothing"] == 0.1 and not cfg["module"]["decay_norm_and_bias"]
    assert cfg["scheduler"]["interval"] == "step" and cfg["scheduler"]["momentum_points"] is None


def test_speedrun_is_the_default_recipe_at_batch_512(tmp_path: Path):
    """The runs in results/speedrun: `data.batch_size=512 optimizer.lr=0.8 optimizer.weight_decay=5e-4
    trainer.max_epochs=30`, the default schedule stretched to 30 epochs."""
    speedrun, default = recipe(tmp_path, ["experiment=speedrun"]), recipe(tmp_path, [])
    batch_512 = ["data.batch_size=512", "optimizer.lr=0.8", "optimizer.weight_decay=5e-4", "trainer.max_epochs=30"]
    assert speedrun == recipe(tmp_path, batch_512)
    assert speedrun["model"] == default["model"] and speedrun["scheduler"] == default["scheduler"]


def test_reference_readme_is_the_reference_recipe_as_its_readme_states_it(tmp_path: Path):
    readme, code = recipe(tmp_path, ["experiment=reference_readme"]), recipe(tmp_path, ["experiment=reference"])
    assert readme["optimizer"]["momentum"] == 0.9 and not readme["optimizer"]["nesterov"]
    assert readme["module"]["l1_lambda"] == pytest.approx(1e-7) and readme["model"]["dropout"] == pytest.approx(0.01)
    assert readme["scheduler"]["momentum_points"] is None and readme["data"]["augment"]["ssr_border"] == "zeros"
    # nothing else differs from the recipe as its code ran it
    for cfg in (readme, code):
        cfg["optimizer"].pop("momentum"), cfg["optimizer"].pop("nesterov"), cfg["module"].pop("l1_lambda")
        cfg["model"].pop("dropout"), cfg["scheduler"].pop("momentum_points"), cfg["data"]["augment"].pop("ssr_border")
    assert readme == code


def test_reference_is_the_reference_code_recipe(tmp_path: Path):
    cfg = compose_train(tmp_path, ["experiment=reference"])
    assert cfg.trainer.max_epochs == 24 and cfg.data.batch_size == 128 and cfg.scheduler.interval == "epoch"
    assert cfg.optimizer.nesterov and cfg.optimizer.weight_decay == pytest.approx(9.765625e-07)
    assert cfg.optimizer.lr == 0.5 and [list(p) for p in cfg.scheduler.points] == [
        [0, 0.2],
        [4, 1.0],
        [18, 0.1],
        [24, 0.0],
    ]
    # Three phases, like the LR: back at 0.95 where the LR is back at its base 0.05 (epoch 18).
    assert [list(p) for p in cfg.scheduler.momentum_points] == [[0, 0.95], [4, 0.85], [18, 0.95], [24, 0.95]]
    assert cfg.module.l1_lambda == 0 and cfg.model.dropout == 0 and cfg.module.label_smoothing == 0
    assert (cfg.model.activation, cfg.model.skip_subsample) == ("relu", "stride")
    augment = cfg.data.augment
    assert augment.ssr_border == "reflection" and augment.crop_padding == 0 and augment.flip_p == 0.3
    assert (augment.cutout_p, augment.cutout_min, augment.cutout_max, augment.ssr_p) == (0.5, 8, 16, 0.3)


@pytest.mark.parametrize(
    "override",
    [
        "model.peer_heads=3",
        "module.peer_weight=1",
        "module.self_distill=0.8",
        "module.sam_rho=0.05",
        "model.reparam=true",
        "model.first_block_skip=false",
        "model.zero_init_residual=true",
        "data.augment.until_epoch=22",
        "data.augment.flip_mode=alternate",
        "data.augment.cutout_style=coarse_dropout",
        "scheduler.lr_scale=2",
        "callbacks=lookahead",
        "callbacks=precise_bn",
    ],
)
def test_retired_keys_are_refused_like_any_unknown_key(tmp_path: Path, override: str):
    with pytest.raises(ConfigCompositionException):
        compose_train(tmp_path, [override])


def test_a_retired_value_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"model.skip_subsample='centre' is not allowed; choose one of: stride, avg$"):
        build_module(compose_train(tmp_path, ["model.skip_subsample=centre"]))
    with pytest.raises(ConfigError, match=r"model.activation='silu' is not allowed; choose one of: relu, gelu$"):
        build_module(compose_train(tmp_path, ["model.activation=silu"]))


def test_default_precision_is_bf16_only_where_native(tmp_path: Path, monkeypatch):
    import wycifar.precision

    cfg = compose_train(tmp_path, ["trainer.accelerator=cpu"])
    native = wycifar.precision.cpu_has_native_bf16()
    assert cfg.trainer.precision == ("bf16-mixed" if native else "32-true")
    monkeypatch.setattr(wycifar.precision, "cpu_has_native_bf16", lambda: False)
    assert compose_train(tmp_path, ["trainer.accelerator=cpu"]).trainer.precision == "32-true"
    assert compose_train(tmp_path, ["trainer.precision=32-true"]).trainer.precision == "32-true"
