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
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.domains.domain import Domain
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_text
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.report.finish import finish
from netinvert.sweeps.engines import InProcess
from netinvert.sweeps.runner import finished, merged_rows, open_folder, rows_csv, run_sweep, safe_name
from netinvert.sweeps.task import ModelSource, Plan, Record, Task
from netinvert.tasks.atlas import assemble, layer_units, render_batch

Progress = Callable[[int, int], None]


def render(model: Model, layer: str, out: str | Path, domain: Domain | None = None, *, batch_size: int = 16,
           steps: int = 256, lr: float = 0.05, seed: int = 0, threads: int | None = None,
           on_batch: Progress | None = None, command: Sequence[str] | None = None) -> Result:
    """Render every unit of ``layer`` into ``out``, resuming from the batches already recorded there.

    ``on_batch(done, total)`` is called once before the first batch and after every batch (for progress bars).
    Batch ``b`` covers units ``b*batch_size ..`` and uses ``seed + first unit``, so a resumed atlas equals an
    uninterrupted one. ``command``: the command line to record with the result.
    """
    if batch_size < 1:
        raise NetinvertError(f"batch size {batch_size} must be >= 1")
    domain = domain or Domain()
    plan = layer_units(model, layer)
    param = domain.resolved_param(model.input_spec)
    folder = Path(out)
    batches = Plan(render_batch, {"model": model, "layer": layer, "domain": domain, "batch_size": batch_size,
                                  "steps": steps, "lr": lr, "seed": seed, "threads": threads, "folder": str(folder)},
                   unkeyed=("threads", "folder"))
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
    shown = {"model": model.name, "layer": layer, "kind": plan.kind, "units": plan.count, "batch_size": batch_size,
             "steps": steps, "lr": lr, "seed": seed,
             **{f.name: getattr(domain, f.name) for f in fields(domain) if _plain(getattr(domain, f.name))},
             "param": param}
    result = assemble(folder, model, layer, [r.row["batch"] for r in records], shown, resumed, done[0] - resumed,
                      time.perf_counter() - start)
    finish(result, folder, model, command=command, in_place=True)
    return result


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def render_task(model: ModelSource, layer: str, out: str, domain: dict[str, Any], batch_size: int, steps: int,
                lr: float, seed: int, command: list[str] | None = None) -> dict[str, Any]:
    """One layer of an atlas sweep, as a runner task: load the model, :func:`render` the layer, return its row."""
    net = model.load()
    result = render(net, layer, out, Domain(**domain), batch_size=batch_size, steps=steps, lr=lr, seed=seed,
                    threads=torch.get_num_threads(), command=command)  # the engine's thread count per task
    info = result.info["atlas"]
    activation = [float(a) for a in result.metric("activation") if a is not None] if result.items else []
    return {"layer": layer, "kind": info["kind"], "units": info["units"],
            "mean_activation": float(np.mean(activation)) if activation else float("nan"),
            "render_s": result.timing["render_s"], "units_per_s": result.timing["units_per_s"], "folder": out}


def _layers(source: str, load_options: dict[str, Any], domain: dict[str, Any], batch_size: int, steps: int,
            lr: float, seed: int, command: list[str] | None) -> Plan:
    """The layers' plan: keyed by the model and the options, not by where a layer writes or by ``command`` (the
    command line each layer's result records)."""
    return Plan(render_task, {"model": ModelSource(source, load_options), "domain": domain, "batch_size": batch_size,
                              "steps": steps, "lr": lr, "seed": seed, "command": command},
                unkeyed=("out", "command"))


def layer_tasks(model: Model, source: str, load_options: dict[str, Any], layers: list[str], out: Path,
                domain: dict[str, Any], *, batch_size: int = 16, steps: int = 256, lr: float = 0.05,
                seed: int = 0, command: list[str] | None = None) -> list[Task]:
    """One runner task per layer, each rendering into ``out/LAYER``; ``model`` was loaded from ``source`` with
    ``load_options`` (each worker loads it the same way)."""
    for layer in layers:
        layer_units(model, layer)
    plan = _layers(source, load_options, domain, batch_size, steps, lr, seed, command)
    return [plan.task({"layer": layer, "out": str(out / safe_name(layer))}, f"atlas {layer}") for layer in layers]


def render_layers(model: Model, source: str, load_options: dict[str, Any], layers: list[str], out: Path,
                  domain: dict[str, Any], *, batch_size: int = 16, steps: int = 256, lr: float = 0.05, seed: int = 0,
                  engine: Any = None, command: list[str] | None = None) -> list[Record]:
    """``--layers``: every layer as a task of ``engine``, each in ``out/LAYER``; their rows in ``out/layers.csv``.
    ``command``: the command line each layer's result records."""
    if not layers:
        raise NetinvertError("--layers is empty: give layer names a,b,c (see `netinvert layers`) or all")
    tasks = layer_tasks(model, source, load_options, layers, out, domain, batch_size=batch_size, steps=steps, lr=lr,
                        seed=seed, command=command)
    records = run_sweep(tasks, out, engine=engine, description=f"atlas {model.name}",
                        options=_layers(source, load_options, domain, batch_size, steps, lr, seed, command).options,
                        what="an atlas sweep")
    write_text(out / "layers.csv", rows_csv(merged_rows(records)))
    return records
