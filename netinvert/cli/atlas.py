"""``netinvert atlas``: render every unit of a layer into a folder, resumably, with a progress bar."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from netinvert.cli.common import (
    LayerOpt,
    LrOpt,
    OutOpt,
    ParamOpt,
    SeedOpt,
    StepsOpt,
    ThreadsOpt,
    cli_errors,
    console,
    err_console,
)
from netinvert.cli.options import ModelOptions, model_command
from netinvert.cli.report import save_report


@cli_errors
@model_command()
def atlas(
    model: ModelOptions,
    layer: LayerOpt,
    out: OutOpt,
    batch_size: Annotated[int, typer.Option(min=1, help="Units rendered together in one batch.")] = 16,
    steps: StepsOpt = 256,
    lr: LrOpt = 0.05,
    seed: SeedOpt = 0,
    param: ParamOpt = "auto",
    tv: Annotated[float, typer.Option(min=0.0, help="Total-variation prior weight.")] = 0.0,
    bn_prior: Annotated[float | None, typer.Option(min=0.0, help="BatchNorm-statistics prior weight (default: off).")] = None,
    data_prior: Annotated[float | None, typer.Option(min=0.0, help="Data prior weight (default: on for known data).")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Render every unit of a layer (conv channels, linear neurons): a contact sheet, one PNG per unit, result.json.

    Re-running the same command resumes: finished units are skipped; an interrupted run loses at most one batch.
    """
    from netinvert.domains.domain import Domain
    from netinvert.tasks.atlas import SHEET, render

    net = model.load()
    domain = Domain(param=param, tv=tv, bn_prior=bn_prior, data_prior=data_prior)
    columns = (TextColumn(f"atlas {net.name}:{layer}"), BarColumn(), MofNCompleteColumn(), TextColumn("units"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    state = {"done": 0, "total": 0}
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = None

        def on_batch(done: int, total: int) -> None:
            nonlocal task
            state.update(done=done, total=total)
            if task is None:
                task = bar.add_task("atlas", total=total, completed=done)
            else:
                bar.update(task, completed=done)

        try:
            result = render(net, layer, out, domain, batch_size=batch_size, steps=steps, lr=lr, seed=seed,
                            threads=threads, on_batch=on_batch)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: {state['done']} of {state['total']} units are saved in {out}; "
                              "run the same command again to resume", soft_wrap=True, highlight=False)
            raise typer.Exit(130) from None
    save_report(out)
    info = result.info["atlas"]
    pictures = f"{SHEET}, units/unit_*.png, " if net.input_spec.is_image else ""
    console.print(f"wrote {out}: {pictures}result.json, inputs.npy - {info['units']} {info['kind']}s of {layer} "
                  f"({info['resumed_units']} resumed), {result.timing['units_per_s']:.2f} units/s",
                  soft_wrap=True, highlight=False)
