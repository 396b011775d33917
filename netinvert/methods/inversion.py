"""Shared pieces of feature inversion (the ``gradient``, ``decoder`` and ``hybrid`` methods).

Gradient inversion here is the regularized maximum-likelihood attack: minimize the normalized
activation error plus a total-variation prior, in pixel space, without random transforms,
starting from a constant mid-gray image (or a decoder's output). The prior weight and the
learning rate follow a schedule of stages (each stage restarts Adam from the previous stage's
inputs) chosen by the layer's depth: shallow, nearly invertible layers need almost no prior and a
long, decaying fine-tuning; deep layers need a stronger prior.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from netinvert.data.sources import DataSplit, load_source
from netinvert.domains.domain import Domain
from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.methods import gradient
from netinvert.models.wrapper import Model
from netinvert.targets.activations import Activations
from netinvert.targets.base import Target
from netinvert.targets.scoring import score


@dataclass(frozen=True)
class Stage:
    """One stage of gradient inversion: Adam ``steps`` at learning rate ``lr`` with TV weight ``tv``."""

    steps: int
    lr: float
    tv: float


def activation_targets(targets: Target | list[Target]) -> list[Activations]:
    """The targets as a list of ``Activations`` (inversion methods take no other kind)."""
    items = [targets] if isinstance(targets, Target) else list(targets)
    if not items:
        raise NetinvertError("no targets given: pass at least one Activations target")
    for t in items:
        if not isinstance(t, Activations):
            raise NetinvertError(f"{t!r} is not an Activations target: inversion methods match layer activations")
    return items  # type: ignore[return-value]


def layer_depth(model: Model, layer: str) -> int:
    """How many modules with weights (conv, linear, ...) run before ``layer``'s output, itself included."""
    model.get_layer(layer)
    order: list[str] = []
    handles = []
    try:
        for name, module in model.module.named_modules():
            if name:
                handles.append(module.register_forward_hook(lambda *_a, name=name: order.append(name)))
        with torch.no_grad():
            model(model.example_input(1))
    finally:
        for h in handles:
            h.remove()
    if layer not in order:
        raise NetinvertError(f"layer {layer!r} of {model.name} does not run in the forward pass")
    modules = dict(model.module.named_modules())
    done = order[: order.index(layer) + 1]
    weighted = {n for n in done if any(True for _ in modules[n].parameters(recurse=False))}
    return len(weighted)


def schedule_for(model: Model, layer: str, steps: int | None = None) -> list[Stage]:
    """Stages for inverting ``layer``: light prior for depth <= 1, stronger TV for deeper layers.

    ``steps`` rescales the total number of steps (the default schedule has about 1000).
    """
    if layer_depth(model, layer) <= 1:
        stages = [Stage(400, 0.1, 1e-3), Stage(400, 0.03, 1e-5), Stage(300, 0.01, 0.0)]
    else:
        stages = [Stage(400, 0.1, 3e-3), Stage(400, 0.03, 1e-3), Stage(200, 0.01, 3e-4)]
    return _rescale(stages, steps)


def _rescale(stages: list[Stage], steps: int | None) -> list[Stage]:
    """Scale the stages' step counts to about ``steps`` in total (``None``: unchanged)."""
    if steps is None:
        return stages
    if steps < len(stages):
        raise NetinvertError(f"steps={steps} must be >= {len(stages)}")
    total = sum(s.steps for s in stages)
    return [Stage(max(1, round(s.steps * steps / total)), s.lr, s.tv) for s in stages]


def gray(model: Model, count: int) -> torch.Tensor:
    """A batch of constant mid-gray inputs: the neutral starting point of gradient inversion."""
    return model.example_input(count).to(torch.float32)


def refine(model: Model, targets: list[Activations], init: torch.Tensor, stages: list[Stage], *,
           region: Box | None = None, seed: int = 0, threads: int | None = None,
           batch_size: int | None = None, progress: bool | None = None) -> Result:
    """Run the stages of gradient inversion from ``init``; returns the last stage's result."""
    x = init
    result = None
    history: list[list[float]] = []
    seconds = 0.0
    for i, stage in enumerate(stages):
        domain = Domain(region=region or Box(), param="pixel", transforms=None, tv=stage.tv, bn_prior=0.0,
                        data_prior=0.0, init=x)
        result = gradient.run(model, targets, domain, steps=stage.steps, lr=stage.lr, seed=seed + i,
                              threads=threads, batch_size=batch_size, early_stop=False, progress=progress)
        x = result.inputs
        history.extend(result.history.get("objective", []))
        seconds += result.timing.get("total_s", 0.0)
    assert result is not None
    result.history = {"objective": history}
    result.timing = {"total_s": seconds, "steps": sum(s.steps for s in stages)}
    result.info["options"] = {"stages": [vars(s) for s in stages], "seed": seed}
    return result


def refine_by_layer(model: Model, targets: list[Activations], init: torch.Tensor, *,
                    steps: int | None = None, region: Box | None = None, seed: int = 0,
                    threads: int | None = None, progress: bool | None = None) -> torch.Tensor:
    """Gradient inversion of each layer's targets from ``init`` with that layer's schedule."""
    out = init.clone()
    for layer in dict.fromkeys(t.layer for t in targets):
        rows = [i for i, t in enumerate(targets) if t.layer == layer]
        stages = schedule_for(model, layer, steps)
        part = refine(model, [targets[i] for i in rows], init[rows], stages, region=region, seed=seed,
                      threads=threads, progress=progress)
        out[rows] = part.inputs
    return out


def gradient_inversion(model: Model, targets: Target | list[Target], domain: Domain | None = None, *,
                       steps: int | None = None, seed: int = 0, threads: int | None = None,
                       progress: bool | None = None) -> Result:
    """The regularized maximum-likelihood attack: gradient inversion from mid-gray with a depth schedule."""
    items = activation_targets(targets)
    start = time.perf_counter()
    region = domain.region if domain is not None else None
    inputs = refine_by_layer(model, items, gray(model, len(items)), steps=steps, region=region, seed=seed,
                             threads=threads, progress=progress)
    outputs, scored = score(model, items, inputs)
    result = Result(method="gradient", model=model.name, inputs=inputs, outputs=outputs, items=scored,
                    timing={"total_s": time.perf_counter() - start},
                    info={"options": {"steps": steps, "seed": seed, "init": "gray"}},
                    value_range=(model.input_spec.low, model.input_spec.high))
    return add_errors(result, items)


def add_errors(result: Result, targets: list[Activations]) -> Result:
    """Add each item's ``activation_error`` (the target's mismatch, >= 0) to its metrics."""
    for item in result.items:
        value: Any = item.metrics.get("objective")
        if value is not None:
            item.metrics["activation_error"] = -float(value)
    result.labels = [f"{t.layer} #{i}" for i, t in enumerate(targets)]
    return result


def data_for(model: Model, data: DataSplit | str | None = None) -> DataSplit:
    """The data split for ``model``: a given split, a ``--data`` string, or a zoo model's own data."""
    if isinstance(data, DataSplit):
        return data
    if isinstance(data, str):
        return load_source(data, model.input_spec)
    from netinvert.models.zoo import ENTRIES, load_dataset

    entry = ENTRIES.get(model.name)
    if entry is not None and model.info.get("data") == entry.dataset:
        x_train, y_train, x_held, y_held = load_dataset(model.name)
        return DataSplit(entry.dataset, x_train, x_held, y_train, y_held)
    raise NetinvertError(
        f"{model.name} does not know its data: pass --data (mnist:DIR, a file.npz with x, or an image folder)"
    )


def progress_bar(enabled: bool | None, total: int, description: str) -> AbstractContextManager[Any]:
    """A rich progress bar (``None``: shown on a terminal), or a context yielding ``None``."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), transient=True)
