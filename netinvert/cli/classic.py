"""``netinvert sample`` (generative models run top-down) and ``netinvert patterns`` (hidden-unit patterns)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from netinvert.cli.common import (
    GoalOpt,
    LayerOpt,
    OutOpt,
    SamplesOpt,
    SeedOpt,
    cli_errors,
    console,
    parse_targets,
    print_result,
)
from netinvert.cli.options import ModelOptions, model_command
from netinvert.cli.report import save_report
from netinvert.ground.output import check_writable


@cli_errors
@model_command()
def sample(
    model: ModelOptions,
    out: OutOpt,
    target: Annotated[list[str], typer.Option("--target", "-t", help="Class name or index to clamp (or all).")],
    samples: SamplesOpt = 16,
    gibbs_steps: Annotated[int, typer.Option(min=1, help="Alternating Gibbs steps in the top RBM.")] = 200,
    goal: GoalOpt = 0.99,
    seed: SeedOpt = 0,
) -> None:
    """Generate inputs from a deep belief net with its label clamped (e.g. --model dbn-digits)."""
    from netinvert.methods import invert

    check_writable(out)
    net = model.load()
    result = invert(net, parse_targets(target, net), None, method="dbn", samples=samples, gibbs_steps=gibbs_steps,
                    goal=goal, seed=seed)
    result.save(out)
    save_report(out)
    print_result(result, out)


@cli_errors
@model_command()
def patterns(
    model: ModelOptions,
    layer: LayerOpt,
    out: OutOpt,
    kind: Annotated[str, typer.Option(help="weights (composed weights) or backprojected (inverse activations).")]
    = "weights",
) -> None:
    """Every hidden unit's pattern in input space, as a contact sheet plus one PNG per unit."""
    from netinvert.ground.images import save_grid, save_items
    from netinvert.tasks.patterns import for_display, unit_patterns

    check_writable(out)
    net = model.load()
    found = unit_patterns(net, layer, kind)
    shown = for_display(found) if kind == "weights" else found
    value_range = (0.0, 1.0) if kind == "weights" else (net.input_spec.low, net.input_spec.high)
    captions = [f"{layer}:{j}" for j in range(found.shape[0])]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        np.save(tmp / "patterns.npy", found.detach().cpu().numpy())
        if net.input_spec.is_image:
            save_grid(shown, captions, tmp / "sheet.png", value_range)
            save_items(shown, captions, tmp, value_range)
        summary = {"model": net.name, "layer": layer, "kind": kind, "units": int(found.shape[0]),
                   "input_shape": list(net.input_spec.shape)}
        (tmp / "result.json").write_text(json.dumps(summary, indent=2))
        out.mkdir(exist_ok=True)
        for path in tmp.iterdir():
            path.replace(out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_report(out)
    console.print(f"{found.shape[0]} {kind} patterns of {net.name}:{layer} -> {out}/sheet.png, patterns.npy")
