"""``netinvert design``: inverse design, inputs of a regression network that give wanted outputs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from netinvert.cli.common import OutOpt, cli_errors, console
from netinvert.cli.options import MethodFlags, ModelOptions, SweepOptions, method_command, model_command, sweep_command
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result

SHOWN = 10  # solutions per target in the printed table


def parse_values(text: str, flag: str = "--y") -> list[float]:
    """Comma-separated finite numbers, e.g. ``1.2,0.5``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NetinvertError(f"{flag} {text!r} is not a list of numbers: give e.g. {flag} 1.2,0.5") from None
    if not values:
        raise NetinvertError(f"{flag} is empty: give the wanted outputs, e.g. {flag} 1.2,0.5")
    if not all(math.isfinite(v) for v in values):
        raise NetinvertError(f"{flag} {text!r} holds a non-finite value: give finite numbers")
    return values


@cli_errors
@model_command()
@sweep_command()
@method_command("adjoint")
def design(
    model: ModelOptions,
    out: OutOpt,
    options: MethodFlags,
    y: Annotated[list[str] | None, typer.Option("--y", help="Wanted outputs, one vector as comma-separated numbers; "
                                                "repeat the flag for more targets.")] = None,
    targets: Annotated[Path | None, typer.Option(help="A file of targets, one line of wanted outputs each: a sweep, "
                                                      "one task per target (see docs/scale.md).")] = None,
    outputs: Annotated[str | None, typer.Option(help="Output indices the values are for, one vector as "
                                                     "comma-separated numbers (default: all).")] = None,
    simulator: Annotated[str | None, typer.Option(
        help="Re-simulate with module:function or a built-in (arm, sine, ballistics; default for zoo surrogates)."
    )] = None,
    sweep: SweepOptions = SweepOptions(),
) -> None:
    """Find T distinct inputs per target whose outputs equal the wanted values (neural-adjoint search)."""
    from netinvert.data.simulators import SIMULATORS, get_simulator
    from netinvert.ground.output import check_writable
    from netinvert.methods import invert
    from netinvert.report.finish import finish
    from netinvert.targets.regression import Regression

    if (not y) == (targets is None):
        raise NetinvertError("give the wanted outputs with --y (repeat for more targets) or a file with --targets")
    given = options.for_method("adjoint")
    picked = [int(v) for v in parse_values(outputs, "--outputs")] if outputs is not None else None
    sim_name = simulator or (model.model if model.model in SIMULATORS else None)
    sim = get_simulator(sim_name) if sim_name is not None else None
    if targets is not None:
        from netinvert.sweeps.design import design_sweep, read_targets

        check_writable(out, replace=False)
        net = model.load()
        records = design_sweep(net, model.model, model.load_options(), read_targets(targets), out,
                               engine=sweep.runner(given.get("threads")), outputs=picked, simulator=sim_name, **given)
        _print_sweep(records, out)
        return
    assert y is not None
    check_writable(out)
    values = [parse_values(text) for text in y]
    net = model.load()
    result = invert(net, [Regression(v, picked) for v in values], None, method="adjoint", simulator=sim, **given)
    finish(result, out, net, command=sys.argv)
    _print(result, sim is not None)
    console.print(f"wrote {out}/result.json, inputs.npy and pictures", highlight=False)


def _print_sweep(records: list[Any], out: Path) -> None:
    """``--targets``: the merged table of the targets (the first rows of ``out/targets.csv``)."""
    from netinvert.sweeps.runner import summary

    table = Table("target", "status", "found", "residual", "best re-simulated MSE", "message")
    for record in records[:SHOWN * 5]:
        row = record.row
        table.add_row(record.label, record.status, str(row.get("found", "-")),
                      f"{row['residual']:.3g}" if "residual" in row else "-",
                      f"{row['best_resim_mse']:.2e}" if "best_resim_mse" in row else "-", record.message)
    console.print(table)
    more = f"; {len(records) - SHOWN * 5} more rows in targets.csv" if len(records) > SHOWN * 5 else ""
    console.print(f"wrote {out}: one folder per target and targets.csv ({summary(records)}){more}", highlight=False,
                  soft_wrap=True)


def _print(result: Result, resimulated: bool) -> None:
    samples = int(result.info["options"]["samples"])
    for i, summary in enumerate(result.info["targets"]):
        table = Table(title=f"{result.model}: {summary['target']}")
        for col in ("rank", "x", "surrogate MSE", "re-simulated MSE", "status"):
            table.add_column(col, no_wrap=col == "x")
        for item, x in list(zip(result.items[i * samples : (i + 1) * samples],
                                result.inputs[i * samples : (i + 1) * samples], strict=True))[:SHOWN]:
            m = item.metrics
            table.add_row(str(m["rank"]), " ".join(f"{v:.3f}" for v in x.reshape(-1).tolist()),
                          f"{m['surrogate_mse']:.2e}",
                          f"{m['resim_mse']:.2e}" if resimulated and math.isfinite(m["resim_mse"]) else "-",
                          item.status)
        console.print(table)
        more = f" ({samples - SHOWN} more in result.json)" if samples > SHOWN else ""
        found = summary["found"]
        if found:
            console.print(f"{found}/{samples} solutions reach y within {summary['tolerance']:g}{more}", highlight=False)
        else:
            proved = summary.get("proof") == "none-exists"
            label = "none exists (proved for the network in the search box)" if proved else "not reached"
            closest = ", ".join(f"{v:.4g}" for v in summary["closest_output"])
            console.print(f"{label}: closest reachable output ({closest}), residual {summary['residual']:.3g} "
                          f"> tolerance {summary['tolerance']:g}{more}", highlight=False)
    if "r_curve" in result.info:
        curve = result.info["r_curve"]
        picks = [t for t in (1, 10, 50, 200) if t <= len(curve)]
        console.print("r_T (mean best re-simulated MSE of the first T): "
                      + ", ".join(f"r_{t} = {curve[t - 1]:.2e}" for t in picks), highlight=False)
