"""The answer of a reverse run: inputs found, their re-checked outputs, per-item status and scores.

A result saves to a folder atomically (written to a sibling temp folder, then moved into place):
``result.json`` (schema version ``SCHEMA``), ``inputs.npy`` (model's own input space, one row per
item in target order), ``outputs.npy``, and for image inputs ``grid.png`` plus one PNG per item.
``Result.load(folder)`` reopens it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError
from netinvert.ground.images import is_image, save_grid, save_items
from netinvert.ground.output import atomic_folder, write_file, write_json

STATUSES = ("found", "not-reached", "none-exists", "unknown")
SCHEMA = 1
_OWN_KEYS = ("schema", "method", "model", "items", "history", "timing", "labels", "value_range")


@dataclass
class Item:
    """One target's outcome: its description, status (one of ``STATUSES``), reason and scores."""

    target: str
    status: str
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status, "reason": self.reason, **_jsonable(self.metrics)}


@dataclass(repr=False)
class Result:
    """Inputs (N, *input_shape) in the model's input range, outputs from a plain forward pass, items.

    Inputs and outputs are kept on the CPU, whatever device the method ran on.
    """

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

    def __post_init__(self) -> None:
        # Results live on the CPU, whatever device the method ran on.
        self.inputs = self.inputs.detach().cpu()
        self.outputs = self.outputs.detach().cpu()

    @property
    def statuses(self) -> list[str]:
        return [item.status for item in self.items]

    def metric(self, key: str) -> list[Any]:
        """The value of one metric for every item (``None`` where absent)."""
        return [item.metrics.get(key) for item in self.items]

    def __repr__(self) -> str:
        counts = ", ".join(f"{self.statuses.count(s)} {s}" for s in STATUSES if s in self.statuses)
        return (f"Result({self.method} on {self.model}: {len(self.items)} items ({counts or 'none'}), "
                f"inputs {tuple(self.inputs.shape)})")

    def _repr_html_(self) -> str:
        """The result's page, compact, for notebooks (Jupyter calls this to display a result)."""
        from netinvert.ground.page import result_html

        return result_html(self, compact=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": self.method,
            "model": self.model,
            "items": [item.to_json() for item in self.items],
            "history": _jsonable(self.history),
            "timing": _jsonable(self.timing),
            "labels": self.labels,
            "value_range": list(self.value_range),
            **_jsonable(self.info),
        }

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Result:
        """Reopen a saved result folder (``result.json``, ``inputs.npy``, ``outputs.npy``)."""
        folder = Path(folder)
        try:
            data = json.loads((folder / "result.json").read_text())
            inputs = torch.from_numpy(np.load(folder / "inputs.npy"))
            outputs_file = folder / "outputs.npy"
            outputs = torch.from_numpy(np.load(outputs_file)) if outputs_file.exists() else torch.empty(0)
        except (OSError, ValueError) as exc:
            raise NetinvertError(f"{folder} holds no readable netinvert result ({exc}); give a folder that a "
                                 "netinvert command wrote") from None
        items = []
        for raw in data.get("items", []):
            fields = dict(raw)
            items.append(Item(target=fields.pop("target"), status=fields.pop("status"),
                              reason=fields.pop("reason", ""), metrics=fields))
        low, high = data.get("value_range") or (0.0, 1.0)
        return cls(method=data.get("method", "?"), model=data.get("model", "?"), inputs=inputs, outputs=outputs,
                   items=items, history=data.get("history") or {}, timing=data.get("timing") or {},
                   info={k: v for k, v in data.items() if k not in _OWN_KEYS}, labels=data.get("labels"),
                   value_range=(float(low), float(high)))

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
        write_file(folder / "outputs.npy", lambda tmp: np.save(tmp, self.outputs.detach().cpu().numpy()))
        if images and is_image(self.inputs):
            captions = self.labels or [item.target for item in self.items]
            save_grid(self.inputs, captions, folder / "grid.png", self.value_range)
            save_items(self.inputs, captions, folder, self.value_range)


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
