"""The network drawn from its ONNX graph: one box per operator, as DOT, rendered to SVG."""

from __future__ import annotations

import html
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx

from wycifar.files import atomic_path

log = logging.getLogger("wycifar.onnx")


def onnx_to_dot(model: onnx.ModelProto, title: str) -> str:
    """A DOT graph of the ONNX nodes: one box per operator, edges along the tensors between them."""
    graph = model.graph
    initialisers = {i.name: i for i in graph.initializer}
    producer: dict[str, str] = {}
    lines = [
        "digraph onnx {",
        f'  graph [rankdir=TB, label="{html.escape(title)}", labelloc=t, fontsize=16];',
        '  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe", fontname="Helvetica", fontsize=10];',
    ]
    for value in graph.input:
        if value.name not in initialisers:
            lines.append(f'  "in:{value.name}" [label="input: {value.name}", shape=oval, fillcolor="#d4edda"];')
            producer[value.name] = f"in:{value.name}"
    for index, node in enumerate(graph.node):
        node_id = f"n{index}"
        details = []
        for attr in node.attribute:
            if attr.name in ("dilations", "strides", "group", "kernel_shape", "pads"):
                value = onnx.helper.get_attribute_value(attr)
                details.append(f"{attr.name}={list(value) if hasattr(value, '__len__') else value}")
        weights = [initialisers[i] for i in node.input if i in initialisers]
        if weights:
            details.append("W" + "x".join(str(d) for d in weights[0].dims))
        label = "\\n".join([node.op_type, *details])
        lines.append(f'  {node_id} [label="{label}"];')
        for tensor in node.input:
            if tensor in producer:
                lines.append(f'  "{producer[tensor]}" -> {node_id};')
        for tensor in node.output:
            producer[tensor] = node_id
    for value in graph.output:
        lines.append(f'  "out:{value.name}" [label="output: {value.name}", shape=oval, fillcolor="#f8d7da"];')
        if value.name in producer:
            lines.append(f'  "{producer[value.name]}" -> "out:{value.name}";')
    lines.append("}")
    return "\n".join(lines)


class NotDrawn(Exception):
    """The renderer ran but wrote no drawing; carries its last line of stderr."""


def find_dot() -> str | None:
    """Graphviz's `dot`, or the graphviz-pure wheel's dot-compatible binary installed beside Python."""
    for candidate in (
        shutil.which("dot"),
        shutil.which("graphviz-pure"),
        str(Path(sys.executable).parent / "graphviz-pure"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def render_svg(dot_source: str, svg_path: Path) -> bool:
    dot = find_dot()
    if dot is None:
        log.warning(
            "no graph renderer found (install graphviz or the graphviz-pure wheel): %s not drawn", svg_path.name
        )
        return False
    try:
        with atomic_path(svg_path) as tmp:
            result = subprocess.run(
                [dot, "-Tsvg", "-o", str(tmp)], input=dot_source, text=True, capture_output=True, timeout=120
            )
            if result.returncode != 0 or not tmp.is_file():
                # raised, not returned: leaving the block normally would rename the failed output
                raise NotDrawn(result.stderr.strip().splitlines()[-1:] or "")
    except NotDrawn as failure:
        log.warning("%s could not draw %s: %s", dot, svg_path.name, failure)
        return False
    return True


def draw_model(net, path: Path, params: int, accuracy: float | None) -> Path | None:
    """The drawing of an exported network beside its ONNX file (`path`.svg), titled with its size
    and test accuracy; None where no renderer drew it."""
    svg = path.with_name(path.name + ".svg")
    title = f"{type(net).__name__}: {params:,} parameters" + (
        f", test accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""
    )
    return svg if render_svg(onnx_to_dot(onnx.load(str(path)), title), svg) else None
