"""Leakage: how well each inversion method reconstructs held-out inputs from each layer.

For the first ``count`` held-out inputs, every listed layer and every method, one ``invert()`` call
reconstructs the inputs from that layer's activations (:func:`invert_pair`); the report layer scores and
writes the rows. The resumable command is :mod:`netinvert.sweeps.leakage`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from netinvert.data.sources import DataSplit
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.images import grid_image
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Item, Result, npy_bytes
from netinvert.methods import invert
from netinvert.models.wrapper import Model
from netinvert.report.leakage import mean, quality
from netinvert.targets.activations import capture_activations, targets_for

INVERSION_METHODS = ("gradient", "decoder", "hybrid")


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
             log: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Invert the first ``count`` held-out inputs at every layer with every method; one row per pair, layers in
    network order.

    ``data``: the split to take held-out inputs from and train decoders on (default: the model's own). The
    resumable report over a folder, on local processes or Ray, is :func:`netinvert.sweeps.leakage.leakage_sweep`.
    """
    check_methods(methods)
    if count < 1:
        raise NetinvertError(f"count={count} must be >= 1")
    for layer in layers:
        model.get_layer(layer)
    split = data if data is not None else model.data_split()
    x = torch.as_tensor(split.x_held[:count], dtype=torch.float32)
    names = model.layer_names()
    rows = []
    for layer in sorted(layers, key=names.index):
        values = capture_activations(model, layer, x)
        for method in methods:
            row, _ = invert_pair(model, layer, method, x, values, split, steps=steps, seed=seed, threads=threads)
            rows.append(row)
            if log is not None:
                log(row)
    return rows


def invert_pair(model: Model, layer: str, method: str, x: torch.Tensor, values: torch.Tensor, split: DataSplit, *,
         steps: int | None, seed: int, threads: int | None) -> tuple[dict[str, Any], torch.Tensor]:
    """Reconstruct ``x`` from its ``values`` at ``layer`` with ``method``: the scored row and the reconstructions."""
    start = time.perf_counter()
    result = invert(model, targets_for(model, layer, values), None, method=method,
                    **options_for(method, data=split, steps=steps, seed=seed, threads=threads, progress=False))
    seconds = time.perf_counter() - start
    q = quality(model, x, result.inputs)
    row = {"layer": layer, "method": method, "depth": model.layer_depth(layer), "psnr": mean(q["psnr"]),
           "ssim": mean(q["ssim"]), "verifier_agreement": mean(q["verifier_agreement"]),
           "activation_error": mean(result.metric("activation_error")), "seconds": seconds, "count": len(x)}
    return row, result.inputs


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
