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
