"""The ``netinvert`` command line: one command per method family."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from netinvert.cli.atlas import atlas
from netinvert.cli.classic import patterns, sample
from netinvert.cli.common import (
    ArchKwargsOpt,
    ArchOpt,
    DataOpt,
    LabelsOpt,
    MeanOpt,
    ModelOpt,
    OutOpt,
    RangeOpt,
    ShapeOpt,
    StdOpt,
    TrustOpt,
    VerifierOpt,
    cli_errors,
    console,
    load_model,
    parse_targets,
    print_result,
)
from netinvert.cli.design import design
from netinvert.cli.invert import invert as invert_command
from netinvert.cli.invert import leakage
from netinvert.cli.solve import solve
from netinvert.ground.errors import NetinvertError, choices

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run trained neural networks in reverse.")
zoo_app = typer.Typer(no_args_is_help=True, help="The built-in zoo of models.")
app.add_typer(zoo_app, name="zoo")
app.command("solve")(solve)
app.command("atlas")(atlas)
app.command("invert")(invert_command)
app.command("leakage")(leakage)
app.command("sample")(sample)
app.command("patterns")(patterns)
app.command("design")(design)

IMAGINE_METHODS = ("gradient", "langevin", "analytic")


@app.command()
@cli_errors
def imagine(
    model: ModelOpt,
    out: OutOpt,
    target: Annotated[list[str], typer.Option("--target", "-t", help="Class name/index, all, neuron:L:I, channel:L:C.")],
    method: Annotated[str, typer.Option(help="gradient, langevin or analytic.")] = "gradient",
    steps: Annotated[int, typer.Option(help="Optimization steps.")] = 1024,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed (results are deterministic for a seed).")] = 0,
    param: Annotated[str, typer.Option(help="Parameterization: auto, pixel or fourier.")] = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Targets per batch (default: all at once).")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    goal: Annotated[float, typer.Option(help="Class probability that counts as reached.")] = 0.99,
    early_stop: Annotated[bool, typer.Option(help="Stop once every class target is reached.")] = True,
    samples: Annotated[int, typer.Option(help="Samples per target (langevin, analytic).")] = 1,
    metric: Annotated[str | None, typer.Option(help="analytic: data (closest to the training data) or euclidean.")]
    = None,
    diversity: Annotated[int, typer.Option(help="Distinct images per target (gradient).")] = 1,
    tv: Annotated[float, typer.Option(help="Total-variation prior weight.")] = 0.0,
    data_prior: Annotated[float | None, typer.Option(help="Weight of the data prior (default: on when data is known).")] = None,
    data: DataOpt = None,
    verifier: VerifierOpt = None,
    verifier_arch: Annotated[str | None, typer.Option(help="Architecture for a state-dict --verifier.")] = None,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    input_shape: ShapeOpt = None,
    input_range: RangeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    labels: LabelsOpt = None,
) -> None:
    """Imagine inputs that make the model produce each target (class visualization, unit visualization)."""
    from netinvert.domains.domain import Domain
    from netinvert.ground.output import check_writable
    from netinvert.methods import invert

    if method not in IMAGINE_METHODS:
        raise NetinvertError(f"unknown method {method!r} for imagine: choose one of {choices(IMAGINE_METHODS)}")
    check_writable(out)
    net = load_model(model, arch=arch, arch_kwargs=arch_kwargs, trust_pickle=trust_pickle, input_shape=input_shape,
                     input_range=input_range, mean=mean, std=std, labels=labels, data=data, verifier=verifier,
                     verifier_arch=verifier_arch)
    targets = parse_targets(target, net)
    domain = Domain(param=param, tv=tv, data_prior=data_prior)
    if method == "gradient":
        options = dict(steps=steps, lr=lr, seed=seed, batch_size=batch_size, threads=threads, goal_prob=goal,
                       early_stop=early_stop)
        if diversity != 1:
            options["diversity"] = diversity
        result = invert(net, targets, domain, method="gradient", **options)
    elif method == "langevin":
        result = invert(net, targets, domain, method="langevin", samples=samples, steps=steps, seed=seed,
                        goal_prob=goal)
    else:
        result = invert(net, targets, None, method="analytic", samples=samples, seed=seed, probability=goal,
                        metric=metric)
    result.save(out)
    print_result(result, out)


@app.command()
@cli_errors
def layers(
    model: Annotated[str, typer.Argument(help="Zoo name or model file.")],
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    input_shape: ShapeOpt = None,
    input_range: RangeOpt = None,
) -> None:
    """List every layer of a model with its type and output shape."""
    net = load_model(model, arch=arch, arch_kwargs=arch_kwargs, trust_pickle=trust_pickle, input_shape=input_shape,
                     input_range=input_range)
    shapes = net.layer_shapes()
    modules = dict(net.module.named_modules())
    table = Table(title=f"{net.name}: input {tuple(net.input_spec.shape)}, range "
                        f"[{net.input_spec.low:g}, {net.input_spec.high:g}]")
    table.add_column("layer")
    table.add_column("type")
    table.add_column("output shape")
    for name in net.layer_names():
        kind = getattr(modules[name], "op_type", type(modules[name]).__name__)
        table.add_row(name, str(kind), str(shapes.get(name, "-")))
    console.print(table)


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
    data: DataOpt = None,
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
