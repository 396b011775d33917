"""``netinvert solve``: answer ONNX + VNNLIB instances exactly (found / none-exists / unknown).

One instance: ``netinvert solve NET.onnx SPEC.vnnlib --timeout S --out DIR`` writes ``result.json``
and, when found, ``counterexample.txt`` in the VNN-COMP format; ``--result-file F`` also writes the VNN-COMP
result file and ``--started-at T`` counts the timeout from a harness's start (``vnncomp/run_instance.sh``). A family:
``netinvert solve --instances instances.csv --timeout S --out DIR [--engine local --jobs N | --engine ray]``
answers every row as a task of the sweep runner (resuming from ``DIR/sweep/``), prints a table and
writes the per-instance CSV; a row that cannot be answered is recorded as ``error`` with its message. The work is
:mod:`netinvert.tasks.solve`, the family's driver :mod:`netinvert.sweeps.solve`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from netinvert.cli.common import cli_errors
from netinvert.cli.options import MethodFlags, SweepOptions, method_command, sweep_command
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import check_writable, write_text
from netinvert.sweeps.solve import solve_family
from netinvert.tasks.solve import check_instance, solve_one


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
@method_command("exact", notes={"timeout": "With --instances: each row's own time limit when not given."})
def solve(
    options: MethodFlags,
    network: Annotated[Path | None, typer.Argument(help="The network: an ONNX file (piecewise-linear) or a zoo name.")] = None,
    spec: Annotated[Path | None, typer.Argument(help="VNNLIB property: input box and output constraints.")] = None,
    instances: Annotated[
        Path | None, typer.Option(help="A VNN-COMP instances.csv (onnx,vnnlib,timeout) to solve all of.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("solve-out"),
    result_file: Annotated[Path | None, typer.Option(
        help="Also write the VNN-COMP result file: sat (and the counterexample), unsat, timeout or unknown.")] = None,
    started_at: Annotated[float | None, typer.Option(
        help="Unix time the --timeout counts from (default: when solving starts); a harness passes its own start, "
             "e.g. $(date +%s.%N), so that Python's start and reading the files count.")] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Only read the network and the spec and check that they fit; solve and write nothing.")] = False,
    sweep: SweepOptions = SweepOptions(),
) -> None:
    """Find an input in the spec's box that reaches its output set, or prove that none exists."""
    import torch

    torch.set_num_threads(1)
    console = Console()
    given = options.for_method("exact")
    timeout = given.pop("timeout", None)
    try:
        if instances is not None:
            if network is not None or spec is not None:
                raise NetinvertError("give either NET.onnx SPEC.vnnlib or --instances CSV, not both")
            if result_file is not None or started_at is not None or check:
                raise NetinvertError("--result-file, --started-at and --check are for one instance: "
                                     "give NET.onnx SPEC.vnnlib")
            runner = sweep.runner()
            rows = solve_family(instances, timeout, out, progress=lambda i, n, row: _print_row(console, i, n, row),
                                engine=runner, command=sys.argv, **given)
            _print_table(console, instances, rows)
            return
        if network is None or spec is None:
            raise NetinvertError("give NET.onnx and SPEC.vnnlib (or --instances instances.csv)")
        if check:
            console.print(check_instance(network, spec), highlight=False)
            return
        _check_vnncomp_options(result_file, started_at)
        check_writable(out)
        row = solve_one(network, spec, timeout, out, command=sys.argv, result_file=result_file, started_at=started_at,
                        **given)
        console.print(
            f"{spec.name}: [bold]{row['status']}[/] ({row['stage']}, {row['seconds']} s) {row['reason']}",
            highlight=False,
        )
        console.print(
            f"wrote {out}/result.json" + (f" and {out}/counterexample.txt" if row["status"] == "found" else ""),
            highlight=False,
        )
        if started_at is not None:  # a harness counts the exit too: skip the interpreter's teardown (about a second
            _exit_now()             # with torch loaded on a busy machine); the answer and the folder are on disk
    except NetinvertError:  # one line from cli_errors; a harness reads `error` in the result file
        if result_file is not None and instances is None and not result_file.is_dir():
            with contextlib.suppress(OSError):
                write_text(result_file, "error\n")
        raise


def _exit_now() -> None:
    """End the process at once with code 0, streams and log handlers flushed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check_vnncomp_options(result_file: Path | None, started_at: float | None) -> None:
    """Refuse a result file that cannot be written and a start time in the future, before any work."""
    if result_file is not None:
        parent = result_file.absolute().parent
        if result_file.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise NetinvertError(f"cannot write the result file {result_file}: give a file in a writable folder "
                                 "as --result-file")
    if started_at is not None and not started_at <= time.time() + 1.0:
        raise NetinvertError(f"--started-at {started_at} is not a past Unix time: pass when the run began, "
                             "e.g. $(date +%s.%N)")
