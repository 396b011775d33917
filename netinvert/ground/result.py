"""The answer of a reverse run: inputs found, their re-checked outputs, per-item status and scores.

A result saves to a folder atomically (written to a sibling temp folder, then moved into place):
``result.json``, ``inputs.npy`` (model's own input space, one row per item in target order),
and for image inputs ``grid.png`` plus one PNG per item.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.images import save_grid, save_items
from netinvert.ground.output import atomic_folder, write_file, write_json

STATUSES = ("found", "not-reached", "none-exists", "unknown")


@dataclass
class Item:
    """One target's outcome: its description, status (one of ``STATUSES``), reason and scores."""

    target: str
    status: str
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status, "reason": self.reason, **_jsonable(self.metrics)}


@dataclass
class Result:
    """Inputs (N, *input_shape) in the model's input range, outputs from a plain forward pass, items."""

    method: str
    model: str
    inputs: torch.Tensor
    outputs: torch.Tensor
    items: list[Item]
    history: dict[str, list[float]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def statuses(self) -> list[str]:
        return [item.status for item in self.items]

    def metric(self, key: str) -> list[Any]:
        """The value of one metric for every item (``None`` where absent)."""
        return [item.metrics.get(key) for item in self.items]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "model": self.model,
            "items": [item.to_json() for item in self.items],
            "history": _jsonable(self.history),
            "timing": _jsonable(self.timing),
            **_jsonable(self.info),
        }

    def save(self, out_dir: str | os.PathLike[str], *, images: bool = True,
             extras: Callable[[Path], None] | None = None) -> Path:
        """Write the result folder; on any error nothing is left half-written.

        ``extras(folder)`` may add method-specific files; they land together with the rest.
        """
        with atomic_folder(out_dir) as tmp:
            self.write_files(tmp, images=images)
            if extras is not None:
                extras(tmp)
        return Path(out_dir)

    def write_files(self, folder: Path, *, images: bool = True) -> None:
        """Write ``result.json``, ``inputs.npy`` (and pictures) into ``folder``, each file atomically."""
        write_json(folder / "result.json", self.to_json())
        write_file(folder / "inputs.npy", lambda tmp: np.save(tmp, self.inputs.detach().cpu().numpy()))
        if images and _is_image(self.inputs):
            captions = self.labels or [item.target for item in self.items]
            save_grid(self.inputs, captions, folder / "grid.png", self.value_range)
            save_items(self.inputs, captions, folder, self.value_range)


def _is_image(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 4


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value
