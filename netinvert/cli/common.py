"""Pieces every command shares: model options, target parsing, error handling, result tables."""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import spec_of
from netinvert.ground.page import fmt
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.units import Channel, Class, Layer, Neuron

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

TARGET_FORMS = "a class name or index, 'all', 'neuron:LAYER:I', 'channel:LAYER:C' or 'layer:LAYER'"

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
LayerOpt = Annotated[str, typer.Option("--layer", "-l", help="Layer name (see `netinvert layers`).")]
TargetOpt = Annotated[list[str], typer.Option("--target", "-t", help="Class name or index, all, neuron:LAYER:I, "
                                              "channel:LAYER:C or layer:LAYER; repeat the flag (or separate with "
                                              "commas) for several.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (results are deterministic for a seed).")]
ParamOpt = Annotated[str, typer.Option(help="Parameterization: auto, pixel, fourier, maco (phase only) or latent (learned prior).")]


def as_flags(message: str) -> str:
    """A library message names parameters in backticks (`input_shape`); on the command line they are flags."""
    from netinvert.cli.options import ModelOptions, SweepOptions
    from netinvert.methods import METHODS, options_of

    names = ({f.name for f in fields(ModelOptions)} | {f.name for f in fields(SweepOptions)} | {"out"}
             | {f.name for method in METHODS for f in fields(options_of(method)) if spec_of(f).cli})
    return re.sub(r"`([a-z_]+)`", lambda m: "--" + m.group(1).replace("_", "-") if m.group(1) in names
                  else m.group(0), message)


def cli_errors(fn: F) -> F:
    """Turn user errors into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NetinvertError as exc:
            err_console.print(Text.assemble(("error:", "bold red"), " ", as_flags(str(exc))), soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_targets(texts: list[str], model: Model) -> list[Target]:
    """Turn ``--target`` values into targets (``all`` expands to every class); a value that is no class name is
    also split at commas (``-t 3,5`` is ``-t 3 -t 5``)."""
    if not texts:
        raise NetinvertError(f"no --target given: give {TARGET_FORMS}")
    labels = set(model.class_names or ())
    parts = [p.strip() for text in texts for p in ([text] if text in labels else text.split(",")) if p.strip()]
    targets: list[Target] = []
    for text in parts:
        form, _, rest = text.partition(":")
        if text == "all":
            targets.extend(Class(k) for k in range(model.num_outputs))
        elif form in ("neuron", "channel") and rest:
            layer, _, index = rest.rpartition(":")
            if not layer or not index.lstrip("-").isdigit():
                raise NetinvertError(f"target {text!r} is malformed: use {form}:LAYER:INDEX, e.g. {form}:fc1:3")
            targets.append((Neuron if form == "neuron" else Channel)(layer, int(index)))
        elif form == "layer" and rest:
            targets.append(Layer(rest))
        elif ":" in text:
            raise NetinvertError(f"target {text!r} is not understood: give {TARGET_FORMS}")
        else:
            model.class_index(text)
            targets.append(Class(int(text) if text.lstrip("-").isdigit() else text))
    return targets


def print_written(out: Path, inputs: torch.Tensor) -> None:
    """Say which files a result folder holds; hint at ``--input-shape`` when flat inputs could be pictures."""
    files = sorted(p.name for p in out.iterdir() if p.suffix != ".png")
    pictures = sorted(out.glob("*.png"))
    line = f"wrote {out}: {', '.join(files)}" + (f" and {len(pictures)} pictures" if pictures else "")
    console.print(line, highlight=False, soft_wrap=True)
    size = int(inputs[0].numel()) if inputs.dim() == 2 and len(inputs) else 0
    for channels in (1, 3):
        side = math.isqrt(size // channels) if size % channels == 0 else 0
        if not pictures and side >= 4 and channels * side * side == size:
            console.print(f"note: inputs are flat ({size} values), so no pictures were drawn; if they are "
                          f"{side}x{side} images, pass --input-shape {channels},{side},{side}",
                          highlight=False, soft_wrap=True)
            break


def realism_line(r: dict[str, Any]) -> str:
    """One line on how real the class items look to the verifier (``netinvert.report.realism``)."""
    line = (f"realism (verifier {r['verifier']}, {r['items']} items): verifier agrees "
            f"{fmt(r['verifier_agreement'])}, verifier p {fmt(r['verifier_prob'])}; ")
    if r.get("frechet") is None:
        return line + f"not measured: {r.get('not_measured')}"
    line += (f"Frechet distance {r['frechet']:.1f} (real data {r['frechet_floor']:.1f}, "
             f"noise {r['frechet_ceiling']:.1f}: {fmt(r['gap_closed'])} of the gap closed)")
    if r.get("diversity") is not None:
        line += f"; diversity {r['diversity']:.2f} (real data {fmt(r.get('diversity_real'))})"
    return line


def print_result(result: Result, out: Path | None = None) -> None:
    """The summary table: target, status, model probability, verifier probability, agreement."""
    table = Table(title=f"{result.method} on {result.model}")
    for col in ("target", "status", "model p", "verifier p", "agrees", "activation"):
        table.add_column(col)
    for item in result.items:
        m = item.metrics
        table.add_row(item.target, item.status, fmt(m.get("model_prob")), fmt(m.get("verifier_prob")),
                      fmt(m.get("verifier_agrees")), fmt(m.get("activation")))
    console.print(table)
    if "realism" in result.info:
        console.print(realism_line(result.info["realism"]), highlight=False, soft_wrap=True)
    if out is not None:
        print_written(out, result.inputs)
    if any(item.metrics.get("verifier_note") for item in result.items):
        console.print("note: no independent verifier; pass --verifier PATH for an independent score")
    sys.stdout.flush()
