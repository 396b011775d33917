"""``netinvert sample`` (generative models run top-down) and ``netinvert patterns`` (hidden-unit patterns)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from netinvert.cli.common import (
    LayerOpt,
    OutOpt,
    cli_errors,
    console,
    parse_targets,
    print_result,
    print_written,
)
from netinvert.cli.options import MethodFlags, ModelOptions, method_command, model_command
from netinvert.ground.output import check_writable


@cli_errors
@model_command()
@method_command("dbn")
def sample(
    model: ModelOptions,
    out: OutOpt,
    target: Annotated[list[str], typer.Option("--target", "-t", help="Class name or index to clamp (or all); "
                                              "repeat or separate with commas for several.")],
    options: MethodFlags,
) -> None:
    """Generate inputs from a deep belief net with its label clamped (e.g. --model dbn-digits)."""
    from netinvert.methods import invert
    from netinvert.report.finish import finish

    check_writable(out)
    net = model.load()
    result = invert(net, parse_targets(target, net), None, method="dbn", **options.for_method("dbn"))
    finish(result, out, net, command=sys.argv)
    print_result(result, out)


@cli_errors
@model_command()
def patterns(
    model: ModelOptions,
    layer: LayerOpt,
    out: OutOpt,
    pattern: Annotated[str, typer.Option(help="weights (composed weights) or backprojected (inverse activations).")]
    = "weights",
) -> None:
    """Every hidden unit's pattern in input space, as a contact sheet plus one PNG per unit."""
    from netinvert.report.finish import finish
    from netinvert.tasks.patterns import patterns_result

    check_writable(out)
    net = model.load()
    result = patterns_result(net, layer, pattern)
    finish(result, out, net, command=sys.argv)
    console.print(f"{len(result.items)} {pattern} patterns of {net.name}:{layer}", highlight=False)
    print_written(out, result.inputs)
