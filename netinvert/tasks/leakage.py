"""Leakage: how well each inversion method reconstructs held-out inputs from each layer.

For the first ``count`` held-out inputs, every listed layer and every method, one ``invert()`` call
reconstructs the inputs from that layer's activations; the report layer scores and writes the rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.data.sources import DataSplit
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.images import grid_image
from netinvert.ground.output import write_file, write_json
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Item, Result, npy_bytes
from netinvert.methods import invert
from netinvert.models.wrapper import Model
from netinvert.report.leakage import mean, quality
from netinvert.targets.activations import capture_activations, targets_for
from netinvert.tasks.runner import run_sweep
from netinvert.tasks.task import Task, model_key, task_key

INVERSION_METHODS = ("gradient", "decoder", "hybrid")
PARTS = "parts"


def check_methods(methods: Sequence[str]) -> None:
    """A clear error for a method that does not invert activations."""
    for m in methods:
        if m not in INVERSION_METHODS:
            raise NetinvertError(f"unknown inversion method {m!r}: choose one of {choices(INVERSION_METHODS)}")


def options_for(method: str, *, data: DataSplit | None = None, steps: int | None = None, seed: int = 0,
                threads: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """The ``invert()`` options of one inversion method (``decoder`` takes no steps, ``gradient`` no data)."""
    options: dict[str, Any] = {"seed": seed, "threads": threads, "progress": progress}
    if method != "decoder":
        options["steps"] = steps
    if method != "gradient" and data is not None:
        options["data"] = data
    return options


def reconstruct(model: Model, layer: str, *, original: torch.Tensor | None = None,
                activations: torch.Tensor | None = None, method: str = "hybrid", metric: str = "mse",
                steps: int | None = None, seed: int = 0, threads: int | None = None) -> Result:
    """Inputs of ``model`` whose ``layer`` activations match those of ``original`` (or the given ``activations``).

    With an original, every item is scored against it (``psnr``, ``ssim``, ``verifier_agreement``) and the
    result's files hold ``original.npy`` and, for pictures, ``comparison.png`` (originals over reconstructions).
    """
    check_methods([method])
    model.get_layer(layer)
    if (original is None) == (activations is None):
        raise NetinvertError("give the original input or the activations of the layer, one of the two")
    values = capture_activations(model, layer, original) if original is not None else activations
    result = invert(model, targets_for(model, layer, values, metric), None, method=method,
                    **options_for(method, steps=steps, seed=seed, threads=threads))
    result.info["layer"] = layer
    if original is None:
        return result
    q = quality(model, original, result.inputs)
    for i, item in enumerate(result.items):
        item.metrics.update(psnr=q["psnr"][i], ssim=q["ssim"][i], verifier_agreement=q["verifier_agreement"][i])
    n = len(original)
    result.labels = ["reconstruction"] if n == 1 else [f"reconstruction {i}" for i in range(n)]
    result.files["original.npy"] = npy_bytes(original)
    if model.input_spec.is_image:
        captions = (["original"] if n == 1 else [f"original {i}" for i in range(n)]) + result.labels
        pair = grid_image(torch.cat([original, result.inputs]), captions, result.value_range, columns=max(n, 2))
        if pair is not None:
            result.files["comparison.png"] = png_bytes(pair)
    return result


def evaluate(model: Model, layers: Sequence[str], methods: Sequence[str], data: DataSplit | None = None, *,
             count: int = 64, steps: int | None = None, seed: int = 0, threads: int | None = None,
             folder: Path | None = None, log: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Invert the first ``count`` held-out inputs at every layer with every method; one row per pair.

    ``data``: the split to take held-out inputs from and train decoders on (default: the model's own).
    ``folder``: keep each finished pair there (``parts/``, with its reconstructions) and skip pairs already
    there, so an interrupted report resumes; the folder must have been made with the same count, steps and seed.
    """
    check_methods(methods)
    if count < 1:
        raise NetinvertError(f"count={count} must be >= 1")
    for layer in layers:
        model.get_layer(layer)
    split = data if data is not None else model.data_split()
    x = torch.as_tensor(split.x_held[:count], dtype=torch.float32)
    if folder is not None:
        _open_parts(folder, {"model": model.name, "data": split.key, "count": len(x), "steps": steps, "seed": seed})
    names = model.layer_names()
    rows = []
    for layer in sorted(layers, key=names.index):
        values = None
        for method in methods:
            part = folder / PARTS / f"{_safe(layer)}__{method}.npz" if folder is not None else None
            if part is not None and part.exists():
                with np.load(part) as saved:
                    row = json.loads(str(saved["row"]))
            else:
                values = capture_activations(model, layer, x) if values is None else values
                row, inputs = _one(model, layer, method, x, values, split, steps=steps, seed=seed, threads=threads)
                if part is not None:
                    write_file(part, lambda tmp, row=row, inputs=inputs: np.savez(
                        tmp, row=json.dumps(row), reconstructions=inputs.detach().cpu().numpy()))
            rows.append(row)
            if log is not None:
                log(row)
    return rows


def leakage_task(model: str, load_options: dict[str, Any], layer: str, method: str, count: int, steps: int | None,
                 seed: int, part: str) -> dict[str, Any]:
    """One (layer, method) pair of a leakage sweep, as a runner task: its row, with its reconstructions in ``part``."""
    from netinvert.models.load import load

    net = load(model, **load_options)
    split = net.data_split()
    x = torch.as_tensor(split.x_held[:count], dtype=torch.float32)
    values = capture_activations(net, layer, x)
    row, inputs = _one(net, layer, method, x, values, split, steps=steps, seed=seed,
                      threads=torch.get_num_threads())  # the engine's count per task
    write_file(part, lambda tmp: np.savez(tmp, row=json.dumps(row), reconstructions=inputs.detach().cpu().numpy()))
    return row


def evaluate_sweep(model: Model, source: str, load_options: dict[str, Any], layers: Sequence[str],
                   methods: Sequence[str], folder: Path, *, count: int = 64, steps: int | None = None, seed: int = 0,
                   engine: Any = None, log: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """:func:`evaluate` as a sweep: every (layer, method) pair is a task of the runner (local processes or Ray).

    ``model`` was loaded from ``source`` with ``load_options`` (each worker loads it the same way);
    pairs already in ``folder`` are skipped, and a pair that fails stops nothing else (its error is raised
    at the end, once every other pair is saved).
    """
    check_methods(methods)
    if count < 1:
        raise NetinvertError(f"count={count} must be >= 1")
    for layer in layers:
        model.get_layer(layer)
    split = model.data_split()
    count = min(count, len(split.x_held))
    _open_parts(folder, {"model": model.name, "data": split.key, "count": count, "steps": steps, "seed": seed})
    names = model.layer_names()
    ident = model_key(source, load_options)
    tasks = [Task(leakage_task, {"model": source, "load_options": load_options, "layer": layer, "method": method,
                                 "count": count, "steps": steps, "seed": seed,
                                 "part": str(folder / PARTS / f"{_safe(layer)}__{method}.npz")},
                  task_key("leakage", model=ident, layer=layer, method=method, count=count, steps=steps, seed=seed),
                  f"{layer} {method}")
             for layer in sorted(layers, key=names.index) for method in methods]
    records = run_sweep(tasks, folder, engine=engine, description=f"leakage {model.name}",
                        on_record=(lambda _, r: log(r.row) if r.state == "done" else None) if log else None)
    failed = [r for r in records if r.state != "done"]
    if failed:
        raise NetinvertError("; ".join(f"{r.label}: {r.state} ({r.message})" for r in failed)
                             + f"; the other pairs are saved in {folder}: rerun to retry")
    return [r.row for r in records]


def reconstructions(folder: Path, rows: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """The saved reconstructions of each row of a leakage folder, in row order."""
    out = []
    for row in rows:
        with np.load(folder / PARTS / f"{_safe(row['layer'])}__{row['method']}.npz") as saved:
            out.append(saved["reconstructions"])
    return out


def _one(model: Model, layer: str, method: str, x: torch.Tensor, values: torch.Tensor, split: DataSplit, *,
         steps: int | None, seed: int, threads: int | None) -> tuple[dict[str, Any], torch.Tensor]:
    start = time.perf_counter()
    result = invert(model, targets_for(model, layer, values), None, method=method,
                    **options_for(method, data=split, steps=steps, seed=seed, threads=threads, progress=False))
    seconds = time.perf_counter() - start
    q = quality(model, x, result.inputs)
    row = {"layer": layer, "method": method, "depth": model.layer_depth(layer), "psnr": mean(q["psnr"]),
           "ssim": mean(q["ssim"]), "verifier_agreement": mean(q["verifier_agreement"]),
           "activation_error": mean(result.metric("activation_error")), "seconds": seconds, "count": len(x)}
    return row, result.inputs


def _open_parts(folder: Path, options: dict[str, Any]) -> None:
    """Start a resumable leakage folder, or check that the one there was made with ``options``."""
    manifest = folder / PARTS / "options.json"
    if manifest.exists():
        before = json.loads(manifest.read_text())
        changed = [f"{k}={before.get(k)!r} (now {v!r})" for k, v in options.items() if before.get(k) != v]
        if changed:
            raise NetinvertError(f"{folder} holds a leakage report made with other options: {', '.join(changed)}; "
                                 "rerun with the same options to resume, or choose another `out`")
        return
    if folder.exists() and any(folder.iterdir()):
        raise NetinvertError(f"{folder} is not empty and holds no leakage report; choose an empty or new `out`")
    write_json(manifest, options)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def leakage_result(model: Model, rows: Sequence[dict[str, Any]], count: int, options: dict[str, Any]) -> Result:
    """The report as a :class:`Result`: the held-out originals as inputs, one item per layer and method."""
    x = torch.as_tensor(model.data_split().x_held[:count], dtype=torch.float32)
    with torch.no_grad():
        outputs = model(x)
    items = [Item(f"{row['layer']} / {row['method']}", "found", metrics=dict(row)) for row in rows]
    return Result(method="leakage", model=model.name, inputs=x, outputs=outputs, items=items,
                  timing={"total_s": float(sum(row["seconds"] for row in rows))},
                  info={"options": options}, labels=[f"original {i}" for i in range(len(x))],
                  value_range=(model.input_spec.low, model.input_spec.high), kind="leakage")
