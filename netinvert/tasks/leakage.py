"""Leakage: how well each inversion method reconstructs held-out inputs from each layer.

For the first ``count`` held-out inputs, every listed layer and every method, one ``invert()`` call
reconstructs the inputs from that layer's activations (:func:`invert_pair`); the report layer scores and
writes the rows. The resumable command is :mod:`netinvert.sweeps.leakage`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from netinvert.data.sources import DataSplit
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.images import grid_image
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Item, Result, npy_bytes
from netinvert.ground.options import check
from netinvert.ground.options import values as as_keywords
from netinvert.methods import check_shared, invert, options_of, shared_options
from netinvert.models.wrapper import Model
from netinvert.report.leakage import mean, quality
from netinvert.targets.activations import capture_activations, targets_for

INVERSION_METHODS = ("gradient", "decoder", "hybrid")


def check_methods(methods: Sequence[str]) -> None:
    """A clear error for a method that does not invert activations."""
    for m in methods:
        if m not in INVERSION_METHODS:
            raise NetinvertError(f"unknown inversion method {m!r}: choose one of {choices(INVERSION_METHODS)}")


def reconstruct(model: Model, layer: str, *, original: torch.Tensor | None = None,
                activations: torch.Tensor | None = None, method: str = "hybrid", metric: str = "mse",
                **options: Any) -> Result:
    """Inputs of ``model`` whose ``layer`` activations match those of ``original`` (or the given ``activations``),
    found by ``method`` with its ``options``.

    With an original, every item is scored against it (``psnr``, ``ssim``, ``verifier_agrees``) and the
    result's files hold ``original.npy`` and, for pictures, ``comparison.png`` (originals over reconstructions).
    """
    check_methods([method])
    model.get_layer(layer)
    if (original is None) == (activations is None):
        raise NetinvertError("give the original input or the activations of the layer, one of the two")
    values = capture_activations(model, layer, original) if original is not None else activations
    result = invert(model, targets_for(model, layer, values, metric), None, method=method, **options)
    result.info["layer"] = layer
    if original is None:
        return result
    q = quality(model, original, result.inputs)
    for i, item in enumerate(result.items):
        item.metrics.update(psnr=q["psnr"][i], ssim=q["ssim"][i], verifier_agrees=q["verifier_agrees"][i])
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
             count: int = 64, options: Mapping[str, Any] | None = None,
             log: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Invert the first ``count`` held-out inputs at every layer with every method; one row per pair, layers in
    network order.

    ``data``: the split to take held-out inputs from and train decoders on (default: the model's own).
    ``options``: option values for the methods, each taking those its options declare (:func:`pair_options`).
    The resumable report over a folder, on local processes or Ray, is
    :func:`netinvert.sweeps.leakage.leakage_sweep`.
    """
    check_methods(methods)
    if count < 1:
        raise NetinvertError(f"count={count} must be >= 1")
    check_shared(methods, options or {})
    for layer in layers:
        model.get_layer(layer)
    split = data if data is not None else model.data_split()
    x = torch.as_tensor(split.x_held[:count], dtype=torch.float32)
    names = model.layer_names()
    rows = []
    for layer in sorted(layers, key=names.index):
        values = capture_activations(model, layer, x)
        for method in methods:
            row, _ = invert_pair(model, layer, method, x, values, split, pair_options(method, options or {}))
            rows.append(row)
            if log is not None:
                log(row)
    return rows


def pair_options(method: str, options: Mapping[str, Any]) -> Any:
    """The options of ``method`` for one pair: those of ``options`` it declares, and no progress bar; its data is
    the pair's own (:func:`invert_pair`)."""
    return check(options_of(method), {**shared_options(method, options), "progress": False}, method)


def invert_pair(model: Model, layer: str, method: str, x: torch.Tensor, values: torch.Tensor, split: DataSplit,
                options: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """Reconstruct ``x`` from its ``values`` at ``layer`` with ``method`` and its ``options`` (a decoder trains on
    ``split``): the scored row and the reconstructions."""
    start = time.perf_counter()
    chosen = shared_options(method, {**as_keywords(options), "data": split})
    result = invert(model, targets_for(model, layer, values), None, method=method, **chosen)
    seconds = time.perf_counter() - start
    q = quality(model, x, result.inputs)
    row = {"layer": layer, "method": method, "depth": model.layer_depth(layer), "psnr": mean(q["psnr"]),
           "ssim": mean(q["ssim"]), "verifier_agreement": mean(q["verifier_agrees"]),
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
