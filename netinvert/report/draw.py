"""Pictures of a network itself: a node-link diagram of a small fully connected net, else a layer diagram.

A fully connected net (only ``Linear`` layers and elementwise activations, at most ``MAX_UNITS`` units
in its widest layer) is drawn as nodes and edges: inputs on the left, each hidden layer, outputs on the
right, every weight an edge coloured by its sign (blue positive, red negative) and as wide as its size.
Any other net is drawn as a column of boxes, one per layer, with its type and output shape.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netinvert.ground.output import write_file
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model

MAX_UNITS = 32
"""The widest layer a node-link diagram draws; wider nets get the layer diagram."""
_ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Softplus, nn.Identity, nn.Flatten,
                nn.Dropout, nn.SiLU, nn.Hardtanh)


@dataclass(frozen=True)
class Dense:
    """One fully connected layer: its name, weight (out, in), bias and the activation that follows it."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    activation: str


def dense_layers(model: Model) -> list[Dense] | None:
    """The net as a chain of ``Linear`` layers, or ``None`` when it holds anything else or is too wide."""
    leaves = [(name, m) for name, m in model.module.named_modules() if name and not list(m.children())]
    chain: list[Dense] = []
    for name, module in leaves:
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().cpu().double().numpy()
            if chain and chain[-1].weight.shape[0] != weight.shape[1]:
                return None
            bias = module.bias.detach().cpu().double().numpy() if module.bias is not None else None
            chain.append(Dense(name, weight, bias, ""))
        elif isinstance(module, _ELEMENTWISE):
            if chain and not isinstance(module, (nn.Identity, nn.Flatten, nn.Dropout)):
                chain[-1] = Dense(chain[-1].name, chain[-1].weight, chain[-1].bias, type(module).__name__)
        else:
            return None
    if not chain or int(np.prod(model.input_spec.shape)) != chain[0].weight.shape[1]:
        return None
    widths = [chain[0].weight.shape[1]] + [d.weight.shape[0] for d in chain]
    return chain if max(widths) <= MAX_UNITS else None


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def node_link_figure(model: Model, chain: list[Dense]) -> Any:
    """Nodes per layer, one edge per weight: colour by sign, width and opacity by size."""
    widths = [chain[0].weight.shape[1]] + [d.weight.shape[0] for d in chain]
    tallest = max(widths)
    fig = _figure(2.2 * len(widths) + 1, max(3.0, 0.45 * tallest + 1.5))
    ax = fig.add_subplot()
    ys = [np.linspace(-(n - 1) / 2, (n - 1) / 2, n) if n > 1 else np.zeros(1) for n in widths]
    largest = max(float(np.abs(d.weight).max()) for d in chain) or 1.0
    for k, dense in enumerate(chain):
        for j in range(dense.weight.shape[0]):
            for i in range(dense.weight.shape[1]):
                w = float(dense.weight[j, i])
                size = abs(w) / largest
                ax.plot([k, k + 1], [ys[k][i], ys[k + 1][j]], color="tab:blue" if w >= 0 else "tab:red",
                        lw=0.3 + 3.5 * size, alpha=0.25 + 0.65 * size, zorder=1, solid_capstyle="round")
    names = model.class_names or []
    for k, column in enumerate(ys):
        ax.scatter(np.full(len(column), k), column, s=260, c="white", edgecolors="black", zorder=2)
        for i, y in enumerate(column):
            if k == 0:
                ax.text(k - 0.12, y, f"x{i}", ha="right", va="center", fontsize=8)
            elif k == len(ys) - 1:
                label = names[i] if i < len(names) else f"y{i}"
                ax.text(k + 0.12, y, label, ha="left", va="center", fontsize=8)
            bias = chain[k - 1].bias if k else None
            if bias is not None:
                ax.text(k, y, f"{bias[i]:+.1f}", ha="center", va="center", fontsize=6, zorder=3)
    titles = [f"input\n{widths[0]}"] + [
        f"{'layer ' * d.name.isdigit()}{d.name}\n{d.weight.shape[0]}" + (f" {d.activation}" if d.activation else "") for d in chain]
    for k, title in enumerate(titles):
        ax.text(k, (tallest - 1) / 2 + 0.9, title, ha="center", va="bottom", fontsize=9)
    ax.set_xlim(-0.8, len(widths) - 0.2)
    ax.set_ylim(-(tallest - 1) / 2 - 0.8, (tallest - 1) / 2 + 1.8)
    ax.set_axis_off()
    ax.set_title(f"{model.name}: blue = positive weight, red = negative, width = size; numbers are biases",
                 fontsize=9)
    return fig


def layer_rows(model: Model) -> list[dict[str, Any]]:
    """Every leaf layer: name, type, output shape, parameter count."""
    shapes = model.layer_shapes()
    rows = []
    for name, module in model.module.named_modules():
        if not name or list(module.children()):
            continue
        kind = getattr(module, "op_type", type(module).__name__)
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append({"layer": name, "type": str(kind), "output_shape": list(shapes.get(name, ())),
                     "parameters": int(params)})
    return rows


def layer_figure(model: Model, rows: list[dict[str, Any]]) -> Any:
    """One box per layer, top to bottom, as wide as the log of its output size."""
    from matplotlib.patches import FancyBboxPatch

    height = 0.55 * (len(rows) + 1) + 1
    fig = _figure(7, height)
    ax = fig.add_subplot()
    sizes = [math.prod(model.input_spec.shape)] + [max(1, math.prod(r["output_shape"])) for r in rows]
    largest = math.log10(max(sizes) + 1)
    entries = [("input", "", list(model.input_spec.shape), 0)] + [
        (r["layer"], r["type"], r["output_shape"], r["parameters"]) for r in rows]
    for k, ((name, kind, shape, params), size) in enumerate(zip(entries, sizes, strict=True)):
        y = -k
        w = 0.8 + 3.2 * math.log10(size + 1) / largest
        ax.add_patch(FancyBboxPatch((-w / 2, y - 0.2), w, 0.4, boxstyle="round,pad=0.02",
                                    fc="#dbe9f6" if kind else "#e6e6e6", ec="#3a6ea5"))
        shape_text = "x".join(map(str, shape)) or "-"
        ax.text(0, y, f"{name}  {kind}  {shape_text}", ha="center", va="center", fontsize=8)
        if params:
            ax.text(2.3, y, f"{params:,} params", ha="left", va="center", fontsize=7, color="#555555")
        if k:
            ax.annotate("", (0, y + 0.2), (0, y + 0.8), arrowprops={"arrowstyle": "->", "color": "#777777"})
    ax.set_xlim(-2.5, 3.6)
    ax.set_ylim(-len(entries) + 0.4, 0.6)
    ax.set_axis_off()
    ax.set_title(f"{model.name}: layers (box width ~ log of output size)", fontsize=9)
    return fig


NETWORK_PNG = "network.png"


def draw_result(model: Model) -> Result:
    """The drawing of ``model`` as a result of kind ``draw``: ``network.png`` among its files, the diagram's kind
    (``node-link`` or ``layers``) and the layer table in its info."""
    chain = dense_layers(model)
    rows = layer_rows(model)
    fig = node_link_figure(model, chain) if chain is not None else layer_figure(model, rows)
    return Result(method="draw", model=model.name, inputs=torch.empty(0), outputs=torch.empty(0), items=[],
                  info={"diagram": "node-link" if chain is not None else "layers",
                        "input_shape": list(model.input_spec.shape), "layers": rows},
                  kind="draw", files={NETWORK_PNG: png_bytes(fig)})


def draw(model: Model, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Draw ``model`` into the PNG ``path``; returns what was drawn (``kind`` node-link or layers, the layers)."""
    result = draw_result(model)
    write_file(Path(path), lambda tmp: tmp.write_bytes(result.files[NETWORK_PNG]))
    return {"kind": result.info["diagram"], "layers": result.info["layers"]}
