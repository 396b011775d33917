"""The driver of ``netinvert solve --instances``: every row of a VNN-COMP ``instances.csv`` is a task of the runner.

Each row gets a folder and a row in ``results.csv``; a rerun resumes (rows already answered are kept, keyed on
the content of their files, so however their paths are spelled), and a row that cannot be answered (malformed,
a missing or unreadable file, a spec that does not fit the network) is recorded with status ``error`` and its
message while the others go on. At the end the family is finished into its folder as one result of kind
``solve-family``, an item per row (:func:`family_result`, :func:`netinvert.report.finish.finish`).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import values
from netinvert.ground.output import write_text
from netinvert.ground.result import Item, Result
from netinvert.report.finish import finish
from netinvert.sweeps.runner import finished, run_sweep
from netinvert.sweeps.task import Plan, Record, Task
from netinvert.tasks.solve import Row, exact_options, solve_instance, solve_one

RESULT_FIELDS = ("onnx", "vnnlib", "status", "stage", "seconds", "reason")


@dataclass(frozen=True)
class Instance:
    """One row of an instances.csv: paths relative to the CSV's folder, ``timeout`` NaN when not given.

    ``error`` says why a malformed row cannot be run (empty for a good row).
    """

    onnx: Path
    vnnlib: Path
    timeout: float
    error: str = ""


def read_instances(path: Path) -> list[Instance]:
    """Rows ``onnx,vnnlib,timeout`` of a VNN-COMP instances.csv; a malformed row carries its error."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise NetinvertError(f"cannot read instances file {path}: {exc.strerror}") from exc
    rows = []
    for n, row in enumerate(csv.reader(lines), start=1):
        if not row or not "".join(row).strip():
            continue
        cells = [c.strip() for c in row] + ["", ""]
        onnx, vnnlib = path.parent / cells[0], path.parent / cells[1]
        if len(row) < 2:
            rows.append(Instance(onnx, vnnlib, math.nan,
                                 f"{path}:{n}: expected onnx,vnnlib[,timeout], got {','.join(row)!r}"))
            continue
        try:
            t = float(row[2]) if len(row) > 2 and row[2].strip() else math.nan
        except ValueError:
            rows.append(Instance(onnx, vnnlib, math.nan, f"{path}:{n}: timeout {row[2]!r} is not a number"))
            continue
        if t <= 0:
            rows.append(Instance(onnx, vnnlib, math.nan, f"{path}:{n}: timeout {row[2].strip()} must be more than 0"))
            continue
        rows.append(Instance(onnx, vnnlib, t))
    if not rows:
        raise NetinvertError(f"{path} lists no instances: expected rows onnx,vnnlib,timeout")
    return rows


def solve_task(onnx: Path, vnnlib: Path, folder: str, options: Any) -> Row:
    """One family row as a runner task: :func:`solve_one` with method ``exact``'s ``options`` (its time limit the
    row's), its folder saved, its CSV row."""
    rest = {name: value for name, value in values(options).items() if name not in ("timeout", "progress")}
    return solve_one(onnx, vnnlib, options.timeout, Path(folder), **rest)


def instance_task(onnx: str, vnnlib: str, timeout: float, **options: Any) -> Row:
    """An instance as a runner task that writes no folder (benchmarks): status, stage, reason, seconds, search;
    ``options``: method ``exact``'s."""
    t0 = time.perf_counter()
    result = solve_instance(onnx, vnnlib, timeout, **options)
    item = result.items[0]
    return {"status": item.status, "stage": str(item.metrics.get("stage", "")), "reason": item.reason,
            "seconds": time.perf_counter() - t0,
            "search": ",".join(sorted({c.get("search", "") for c in result.info.get("certificates", [])}))}


def family_tasks(rows: list[Instance], timeout: float | None, out: Path, **options: Any) -> list[Task | None]:
    """One task per good row (``None`` for a malformed one), keyed by the bytes of its two files and method
    ``exact``'s options (every field, defaults included), its time limit ``timeout`` or else the row's own.

    The runner's time limit is the instance's plus a margin for loading, so the solver normally answers
    ``unknown`` itself; the runner kills only a task stuck past that.
    """
    settings = exact_options(timeout, options)
    plan = Plan(solve_task, {}, unkeyed=("folder",))
    tasks: list[Task | None] = []
    for i, inst in enumerate(rows):
        if inst.error:
            tasks.append(None)
            continue
        t = timeout if timeout is not None else (inst.timeout if inst.timeout == inst.timeout else settings.timeout)
        folder = out / f"{i:03d}_{inst.onnx.stem}_{inst.vnnlib.stem}"
        tasks.append(plan.task({"onnx": inst.onnx, "vnnlib": inst.vnnlib, "folder": str(folder),
                                "options": replace(settings, timeout=t)},
                               f"{inst.onnx.name} {inst.vnnlib.name}", timeout=t * 1.25 + 10.0))
    return tasks


def family_row(inst: Instance, record: Record | None) -> Row:
    """The CSV row of an instance from its runner record (``error`` with its message, ``unknown`` when killed)."""
    base = {"onnx": str(inst.onnx), "vnnlib": str(inst.vnnlib)}
    if record is None:
        return {**base, "status": "error", "stage": "", "seconds": "0.00", "reason": inst.error}
    if record.status == "done":
        return {**record.row, **base}
    status = "unknown" if record.status == "timeout" else "error"
    return {**base, "status": status, "stage": "", "seconds": f"{record.seconds:.2f}", "reason": record.message}


def solve_family(instances: Path, timeout: float | None, out: Path,
                 progress: Callable[[int, int, Row], None] | None = None, *, engine: Any = None,
                 command: Sequence[str] | None = None, **options: Any) -> list[Row]:
    """Solve every row of ``instances`` not yet answered in ``out``; all rows, in file order. ``timeout`` (default:
    each row's own, else method ``exact``'s) and ``options``: method ``exact``'s.

    Each row is a task of :func:`netinvert.sweeps.runner.run_sweep` (``engine``: local processes or Ray),
    so a rerun resumes by the content of each row's files (however their paths are spelled), rows
    answered ``error`` are tried again, and ``out/results.csv`` is rewritten as each row is answered.
    ``progress(i, n, row)`` is called after each row solved now. Nothing is written before the engine runs. At
    the end the family is finished into ``out`` as one result (:func:`family_result`; ``command`` is the command
    line it records).
    """
    rows = read_instances(instances)
    tasks = family_tasks(rows, timeout, out, **options)
    unique = list({t.key: t for t in tasks if t is not None}.values())
    known = finished(out, unique)
    table_path = out / "results.csv"

    def table() -> list[Row]:
        return [family_row(inst, known.get(t.key) if t is not None else None)
                for inst, t in zip(rows, tasks, strict=True) if t is None or t.key in known]

    def answered(_: int, record: Record) -> None:
        known[record.key] = record
        write_text(table_path, _csv_text(table()))
        if progress is not None:
            i = next(i for i, t in enumerate(tasks) if t is not None and t.key == record.key)
            progress(i, len(rows), family_row(rows[i], record))

    for record in run_sweep(unique, out, engine=engine, on_record=answered, description="solve"):
        known[record.key] = record
    final = table()
    write_text(table_path, _csv_text(final))
    folders = [Path(t.args["folder"]) if t is not None and t.key in known else None for t in tasks]
    finish(family_result(instances, final, folders), out, command=command, in_place=True)
    return final


def family_result(instances: Path, rows: list[Row], folders: list[Path | None]) -> Result:
    """A family as one result of kind ``solve-family``: one item per row of ``instances`` (its status, stage,
    seconds and reason; from the row's own folder, when it has one, its bound statistics and counterexample)."""
    items = []
    for row, folder in zip(rows, folders, strict=True):
        metrics: dict[str, Any] = {"network": row["onnx"], "spec": row["vnnlib"], "stage": row["stage"],
                                   "seconds": float(row["seconds"] or 0)}
        if folder is not None and (folder / "result.json").exists():
            one = Result.load(folder)
            metrics["unstable"] = _unstable(one.info.get("certificates") or [])
            metrics.update({k: one.items[0].metrics.get(k) for k in ("margin", "rerun_error")})
            if "counterexample.txt" in one.files:
                metrics["counterexample"] = one.files["counterexample.txt"].decode()
        items.append(Item(f"{Path(row['onnx']).name} {Path(row['vnnlib']).name}", row["status"], row["reason"],
                          metrics))
    return Result(method="exact", model=instances.name, inputs=torch.empty(0), outputs=torch.empty(0), items=items,
                  timing={"total_s": sum(item.metrics["seconds"] for item in items)},
                  info={"instances": str(instances)}, kind="solve-family")


def _unstable(certificates: list[dict[str, Any]]) -> str:
    """ReLUs still unstable after CROWN out of all, over an instance's cases (the first four)."""
    cases = [c for c in certificates if isinstance(c, dict) and "unstable_crown" in c]
    if not cases:
        return "-"
    shown = " ".join(f"{sum(c['unstable_crown'])}/{sum(c.get('hidden') or [])}" for c in cases[:4])
    return shown + (" ..." if len(cases) > 4 else "")


def _csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_FIELDS)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
