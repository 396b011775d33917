"""Leakage report: the scores, table and plot of ``tasks.leakage.evaluate``'s rows.

For a fixed held-out set, every listed layer and every method, the report gives mean PSNR,
SSIM, activation error and the verifier's class agreement between original and reconstruction,
as a table (``leakage.md``), a plot of PSNR against depth (``psnr_vs_depth.png``) and
``leakage.json`` (a list of rows ``{layer, method, psnr, ssim, verifier_agreement, seconds, ...}``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.images import is_image, save_grid
from netinvert.ground.output import write_file, write_json, write_text
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
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
        out["verifier_agreement"] = [None] * len(original)
    else:
        a = verifier.judge(original, spec).reshape(len(original), -1).argmax(1)
        b = verifier.judge(reconstruction, spec).reshape(len(original), -1).argmax(1)
        out["verifier_agreement"] = (a == b).tolist()
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


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(layers.index(r["layer"]), r["psnr"]) for r in rows if r["method"] == method and r["psnr"] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer (input side to output side)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_leakage(rows: list[dict[str, Any]], folder: str | os.PathLike[str], result: Result,
                  reconstructions: list[np.ndarray], title: str = "leakage", shown: int = 8) -> Path:
    """Write ``leakage.json``, ``leakage.md``, ``psnr_vs_depth.png``, the result files (the held-out originals
    and their outputs) and ``reconstructions.png`` (originals, then one row per layer and method) into
    ``folder``, each file atomically (the folder also holds the resumable parts)."""
    folder = Path(folder)
    write_json(folder / "leakage.json", rows)
    write_text(folder / "leakage.md", f"# {title}\n\n" + table(rows))
    write_file(folder / "psnr_vs_depth.png", lambda tmp: _plot(rows, tmp, title))
    result.write_files(folder, images=False)
    if is_image(result.inputs):
        n = min(shown, len(result.inputs))
        pictures = torch.cat([result.inputs[:n]] + [torch.as_tensor(r[:n]) for r in reconstructions])
        captions = [f"original {i}" for i in range(n)]
        captions += [f"{row['layer']} {row['method']}" for row in rows for _ in range(n)]
        write_file(folder / "reconstructions.png",
                   lambda tmp: save_grid(pictures, captions, tmp, result.value_range, columns=n))
    return folder
