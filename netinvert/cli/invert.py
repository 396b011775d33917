"""Commands ``invert`` (reconstruct an input from a layer's activations) and ``leakage`` (how much each
layer leaks: every method at every layer on a fixed held-out set).

The lead registers them: ``app.command("invert")(invert)`` and ``app.command("leakage")(leakage)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import torch
import typer

from netinvert.cli.common import LayerOpt, OutOpt, cli_errors, console, print_written
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
from netinvert.ground.result import Result
from netinvert.tasks.leakage import INVERSION_METHODS, check_methods

SHARED = ("steps", "epochs", "seed", "threads")  # what a gradient inversion, a decoder and a hybrid have in common


@cli_errors
@model_command()
@method_command(*INVERSION_METHODS, only=SHARED)
def invert(
    model: ModelOptions,
    layer: LayerOpt,
    out: OutOpt,
    options: MethodFlags,
    image: Annotated[Path | None, typer.Option(help="Original input: an image file or .npy array.")] = None,
    index: Annotated[int | None, typer.Option(help="Original input: index into the held-out data.")] = None,
    activations: Annotated[Path | None, typer.Option(help="Activations of LAYER (.npy); no original known.")] = None,
    method: Annotated[str, typer.Option(help="decoder, gradient or hybrid (decoder start + gradient "
                                             "refinement).")] = "hybrid",
    metric: Annotated[str, typer.Option(help="Activation mismatch: mse (normalized) or cosine.")] = "mse",
) -> None:
    """Reconstruct an input from the activations of a hidden layer (feature inversion)."""
    from netinvert.data.sources import read_input
    from netinvert.ground.output import check_writable
    from netinvert.report.finish import finish
    from netinvert.targets.activations import load_activations
    from netinvert.tasks.leakage import reconstruct

    given = [name for name, v in (("--image", image), ("--index", index), ("--activations", activations))
             if v is not None]
    if len(given) != 1:
        raise NetinvertError(f"give exactly one of --image, --index or --activations (got {', '.join(given) or 'none'})")
    check_methods([method])
    chosen = options.for_method(method)
    check_writable(out)
    net = model.load()
    net.get_layer(layer)
    original = values = None
    if image is not None:
        original = torch.from_numpy(read_input(image, net.input_spec))[None]
    elif index is not None:
        held = net.data_split().x_held
        if not 0 <= index < len(held):
            raise NetinvertError(f"--index {index} is out of range: the held-out data has {len(held)} inputs")
        original = torch.from_numpy(held[index : index + 1])
    else:
        assert activations is not None
        values = load_activations(str(activations), net, layer)
    result = reconstruct(net, layer, original=original, activations=values, method=method, metric=metric, **chosen)
    finish(result, out, net, command=sys.argv)
    _print_items(result, out)


def _print_items(result: Result, out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{result.method} inversion of {result.info.get('layer')} in {result.model}")
    for col in ("item", "activation error", "PSNR dB", "SSIM", "verifier agrees"):
        table.add_column(col)
    for i, item in enumerate(result.items):
        m = item.metrics
        table.add_row(str(i), _fmt(m.get("activation_error"), ".2e"), _fmt(m.get("psnr"), ".2f"),
                      _fmt(m.get("ssim"), ".4f"), _fmt(m.get("verifier_agrees"), ""))
    console.print(table)
    print_written(out, result.inputs)


def _fmt(value: object, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


@cli_errors
@model_command()
@sweep_command()
@method_command(*INVERSION_METHODS, only=SHARED, defaults={"threads": 1}, notes={"threads": "Here: of each task."})
def leakage(
    model: ModelOptions,
    layers: Annotated[list[str], typer.Option(help="Layers to invert: repeat the flag or separate with commas, "
                                                   "e.g. --layers conv,pool,fc.")],
    out: OutOpt,
    options: MethodFlags,
    methods: Annotated[list[str], typer.Option(help="Methods: repeat the flag or separate with commas.")]
    = ["gradient", "decoder", "hybrid"],  # noqa: B006 - typer reads the default list, never changes it
    count: Annotated[int, typer.Option(min=1, help="How many held-out inputs to invert at each layer.")] = 64,
    sweep: SweepOptions = SweepOptions(),
) -> None:
    """Report how much each layer leaks about its input: PSNR, SSIM, verifier agreement per layer and method."""
    from netinvert.ground.output import check_writable
    from netinvert.report.leakage import table, write_leakage
    from netinvert.sweeps.leakage import leakage_sweep, reconstructions
    from netinvert.sweeps.task import ModelSource
    from netinvert.tasks.leakage import leakage_result

    check_writable(out, replace=False)
    layer_list, method_list = split_list(layers), split_list(methods)
    if not layer_list or not method_list:
        raise NetinvertError("give at least one layer with --layers and one method with --methods")
    check_methods(method_list)
    options.check_shared(method_list)
    given = {name: value for name, value in options.given.items() if name != "threads"}
    net = model.load()
    for name in layer_list:
        net.get_layer(name)
    runner = sweep.runner(options.given.get("threads"))
    rows = leakage_sweep(net, layer_list, method_list, out, source=ModelSource(model.model, model.load_options()),
                         count=count, options=given, engine=runner,
                         log=lambda r: console.print(f"{r['layer']} {r['method']}: PSNR {r['psnr']:.2f} dB",
                                                     highlight=False))
    recorded = {"layers": layer_list, "methods": method_list, "count": count, **given}
    write_leakage(rows, out, leakage_result(net, rows, count, recorded), reconstructions(out, rows),
                  title=f"leakage of {net.name}", command=sys.argv)
    console.print(table(rows), highlight=False)
    console.print(f"wrote {out}: leakage.json, leakage.md, psnr_vs_depth.png, reconstructions.png, result.json; "
                  "rerun the same command to resume or add layers and methods", highlight=False, soft_wrap=True)
