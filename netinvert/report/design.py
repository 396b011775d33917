"""Pictures of inverse-design results: arm poses drawn over each other, solutions on a level set of f."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from netinvert.data.simulators import ARM_REACH, arm_joints
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Result


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _groups(result: Result) -> list[tuple[str, list[float], np.ndarray, list[str]]]:
    """Per target: its description, y, its solutions (T, d) and their statuses."""
    samples = int(result.info["options"]["samples"])
    out = []
    for i, t in enumerate(result.info["targets"]):
        rows = slice(i * samples, (i + 1) * samples)
        x = result.inputs[rows].reshape(samples, -1).double().numpy()
        out.append((t["target"], t["y"], x, [it.status for it in result.items[rows]]))
    return out


def arm_poses_png(result: Result) -> bytes:
    """One panel per target: every solution's arm pose (rail, joints, end point) and the target point."""
    groups = _groups(result)
    fig = _figure(4.2 * len(groups), 4.2)
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, (label, y, x, statuses) in zip(axes[0], groups, strict=True):
        joints = arm_joints(x)
        for pose, status in zip(joints, statuses, strict=True):
            ax.plot(pose[:, 0], pose[:, 1], "-o", ms=2, lw=1, alpha=0.35,
                    color="tab:blue" if status == "found" else "tab:gray")
        ax.axvline(0.0, color="k", lw=2, alpha=0.6)
        ax.axvline(ARM_REACH, color="tab:red", lw=0.8, ls="--", alpha=0.6)
        ax.plot([y[0]], [y[1]], "*", color="tab:red", ms=14, label="target")
        ax.set_aspect("equal")
        ax.set_xlim(-0.5, 2.6)
        ax.set_title(f"{label}\n{sum(s == 'found' for s in statuses)}/{len(statuses)} found", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_xlabel("x (rail at 0, reach 2.0 dashed)")
    return png_bytes(fig)


def level_set_png(result: Result, model: torch.nn.Module, grid: int = 200) -> bytes:
    """One panel per target of a 2-input model: f over the search box, its level set f = y, the solutions."""
    groups = _groups(result)
    box = result.info["search_box"]
    lo, hi = np.asarray(box["low"]), np.asarray(box["high"])
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    pts = torch.as_tensor(np.stack([g0.ravel(), g1.ravel()], axis=1), dtype=torch.float32)
    with torch.no_grad():
        f = model(pts).reshape(len(pts), -1)[:, 0].cpu().numpy().reshape(grid, grid)
    fig = _figure(4.4 * len(groups), 4.0)
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, (label, y, x, statuses) in zip(axes[0], groups, strict=True):
        image = ax.contourf(g0, g1, f, levels=30, cmap="viridis")
        ax.contour(g0, g1, f, levels=[y[0]], colors="white", linewidths=1.2, linestyles="solid")
        found = np.array([s == "found" for s in statuses])
        ax.scatter(x[found, 0], x[found, 1], s=14, c="tab:red", edgecolors="white", linewidths=0.5, label="found")
        if (~found).any():
            ax.scatter(x[~found, 0], x[~found, 1], s=14, c="tab:gray", label="not reached")
        ax.set_title(f"{label}: {int(found.sum())}/{len(found)} found", fontsize=9)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return png_bytes(fig)
