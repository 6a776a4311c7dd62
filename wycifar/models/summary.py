"""A torchsummary-style table of a network, plus receptive field and output size of every conv.

Rows are recorded by forward hooks, in the order modules finish their forward pass, on every
module except the root and plain containers (Sequential, ModuleList), as torchsummary did when
it printed the reference table. Receptive fields are computed from each convolution's kernel,
dilation and stride along the main path (skip projections are 1x1 and never widen it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from wycifar.models.modes import eval_mode

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class LayerRow:
    name: str  # e.g. "Conv2d-1"
    output_shape: tuple[int, ...]  # batch dimension printed as -1
    params: int


@dataclass
class ConvGeometry:
    name: str
    kernel: int
    stride: int
    padding: int
    dilation: int
    effective_kernel: int
    output_size: int
    receptive_field: int
    jump: int


@dataclass
class Summary:
    rows: list[LayerRow] = field(default_factory=list)
    convs: list[ConvGeometry] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    input_size_mb: float = 0.0
    forward_backward_mb: float = 0.0
    params_mb: float = 0.0

    @property
    def total_mb(self) -> float:
        return self.input_size_mb + self.forward_backward_mb + self.params_mb

    def table(self) -> str:
        line, dline = "-" * 64, "=" * 64
        out = [line, f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}", dline]
        for row in self.rows:
            shape = "[" + ", ".join(str(s) for s in row.output_shape) + "]"
            out.append(f"{row.name:>20}  {shape:>25} {row.params:>15,}")
        out += [
            dline,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            line,
            f"Input size (MB): {self.input_size_mb:.2f}",
            f"Forward/backward pass size (MB): {self.forward_backward_mb:.2f}",
            f"Params size (MB): {self.params_mb:.2f}",
            f"Estimated Total Size (MB): {self.total_mb:.2f}",
            line,
        ]
        return "\n".join(out)

    def receptive_field_table(self) -> str:
        head = f"{'conv':>12} {'k':>3} {'s':>3} {'p':>3} {'d':>3} {'k_eff':>6} {'out':>5} {'RF':>5} {'jump':>5}"
        out = ["-" * len(head), head, "-" * len(head)]
        for c in self.convs:
            out.append(
                f"{c.name:>12} {c.kernel:>3} {c.stride:>3} {c.padding:>3} {c.dilation:>3} "
                f"{c.effective_kernel:>6} {c.output_size:>5} {c.receptive_field:>5} {c.jump:>5}"
            )
        out.append("-" * len(head))
        return "\n".join(out)


def _on_main_path(qualified_name: str) -> bool:
    return ".skip." not in f".{qualified_name}."


def summarize(model: nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32)) -> Summary:
    """Run one forward pass of a (1, *input_shape) zero tensor and record the table."""
    summary = Summary()
    names = {module: name for name, module in model.named_modules()}
    geometry = {"rf": 1, "jump": 1}
    hooks = []
    ran: list[nn.Module] = []

    def hook(module: nn.Module, _inputs, output) -> None:
        kind = type(module).__name__
        index = len(summary.rows) + 1
        ran.append(module)
        params = sum(p.numel() for p in module.parameters(recurse=False))
        summary.rows.append(LayerRow(f"{kind}-{index}", (-1, *output.shape[1:]), params))
        if isinstance(module, nn.Conv2d) and _on_main_path(names[module]):
            k, s, d, p = module.kernel_size[0], module.stride[0], module.dilation[0], module.padding[0]
            k_eff = d * (k - 1) + 1
            geometry["rf"] += (k_eff - 1) * geometry["jump"]
            geometry["jump"] *= s
            summary.convs.append(
                ConvGeometry(f"Conv2d-{index}", k, s, p, d, k_eff, output.shape[-1], geometry["rf"], geometry["jump"])
            )

    for module in model.modules():
        if module is model or type(module) in CONTAINERS:
            continue
        hooks.append(module.register_forward_hook(hook))
    try:
        device = next(model.parameters()).device
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()

    # the parameters of the layers that ran, as the table lists them
    used = {id(p): p for module in ran for p in module.parameters(recurse=False)}.values()
    summary.total_params = sum(p.numel() for p in used)
    summary.trainable_params = sum(p.numel() for p in used if p.requires_grad)
    mb = 4 / 1024**2  # float32 bytes, as torchsummary assumes
    summary.input_size_mb = abs(int(torch.tensor(input_shape).prod())) * mb
    summary.forward_backward_mb = 2 * sum(abs(int(torch.tensor(r.output_shape[1:]).prod())) for r in summary.rows) * mb
    summary.params_mb = summary.total_params * mb
    return summary
