"""Unit atlas: render every unit of one layer (channels of conv layers, neurons of linear layers), in batches.

The output folder doubles as the checkpoint. Each finished batch is committed atomically as
``batches/bNNNNNN.npz`` (its units, inputs and scores) after the batch's unit PNGs are written,
so an interrupted run loses at most the batch in flight and a re-run with the same options
skips every finished unit. When all units are done the result is finished into the folder
(:func:`netinvert.report.finish.finish`): ``result.json``, ``inputs.npy`` (one row per unit, in unit
order), the contact sheet ``atlas.png`` and ``report.html``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.domains.domain import Domain
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import check_writable, write_file, write_json
from netinvert.ground.page import png_bytes
from netinvert.ground.result import Item, Result
from netinvert.methods import invert
from netinvert.models.wrapper import Model
from netinvert.report.finish import finish
from netinvert.targets.base import Target
from netinvert.targets.units import Channel, Neuron
from netinvert.tasks.task import Task, model_key, task_key

MANIFEST = "atlas.json"
SHEET = "atlas.png"
SHEET_MAX_SIDE = 4096
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Plan:
    layer: str
    kind: str
    count: int


def units(model: Model, layer: str) -> list[Target]:
    """One target per unit of ``layer``: ``Channel`` for outputs with positions (C, ...), else ``Neuron``."""
    plan = _plan(model, layer)
    make = Channel if plan.kind == "channel" else Neuron
    return [make(layer, i) for i in range(plan.count)]


def _plan(model: Model, layer: str) -> _Plan:
    model.get_layer(layer)
    shape = model.layer_shapes().get(layer)
    if not shape:
        raise NetinvertError(f"layer {layer!r} has no tensor output with units; choose a conv or linear layer")
    if len(shape) >= 2:
        return _Plan(layer, "channel", int(shape[0]))
    return _Plan(layer, "neuron", int(shape[0]))


def render(
    model: Model,
    layer: str,
    out: str | os.PathLike[str],
    domain: Domain | None = None,
    *,
    batch_size: int = 16,
    steps: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    threads: int | None = None,
    on_batch: Progress | None = None,
    command: Sequence[str] | None = None,
) -> Result:
    """Render every unit of ``layer`` into ``out``, resuming from the batches already there.

    ``on_batch(done, total)`` is called once before the first batch and after every batch
    (for progress bars). Batch ``b`` covers units ``b*batch_size ..`` and uses ``seed + first unit``,
    so a resumed atlas equals an uninterrupted one. ``command``: the command line to record with the result.
    """
    if batch_size < 1:
        raise NetinvertError(f"batch size {batch_size} must be >= 1")
    domain = domain or Domain()
    plan = _plan(model, layer)
    folder = Path(out)
    options = {"model": model.name, "layer": layer, "kind": plan.kind, "units": plan.count, "batch_size": batch_size,
               "steps": steps, "lr": lr, "seed": seed, "param": domain.resolved_param(model.input_spec),
               "bn_prior": domain.bn_prior, "tv": domain.tv, "l2": domain.l2}
    _open_folder(folder, options)
    done = _finished(folder)
    resumed = sum(len(b["units"]) for b in done.values())
    targets = units(model, layer)
    total = plan.count
    report = on_batch or (lambda _done, _total: None)
    report(resumed, total)
    start = time.perf_counter()
    rendered = 0
    for first in range(0, total, batch_size):
        if first in done:
            continue
        batch = targets[first : first + batch_size]
        t0 = time.perf_counter()
        part = invert(model, batch, domain, method="gradient", schedule="imagine", steps=steps, lr=lr,
                      seed=seed + first, threads=threads, early_stop=False, progress=False)
        done[first] = _commit(folder, model, first, part, time.perf_counter() - t0)
        rendered += len(batch)
        report(resumed + rendered, total)
    result = _assemble(model, plan, done, options, resumed, rendered, time.perf_counter() - start)
    finish(result, folder, model, command=command, in_place=True)
    return result


def _open_folder(folder: Path, options: dict[str, Any]) -> None:
    """Create the folder with its manifest, or check that an existing atlas there was made with ``options``."""
    manifest = folder / MANIFEST
    check_writable(folder, replace=False)
    if manifest.exists():
        try:
            before = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise NetinvertError(f"{manifest} is unreadable ({exc}); delete it or choose another --out") from exc
        changed = [f"{k}={before.get(k)!r} (now {v!r})" for k, v in options.items() if before.get(k) != v]
        if changed:
            raise NetinvertError(
                f"{folder} holds an atlas made with other options: {', '.join(changed)}; "
                "re-run with the same options to resume, or choose another --out"
            )
        return
    if folder.exists() and any(folder.iterdir()):
        raise NetinvertError(f"{folder} is not empty and holds no atlas; choose an empty or new --out folder")
    try:
        (folder / "batches").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetinvertError(f"cannot create {folder} ({exc.strerror}); choose another --out") from exc
    write_json(manifest, options)


def _finished(folder: Path) -> dict[int, dict[str, Any]]:
    """Committed batches by first unit (temp files of a batch in flight are ignored and removed)."""
    done: dict[int, dict[str, Any]] = {}
    batches = folder / "batches"
    batches.mkdir(exist_ok=True)
    for path in sorted(batches.iterdir()):
        if path.name.startswith("."):
            path.unlink()
            continue
        if path.suffix != ".npz":
            continue
        with np.load(path) as data:
            done[int(data["units"][0])] = {"units": data["units"], "inputs": data["inputs"],
                                           "items": json.loads(str(data["items"])), "seconds": float(data["seconds"])}
    return done


def _commit(folder: Path, model: Model, first: int, part: Result, seconds: float) -> dict[str, Any]:
    """Write the batch's PNGs, then its npz (the commit point), each atomically."""
    unit_ids = np.arange(first, first + len(part.items))
    if model.input_spec.is_image:
        from netinvert.ground.images import MIN_SIDE, to_uint8

        (folder / "units").mkdir(exist_ok=True)
        factor = max(1, -(-MIN_SIDE // min(part.inputs.shape[2:])))
        for u, x in zip(unit_ids, part.inputs, strict=True):
            _save_png(_upscale(to_uint8(x, part.value_range), factor), folder / "units" / f"unit_{u:05d}.png")
    items = [item.to_json() for item in part.items]
    record = {"units": unit_ids, "inputs": part.inputs.detach().cpu().numpy(), "items": json.dumps(items),
              "seconds": np.float64(seconds)}
    write_file(folder / "batches" / f"b{first:06d}.npz", lambda tmp: np.savez(tmp, **record))
    return {**record, "items": items, "seconds": seconds}


def _assemble(model: Model, plan: _Plan, done: dict[int, dict[str, Any]], options: dict[str, Any], resumed: int,
              rendered: int, seconds: float) -> Result:
    """Every batch in one result, with the contact sheet ``atlas.png`` among its files."""
    batches = [done[k] for k in sorted(done)]
    inputs = torch.from_numpy(np.concatenate([b["inputs"] for b in batches]))
    with torch.no_grad():
        outputs = model(inputs)
    items = []
    for b in batches:
        for u, raw in zip(b["units"].tolist(), b["items"], strict=True):
            fields = dict(raw)
            items.append(Item(target=fields.pop("target"), status=fields.pop("status"), reason=fields.pop("reason"),
                              metrics={**fields, "unit": u}))
    render_s = sum(b["seconds"] for b in batches)
    result = Result(
        method="atlas", model=model.name, inputs=inputs, outputs=outputs, items=items,
        timing={"total_s": seconds, "render_s": render_s, "units_rendered_now": rendered,
                "units_per_s": plan.count / render_s if render_s > 0 else 0.0},
        info={"atlas": {"layer": plan.layer, "kind": plan.kind, "units": plan.count, "resumed_units": resumed},
              "options": options},
        labels=[f"{plan.kind} {u}" for u in range(plan.count)],
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


def render_task(model: str, load_options: dict[str, Any], layer: str, out: str, domain: dict[str, Any],
                batch_size: int, steps: int, lr: float, seed: int, command: list[str] | None = None) -> dict[str, Any]:
    """One layer of an atlas sweep, as a runner task: load the model, :func:`render` the layer, return its row."""
    from netinvert.models.load import load

    net = load(model, **load_options)
    result = render(net, layer, out, Domain(**domain), batch_size=batch_size, steps=steps, lr=lr, seed=seed,
                    threads=torch.get_num_threads(), command=command)  # the engine's thread count per task
    info = result.info["atlas"]
    activation = [float(a) for a in result.metric("activation") if a is not None] if result.items else []
    return {"layer": layer, "kind": info["kind"], "units": info["units"],
            "mean_activation": float(np.mean(activation)) if activation else float("nan"),
            "render_s": result.timing["render_s"], "units_per_s": result.timing["units_per_s"], "folder": out}


def layers_with_units(model: Model) -> list[str]:
    """Every layer an atlas can render (a tensor output with units), in network order: ``--layers all``."""
    return [name for name, shape in model.layer_shapes().items() if shape]


def layer_tasks(model: Model, source: str, load_options: dict[str, Any], layers: list[str], out: Path,
                domain: dict[str, Any], *, batch_size: int = 16, steps: int = 256, lr: float = 0.05,
                seed: int = 0, command: list[str] | None = None) -> list[Task]:
    """One runner task per layer, each rendering into ``out/LAYER``; keyed by the model's content and the options
    (not by ``command``, the command line each layer's result records)."""
    for layer in layers:
        _plan(model, layer)
    ident = model_key(source, load_options)
    return [Task(render_task, {"model": source, "load_options": load_options, "layer": layer,
                               "out": str(out / safe_name(layer)), "domain": domain, "batch_size": batch_size,
                               "steps": steps, "lr": lr, "seed": seed, "command": command},
                 task_key("atlas", model=ident, layer=layer, domain=domain, batch_size=batch_size, steps=steps,
                          lr=lr, seed=seed), f"atlas {layer}")
            for layer in layers]


def safe_name(name: str) -> str:
    """A layer name as a folder name (``features.0`` stays, ``a/b`` becomes ``a_b``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
