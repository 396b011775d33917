"""``netinvert solve``: answer ONNX + VNNLIB instances exactly (found / none-exists / unknown).

One instance: ``netinvert solve NET.onnx SPEC.vnnlib --timeout S --out DIR`` writes ``result.json``
and, when found, ``counterexample.txt`` in the VNN-COMP format. A family:
``netinvert solve --instances instances.csv --timeout S --out DIR [--engine local --jobs N | --engine ray]``
answers every row as a task of the sweep runner (resuming from ``DIR/sweep/``), prints a table and
writes the per-instance CSV; a row that cannot be answered is recorded as ``error`` with its message. The work is
:mod:`netinvert.tasks.solve`, the family's driver :mod:`netinvert.sweeps.solve`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from netinvert.cli.common import cli_errors
from netinvert.cli.options import SweepOptions, sweep_command
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import check_writable
from netinvert.sweeps.solve import solve_family
from netinvert.tasks.solve import solve_one


def _print_row(console: Console, i: int, n: int, row: dict[str, str]) -> None:
    onnx, vnnlib = Path(row["onnx"]).name, Path(row["vnnlib"]).name
    console.print(f"[{i + 1}/{n}] {onnx} {vnnlib}: {row['status']} ({row['stage']}, {row['seconds']} s) {row['reason']}",
                  highlight=False)


def _print_table(console: Console, instances: Path, rows: list[dict[str, str]]) -> None:
    table = Table("onnx", "vnnlib", "status", "stage", "seconds", title=f"{instances}")
    for r in rows:
        table.add_row(Path(r["onnx"]).name, Path(r["vnnlib"]).name, r["status"], r["stage"], r["seconds"])
    console.print(table)


@cli_errors
@sweep_command()
def solve(
    network: Annotated[Path | None, typer.Argument(help="The network: an ONNX file (piecewise-linear) or a zoo name.")] = None,
    spec: Annotated[Path | None, typer.Argument(help="VNNLIB property: input box and output constraints.")] = None,
    instances: Annotated[
        Path | None, typer.Option(help="A VNN-COMP instances.csv (onnx,vnnlib,timeout) to solve all of.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per instance (default: the CSV's, else 60).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("solve-out"),
    alpha_steps: Annotated[int, typer.Option(help="Slope-optimization steps of alpha-CROWN (0: plain CROWN).")] = 30,
    sweep: SweepOptions = SweepOptions(),
) -> None:
    """Find an input in the spec's box that reaches its output set, or prove that none exists."""
    import torch

    torch.set_num_threads(1)
    console = Console()
    if timeout is not None and not timeout > 0:
        raise NetinvertError(f"--timeout {timeout:g} must be more than 0 seconds")
    if instances is not None:
        if network is not None or spec is not None:
            raise NetinvertError("give either NET.onnx SPEC.vnnlib or --instances CSV, not both")
        runner = sweep.runner()
        rows = solve_family(instances, timeout, out, alpha_steps,
                            progress=lambda i, n, row: _print_row(console, i, n, row), engine=runner,
                            command=sys.argv)
        _print_table(console, instances, rows)
        return
    if network is None or spec is None:
        raise NetinvertError("give NET.onnx and SPEC.vnnlib (or --instances instances.csv)")
    check_writable(out)
    row = solve_one(network, spec, timeout if timeout is not None else 60.0, out, alpha_steps, command=sys.argv)
    console.print(
        f"{spec.name}: [bold]{row['status']}[/] ({row['stage']}, {row['seconds']} s) {row['reason']}",
        highlight=False,
    )
    console.print(
        f"wrote {out}/result.json" + (f" and {out}/counterexample.txt" if row["status"] == "found" else ""),
        highlight=False,
    )
