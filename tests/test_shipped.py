"""Each model shipped under results/ loads as the 95,653-parameter network, its ONNX twin gives the same
logits, and the accuracy in its name is the one its run report states."""

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from wycifar.checkpoints import load_module
from wycifar.predict import RESULTS, SHIPPED

SHIPPED_CKPTS = sorted(RESULTS.glob("*/model_*.ckpt"))


def test_results_ship_models():
    assert {p.parent.name for p in SHIPPED_CKPTS} >= {"seed", "fast", "fast_gelu"}


@pytest.mark.parametrize("ckpt", SHIPPED_CKPTS, ids=lambda p: p.parent.name)
def test_shipped_model_matches_its_onnx_twin_and_its_metrics(ckpt: Path):
    params, acc = SHIPPED.search(ckpt.name).groups()
    reported = re.search(r"\| test/acc \| (\d\.\d+) \|", (ckpt.parent / "report.md").read_text())
    assert reported is not None and reported.group(1) == acc
    net = load_module(ckpt).eval().net
    assert sum(p.numel() for p in net.parameters()) == int(params) == 95_653
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = net(x).numpy()
    session = ort.InferenceSession(str(ckpt.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_logits, logits, atol=1e-4, rtol=1e-4)
