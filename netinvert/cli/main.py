"""The ``netinvert`` command line: one command per method family."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.table import Table

from netinvert.cli.atlas import atlas
from netinvert.cli.classic import patterns, sample
from netinvert.cli.common import (
    OutOpt,
    ParamOpt,
    TargetOpt,
    cli_errors,
    console,
    parse_targets,
    print_result,
)
from netinvert.cli.design import design
from netinvert.cli.invert import invert as invert_command
from netinvert.cli.invert import leakage
from netinvert.cli.options import MethodFlags, ModelOptions, method_command, model_command
from netinvert.cli.pictures import draw, warp
from netinvert.cli.preimage import preimage
from netinvert.cli.report import report
from netinvert.cli.solve import solve
from netinvert.ground.errors import NetinvertError, choices

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Run trained neural networks in reverse.")
zoo_app = typer.Typer(no_args_is_help=True, help="The built-in zoo of models.")
app.add_typer(zoo_app, name="zoo")
app.command("solve")(solve)
app.command("atlas")(atlas)
app.command("invert")(invert_command)
app.command("leakage")(leakage)
app.command("sample")(sample)
app.command("patterns")(patterns)
app.command("preimage")(preimage)
app.command("report")(report)
app.command("draw")(draw)
app.command("warp")(warp)
app.command("design")(design)

def _version(value: bool) -> None:
    if value:
        from netinvert import __version__

        console.print(f"netinvert {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run trained neural networks in reverse."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("netinvert")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)


IMAGINE_METHODS = ("gradient", "langevin", "analytic")


@app.command()
@cli_errors
@model_command()
@method_command(*IMAGINE_METHODS)
def imagine(
    model: ModelOptions,
    out: OutOpt,
    target: TargetOpt,
    options: MethodFlags,
    method: Annotated[str, typer.Option(help=f"{', '.join(IMAGINE_METHODS)}.")] = "gradient",
    param: ParamOpt = "auto",
    tv: Annotated[float, typer.Option(min=0.0, help="Total-variation prior weight.")] = 0.0,
    data_prior: Annotated[float | None, typer.Option(min=0.0, help="Weight of the data prior (default: on when data is known).")] = None,
) -> None:
    """Imagine inputs that make the model produce each target (class visualization, unit visualization)."""
    from netinvert.domains.domain import Domain
    from netinvert.ground.output import check_writable
    from netinvert.methods import invert
    from netinvert.report.finish import finish

    if method not in IMAGINE_METHODS:
        raise NetinvertError(f"unknown method {method!r} for imagine: choose one of {choices(IMAGINE_METHODS)}")
    chosen = options.for_method(method)
    check_writable(out)
    net = model.load()
    targets = parse_targets(target, net)
    result = invert(net, targets, Domain(param=param, tv=tv, data_prior=data_prior), method=method, **chosen)
    finish(result, out, net, command=sys.argv)
    print_result(result, out)


@app.command()
@cli_errors
@model_command(positional=True)
def layers(model: ModelOptions) -> None:
    """List every layer of a model with its type and output shape."""
    net = model.load()
    table = Table(title=f"{net.name}: input {tuple(net.input_spec.shape)}, range "
                        f"[{net.input_spec.low:g}, {net.input_spec.high:g}]")
    table.add_column("layer", no_wrap=True, min_width=max(map(len, net.layer_names()), default=5))
    table.add_column("type")
    table.add_column("output shape")
    for info in net.layer_table().values():
        table.add_row(info.name, info.layer_type, str(info.shape if info.shape is not None else "-"))
    console.print(table)
    if net.logits_layer is not None:
        console.print(f"final softmax found at {net.logits_layer!r}: targets use its input (the logits); "
                      "pass --keep-softmax to use the probabilities it outputs", highlight=False, soft_wrap=True)


@zoo_app.command("list")
@cli_errors
def zoo_list() -> None:
    """Show the zoo models: architecture, data, test accuracy and whether they are trained and cached."""
    from safetensors import safe_open

    from netinvert.models.zoo import ENTRIES, cache_path

    table = Table(title="netinvert zoo")
    for col in ("name", "architecture", "data", "test accuracy", "cached"):
        table.add_column(col)
    for name, entry in ENTRIES.items():
        path = cache_path(name)
        accuracy = "-"
        if path.exists():
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                accuracy = meta.get("test_accuracy") or (f"mse {meta['test_mse']}" if "test_mse" in meta else "-")
        table.add_row(name, entry.summary, entry.dataset, accuracy, "yes" if path.exists() else "no (trains on use)")
    console.print(table)


@zoo_app.command("train")
@cli_errors
def zoo_train(
    names: Annotated[list[str] | None, typer.Argument(help="Models to train (default: all).")] = None,
    data: Annotated[str | None, typer.Option(help="Data: mnist:DIR, file.npz (x, y) or an image folder.")] = None,
) -> None:
    """Train (or load from the cache) zoo models and print their test accuracy."""
    from netinvert.models.zoo import load_zoo, zoo_names

    for name in names or zoo_names():
        net = load_zoo(name, data=data, verifier=False, quiet=False)
        score = (f"test accuracy {net.info['test_accuracy']:.4f}" if "test_accuracy" in net.info
                 else f"test MSE {net.info['test_mse']:.3g}")
        console.print(f"{name}: {score} on {net.info['data']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
