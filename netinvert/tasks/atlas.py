"""Unit atlas: the units of a layer (channels of conv layers, neurons of linear layers), rendered a batch at a time.

:func:`render_batch` renders one batch into a folder (the units' PNGs, then ``batches/bNNNNNN.npz`` with their
units, inputs and scores, each written atomically); :func:`assemble` gathers a folder's batches into one
result of kind ``atlas`` with the contact sheet ``atlas.png`` among its files, for
:func:`netinvert.report.finish.finish` to save (``result.json``, ``inputs.npy`` with one row per unit in unit
order, ``atlas.png``, ``report.html``). The resumable command over batches and layers is :mod:`netinvert.sweeps.atlas`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.domains.domain import Domain
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import values
from netinvert.ground.output import write_file
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Item, Result
from netinvert.methods import invert
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.units import Channel, Neuron

SHEET = "atlas.png"
SHEET_MAX_SIDE = 4096
BATCHES = "batches"


@dataclass(frozen=True)
class LayerUnits:
    """The units of a layer: what a unit is (``channel`` or ``neuron``), and how many."""

    layer: str
    unit: str
    count: int


def units(model: Model, layer: str) -> list[Target]:
    """One target per unit of ``layer``: ``Channel`` for outputs with positions (C, ...), else ``Neuron``."""
    plan = layer_units(model, layer)
    make = Channel if plan.unit == "channel" else Neuron
    return [make(layer, i) for i in range(plan.count)]


def layer_units(model: Model, layer: str) -> LayerUnits:
    """What units ``layer`` has; an unknown layer or one without units is refused in one line."""
    model.get_layer(layer)
    shape = model.layer_shapes().get(layer)
    if not shape:
        raise NetinvertError(f"layer {layer!r} has no tensor output with units; choose a conv or linear layer")
    if len(shape) >= 2:
        return LayerUnits(layer, "channel", int(shape[0]))
    return LayerUnits(layer, "neuron", int(shape[0]))


def render_batch(model: Model, layer: str, domain: Domain, first: int, options: Any, folder: str) -> dict[str, Any]:
    """Render units ``first ..`` of ``layer`` (a batch of ``options.batch_size``) with method ``gradient``'s
    ``options`` (its seed plus ``first``) into ``folder``: their PNGs, then ``batches/bNNNNNN.npz`` (units, inputs,
    item scores, seconds); returns the batch's row."""
    targets = units(model, layer)[first : first + options.batch_size]
    t0 = time.perf_counter()
    part = invert(model, targets, domain, method="gradient", **values(replace(options, seed=options.seed + first)))
    seconds = time.perf_counter() - t0
    out = Path(folder)
    unit_ids = np.arange(first, first + len(part.items))
    if model.input_spec.is_image:
        from netinvert.ground.images import MIN_SIDE, to_uint8

        factor = max(1, -(-MIN_SIDE // min(part.inputs.shape[2:])))
        for u, x in zip(unit_ids, part.inputs, strict=True):
            _save_png(_upscale(to_uint8(x, part.value_range), factor), out / "units" / f"unit_{u:05d}.png")
    items = json.dumps([item.to_json() for item in part.items])
    name = f"b{first:06d}.npz"
    write_file(out / BATCHES / name, lambda tmp: np.savez(tmp, units=unit_ids, inputs=part.inputs.detach().cpu().numpy(),
                                                          items=items, seconds=np.float64(seconds)))
    return {"batch": name, "first": first, "units": len(unit_ids), "seconds": seconds}


def assemble(folder: Path, model: Model, layer: str, batches: list[str], options: dict[str, Any], resumed: int,
             rendered: int, seconds: float) -> Result:
    """Every batch of ``folder`` (in unit order) as one result, with the contact sheet ``atlas.png`` among its files."""
    plan = layer_units(model, layer)
    parts = []
    for name in batches:
        with np.load(folder / BATCHES / name) as data:
            parts.append({"units": data["units"], "inputs": data["inputs"], "items": json.loads(str(data["items"])),
                          "seconds": float(data["seconds"])})
    inputs = torch.from_numpy(np.concatenate([b["inputs"] for b in parts]))
    with torch.no_grad():
        outputs = model(inputs)
    items = []
    for b in parts:
        for u, raw in zip(b["units"].tolist(), b["items"], strict=True):
            fields = dict(raw)
            items.append(Item(target=fields.pop("target"), status=fields.pop("status"), reason=fields.pop("reason"),
                              metrics={**fields, "unit": u}))
    render_s = sum(b["seconds"] for b in parts)
    result = Result(
        method="atlas", model=model.name, inputs=inputs, outputs=outputs, items=items,
        timing={"total_s": seconds, "render_s": render_s, "units_rendered_now": rendered,
                "units_per_s": plan.count / render_s if render_s > 0 else 0.0},
        info={"atlas": {"layer": plan.layer, "unit": plan.unit, "units": plan.count, "resumed_units": resumed},
              "options": options},
        labels=[f"{plan.unit} {u}" for u in range(plan.count)],
        value_range=(model.input_spec.low, model.input_spec.high), kind="atlas",
    )
    if model.input_spec.is_image:
        result.files[SHEET] = _contact_sheet(inputs, result.value_range, result.labels or [])
    return result


def _contact_sheet(inputs: torch.Tensor, value_range: tuple[float, float], captions: list[str]) -> bytes:
    """All units in one PNG: tiles in unit order with their captions, upscaled by a whole factor, at most
    ``SHEET_MAX_SIDE`` wide."""
    from PIL import Image, ImageDraw, ImageFont

    from netinvert.ground.images import to_uint8

    n = inputs.shape[0]
    h, w = inputs.shape[2], inputs.shape[3]
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    pad, caption = 2, 12
    factor = max(1, min(4, (SHEET_MAX_SIDE // cols - pad) // max(h, w)))
    th, tw = h * factor, w * factor
    sheet = np.full((rows * (th + caption + pad) + pad, cols * (tw + pad) + pad, 3), 255, dtype=np.uint8)
    for i, x in enumerate(inputs):
        tile = _upscale(to_uint8(x, value_range), factor)
        if tile.ndim == 2:
            tile = np.stack([tile] * 3, axis=-1)
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (th + caption + pad), pad + c * (tw + pad)
        sheet[y0 : y0 + th, x0 : x0 + tw] = tile
    image = Image.fromarray(sheet)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for i, text in enumerate(captions[:n]):
        r, c = divmod(i, cols)
        shown = text if 6 * len(text) <= tw else text.split()[-1]
        draw.text((pad + c * (tw + pad) + 1, pad + r * (th + caption + pad) + th), shown, fill="black", font=font)
    return png_bytes(image)


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    write_file(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def layers_with_units(model: Model) -> list[str]:
    """Every layer an atlas can render (a tensor output with units), in network order: ``--layers all``."""
    return [name for name, shape in model.layer_shapes().items() if shape]

