"""Pieces every command shares: model options, target parsing, error handling, result tables."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.units import Channel, Class, Layer, Neuron

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

TARGET_FORMS = "a class name or index, 'all', 'neuron:LAYER:I', 'channel:LAYER:C' or 'layer:LAYER'"

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Zoo name (see `netinvert zoo list`) or a model file.")]
ArchOpt = Annotated[str | None, typer.Option(help="Architecture for a state dict: pkg.module:Class or file.py:Class.")]
ArchKwargsOpt = Annotated[str | None, typer.Option("--arch-kwargs", help="Constructor kwargs for --arch, as JSON.")]
TrustOpt = Annotated[bool, typer.Option("--trust-pickle", help="Allow loading a pickled whole module (runs code).")]
ShapeOpt = Annotated[str | None, typer.Option("--input-shape", help="Input shape without batch, e.g. 1,28,28.")]
RangeOpt = Annotated[str | None, typer.Option("--input-range", help="Input value range, e.g. 0,1 or 0,255.")]
MeanOpt = Annotated[str | None, typer.Option(help="Per-channel mean applied inside the model, e.g. 0.485,0.456,0.406.")]
StdOpt = Annotated[str | None, typer.Option(help="Per-channel std applied inside the model.")]
LabelsOpt = Annotated[Path | None, typer.Option(help="Class names, one per line.")]
DataOpt = Annotated[str | None, typer.Option(help="Data: mnist:DIR, file.npz (x, y) or an image folder.")]
VerifierOpt = Annotated[str | None, typer.Option(help="An independent model file (same loading rules) to score with.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]


def cli_errors(fn: F) -> F:
    """Turn user errors into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NetinvertError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def load_model(model: str, *, arch: str | None = None, arch_kwargs: str | None = None, trust_pickle: bool = False,
               input_shape: str | None = None, input_range: str | None = None, mean: str | None = None,
               std: str | None = None, labels: Path | None = None, data: str | None = None,
               verifier: str | None = None, verifier_arch: str | None = None) -> Model:
    """Load a zoo model or a user's model file with the shared command-line options."""
    is_file = Path(model).exists() or any(model.endswith(s) for s in (".pt", ".pth", ".onnx", ".safetensors", ".ts"))
    if not is_file:
        from netinvert.models.zoo import load_zoo

        given = [flag for flag, value in (("--arch", arch), ("--arch-kwargs", arch_kwargs), ("--trust-pickle", trust_pickle),
                                          ("--input-shape", input_shape), ("--input-range", input_range),
                                          ("--mean", mean), ("--std", std), ("--labels", labels)) if value]
        if given:
            raise NetinvertError(f"{', '.join(given)} only apply to model files; {model!r} is a zoo model "
                                 "(or a missing file) and describes itself")

        loaded = load_zoo(model, data=data, quiet=False)
    else:
        from netinvert.models.load import load, parse_floats, parse_shape

        loaded = load(
            model, arch=arch, arch_kwargs=arch_kwargs, trust_pickle=trust_pickle,
            input_shape=parse_shape(input_shape) if input_shape else None,
            input_range=parse_floats(input_range, "--input-range") if input_range else None,
            mean=parse_floats(mean, "--mean") if mean else None, std=parse_floats(std, "--std") if std else None,
            labels=labels,
        )
        if data is not None:
            from netinvert.data.sources import load_source

            loaded.data = load_source(data, loaded.input_spec)
    if verifier is not None:
        loaded.verifier = load_verifier(verifier, loaded, arch=verifier_arch, trust_pickle=trust_pickle)
    return loaded


def load_verifier(path: str, model: Model, *, arch: str | None = None, trust_pickle: bool = False) -> Model:
    """An independent model on the same inputs; its class count must match the model's."""
    from netinvert.models.load import load

    spec = model.input_spec
    verifier = load(path, arch=arch, trust_pickle=trust_pickle, input_shape=spec.shape,
                    input_range=(spec.low, spec.high), mean=spec.mean, std=spec.std)
    if verifier.num_outputs != model.num_outputs:
        raise NetinvertError(f"verifier {path} has {verifier.num_outputs} outputs but {model.name} has "
                             f"{model.num_outputs}: a verifier must score the same classes")
    return verifier


def parse_targets(texts: list[str], model: Model) -> list[Target]:
    """Turn ``--target`` values into targets (``all`` expands to every class)."""
    if not texts:
        raise NetinvertError(f"no --target given: give {TARGET_FORMS}")
    targets: list[Target] = []
    for text in texts:
        kind, _, rest = text.partition(":")
        if text == "all":
            targets.extend(Class(k) for k in range(model.num_outputs))
        elif kind in ("neuron", "channel") and rest:
            layer, _, index = rest.rpartition(":")
            if not layer or not index.lstrip("-").isdigit():
                raise NetinvertError(f"target {text!r} is malformed: use {kind}:LAYER:INDEX, e.g. {kind}:fc1:3")
            targets.append((Neuron if kind == "neuron" else Channel)(layer, int(index)))
        elif kind == "layer" and rest:
            targets.append(Layer(rest))
        elif ":" in text:
            raise NetinvertError(f"target {text!r} is not understood: give {TARGET_FORMS}")
        else:
            model.class_index(text)
            targets.append(Class(int(text) if text.lstrip("-").isdigit() else text))
    return targets


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_result(result: Result, out: Path | None = None) -> None:
    """The summary table: target, status, model probability, verifier probability, agreement."""
    table = Table(title=f"{result.method} on {result.model}")
    for col in ("target", "status", "model p", "verifier p", "agrees", "activation"):
        table.add_column(col)
    for item in result.items:
        m = item.metrics
        table.add_row(item.target, item.status, _fmt(m.get("model_prob")), _fmt(m.get("verifier_prob")),
                      _fmt(m.get("verifier_agrees")), _fmt(m.get("activation")))
    console.print(table)
    if out is not None:
        console.print(f"wrote {out}/result.json, inputs.npy and pictures")
    if any(item.metrics.get("verifier_note") for item in result.items):
        console.print("note: no independent verifier; pass --verifier PATH for an independent score")
    sys.stdout.flush()
