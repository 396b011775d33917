"""Leakage report: the scores, table and plot of ``tasks.leakage.evaluate``'s rows.

For a fixed held-out set, every listed layer and every method, the report gives mean PSNR,
SSIM, activation error and the verifier's class agreement between original and reconstruction,
as a table (``leakage.md``), a plot of PSNR against depth (``psnr_vs_depth.png``) and
``leakage.json`` (a list of rows ``{layer, method, psnr, ssim, verifier_agreement, seconds, ...}``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.images import grid_image, is_image
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.report.finish import finish
from netinvert.report.metrics import psnr, ssim


@torch.no_grad()
def quality(model: Model, original: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, list[Any]]:
    """Per-item PSNR, SSIM (images only) and verifier class agreement (``None`` without a verifier)."""
    spec = model.input_spec
    span = spec.high - spec.low
    out: dict[str, list[Any]] = {"psnr": psnr(reconstruction, original, span).tolist()}
    out["ssim"] = ssim(reconstruction, original, span).tolist() if _ssim_ok(original) else [None] * len(original)
    verifier = model.verifier
    if verifier is None:
        out["verifier_agrees"] = [None] * len(original)
    else:
        a = verifier.outputs_for(original, spec).reshape(len(original), -1).argmax(1)
        b = verifier.outputs_for(reconstruction, spec).reshape(len(original), -1).argmax(1)
        out["verifier_agrees"] = (a == b).tolist()
    return out


def _ssim_ok(x: torch.Tensor) -> bool:
    return x.dim() == 4 and min(x.shape[2:]) >= 11


def mean(values: list[Any]) -> float | None:
    """The mean of the values that are not ``None`` (``None`` when there are none)."""
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def table(rows: list[dict[str, Any]]) -> str:
    """The report's rows as a markdown table."""

    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = ["| layer | depth | method | PSNR (dB) | SSIM | verifier agreement | activation error | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['depth']} | {r['method']} | {fmt(r['psnr'], '.2f')} | "
                     f"{fmt(r['ssim'], '.4f')} | {fmt(r['verifier_agreement'], '.3f')} | "
                     f"{fmt(r['activation_error'], '.2e')} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig = Figure(figsize=(6, 4), dpi=120, layout="tight")
    ax = fig.add_subplot()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(layers.index(r["layer"]), r["psnr"]) for r in rows if r["method"] == method and r["psnr"] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer (input side to output side)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return png_bytes(fig)


def leakage_files(rows: list[dict[str, Any]], result: Result, reconstructions: list[np.ndarray],
                  title: str = "leakage", shown: int = 8) -> dict[str, bytes]:
    """``leakage.json``, ``leakage.md``, ``psnr_vs_depth.png`` and, for pictures, ``reconstructions.png`` (the
    first ``shown`` originals, then one row per layer and method) as the files of a leakage result."""
    files = {"leakage.json": (json.dumps(rows, indent=2) + "\n").encode(),
             "leakage.md": f"# {title}\n\n{table(rows)}".encode(), "psnr_vs_depth.png": _plot(rows, title)}
    if is_image(result.inputs):
        n = min(shown, len(result.inputs))
        pictures = torch.cat([result.inputs[:n]] + [torch.as_tensor(r[:n]) for r in reconstructions])
        captions = [f"original {i}" for i in range(n)]
        captions += [f"{row['layer']} {row['method']}" for row in rows for _ in range(n)]
        sheet = grid_image(pictures, captions, result.value_range, columns=n)
        if sheet is not None:
            files["reconstructions.png"] = png_bytes(sheet)
    return files


def write_leakage(rows: list[dict[str, Any]], folder: str | os.PathLike[str], result: Result,
                  reconstructions: list[np.ndarray], title: str = "leakage", shown: int = 8,
                  command: Sequence[str] | None = None) -> Path:
    """Finish a leakage report into ``folder``, which also holds its resumable parts: the result (the held-out
    originals and their outputs, one item per layer and method) with its :func:`leakage_files`, each file
    written atomically."""
    result.files.update(leakage_files(rows, result, reconstructions, title, shown))
    return finish(result, folder, command=command, in_place=True)
