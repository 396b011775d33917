"""The ``bounds`` method: a certified over-approximation of the preimage of an output set.

For low-dimensional inputs the domain box is split by ``solvers.input_split.preimage_search``,
the branch-and-bound on the input box that ``method="exact"`` uses too (the same CROWN bounder
for ReLU, sigmoid, tanh and softplus chains and for graphs, the same split-dimension rule). A box
whose bounds refute every disjunct is *outside* (no input in it reaches the set); a box whose
bounds satisfy some disjunct is *inside* (every input reaches it); the rest are *uncertain* once
the box budget is spent. The preimage lies in inside + uncertain (the over-approximation) and
contains inside (the under-approximation).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import option, takes
from netinvert.ground.output import write_file
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Item, Result
from netinvert.solvers.problem import as_output_set, box_of, checker_of, joined, network_of
from netinvert.solvers.search.input_split import preimage_search

MAX_DIM = 8


def _volume(boxes: np.ndarray) -> float:
    return float(np.prod(boxes[:, 1] - boxes[:, 0], axis=1).sum()) if len(boxes) else 0.0


@dataclass(frozen=True)
class Options:
    """The options of method ``bounds``."""

    max_boxes: int = option(4000, "Input boxes to examine per target.", at_least=1)
    plot: str | os.PathLike[str] | None = option(None, "Also draw the boxes of a 2-D input into this PNG.",
                                                 cli=False, keyed=False, default_text="no file")


@takes(Options)
def run(
    model: Any, targets: Any, domain: Any = None, *, max_boxes: int, plot: str | os.PathLike[str] | None
) -> Result:
    """``invert(model, targets, domain, method="bounds")``: one item per target with certified volumes.

    ``found``: a certified-inside box exists (its centre is the input); ``none-exists``: every box
    was refuted; ``unknown``: only uncertain boxes remain. ``info["preimage"]`` holds the boxes.
    """
    spec = model.input_spec
    lo, hi = box_of(model, domain)
    if lo.size > MAX_DIM:
        raise NetinvertError(
            f"method 'bounds' splits the input box and scales to about {MAX_DIM} inputs; {model.name} has {lo.size}: "
            "use method='exact' for high-dimensional inputs"
        )
    net = network_of(model)
    check = checker_of(model, net)
    total = float(np.prod(hi - lo))
    items, rows, outs, pre = [], [], [], []
    t0 = time.perf_counter()
    for target in targets if isinstance(targets, (list, tuple)) else [targets]:
        oset, name = as_output_set(model, target, net.num_outputs)
        solved, checked, oset = joined(net, check, oset)  # rows that read the input: on [outputs, input]
        ts = time.perf_counter()
        search = preimage_search(solved, lo, hi, oset, max_boxes=max_boxes)
        inside, uncertain = search.inside, search.uncertain
        boxes = np.concatenate([inside, uncertain])
        x = np.full(lo.size, np.nan)
        if len(inside):
            x = inside[np.argmax(np.prod(inside[:, 1] - inside[:, 0], axis=1))].mean(axis=0)
        elif len(uncertain):
            centres = uncertain.mean(axis=1)
            ok = oset.contains(checked(centres)[1], 1e-9)
            if ok.any():
                x = centres[int(np.argmax(ok))]
        y = check(x[None])[1][0] if np.all(np.isfinite(x)) else np.full(net.num_outputs, np.nan)
        if np.all(np.isfinite(x)):
            status, reason = "found", ""
        elif not len(boxes):
            status, reason = "none-exists", ""
        else:
            status, reason = "unknown", f"box budget spent with {len(uncertain)} uncertain boxes"
        v_over, v_under = _volume(boxes), _volume(inside)
        items.append(
            Item(
                name,
                status,
                reason,
                {
                    "volume_over": v_over,
                    "volume_under": v_under,
                    "fraction_over": v_over / total if total else math.nan,
                    "fraction_under": v_under / total if total else math.nan,
                    "boxes_inside": int(len(inside)),
                    "boxes_uncertain": int(len(uncertain)),
                    "boxes_examined": search.stats["boxes"],
                    "batches": search.stats["batches"],
                    "max_depth": search.stats["max_depth"],
                    "stage": "bounds",
                    "solve_seconds": time.perf_counter() - ts,
                },
            )
        )
        rows.append(x)
        outs.append(y)
        pre.append({"target": name, "inside": inside, "uncertain": uncertain, "domain": [lo, hi]})
    result = Result(
        method="bounds",
        model=model.name,
        inputs=torch.as_tensor(np.stack(rows)).float().reshape(-1, *spec.shape),
        outputs=torch.as_tensor(np.stack(outs)).float(),
        items=items,
        timing={"total_s": time.perf_counter() - t0},
        info={"preimage": pre},
        value_range=(spec.low, spec.high),
    )
    if plot is not None:
        plot_preimage(model, result, plot)
    return result


def plot_preimage(model: Any, result: Result, path: str | os.PathLike[str], which: int = 0, grid: int = 300) -> Path:
    """Write :func:`preimage_png` to ``path``."""
    png = preimage_png(model, result, which, grid)
    return write_file(path, lambda tmp: tmp.write_bytes(png))


def preimage_png(model: Any, result: Result, which: int = 0, grid: int = 300) -> bytes:
    """PNG of a 2-D model's decision regions with the certified inside (green) and uncertain (orange) boxes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    pre = result.info["preimage"][which]
    lo, hi = (np.asarray(v, dtype=np.float64) for v in pre["domain"])
    if lo.size != 2:
        raise NetinvertError(f"preimage plots need 2-D inputs; {model.name} has {lo.size}")
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    pts = torch.as_tensor(np.stack([g0.ravel(), g1.ravel()], axis=1), dtype=torch.float32)
    with torch.no_grad():
        cls = (
            model(pts.reshape(-1, *model.input_spec.shape))
            .reshape(len(pts), -1)
            .argmax(dim=1)
            .numpy()
            .reshape(grid, grid)
        )
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    ax.contourf(g0, g1, cls, levels=np.arange(cls.max() + 2) - 0.5, cmap="Pastel1", alpha=0.8)
    for box in np.asarray(pre["uncertain"], dtype=np.float64).reshape(-1, 2, 2):
        ax.add_patch(Rectangle(box[0], *(box[1] - box[0]), fill=True, fc="orange", ec="darkorange", lw=0.3, alpha=0.6))
    for box in np.asarray(pre["inside"], dtype=np.float64).reshape(-1, 2, 2):
        ax.add_patch(
            Rectangle(box[0], *(box[1] - box[0]), fill=True, fc="tab:green", ec="darkgreen", lw=0.3, alpha=0.5)
        )
    item = result.items[which]
    ax.set_title(
        f"{pre['target']}: inside {item.metrics['fraction_under']:.1%}, over-approx {item.metrics['fraction_over']:.1%}"
    )
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    return png_bytes(fig)
