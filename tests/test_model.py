import copy
import itertools
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from wycifar.errors import ConfigError
from wycifar.models import WyCifarNet
from wycifar.models.blocks import CONV_TYPES, DOWNSAMPLING, NORMS, WyResidual
from wycifar.models.summary import summarize

REFERENCE_SUMMARY = ROOT / "tests" / "data" / "reference_summary.txt"
ROW = re.compile(r"^\s*(\S+-\d+)\s+\[([-\d, ]+)\]\s+([\d,]+)\s*$")


def reference_rows() -> list[tuple[str, tuple[int, ...], int]]:
    rows = []
    for line in REFERENCE_SUMMARY.read_text().splitlines():
        match = ROW.match(line)
        if match:
            shape = tuple(int(s) for s in match.group(2).split(","))
            rows.append((match.group(1), shape, int(match.group(3).replace(",", ""))))
    return rows


def test_reference_network_has_95653_parameters():
    net = WyCifarNet()
    assert sum(p.numel() for p in net.parameters()) == 95_653
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 95_653


def test_summary_matches_reference_row_for_row():
    expected = reference_rows()
    assert len(expected) == 68
    summary = summarize(WyCifarNet())
    got = [(r.name, r.output_shape, r.params) for r in summary.rows]
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"row {index + 1}: expected {want}, got {have}"
    text = REFERENCE_SUMMARY.read_text()
    for line in summary.table().splitlines():
        if "MB" in line or "params" in line:
            assert line in text, f"{line!r} differs from the reference"


def test_dilations_are_derived_from_feature_map_size():
    summary = summarize(WyCifarNet())
    dilated = [(c.dilation, c.effective_kernel, c.output_size) for c in summary.convs if c.dilation > 1]
    assert dilated == [(9, 19, 16), (5, 11, 8)]
    # receptive field grows monotonically and is computed, e.g. first 3x3 conv sees 3 pixels
    fields = [c.receptive_field for c in summary.convs]
    assert fields[0] == 3 and fields == sorted(fields)
    net4 = WyCifarNet(num_blocks=4)
    assert [c.dilation for c in summarize(net4).convs if c.dilation > 1] == [9, 5, 3]
    assert net4(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_strided_variant_has_same_parameters_and_no_dilation():
    net = WyCifarNet(downsample="strided")
    assert sum(p.numel() for p in net.parameters()) == 95_653
    convs = summarize(net).convs
    assert all(c.dilation == 1 for c in convs)
    assert [c.output_size for c in convs if c.stride == 2] == [16, 8]


@pytest.mark.parametrize(
    "norm,conv,downsample,skip_1x1", list(itertools.product(NORMS, CONV_TYPES, DOWNSAMPLING, (True, False)))
)
def test_forward_backward_every_knob(norm, conv, downsample, skip_1x1):
    torch.manual_seed(0)
    net = WyCifarNet(
        norm=norm, conv=conv, downsample=downsample, skip_1x1=skip_1x1, base_width=8, units_per_block=2, dropout=0.1
    )
    x = torch.randn(4, 3, 32, 32)
    logits = net(x)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("blocks,units,width", [(1, 1, 4), (2, 3, 8), (4, 1, 8)])
def test_depth_and_width_knobs(blocks, units, width):
    net = WyCifarNet(num_blocks=blocks, units_per_block=units, base_width=width)
    assert len(net.blocks) == blocks
    assert all(len(b.units) == units for b in net.blocks)
    assert net.classifier.in_channels == width * 2 ** (blocks - 1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"norm": "xyz"}, "model.norm='xyz'"),
        ({"conv": "depthwise_seperable"}, "model.conv='depthwise_seperable'"),
        ({"downsample": "pool"}, "model.downsample='pool'"),
        ({"dropout": 1.0}, "model.dropout=1.0"),
        ({"num_blocks": 0}, "model.num_blocks=0"),
        ({"activation": "swish"}, "model.activation='swish'"),
        ({"skip_1x1": "no"}, "model.skip_1x1='no'"),
        ({"skip_subsample": "centre"}, "model.skip_subsample='centre'"),
    ],
)
def test_bad_knobs_raise_one_clear_error(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        WyCifarNet(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_channels_last_backward_survives_odd_batches():
    """torch 2.14's oneDNN strided 1x1 conv backward corrupted memory for odd batches in NHWC;
    the skip subsamples first. Run in a subprocess: a regression would abort the interpreter."""
    import subprocess
    import sys

    code = (
        "import torch\nfrom wycifar.models import WyCifarNet\n"
        "for n in (3, 5, 31):\n"
        "  for mode in (True, False):\n"
        "    net = WyCifarNet(base_width=8).to(memory_format=torch.channels_last).train(mode)\n"
        "    x = torch.randn(n, 3, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_(True)\n"
        "    net(x).sum().backward()\n"
        "print('survived')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-500:]


def test_strided_skip_equals_a_strided_1x1_conv():
    from wycifar.models.blocks import WyConv2d

    skip = WyConv2d(8, 16, kernel_size=1, stride=2, padding=0)
    x = torch.randn(2, 8, 32, 32)
    expected = torch.nn.functional.conv2d(x, skip.layers[0].weight, stride=2)
    assert torch.allclose(skip(x), expected, atol=1e-6)


def test_dilated_depthwise_convs_run_in_fp32_under_cpu_autocast():
    torch.manual_seed(0)
    net = WyCifarNet(dropout=0.0).eval()
    dilated = [m for m in net.modules() if getattr(m, "fp32_under_cpu_autocast", False)]
    assert len(dilated) == 2  # the two downsampling convs of model=dws_dilated
    seen = {}
    hooks = [
        m.layers[0].register_forward_hook(lambda mod, i, o, k=k: seen.__setitem__(k, o.dtype))
        for k, m in enumerate(dilated)
    ]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x)
    for hook in hooks:
        hook.remove()
    assert seen == {0: torch.float32, 1: torch.float32} and low.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.allclose(low.float(), net(x), atol=0.1)  # bf16 elsewhere: close, not equal
    # Undilated and strided networks have no fp32 islands.
    assert not any(getattr(m, "fp32_under_cpu_autocast", False) for m in WyCifarNet(downsample="strided").modules())


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_activation_knob_swaps_every_activation_and_keeps_the_parameters(activation):
    """The knob changes what every unit computes (a ReLU network's outputs differ), nothing it
    holds; its in-place functions give the gradients of the out-of-place ones (float64)."""
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    net = WyCifarNet(activation=activation, dropout=0.0).double()
    relu_net = copy.deepcopy(net)
    reference = copy.deepcopy(net)
    for unit in (m for m in relu_net.modules() if isinstance(m, WyResidual)):
        unit.activation = F.relu
    assert sum(p.numel() for p in net.parameters()) == 95_653
    assert net.state_dict().keys() == WyCifarNet().state_dict().keys()
    if activation != "relu":
        assert not torch.allclose(net(x), relu_net(x))

    reference_fn = {"relu": F.relu, "gelu": F.gelu}[activation]
    units = [m for m in reference.modules() if isinstance(m, WyResidual)]
    assert len(units) == 6
    for unit in units:
        unit.activation = reference_fn
    torch.manual_seed(1)
    target = torch.randint(0, 10, (4,))
    F.cross_entropy(net(x), target).backward()
    F.cross_entropy(reference(x), target).backward()
    for p, q in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-12)
