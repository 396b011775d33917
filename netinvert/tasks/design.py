"""Inverse design over many targets as a sweep: a targets file, one runner task per target.

Each task runs the ``adjoint`` method for one wanted output ``y`` and saves its result folder
(``OUT/tNNNNN/``); the runner keys it by the model's content, ``y`` and the options, so a rerun
skips the targets already done and a file of thousands of targets can run on a Ray cluster.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from netinvert.ground.errors import NetinvertError
from netinvert.models.wrapper import Model
from netinvert.tasks.task import Task, model_key, task_key


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


def design_task(model: str, load_options: dict[str, Any], y: list[float], outputs: list[int] | None,
                simulator: str | None, folder: str, options: dict[str, Any]) -> dict[str, Any]:
    """One target of a design sweep, as a runner task: the adjoint search, its folder saved, its summary row."""
    import torch

    from netinvert.data.simulators import get_simulator
    from netinvert.methods import invert
    from netinvert.models.load import load
    from netinvert.report.finish import finish
    from netinvert.targets.regression import Regression

    net = load(model, **load_options)
    sim = get_simulator(simulator) if simulator is not None else None
    result = invert(net, [Regression(y, outputs)], None, method="adjoint", simulator=sim,
                    threads=torch.get_num_threads(), **options)  # the engine's count per task
    finish(result, folder, net)
    summary = result.info["targets"][0]
    resim = [m for m in result.metric("resim_mse") if m is not None and math.isfinite(m)]
    return {"target": summary["target"], "found": summary["found"], "samples": options["samples"],
            "residual": summary["residual"], "best_surrogate_mse": min(result.metric("surrogate_mse")),
            "best_resim_mse": min(resim) if resim else float("nan"), "proof": summary.get("proof", ""),
            "folder": folder}


def design_tasks(model: Model, source: str, load_options: dict[str, Any], targets: list[list[float]], out: Path, *,
                 outputs: list[int] | None = None, simulator: str | None = None, samples: int = 50,
                 starts: int = 1024, steps: int = 300, lr: float = 0.5, tolerance: float | None = None,
                 prove: float = 20.0, seed: int = 0) -> list[Task]:
    """One runner task per target, each saving into ``out/tNNNNN``; a target of the wrong length is refused up front."""
    want = len(outputs) if outputs is not None else model.num_outputs
    for n, y in enumerate(targets, start=1):
        if len(y) != want:
            raise NetinvertError(f"target {n} gives {len(y)} values but the model has {want} outputs"
                                 + (" (as picked by --outputs)" if outputs is not None else ""))
    options = {"samples": samples, "starts": starts, "steps": steps, "lr": lr, "tolerance": tolerance,
               "prove": prove, "seed": seed}
    ident = model_key(source, load_options)
    return [Task(design_task, {"model": source, "load_options": load_options, "y": y, "outputs": outputs,
                               "simulator": simulator, "folder": str(out / f"t{i:05d}"), "options": options},
                 task_key("design", model=ident, y=y, outputs=outputs, simulator=simulator, **options),
                 f"y={','.join(f'{v:g}' for v in y)}")
            for i, y in enumerate(targets)]
