"""The answer of a reverse run: inputs found, their re-checked outputs, per-item status and scores.

A result knows its ``kind`` (which run made it, one of ``KINDS``) and carries every further file of its
folder in ``files`` (pictures, counterexamples, tables), so it is saved once and its page is drawn from
memory. It saves to a folder atomically (written to a sibling temp folder, then moved into place):
``result.json`` (schema version ``SCHEMA``), ``inputs.npy`` (model's own input space, one row per
item in target order), ``outputs.npy``, for image inputs ``grid.png`` plus one PNG per item, the
``files`` and ``report.html``. ``Result.load(folder)`` reopens it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError
from netinvert.ground.images import is_image, save_grid, save_items
from netinvert.ground.output import atomic_folder, write_file, write_json, write_text

STATUSES = ("found", "not-reached", "none-exists", "unknown", "error")
"""``error``: the item could not be run at all (a row of a VNN-COMP family whose files are unreadable)."""
KINDS = ("result", "imagine", "sample", "invert", "atlas", "patterns", "leakage", "solve", "solve-family",
         "preimage", "design", "draw", "warp")
"""Which run made a result, and so which view its page gets (``result``: any other, the plain view)."""
SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
"""Schema 1 (before kinds and files were recorded) still opens; its kind follows from its method."""
REPORT = "report.html"
_OWN_KEYS = ("schema", "kind", "method", "model", "items", "history", "timing", "labels", "value_range", "files")
_RENAMED = (  # read back: result.json keys of netinvert 0.1.0 (section of the file, old name, name now)
    ("realism", "judge", "verifier"),  # read back
    ("realism", "judge_agreement", "verifier_agreement"),  # read back
    ("realism", "judge_prob", "verifier_prob"),  # read back
    ("atlas", "kind", "unit"),  # read back
    ("options", "starts", "restarts"),  # read back
    ("options", "stages", "phases"),  # read back
    ("options", "kind", "pattern"),  # read back
)
_NO_ITEM_PICTURES = ("atlas", "leakage")
"""Kinds whose inputs are shown their own way (an atlas's sheet and units, leakage's reconstructions)."""


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

    Inputs and outputs are kept on the CPU, whatever device the method ran on. ``kind`` says which run made
    the result (one of ``KINDS``); ``files`` maps further file names of its folder to their bytes (PNG
    pictures shown on its page, ``counterexample.txt``, ``patterns.npy``, ...).
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
    kind: str = "result"
    files: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise NetinvertError(f"unknown result kind {self.kind!r}: choose one of {', '.join(KINDS)}")
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
        from netinvert.ground.views import notebook_html

        return notebook_html(self)

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` of the result: its own fields, then every ``info`` entry not named like one."""
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "method": self.method,
            "model": self.model,
            "items": [item.to_json() for item in self.items],
            "history": _jsonable(self.history),
            "timing": _jsonable(self.timing),
            "labels": self.labels,
            "value_range": list(self.value_range),
            "files": sorted(self.files),
            **{k: v for k, v in _jsonable(self.info).items() if k not in _OWN_KEYS},
        }

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Result:
        """Reopen a folder that a netinvert command (or :meth:`save`) wrote."""
        folder = Path(folder)
        try:
            data = json.loads((folder / "result.json").read_text())
            schema = data.get("schema") if isinstance(data, dict) else None
            if schema is not None and schema not in READABLE_SCHEMAS:
                raise NetinvertError(f"{folder}/result.json has schema {schema!r}, and this netinvert reads schema "
                                     f"{', '.join(map(str, READABLE_SCHEMAS))}: open it with the netinvert that "
                                     "wrote it, or rerun the command")
            if schema is None:
                raise ValueError("result.json names no schema")
            inputs = torch.from_numpy(np.load(folder / "inputs.npy"))
            outputs_file = folder / "outputs.npy"
            outputs = torch.from_numpy(np.load(outputs_file)) if outputs_file.exists() else torch.empty(0)
            names = data.get("files") if schema != 1 else _schema1_files(folder)
            files = {name: (folder / name).read_bytes() for name in names or () if Path(name).name == name}
        except (OSError, ValueError) as exc:
            raise NetinvertError(f"{folder} holds no readable netinvert result ({exc}); give a folder that a "
                                 "netinvert command wrote") from None
        _rename_old_keys(data)
        items = []
        for raw in data.get("items", []):
            fields = dict(raw)
            items.append(Item(target=fields.pop("target"), status=fields.pop("status"),
                              reason=fields.pop("reason", ""), metrics=fields))
        low, high = data.get("value_range") or (0.0, 1.0)
        return cls(method=data.get("method", "?"), model=data.get("model", "?"), inputs=inputs, outputs=outputs,
                   items=items, history=data.get("history") or {}, timing=data.get("timing") or {},
                   info={k: v for k, v in data.items() if k not in _OWN_KEYS}, labels=data.get("labels"),
                   value_range=(float(low), float(high)), kind=data.get("kind") or _schema1_kind(data), files=files)

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the result folder whole, replacing an earlier result there; on any error nothing is left
        half-written."""
        out = Path(out_dir)
        with atomic_folder(out) as tmp:
            self.write_files(tmp, name=out.name)
        return out

    def write_files(self, folder: str | os.PathLike[str], *, name: str | None = None) -> Path:
        """Write every file of the result into ``folder``, each atomically: ``result.json``, ``inputs.npy``,
        ``outputs.npy``, the item pictures, ``files`` and last ``report.html`` (titled with ``name``, default
        the folder's). :meth:`save` writes a new folder whole; this writes into a run's own folder (an atlas or
        a leakage report that resumes from the checkpoints kept there)."""
        folder = Path(folder)
        page = self._page(name or folder.name)
        write_json(folder / "result.json", self.to_json())
        write_file(folder / "inputs.npy", lambda tmp: np.save(tmp, self.inputs.numpy()))
        write_file(folder / "outputs.npy", lambda tmp: np.save(tmp, self.outputs.numpy()))
        if is_image(self.inputs) and self.kind not in _NO_ITEM_PICTURES:
            captions = self.labels or [item.target for item in self.items]
            write_file(folder / "grid.png", lambda tmp: save_grid(self.inputs, captions, tmp, self.value_range))
            save_items(self.inputs, captions, folder, self.value_range)
        for file_name, content in self.files.items():
            write_file(folder / file_name, lambda tmp, content=content: tmp.write_bytes(content))
        if page is not None:
            write_text(folder / REPORT, page)
        return folder

    def _page(self, name: str) -> str | None:
        """The result's ``report.html``; ``None`` (logged, and noted in ``info``) if it cannot be drawn, so that
        the page, a view of the result, never costs the result itself."""
        from netinvert.ground.views import page_html

        try:
            return page_html(self, name)
        except Exception as exc:  # noqa: BLE001 - the result is what matters; its page can be drawn again later
            note = f"{REPORT} not written ({type(exc).__name__}: {exc}); try `netinvert report` on the folder"
            logging.getLogger("netinvert").warning("warning: %s", note)
            self.info.setdefault("notes", []).append(note)
            return None


def npy_bytes(array: np.ndarray | torch.Tensor) -> bytes:
    """An array as the bytes of a ``.npy`` file (for a result's ``files``)."""
    buf = io.BytesIO()
    np.save(buf, array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array))
    return buf.getvalue()


_SCHEMA1_KINDS = {"gradient": "imagine", "langevin": "imagine", "analytic": "imagine", "dbn": "sample",
                  "decoder": "invert", "hybrid": "invert", "exact": "solve", "bounds": "preimage",
                  "adjoint": "design", "patterns": "patterns", "leakage": "leakage", "atlas": "atlas"}


def _schema1_kind(data: dict[str, Any]) -> str:
    """The kind of a schema-1 result, which did not record it: from its method and what it recorded."""
    if "layer" in data and data.get("method") in ("gradient", "decoder", "hybrid"):
        return "invert"
    return _SCHEMA1_KINDS.get(str(data.get("method")), "result")


def _rename_old_keys(data: dict[str, Any]) -> None:
    """Give the keys a folder of an earlier netinvert wrote their names now (``_RENAMED``), in place."""
    for section, old, new in _RENAMED:
        part = data.get(section)
        if isinstance(part, dict) and old in part and new not in part:
            part[new] = part.pop(old)
    for layer in (data.get("decoders") or {}).values():
        if isinstance(layer, dict) and "layout" not in layer and "kind" in layer:  # read back
            layer["layout"] = layer.pop("kind")  # read back
    if data.get("kind") == "invert":
        for item in data.get("items") or []:
            if isinstance(item, dict) and "verifier_agrees" not in item and "verifier_agreement" in item:
                item["verifier_agrees"] = item.pop("verifier_agreement")


def _schema1_files(folder: Path) -> list[str]:
    """A schema-1 folder's further files, which it did not list: its pictures and its counterexample."""
    names = [p.name for p in folder.glob("*.png") if p.name != "grid.png" and not p.name.startswith("item_")]
    return sorted(names) + (["counterexample.txt"] if (folder / "counterexample.txt").exists() else [])


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
