"""The driver of ``netinvert leakage``: every (layer, method) pair is a task of the runner, its reconstructions kept
in ``OUT/parts/``, so an interrupted report resumes, and adding layers or methods runs only the new pairs.

The pairs share the model, its data, the count of held-out inputs and the option values given (each method takes
those its options declare; a value equal to every declaring method's default counts as not given); a rerun with
other values of these is refused instead of mixing rows made two ways. Each pair is keyed by its method's whole
options dataclass, defaults included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.data.sources import DataSplit
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_file
from netinvert.methods import check_shared, options_of
from netinvert.models.wrapper import Model
from netinvert.sweeps.engines import InProcess, make_engine
from netinvert.sweeps.runner import run_sweep, safe_name
from netinvert.sweeps.task import ModelSource, Plan, material
from netinvert.targets.activations import capture_activations
from netinvert.tasks.leakage import check_methods, invert_pair, pair_options

PARTS = "parts"


def leakage_pair(model: Model | ModelSource, data: DataSplit | None, layer: str, method: str, count: int,
                 options: Any, threads: int | None, part: str) -> dict[str, Any]:
    """One (layer, method) pair as a runner task: its row, with its reconstructions saved in ``part``; ``options``:
    the method's options (:func:`netinvert.tasks.leakage.pair_options`), run on ``threads`` torch threads."""
    net = model if isinstance(model, Model) else model.load()
    split = data if data is not None else net.data_split()
    x = torch.as_tensor(split.x_held[:count], dtype=torch.float32)
    values = capture_activations(net, layer, x)
    row, inputs = invert_pair(net, layer, method, x, values, split, replace(options, threads=threads))
    write_file(part, lambda tmp: np.savez(tmp, row=json.dumps(row), reconstructions=inputs.detach().cpu().numpy()))
    return row


def leakage_sweep(model: Model, layers: Sequence[str], methods: Sequence[str], folder: Path, *,
                  source: ModelSource | None = None, data: DataSplit | None = None, count: int = 64,
                  options: Mapping[str, Any] | None = None, threads: int | None = None, engine: Any = None,
                  log: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Invert the first ``count`` held-out inputs at every layer with every method, resuming from ``folder``; one
    row per pair, layers in network order. ``options``: option values for the methods, each taking those its
    options declare.

    With ``source`` (how ``model`` was loaded) the pairs run on ``engine`` (default: one local worker process),
    each worker loading the model the same way; a pair that fails stops nothing else, and its error is raised at
    the end, once every other pair is saved. Without it they run here, one after another, on ``data`` when given
    (default: the model's own split), with ``threads`` torch threads.
    """
    check_methods(methods)
    if count < 1:
        raise NetinvertError(f"count={count} must be >= 1")
    given = dict(options or {})
    check_shared(methods, given)
    for layer in layers:
        model.get_layer(layer)
    if source is not None and data is not None:
        raise NetinvertError("workers read the model's data from its load options (`data`); pass `data` only "
                             "without a `source`")
    split = data if data is not None else model.data_split()
    if source is None:
        engine = InProcess()
    else:
        engine = engine if engine is not None else make_engine("local")
        threads = engine.threads
    settings = {name: value for name, value in sorted(given.items())
                if any(value != default for default in _defaults(methods, name))}
    pairs = Plan(leakage_pair, {"model": source or model, "data": data, "count": min(count, len(split.x_held)),
                                "threads": threads}, unkeyed=("threads", "part"))
    names = model.layer_names()
    tasks = [pairs.task({"layer": layer, "method": method, "options": pair_options(method, given),
                         "part": str(_part(folder, layer, method))}, f"{layer} {method}")
             for layer in sorted(layers, key=names.index) for method in methods]
    records = run_sweep(tasks, folder, engine=engine, description=f"leakage {model.name}",
                        options={**pairs.options, "settings": material(settings)}, what="a leakage report",
                        on_record=(lambda _, r: log(r.row) if r.status == "done" else None) if log else None)
    failed = [r for r in records if r.status != "done"]
    if failed:
        raise NetinvertError("; ".join(f"{r.label}: {r.status} ({r.message})" for r in failed)
                             + f"; the other pairs are saved in {folder}: rerun to retry")
    return [r.row for r in records]


def _defaults(methods: Sequence[str], name: str) -> list[Any]:
    """The defaults of option ``name`` in each of ``methods`` that declares it."""
    return [f.default for method in methods for f in fields(options_of(method)) if f.name == name]


def reconstructions(folder: Path, rows: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """The saved reconstructions of each row of a leakage folder, in row order."""
    out = []
    for row in rows:
        with np.load(_part(folder, row["layer"], row["method"])) as saved:
            out.append(saved["reconstructions"])
    return out


def _part(folder: Path, layer: str, method: str) -> Path:
    return Path(folder) / PARTS / f"{safe_name(layer)}__{method}.npz"
