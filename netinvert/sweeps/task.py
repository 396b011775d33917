"""What a sweep task is: a :class:`Task` (a function, its arguments, its content hash), its :class:`Record`, and
the :class:`Plan` that makes a sweep's tasks and their keys from the arguments themselves.

A task's ``key`` hashes what decides its answer: the function and every argument it receives but those that only
say where it writes or how many threads it uses (:class:`Plan`). A file is keyed by its *content*, never by its
path spelling (:func:`file_digest`), a model by :func:`model_key` (a file or zoo name) or by its weights (a
loaded :class:`~netinvert.models.wrapper.Model`), and every other value by what it holds (:func:`material`).
The runner (:mod:`netinvert.sweeps.runner`) stores one record per key; the engines
(:mod:`netinvert.sweeps.engines`) run the tasks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from netinvert.data.sources import DataSplit
from netinvert.models.wrapper import Model


@dataclass(frozen=True)
class Task:
    """One unit of a sweep: ``run(**args)`` returns a JSON-able row; ``key`` is its content hash (:class:`Plan`).

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
    status: str
    row: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    engine_s: float = 0.0
    engine: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "status": self.status, "row": self.row, "message": self.message,
                "seconds": self.seconds, "engine_s": self.engine_s, "engine": self.engine}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        status = data["status"] if "status" in data else data["state"]  # read back: records of netinvert 0.1.0
        return cls(key=str(data["key"]), label=str(data.get("label", "")), status=str(status),
                   row=dict(data.get("row") or {}), message=str(data.get("message", "")),
                   seconds=float(data.get("seconds", 0.0)), engine_s=float(data.get("engine_s", 0.0)),
                   engine=str(data.get("engine", "")))


@dataclass(frozen=True)
class ModelSource:
    """A model as a worker loads it: a zoo name or file and the keyword arguments of :func:`netinvert.load`."""

    source: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Model:
        from netinvert.models.load import load

        return load(self.source, **self.options)


@dataclass(frozen=True)
class Plan:
    """The tasks of one sweep: one function, the arguments all its tasks share, and the arguments that change no
    answer (``unkeyed``: where a task writes, how many threads it uses).

    Every other argument a task receives is in its key, so an option that changes answers cannot be left out of
    the key: to change an answer it has to be passed to the task. :attr:`options` (the shared arguments, as keyed)
    is what a sweep folder is checked against on a rerun (:func:`netinvert.sweeps.runner.run_sweep`).
    """

    run: Callable[..., dict[str, Any]]
    shared: Mapping[str, Any]
    unkeyed: tuple[str, ...] = ()

    @cached_property
    def options(self) -> dict[str, Any]:
        """The shared arguments as keyed (files by content, models by what identifies them)."""
        return {k: material(v) for k, v in self.shared.items() if k not in self.unkeyed}

    def task(self, own: Mapping[str, Any], label: str, timeout: float | None = None) -> Task:
        """The task that calls ``run`` with the shared arguments and its ``own``; keyed by all but the unkeyed."""
        mine = {k: material(v) for k, v in own.items() if k not in self.unkeyed}
        return Task(self.run, {**self.shared, **own}, _digest({"run": self.run.__name__,
                                                               "args": {**self.options, **mine}}), label, timeout)


def material(value: Any) -> Any:
    """What a task key hashes for one argument: plain values as they are, a ``Path`` by its file's bytes, a
    loaded model by its weights, input description and data, arrays by their bytes, data classes field by field
    (a method's options by the fields that decide answers: not its threads or progress bar).

    A value of any other type is refused (a key must not depend on where an object happens to live in memory).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return {"file": file_digest(value)}
    if isinstance(value, Mapping):
        return {str(k): material(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [material(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        array = np.ascontiguousarray(array)
        return {"array": hashlib.sha256(array.tobytes()).hexdigest(), "shape": list(array.shape),
                "dtype": str(array.dtype)}
    if isinstance(value, ModelSource):
        return model_key(value.source, value.options)
    if isinstance(value, Model):
        return _model_material(value)
    if isinstance(value, DataSplit):
        return {"data": value.key}  # the key names the data stably (decoder caches rely on it too)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        every = dataclasses.fields(value)
        kept = [f for f in every if "option" not in f.metadata or f.metadata["option"].keyed]
        name = type(value).__name__
        if any("option" in f.metadata for f in every):  # a method's options, named with the method: gradient.Options
            name = f"{type(value).__module__.rsplit('.', 1)[-1]}.{name}"
        return {"type": name, **{f.name: material(getattr(value, f.name)) for f in kept}}
    raise TypeError(f"a sweep task cannot be keyed by a {type(value).__name__}: pass plain values, paths, "
                    "arrays, data classes or models")


def _model_material(model: Model) -> dict[str, Any]:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():  # the network, its input normalization and its verifier
        h.update(name.encode() + b"\0" + np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
    return {"name": model.name, "weights": h.hexdigest(), "input": material(model.input_spec),
            "output_activation": model.output_activation, "logits_layer": model.logits_layer,
            "data": model.data_split().key if model.has_data else None}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:24]


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


def task_key(name: str, files: Iterable[str | os.PathLike[str]] = (), **options: Any) -> str:
    """The content hash of a hand-made task: its name, the bytes of its ``files`` (in order) and its ``options``."""
    return _digest({"kind": name,  # read back: the field's name in keys of netinvert 0.1.0, so stored sweeps resume
                    "files": [file_digest(f) for f in files], "options": material(options)})


def model_key(source: str, load_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What identifies a model for a task key: a file by its content, a zoo model by its name.

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
            ident[name] = material(value)
    return ident
