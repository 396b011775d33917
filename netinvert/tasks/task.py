"""What a sweep task is: a :class:`Task` (a function, its arguments, its content hash) and its :class:`Record`.

A task's ``key`` hashes what decides its answer (:func:`task_key`): the *content* of its files, never
their path spelling (:func:`file_digest`), a model by :func:`model_key`, and its options. The runner
(:mod:`netinvert.tasks.runner`) stores one record per key; the engines (:mod:`netinvert.tasks.engines`)
run the tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Task:
    """One unit of a sweep: ``run(**args)`` returns a JSON-able row; ``key`` is its content hash (:func:`task_key`).

    ``run`` must be a module-level function (workers import it by name). ``timeout`` (seconds, ``None``:
    no limit) is enforced by the engine, which kills the task and records it as ``timeout``.
    """

    run: Callable[..., dict[str, Any]]
    args: Mapping[str, Any]
    key: str
    label: str
    timeout: float | None = None


@dataclass
class Record:
    """The answer to one task as stored in ``sweep/KEY.json``."""

    key: str
    label: str
    state: str
    row: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    engine_s: float = 0.0
    engine: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "state": self.state, "row": self.row, "message": self.message,
                "seconds": self.seconds, "engine_s": self.engine_s, "engine": self.engine}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(key=str(data["key"]), label=str(data.get("label", "")), state=str(data["state"]),
                   row=dict(data.get("row") or {}), message=str(data.get("message", "")),
                   seconds=float(data.get("seconds", 0.0)), engine_s=float(data.get("engine_s", 0.0)),
                   engine=str(data.get("engine", "")))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (a folder: of its files' names and bytes); ``missing:PATH`` when absent.

    Cached per (resolved path, size, modification time), so a family that names one network many times
    reads it once.
    """
    p = Path(path).resolve()
    if not p.exists():
        return f"missing:{p}"
    if p.is_dir():
        h = hashlib.sha256()
        for child in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(child.relative_to(p)).encode() + b"\0" + file_digest(child).encode())
        return h.hexdigest()
    st = p.stat()
    cache = (str(p), st.st_size, st.st_mtime_ns)
    if cache not in _DIGESTS:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[cache] = h.hexdigest()
    return _DIGESTS[cache]


def task_key(kind: str, files: Iterable[str | os.PathLike[str]] = (), **options: Any) -> str:
    """The content hash of a task: its kind, the bytes of its ``files`` (in order) and its ``options``."""
    text = json.dumps({"kind": kind, "files": [file_digest(f) for f in files], "options": options},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def model_key(source: str, load_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What identifies a model for :func:`task_key`: a file by its content, a zoo model by its name.

    ``load_options`` (the keyword arguments of :func:`netinvert.load`) are included, with every option
    that names a file (``arch`` as ``file.py:Class``, ``labels``, ``verifier``, ``data``) replaced by its digest.
    """
    ident = {"model": file_digest(source) if Path(source).exists() else f"zoo:{source}"}
    for name, value in sorted((load_options or {}).items()):
        text = str(value) if value is not None else ""
        if name == "arch" and ".py:" in text:
            file, _, cls = text.rpartition(":")
            ident[name] = f"{file_digest(file)}:{cls}"
        elif name in ("labels", "verifier", "data") and text and Path(text.removeprefix("mnist:")).exists():
            ident[name] = file_digest(text.removeprefix("mnist:"))
        else:
            ident[name] = value
    return ident
