"""Each model shipped under results/ loads as the 95,653-parameter network, its ONNX twin gives the same
logits, and the accuracy in its name is the one its run report states."""

import re
from pathlib import Path

import pytest
import torch

from wycifar.callbacks.onnx_export import check_onnx
from wycifar.checkpoints import load_module
from wycifar.predict import RESULTS, SHIPPED

SHIPPED_CKPTS = sorted(RESULTS.glob("*/model_*.ckpt"))


def test_results_ship_models():
    assert {p.parent.name for p in SHIPPED_CKPTS} >= {"seed", "fast", "fast_gelu"}


@pytest.mark.parametrize("ckpt", SHIPPED_CKPTS, ids=lambda p: p.parent.name)
def test_shipped_model_matches_its_onnx_twin_and_its_report(ckpt: Path):
    params, acc = SHIPPED.search(ckpt.name).groups()
    reported = re.search(r"\| test/acc \| (\d\.\d+) \|", (ckpt.parent / "report.md").read_text())
    assert reported is not None and reported.group(1) == acc
    net = load_module(ckpt).eval().net
    assert sum(p.numel() for p in net.parameters()) == int(params) == 95_653
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert check_onnx(net, ckpt.with_suffix(".onnx"), x, atol=1e-4, rtol=0.0) <= 1e-4
