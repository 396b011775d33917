"""How each layer bends the input plane of a 2-D-input classifier: the answer to "graphically, how does
the activation function project the input onto the classification space?".

A grid of lines over the input box and the data points (when the model knows its data) go through
the network; every layer with a flat output gets a panel showing where they land, projected to 2-D
with PCA when the layer is wider (the panel title gives the variance the projection keeps). The
background points carry the decision region (predicted class) they came from, so the panels show the
regions being pulled apart until the last layer separates them; for a regression network (output
activation ``none``) they carry the value of its first output instead, on a colour scale.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_file
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model

LINES = 13
"""Grid lines per direction."""
POINTS_PER_LINE = 120
REGION_SIDE = 70
"""Background points per side that carry the decision regions."""
MAX_DATA = 600


def _projection(values: np.ndarray) -> tuple[np.ndarray, float]:
    """(n, d) -> (n, 2) by PCA when d > 2 (and the fraction of variance kept); d <= 2 is shown as is."""
    if values.shape[1] == 1:
        return np.concatenate([values, np.zeros_like(values)], axis=1), 1.0
    if values.shape[1] == 2:
        return values, 1.0
    centred = values - values.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float((s**2).sum()) or 1.0
    return centred @ vt[:2].T, float((s[:2] ** 2).sum()) / total


def flat_layers(model: Model) -> list[str]:
    """Leaf layers with a flat (vector) output, in forward order."""
    shapes = model.layer_shapes()
    return [name for name, module in model.module.named_modules()
            if name and not list(module.children()) and len(shapes.get(name, ())) == 1]


def _box(model: Model, data: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if data is not None and len(data):
        lo, hi = data.min(axis=0), data.max(axis=0)
        pad = 0.1 * (hi - lo)
        return lo - pad, hi + pad
    spec = model.input_spec
    return np.full(2, spec.low, dtype=np.float64), np.full(2, spec.high, dtype=np.float64)


WARP_PNG = "warp.png"


def warp(model: Model, path: str | os.PathLike[str], seed: int = 0) -> dict[str, Any]:
    """Draw the PNG strip (input plane, then one panel per flat layer) at ``path``; returns what each panel shows."""
    result = warp_result(model, seed)
    write_file(Path(path), lambda tmp: tmp.write_bytes(result.files[WARP_PNG]))
    return {"model": model.name, **{k: v for k, v in result.info.items() if k != "seed"}}


def warp_result(model: Model, seed: int = 0) -> Result:
    """The strip as a result of kind ``warp``: ``warp.png`` among its files, what each panel shows in its info."""
    if tuple(model.input_spec.shape) != (2,):
        raise NetinvertError(f"warp needs a model with two inputs (a point in the plane); {model.name} takes "
                             f"{tuple(model.input_spec.shape)}: try --model moons-relu")
    data = model.training_inputs()
    if data is not None:
        data = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
        pick = np.random.default_rng(seed).permutation(len(data))[:MAX_DATA]
        data = data[pick]
    lo, hi = _box(model, data)
    t = np.linspace(0, 1, POINTS_PER_LINE)
    lines = [np.stack([np.full_like(t, lo[0] + a * (hi[0] - lo[0])), lo[1] + t * (hi[1] - lo[1])], 1)
             for a in np.linspace(0, 1, LINES)]
    lines += [np.stack([lo[0] + t * (hi[0] - lo[0]), np.full_like(t, lo[1] + a * (hi[1] - lo[1]))], 1)
              for a in np.linspace(0, 1, LINES)]
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], REGION_SIDE), np.linspace(lo[1], hi[1], REGION_SIDE))
    region = np.stack([g0.ravel(), g1.ravel()], 1)
    pieces = [region, *lines] + ([data] if data is not None else [])
    points = np.concatenate(pieces)
    layers = flat_layers(model)
    with torch.no_grad():
        out, acts = model.capture(torch.as_tensor(points, dtype=torch.float32), layers)
    colours, legend = _colours(model, out.reshape(len(points), -1).double().cpu().numpy(), len(region))
    panels = [("input", points, 1.0)]
    for name in layers:
        values = acts[name].reshape(len(points), -1).double().cpu().numpy()
        projected, kept = _projection(values)
        panels.append((f"{name} ({values.shape[1]})", projected, kept))
    fig = _strip(model, panels, colours, legend, len(region), [len(line) for line in lines],
                 len(data) if data is not None else 0)
    info = {"seed": seed, "box": [lo.tolist(), hi.tolist()], "data_points": 0 if data is None else len(data),
            "colour": legend["colour"], **({"output_range": legend["range"]} if "range" in legend else {}),
            "layers": [{"panel": title, "pca_variance_kept": round(kept, 4)} for title, _, kept in panels]}
    return Result(method="warp", model=model.name, inputs=torch.empty(0), outputs=torch.empty(0), items=[],
                  info=info, kind="warp", files={WARP_PNG: png_bytes(fig)})


def _colours(model: Model, outputs: np.ndarray, n_region: int) -> tuple[np.ndarray, dict[str, Any]]:
    """An RGBA colour per point and what it means: the predicted class of a classifier, the value of the first
    output of a regression network (``output_activation`` ``none``), on a colour scale over the input box."""
    import matplotlib
    from matplotlib.colors import Normalize

    names = model.class_names or []
    if model.output_activation == "none":
        value = outputs[:, 0]
        low, high = float(value[:n_region].min()), float(value[:n_region].max())
        norm = Normalize(low, high if high > low else low + 1.0)
        label = f"output {names[0] if names else 'y0'}"
        return matplotlib.colormaps["viridis"](norm(value)), {"colour": label, "range": [low, high], "norm": norm}
    predicted = outputs.argmax(1)
    classes = sorted(set(predicted.tolist()))
    shown = {k: names[k] if k < len(names) else f"class {k}" for k in classes}
    return matplotlib.colormaps["tab10"](predicted % 10), {"colour": "predicted class", "classes": shown}


def _strip(model: Model, panels: list[tuple[str, np.ndarray, float]], colours: np.ndarray, legend: dict[str, Any],
           n_region: int, line_sizes: list[int], n_data: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(3.2 * len(panels), 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, xy, kept) in zip(axes, panels, strict=True):
        region = xy[:n_region]
        ax.scatter(region[:, 0], region[:, 1], c=colours[:n_region], s=6, alpha=0.18, linewidths=0, rasterized=True)
        start = n_region
        for size in line_sizes:
            ax.plot(xy[start : start + size, 0], xy[start : start + size, 1], color="black", lw=0.4, alpha=0.55)
            start += size
        if n_data:
            pts = xy[start : start + n_data]
            ax.scatter(pts[:, 0], pts[:, 1], c=colours[start : start + n_data], s=7, edgecolors="black",
                       linewidths=0.25)
        ax.set_title(title + ("" if kept >= 0.9999 else f"\nPCA keeps {kept:.0%}"), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if "norm" in legend:
        fig.colorbar(ScalarMappable(legend["norm"], "viridis"), ax=axes[-1], shrink=0.8, label=legend["colour"])
    else:
        cmap = matplotlib.colormaps["tab10"]
        handles = [Line2D([], [], marker="o", ls="", color=cmap(k % 10), label=name)
                   for k, name in legend["classes"].items()]
        axes[0].legend(handles=handles, fontsize=7, loc="lower left", title="decision region", title_fontsize=7)
    fig.suptitle(f"{model.name}: the input plane pushed through each layer", fontsize=10)
    return fig
