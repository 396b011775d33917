"""``netinvert atlas``: render every unit of a layer into a folder, resumably, with a progress bar."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from netinvert.cli.common import OutOpt, ParamOpt, cli_errors, console, err_console
from netinvert.cli.options import (
    MethodFlags,
    ModelOptions,
    SweepOptions,
    method_command,
    model_command,
    split_list,
    sweep_command,
)
from netinvert.ground.errors import NetinvertError
from netinvert.models.wrapper import Model
from netinvert.sweeps.atlas import ATLAS


@cli_errors
@model_command()
@sweep_command()
@method_command("gradient", only=("batch_size", "steps", "lr", "seed", "threads"), defaults=ATLAS)
def atlas(
    model: ModelOptions,
    out: OutOpt,
    options: MethodFlags,
    layer: Annotated[str | None, typer.Option("--layer", "-l", help="Layer name (see `netinvert layers`).")] = None,
    layers: Annotated[list[str] | None, typer.Option(help="Several layers as a sweep (repeat the flag, or a,b,c, or "
                                                          "all): one folder each under --out, one task each.")]
    = None,
    param: ParamOpt = "auto",
    tv: Annotated[float, typer.Option(min=0.0, help="Total-variation prior weight.")] = 0.0,
    bn_prior: Annotated[float | None, typer.Option(min=0.0, help="BatchNorm-statistics prior weight (default: off).")] = None,
    data_prior: Annotated[float | None, typer.Option(min=0.0, help="Data prior weight (default: on for known data).")] = None,
    sweep: SweepOptions = SweepOptions(),
) -> None:
    """Render every unit of a layer (conv channels, linear neurons): a contact sheet, one PNG per unit, result.json.

    Re-running the same command resumes: finished units are skipped; an interrupted run loses at most one batch.
    With --layers, each layer is a task of a sweep (--engine local --jobs N, or ray; see docs/scale.md).
    """
    from netinvert.domains.domain import Domain
    from netinvert.sweeps.atlas import render
    from netinvert.tasks.atlas import SHEET

    if (layer is None) == (not layers):
        raise NetinvertError("give one layer with --layer or several with --layers a,b,c (or --layers all)")
    given = options.for_method("gradient")
    net = model.load()
    domain = {"param": param, "tv": tv, "bn_prior": bn_prior, "data_prior": data_prior}
    if layers:
        _sweep(net, model, split_list(layers), out, domain, given, sweep.runner(given.get("threads")))
        return
    assert layer is not None
    columns = (TextColumn(f"atlas {net.name}:{layer}"), BarColumn(), MofNCompleteColumn(), TextColumn("units"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    counts = {"done": 0, "total": 0}
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = None

        def on_batch(done: int, total: int) -> None:
            nonlocal task
            counts.update(done=done, total=total)
            if task is None:
                task = bar.add_task("atlas", total=total, completed=done)
            else:
                bar.update(task, completed=done)

        try:
            result = render(net, layer, out, Domain(**domain), on_batch=on_batch, command=sys.argv, **given)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: {counts['done']} of {counts['total']} units are saved in {out}; "
                              "run the same command again to resume", soft_wrap=True, highlight=False)
            raise typer.Exit(130) from None
    info = result.info["atlas"]
    pictures = f"{SHEET}, units/unit_*.png, " if net.input_spec.is_image else ""
    console.print(f"wrote {out}: {pictures}result.json, inputs.npy - {info['units']} {info['unit']}s of {layer} "
                  f"({info['resumed_units']} resumed), {result.timing['units_per_s']:.2f} units/s",
                  soft_wrap=True, highlight=False)


def _sweep(net: Model, model: ModelOptions, layers: list[str], out: Path, domain: dict[str, Any],
           options: dict[str, Any], engine: Any) -> None:
    """``--layers``: one task per layer, each layer in ``out/LAYER``; the rows merged into ``out/layers.csv``."""
    from rich.table import Table

    from netinvert.sweeps.atlas import render_layers
    from netinvert.sweeps.runner import summary
    from netinvert.tasks.atlas import layers_with_units

    names = layers_with_units(net) if layers == ["all"] else layers
    records = render_layers(net, model.model, model.load_options(), names, out, domain, engine=engine,
                            command=sys.argv, **options)
    table = Table("layer", "status", "unit", "units", "units/s", "message", title=f"atlas of {net.name}")
    for name, record in zip(names, records, strict=True):
        row = record.row
        table.add_row(name, record.status, str(row.get("unit", "-")), str(row.get("units", "-")),
                      f"{row['units_per_s']:.2f}" if "units_per_s" in row else "-", record.message)
    console.print(table)
    console.print(f"wrote {out}: one atlas folder per layer and layers.csv ({summary(records)})", highlight=False,
                  soft_wrap=True)
