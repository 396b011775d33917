"""The driver of ``netinvert design --targets``: inverse design over a targets file, one runner task per target.

Each task runs the ``adjoint`` method for one wanted output ``y`` and saves its result folder
(``OUT/tNNNNN/``); the runner keys it by the model's content, ``y`` and the options, so a rerun
skips the targets already done and a file of thousands of targets can run on a Ray cluster. The rows
are merged into ``OUT/targets.csv``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import check
from netinvert.ground.options import values as as_keywords
from netinvert.ground.output import write_text
from netinvert.methods import options_of
from netinvert.models.wrapper import Model
from netinvert.sweeps.runner import merged_rows, rows_csv, run_sweep
from netinvert.sweeps.task import ModelSource, Plan, Record, Task


def read_targets(path: Path) -> list[list[float]]:
    """One target per line: comma- or space-separated finite numbers; blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise NetinvertError(f"cannot read targets file {path}: {exc.strerror}") from None
    targets = []
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].replace(",", " ").strip()
        if not text:
            continue
        try:
            values = [float(v) for v in text.split()]
        except ValueError:
            raise NetinvertError(f"{path}:{n}: {line.strip()!r} is not a list of numbers, e.g. 1.2,0.5") from None
        if not all(math.isfinite(v) for v in values):
            raise NetinvertError(f"{path}:{n}: {line.strip()!r} holds a non-finite value")
        targets.append(values)
    if not targets:
        raise NetinvertError(f"{path} lists no targets: give one line of wanted outputs per target, e.g. 1.2,0.5")
    return targets


def design_task(model: ModelSource, y: list[float], outputs: list[int] | None, simulator: str | None, folder: str,
                options: Any) -> dict[str, Any]:
    """One target of a design sweep, as a runner task: the adjoint search with ``options`` (method ``adjoint``'s), its
    folder saved, its summary row."""
    import torch

    from netinvert.data.simulators import get_simulator
    from netinvert.methods import invert
    from netinvert.report.finish import finish
    from netinvert.targets.regression import Regression

    net = model.load()
    sim = get_simulator(simulator) if simulator is not None else None
    chosen = replace(options, simulator=sim, threads=torch.get_num_threads())  # the engine's count per task
    result = invert(net, [Regression(y, outputs)], None, method="adjoint", **as_keywords(chosen))
    finish(result, folder, net)
    summary = result.info["targets"][0]
    resim = [m for m in result.metric("resim_mse") if m is not None and math.isfinite(m)]
    return {"target": summary["target"], "found": summary["found"], "samples": options.samples,
            "residual": summary["residual"], "best_surrogate_mse": min(result.metric("surrogate_mse")),
            "best_resim_mse": min(resim) if resim else float("nan"), "proof": summary.get("proof", ""),
            "folder": folder}


def design_tasks(model: Model, source: str, load_options: dict[str, Any], targets: list[list[float]], out: Path, *,
                 outputs: list[int] | None = None, simulator: str | None = None, **options: Any) -> list[Task]:
    """One runner task per target, each saving into ``out/tNNNNN``, keyed by method ``adjoint``'s ``options`` (every
    field, defaults included; the simulator by its name); a target of the wrong length is refused up front."""
    settings = check(options_of("adjoint"), options, "adjoint")
    want = len(outputs) if outputs is not None else model.num_outputs
    for n, y in enumerate(targets, start=1):
        if len(y) != want:
            raise NetinvertError(f"target {n} gives {len(y)} values but the model has {want} outputs"
                                 + (" (as picked by --outputs)" if outputs is not None else ""))
    plan = Plan(design_task, {"model": ModelSource(source, load_options), "outputs": outputs, "simulator": simulator,
                              "options": settings}, unkeyed=("folder",))
    return [plan.task({"y": y, "folder": str(out / f"t{i:05d}")}, f"y={','.join(f'{v:g}' for v in y)}")
            for i, y in enumerate(targets)]


def design_sweep(model: Model, source: str, load_options: dict[str, Any], targets: list[list[float]], out: Path, *,
                 engine: Any = None, **options: Any) -> list[Record]:
    """Every target as a task of ``engine`` (:func:`design_tasks`, which takes ``options``), each in its own
    folder; their rows merged into ``out/targets.csv``."""
    tasks = design_tasks(model, source, load_options, targets, out, **options)
    records = run_sweep(tasks, out, engine=engine, description="design")
    write_text(out / "targets.csv", rows_csv(merged_rows(records)))
    return records
