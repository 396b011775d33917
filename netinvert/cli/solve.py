"""``netinvert solve``: answer ONNX + VNNLIB instances exactly (found / none-exists / unknown).

One instance: ``netinvert solve NET.onnx SPEC.vnnlib --timeout S --out DIR`` writes ``result.json``
and, when found, ``counterexample.txt`` in the VNN-COMP format. A family:
``netinvert solve --instances instances.csv --timeout S --out DIR`` answers every row (resuming
from ``DIR/results.csv``), prints a table and writes the per-instance CSV.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from netinvert.cli.report import save_report
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_text

RESULT_FIELDS = ("onnx", "vnnlib", "status", "stage", "seconds", "reason")


def counterexample_text(x: np.ndarray, y: np.ndarray) -> str:
    """The VNN-COMP counterexample format: ``((X_0 v) ... (Y_j v))``, one pair per line."""
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.asarray(x).reshape(-1))]
    pairs += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.asarray(y).reshape(-1))]
    return "(" + "\n ".join(pairs) + ")\n"


def solve_one(onnx_path: Path, vnnlib_path: Path, timeout: float, out: Path, alpha_steps: int = 30) -> dict[str, str]:
    """Solve one instance, save its folder and return its CSV row."""
    from netinvert.methods.exact import solve_files

    result = solve_files(onnx_path, vnnlib_path, timeout, alpha_steps=alpha_steps)
    result.save(out, images=False)
    item = result.items[0]
    cex = out / "counterexample.txt"
    if item.status == "found":
        write_text(cex, counterexample_text(result.inputs[0].numpy(), result.outputs[0].numpy()))
    elif cex.exists():
        cex.unlink()
    return {
        "onnx": str(onnx_path),
        "vnnlib": str(vnnlib_path),
        "status": item.status,
        "stage": str(item.metrics.get("stage", "")),
        "seconds": f"{item.metrics['solve_seconds']:.2f}",
        "reason": item.reason,
    }


def read_instances(path: Path) -> list[tuple[Path, Path, float]]:
    """Rows ``onnx,vnnlib,timeout`` of a VNN-COMP instances.csv, paths relative to its folder."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise NetinvertError(f"cannot read instances file {path}: {exc.strerror}") from exc
    rows = []
    for n, row in enumerate(csv.reader(lines), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise NetinvertError(f"{path}:{n}: expected onnx,vnnlib[,timeout], got {','.join(row)!r}")
        try:
            t = float(row[2]) if len(row) > 2 and row[2].strip() else float("nan")
        except ValueError:
            raise NetinvertError(f"{path}:{n}: timeout {row[2]!r} is not a number") from None
        rows.append((path.parent / row[0].strip(), path.parent / row[1].strip(), t))
    if not rows:
        raise NetinvertError(f"{path} lists no instances: expected rows onnx,vnnlib,timeout")
    return rows


def solve_family(
    instances: Path, timeout: float | None, out: Path, alpha_steps: int = 30, console: Console | None = None
) -> list[dict[str, str]]:
    """Solve every instance (skipping those already in ``out/results.csv``); returns all rows."""
    console = console or Console()
    rows = read_instances(instances)
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "results.csv"
    done: dict[tuple[str, str], dict[str, str]] = {}
    if table_path.exists():
        with table_path.open() as f:
            for r in csv.DictReader(f):
                done[(r["onnx"], r["vnnlib"])] = r
    for i, (onnx_path, vnnlib_path, t_csv) in enumerate(rows):
        key = (str(onnx_path), str(vnnlib_path))
        if key in done:
            continue
        t = timeout if timeout is not None else (t_csv if t_csv == t_csv else 60.0)
        row = solve_one(onnx_path, vnnlib_path, t, out / f"{i:03d}_{onnx_path.stem}_{vnnlib_path.stem}", alpha_steps)
        done[key] = row
        console.print(
            f"[{i + 1}/{len(rows)}] {onnx_path.name} {vnnlib_path.name}: {row['status']} "
            f"({row['stage']}, {row['seconds']} s) {row['reason']}",
            highlight=False,
        )
        ordered = [done[(str(o), str(v))] for o, v, _ in rows if (str(o), str(v)) in done]
        write_text(table_path, _csv_text(ordered))
    ordered = [done[(str(o), str(v))] for o, v, _ in rows]
    table = Table("onnx", "vnnlib", "status", "stage", "seconds", title=f"{instances}")
    for r in ordered:
        table.add_row(Path(r["onnx"]).name, Path(r["vnnlib"]).name, r["status"], r["stage"], r["seconds"])
    console.print(table)
    return ordered


def _csv_text(rows: list[dict[str, str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_FIELDS)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def solve(
    network: Annotated[Path | None, typer.Argument(help="ONNX network (piecewise-linear).")] = None,
    spec: Annotated[Path | None, typer.Argument(help="VNNLIB property: input box and output constraints.")] = None,
    instances: Annotated[
        Path | None, typer.Option(help="A VNN-COMP instances.csv (onnx,vnnlib,timeout) to solve all of.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per instance (default: the CSV's, else 60).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("solve-out"),
    alpha_steps: Annotated[int, typer.Option(help="Slope-optimization steps of alpha-CROWN (0: plain CROWN).")] = 30,
) -> None:
    """Find an input in the spec's box that reaches its output set, or prove that none exists."""
    import torch

    torch.set_num_threads(1)
    console = Console()
    try:
        if instances is not None:
            if network is not None or spec is not None:
                raise NetinvertError("give either NET.onnx SPEC.vnnlib or --instances CSV, not both")
            solve_family(instances, timeout, out, alpha_steps, console)
            save_report(out)
            return
        if network is None or spec is None:
            raise NetinvertError("give NET.onnx and SPEC.vnnlib (or --instances instances.csv)")
        row = solve_one(network, spec, timeout if timeout is not None else 60.0, out, alpha_steps)
        save_report(out)
        console.print(
            f"{spec.name}: [bold]{row['status']}[/] ({row['stage']}, {row['seconds']} s) {row['reason']}",
            highlight=False,
        )
        console.print(
            f"wrote {out}/result.json" + (f" and {out}/counterexample.txt" if row["status"] == "found" else ""),
            highlight=False,
        )
    except NetinvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
