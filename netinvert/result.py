"""The answer of a reverse run: inputs found, their re-checked outputs, per-item status and scores.

A result saves to a folder atomically (written to a sibling temp folder, then moved into place):
``result.json``, ``inputs.npy`` (model's own input space, one row per item in target order),
and for image inputs ``grid.png`` plus one PNG per item.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.errors import NetinvertError

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
        out = Path(out_dir)
        check_writable(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            (tmp / "result.json").write_text(json.dumps(self.to_json(), indent=2))
            np.save(tmp / "inputs.npy", self.inputs.detach().cpu().numpy())
            if images and _is_image(self.inputs):
                from netinvert.report.images import save_grid, save_items

                captions = self.labels or [item.target for item in self.items]
                save_grid(self.inputs, captions, tmp / "grid.png", self.value_range)
                save_items(self.inputs, captions, tmp, self.value_range)
            if extras is not None:
                extras(tmp)
            _move_into(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def _is_image(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 4


def check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NetinvertError(f"output path {out} is a file: give a folder name with --out")
    base = _existing(out.absolute().parent)
    if not base.is_dir() or not os.access(base, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise NetinvertError(f"cannot write to {out}: {base} is not a writable folder; choose another --out")
    try:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetinvertError(f"cannot create the parent folder of {out} ({exc.strerror}); choose another --out") from exc


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _move_into(tmp: Path, out: Path) -> None:
    """Move the finished files into ``out`` (created if missing), replacing same-named files."""
    if not out.exists():
        os.replace(tmp, out)
        tmp.mkdir()
        return
    for src in tmp.iterdir():
        os.replace(src, out / src.name)


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
