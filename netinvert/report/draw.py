"""Pictures of a network itself: a node-link diagram of a small fully connected net, else a layer diagram.

A fully connected net (only ``Linear`` layers and elementwise activations, at most ``MAX_UNITS`` units
in its widest layer) is drawn as nodes and edges: inputs on the left, each hidden layer, outputs on the
right, every weight an edge coloured by its sign (blue positive, red negative) and as wide as its size.
Any other net is drawn as a column of boxes in data-flow order, one per layer or operation (an ONNX graph's
nodes, a module traced by ``torch.fx``), with its type and output shape; a connection that skips ahead (a
residual add, a branch) runs as a bracket on the left. Both diagrams are as wide as their longest name.
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
from netinvert.models.final_softmax import layer_type
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
    names = model.class_names or []
    outputs = [names[i] if i < len(names) else f"y{i}" for i in range(widths[-1])]
    titles = [f"input\n{widths[0]}"] + [
        f"{'layer ' * d.name.isdigit()}{d.name}\n{d.weight.shape[0]}" + (f" {d.activation}" if d.activation else "")
        for d in chain]
    title = f"{model.name}: blue = positive weight, red = negative, width = size; numbers are biases"
    # inches per column and at each side: wide enough for every title, input name and output name
    pitch = max(2.2, max(_text_inches(t, 9) for t in titles) + 0.4)
    low = 0.12 + (_text_inches(f"x{widths[0] - 1}", 8) + 0.2) / pitch
    high = 0.12 + (max(_text_inches(o, 8) for o in outputs) + 0.2) / pitch
    low, high = max(low, 1.76 / pitch), max(high, 1.76 / pitch)  # at least the 0.8 columns of a 2.2-inch pitch
    fig = _figure(max(pitch * (len(widths) - 1 + low + high) + 0.2, _text_inches(title, 9) + 0.4),
                  max(3.0, 0.45 * tallest + 1.5))
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
    for k, column in enumerate(ys):
        ax.scatter(np.full(len(column), k), column, s=260, c="white", edgecolors="black", zorder=2)
        for i, y in enumerate(column):
            if k == 0:
                ax.text(k - 0.12, y, f"x{i}", ha="right", va="center", fontsize=8)
            elif k == len(ys) - 1:
                ax.text(k + 0.12, y, outputs[i], ha="left", va="center", fontsize=8)
            bias = chain[k - 1].bias if k else None
            if bias is not None:
                ax.text(k, y, f"{bias[i]:+.1f}", ha="center", va="center", fontsize=6, zorder=3)
    for k, heading in enumerate(titles):
        ax.text(k, (tallest - 1) / 2 + 0.9, heading, ha="center", va="bottom", fontsize=9)
    ax.set_xlim(-low, len(widths) - 1 + high)
    ax.set_ylim(-(tallest - 1) / 2 - 0.8, (tallest - 1) / 2 + 1.8)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return fig


def layer_rows(model: Model) -> list[dict[str, Any]]:
    """Every leaf layer: name, type, output shape, parameter count."""
    shapes = model.layer_shapes()
    rows = []
    for name, module in model.module.named_modules():
        if not name or list(module.children()):
            continue
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append({"layer": name, "type": layer_type(module), "output_shape": list(shapes.get(name, ())),
                     "parameters": int(params)})
    return rows


@dataclass(frozen=True)
class Step:
    """One box of the layer diagram: a layer or an operation (``add``, ``cat``), its output shape (no batch), its
    parameter count and the earlier steps whose outputs it reads."""

    name: str
    layer_type: str
    shape: tuple[int, ...]
    parameters: int
    reads: tuple[int, ...]


def flow(model: Model) -> list[Step]:
    """The network's data flow, input first: an ONNX graph from its nodes, a module by ``torch.fx`` tracing (so
    skip connections show); a module that cannot be traced, its leaf layers in forward order."""
    from netinvert.models.onnx.graph import OnnxModule

    spec = model.input_spec
    start = Step("input", "", tuple(spec.shape), 0, ())
    if isinstance(model.module, OnnxModule):
        shapes, table = model.layer_shapes(), model.layer_table()
        made = {model.module.input_name: 0}
        steps = [start]
        for name, reads, writes in model.module.flow():
            module = model.module.get_submodule(name)
            steps.append(Step(name, table[name].layer_type, tuple(shapes.get(name, ())),
                              sum(p.numel() for p in module.parameters()),
                              tuple(dict.fromkeys(made[v] for v in reads if v in made))))
            made.update({v: len(steps) - 1 for v in writes})
        return steps
    traced = _traced(model, start)
    if traced is not None:
        return traced
    return [start] + [Step(r["layer"], r["type"], tuple(r["output_shape"]), r["parameters"], (k,))
                      for k, r in enumerate(layer_rows(model))]


def _traced(model: Model, start: Step) -> list[Step] | None:
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        graph = fx.symbolic_trace(model.module)
        ShapeProp(graph).propagate(torch.zeros(1, *start.shape, device=model.device, dtype=model.dtype))
    except Exception:  # noqa: BLE001 - fx traces only some modules (no data-dependent control flow, no TorchScript)
        return None
    modules = dict(graph.named_modules())
    index: dict[fx.Node, int] = {}
    steps: list[Step] = []
    for node in graph.graph.nodes:
        shape = getattr(node.meta.get("tensor_meta"), "shape", None)
        if node.op in ("output", "get_attr") or shape is None:
            continue
        reads = tuple(dict.fromkeys(index[n] for n in node.all_input_nodes if n in index))
        if node.op == "placeholder":
            step = start
        elif node.op == "call_module":
            module = modules[str(node.target)]
            step = Step(str(node.target), type(module).__name__, tuple(shape[1:]),
                        sum(p.numel() for p in module.parameters()), reads)
        else:
            step = Step(getattr(node.target, "__name__", str(node.target)), "op", tuple(shape[1:]), 0, reads)
        index[node] = len(steps)
        steps.append(step)
    return steps


def _text_inches(text: str, size: float) -> float:
    """The width of ``text`` (its widest line) at font ``size`` in inches, as the PNG renderer draws it."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer, font = RendererAgg(1, 1, 72), FontProperties(size=size)
    lines = [line for line in text.split("\n") if line.strip()]
    return max((renderer.get_text_width_height_descent(line, font, ismath=False)[0] for line in lines),
               default=0.0) / 72


def skips(steps: list[Step]) -> list[tuple[int, int]]:
    """Every connection from a step to one that is not the next, ``(from, to)`` in order: skips and branches."""
    return sorted((i, k) for k, step in enumerate(steps) for i in step.reads if i != k - 1)


def _lanes(jumps: list[tuple[int, int]]) -> list[int]:
    """A lane per connection that skips ahead, so that connections spanning the same rows do not overlap."""
    ends: list[int] = []  # per lane, the row where its last connection ends
    lanes = []
    for i, k in jumps:
        lane = next((n for n, end in enumerate(ends) if end < i), len(ends))
        ends[lane:lane + 1] = [k]
        lanes.append(lane)
    return lanes


ROW = 0.55
"""Inches from one box of the layer diagram to the next (the diagram is drawn in inches)."""


def layer_figure(model: Model, steps: list[Step]) -> Any:
    """One box per step, top to bottom, as wide as the log of its output size (and at least as wide as its label,
    so no name is cut); straight arrows join consecutive steps, and every other connection (a skip, a branch)
    runs as a bracket on the left."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    labels = [f"{s.name}  {s.layer_type}  {'x'.join(map(str, s.shape)) or '-'}".replace("    ", "  ") for s in steps]
    counts = [f"{s.parameters:,} params" if s.parameters else "" for s in steps]
    jumps = skips(steps)
    lanes = _lanes(jumps)
    sizes = [max(1, math.prod(s.shape)) for s in steps]
    largest = math.log10(max(sizes) + 1)
    boxes = [max(0.8 + 3.2 * math.log10(size + 1) / largest, _text_inches(label, 8) + 0.25)
             for size, label in zip(sizes, labels, strict=True)]
    half = max(boxes) / 2
    left = half + 0.3 + 0.25 * (max(lanes) + 1 if lanes else 0)
    right = half + 0.3 + max(_text_inches(c, 7) for c in counts) + 0.2
    title = f"{model.name}: layers (box width ~ log of output size)" + (
        "; connections that skip ahead on the left" if jumps else "")
    width = max(left + right, _text_inches(title, 9) + 0.4)
    left += (width - left - right) / 2
    height = ROW * len(steps) + 0.4
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, ROW * len(steps) / height))
    fig.text(0.5, 1 - 0.2 / height, title, ha="center", va="center", fontsize=9)
    for k, (step, label, count, w) in enumerate(zip(steps, labels, counts, boxes, strict=True)):
        y = -k * ROW
        fill = "#e6e6e6" if not step.layer_type else "#f6e7c8" if step.layer_type == "op" else "#dbe9f6"
        ax.add_patch(FancyBboxPatch((-w / 2, y - 0.15), w, 0.3, boxstyle="round,pad=0.02", fc=fill, ec="#3a6ea5"))
        ax.text(0, y, label, ha="center", va="center", fontsize=8)
        if count:
            ax.text(half + 0.3, y, count, ha="left", va="center", fontsize=7, color="#555555")
        if k - 1 in step.reads:
            ax.annotate("", (0, y + 0.17), (0, y + ROW - 0.17), arrowprops={"arrowstyle": "->", "color": "#777777"})
    for (i, k), lane in zip(jumps, lanes, strict=True):
        x = -half - 0.15 - 0.25 * lane
        ax.plot([-boxes[i] / 2, x, x], [-i * ROW, -i * ROW, -k * ROW], color="#b35806", lw=1)
        ax.annotate("", (-boxes[k] / 2 - 0.02, -k * ROW), (x, -k * ROW),
                    arrowprops={"arrowstyle": "->", "color": "#b35806"})
    ax.set_xlim(-left, width - left)
    ax.set_ylim(-(len(steps) - 0.5) * ROW, 0.5 * ROW)
    ax.set_axis_off()
    return fig


NETWORK_PNG = "network.png"


def draw_result(model: Model) -> Result:
    """The drawing of ``model`` as a result of kind ``draw``: ``network.png`` among its files, the diagram's kind
    (``node-link`` or ``layers``), the layer table and the connections that skip ahead in its info."""
    chain = dense_layers(model)
    info: dict[str, Any] = {"diagram": "node-link" if chain is not None else "layers",
                            "input_shape": list(model.input_spec.shape), "layers": layer_rows(model)}
    if chain is not None:
        fig = node_link_figure(model, chain)
    else:
        steps = flow(model)
        fig = layer_figure(model, steps)
        info["skips"] = [[steps[i].name, steps[k].name] for i, k in skips(steps)]
    return Result(method="draw", model=model.name, inputs=torch.empty(0), outputs=torch.empty(0), items=[],
                  info=info, kind="draw", files={NETWORK_PNG: png_bytes(fig)})


def draw(model: Model, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Draw ``model`` into the PNG ``path``; returns what was drawn: the ``diagram`` (node-link or layers) and the
    layers."""
    result = draw_result(model)
    write_file(Path(path), lambda tmp: tmp.write_bytes(result.files[NETWORK_PNG]))
    return {"diagram": result.info["diagram"], "layers": result.info["layers"]}
