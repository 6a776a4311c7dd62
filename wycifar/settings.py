"""Every value check of the config, torch-free, in one place.

The commands run `check_settings` on the composed config before Hydra claims a folder or torch is
imported, so a value that is not allowed is refused at once; the classes run the same checks on
their own arguments, so a program building them directly is refused alike.
"""

from __future__ import annotations

from typing import Any

from wycifar.errors import ConfigError, check_choice, check_number, check_whole_number

NORMS = ("bn", "gn", "ln")
CONV_TYPES = ("vanilla", "depthwise", "depthwise_separable")
DOWNSAMPLING = ("dilated", "strided")
SKIP_SUBSAMPLING = ("stride", "avg")
ACTIVATION_NAMES = ("relu", "gelu")
TTA_MODES = ("none", "flip", "flip_translate")
# torch.compile's modes; reduce-overhead replays CUDA graphs on a GPU.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
INTERVALS = ("epoch", "step")
SSR_BORDERS = ("zeros", "reflection", "border")
CROP_BORDERS = ("zeros", "reflection")


def check_model(cfg: dict) -> None:
    """Every model.* value."""
    for key, allowed in (
        ("norm", NORMS),
        ("conv", CONV_TYPES),
        ("downsample", DOWNSAMPLING),
        ("skip_subsample", SKIP_SUBSAMPLING),
        ("activation", ACTIVATION_NAMES),
    ):
        if key in cfg:
            check_choice(f"model.{key}", cfg[key], allowed)
    for key in ("num_blocks", "units_per_block", "base_width", "num_classes", "image_size", "in_channels", "gn_groups"):
        if key in cfg:
            check_whole_number(f"model.{key}", cfg[key])
    if "dropout" in cfg:
        check_number("model.dropout", cfg["dropout"], minimum=0, maximum=1, exclusive_max=True)
    if "skip_1x1" in cfg and not isinstance(cfg["skip_1x1"], bool):
        raise ConfigError(f"model.skip_1x1={cfg['skip_1x1']!r} is not allowed; it must be true or false")


def check_module(options: dict, scheduler: dict | None = None) -> None:
    """The module.* values (the LightningModule's own) and the schedule's interval."""
    rules = {
        "label_smoothing": lambda key, v: check_number(key, v, minimum=0, maximum=1, exclusive_max=True),
        "l1_lambda": lambda key, v: check_number(key, v, minimum=0),
        "compile_mode": lambda key, v: check_choice(key, v, COMPILE_MODES),
        "tta": lambda key, v: check_choice(key, v, TTA_MODES),
        "distill_temperature": lambda key, v: check_number(key, v, minimum=0, inclusive=False),
        "distill_weight": lambda key, v: check_number(key, v, minimum=0, maximum=1),
    }
    for key, check in rules.items():
        if key in options:
            check(f"module.{key}", options[key])
    if scheduler:
        check_choice("scheduler.interval", scheduler.get("interval", "epoch"), INTERVALS)


def check_optimizer(optimizer_cfg: dict) -> None:
    """Catch what SGD would only reject once training has started."""
    below_one = {"maximum": 1, "exclusive_max": True}
    rules = {"lr": {}, "momentum": below_one, "weight_decay": {}, "dampening": below_one}
    for key, bounds in rules.items():
        if key in optimizer_cfg:
            check_number(f"optimizer.{key}", optimizer_cfg[key], minimum=0, **bounds)


def check_augment(augment: dict) -> None:
    """The data.augment.* values."""
    for key in ("flip_p", "cutout_p", "ssr_p"):
        if key in augment:
            check_number(f"data.augment.{key}", augment[key], minimum=0, maximum=1)
    for key in ("crop_padding", "cutout_min", "cutout_max"):
        if key in augment:
            check_whole_number(f"data.augment.{key}", augment[key], minimum=0)
    if "crop_border" in augment:
        check_choice("data.augment.crop_border", augment["crop_border"], CROP_BORDERS)
    if "ssr_border" in augment:
        check_choice("data.augment.ssr_border", augment["ssr_border"], SSR_BORDERS)


def check_data(cfg: dict) -> None:
    """The data.* sizes."""
    for key in ("batch_size", "eval_batch_size", "image_size"):
        if key in cfg:
            check_whole_number(f"data.{key}", cfg[key])
    if "val_size" in cfg:
        check_whole_number("data.val_size", cfg["val_size"], minimum=0)


def check_settings(cfg: Any) -> None:
    """A composed wycifar.train config's values, as the objects built from it would check them."""
    from omegaconf import DictConfig, OmegaConf

    def plain(key: str) -> dict:
        node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if not isinstance(node, DictConfig):
            return {}
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception:  # noqa: BLE001 - a value resolved only at run time (the run's folder): checked then
            return {}

    model, module, data = plain("model"), plain("module"), plain("data")
    if model:
        check_model({key: value for key, value in model.items() if key != "_target_"})
    if module:
        check_module(module, plain("scheduler") or None)
    check_optimizer(plain("optimizer"))
    if data:
        check_data(data)
        check_augment(data.get("augment") or {})
