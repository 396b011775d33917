"""The driver of ``netinvert atlas``: every unit of a layer, a batch per task, and several layers, a layer per task.

:func:`render` runs the batches of one layer as tasks of the runner in this process: each finished batch is
recorded under ``OUT/sweep/`` after its PNGs and ``batches/bNNNNNN.npz`` are written, so an interrupted atlas
loses at most the batch in flight, a rerun skips every finished batch, and a rerun with any other option that
changes the pictures is refused instead of mixing batches made two ways. When every batch is done the layer is
finished into its folder as one result (:func:`netinvert.report.finish.finish`: ``result.json``, ``inputs.npy``,
``atlas.png``, ``report.html``). :func:`render_layers` runs one task
per layer on an engine (local processes or Ray), each rendering its layer with :func:`render` into
``OUT/LAYER/``, and merges their rows into ``OUT/layers.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.domains.domain import Domain
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import check, recorded
from netinvert.ground.options import values as as_keywords
from netinvert.ground.output import write_text
from netinvert.ground.result import Result
from netinvert.methods import options_of
from netinvert.models.wrapper import Model
from netinvert.report.finish import finish
from netinvert.sweeps.engines import InProcess
from netinvert.sweeps.runner import finished, merged_rows, open_folder, rows_csv, run_sweep, safe_name
from netinvert.sweeps.task import ModelSource, Plan, Record, Task
from netinvert.tasks.atlas import assemble, layer_units, render_batch

Progress = Callable[[int, int], None]


ATLAS = {"schedule": "imagine", "steps": 256, "lr": 0.05, "batch_size": 16, "early_stop": False, "progress": False}
"""How an atlas runs method ``gradient`` unless told otherwise: the imagine schedule, 16 units a batch (a task, so
an interrupted atlas loses at most one), every unit its whole run, no bar per batch; 256 steps at a learning rate of
0.05 (a layer has many units, and a unit needs fewer steps than a class)."""


def atlas_options(options: Mapping[str, Any]) -> Any:
    """The ``gradient`` options of an atlas: :data:`ATLAS` overridden by ``options``, checked."""
    return check(options_of("gradient"), {**ATLAS, **options}, "gradient")


def render(model: Model, layer: str, out: str | Path, domain: Domain | None = None, *,
           on_batch: Progress | None = None, command: Sequence[str] | None = None, **options: Any) -> Result:
    """Render every unit of ``layer`` into ``out``, resuming from the batches already recorded there.

    ``options``: method ``gradient``'s options (:func:`atlas_options`). ``on_batch(done, total)`` is called once
    before the first batch and after every batch (for progress bars). Batch ``b`` covers units ``b*batch_size ..``
    and uses ``seed + first unit``, so a resumed atlas equals an uninterrupted one. ``command``: the command line to
    record with the result.
    """
    settings = atlas_options(options)
    batch_size = settings.batch_size
    domain = domain or Domain()
    plan = layer_units(model, layer)
    param = domain.resolved_param(model.input_spec)
    folder = Path(out)
    batches = Plan(render_batch, {"model": model, "layer": layer, "domain": domain, "options": settings,
                                  "folder": str(folder)}, unkeyed=("folder",))
    tasks = [batches.task({"first": first}, f"{layer} units {first}-{min(first + batch_size, plan.count) - 1}")
             for first in range(0, plan.count, batch_size)]
    open_folder(folder, batches.options, "an atlas")
    resumed = sum(r.row["units"] for r in finished(folder, tasks).values())
    report = on_batch or (lambda _done, _total: None)
    report(resumed, plan.count)
    done = [resumed]

    def counted(_: int, record: Record) -> None:
        done[0] += record.row["units"]
        report(done[0], plan.count)

    start = time.perf_counter()
    records = run_sweep(tasks, folder, engine=InProcess(), on_record=counted, progress=False,
                        options=batches.options, what="an atlas")
    shown = {"model": model.name, "layer": layer, "unit": plan.unit, "units": plan.count,
             **{name: value for name, value in recorded(settings).items() if _plain(value)},
             **{f.name: getattr(domain, f.name) for f in fields(domain) if _plain(getattr(domain, f.name))},
             "param": param}
    result = assemble(folder, model, layer, [r.row["batch"] for r in records], shown, resumed, done[0] - resumed,
                      time.perf_counter() - start)
    finish(result, folder, model, command=command, in_place=True)
    return result


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def render_task(model: ModelSource, layer: str, out: str, domain: dict[str, Any], options: Any,
                command: list[str] | None = None) -> dict[str, Any]:
    """One layer of an atlas sweep, as a runner task: load the model, :func:`render` the layer with ``options`` (the
    atlas's ``gradient`` options), return its row."""
    net = model.load()
    result = render(net, layer, out, Domain(**domain), command=command,
                    **{**as_keywords(options), "threads": torch.get_num_threads()})  # the engine's count per task
    info = result.info["atlas"]
    activation = [float(a) for a in result.metric("activation") if a is not None] if result.items else []
    return {"layer": layer, "unit": info["unit"], "units": info["units"],
            "mean_activation": float(np.mean(activation)) if activation else float("nan"),
            "render_s": result.timing["render_s"], "units_per_s": result.timing["units_per_s"], "folder": out}


def _layers(source: str, load_options: dict[str, Any], domain: dict[str, Any], options: Mapping[str, Any],
            command: list[str] | None) -> Plan:
    """The layers' plan: keyed by the model, the domain and the atlas's gradient options (every field, defaults
    included), not by where a layer writes or by ``command`` (the command line each layer's result records)."""
    return Plan(render_task, {"model": ModelSource(source, load_options), "domain": domain,
                              "options": atlas_options(options), "command": command}, unkeyed=("out", "command"))


def layer_tasks(model: Model, source: str, load_options: dict[str, Any], layers: list[str], out: Path,
                domain: dict[str, Any], *, command: list[str] | None = None, **options: Any) -> list[Task]:
    """One runner task per layer, each rendering into ``out/LAYER``; ``model`` was loaded from ``source`` with
    ``load_options`` (each worker loads it the same way); ``options``: method ``gradient``'s (:func:`atlas_options`)."""
    for layer in layers:
        layer_units(model, layer)
    plan = _layers(source, load_options, domain, options, command)
    return [plan.task({"layer": layer, "out": str(out / safe_name(layer))}, f"atlas {layer}") for layer in layers]


def render_layers(model: Model, source: str, load_options: dict[str, Any], layers: list[str], out: Path,
                  domain: dict[str, Any], *, engine: Any = None, command: list[str] | None = None,
                  **options: Any) -> list[Record]:
    """``--layers``: every layer as a task of ``engine``, each in ``out/LAYER``; their rows in ``out/layers.csv``.
    ``command``: the command line each layer's result records."""
    if not layers:
        raise NetinvertError("--layers is empty: give layer names a,b,c (see `netinvert layers`) or all")
    tasks = layer_tasks(model, source, load_options, layers, out, domain, command=command, **options)
    records = run_sweep(tasks, out, engine=engine, description=f"atlas {model.name}",
                        options=_layers(source, load_options, domain, options, command).options,
                        what="an atlas sweep")
    write_text(out / "layers.csv", rows_csv(merged_rows(records)))
    return records
