"""VNN-COMP instances (an ONNX network and a VNNLIB property) answered exactly, one or a whole family.

An instance is loaded with :func:`~netinvert.models.load.load` and each of its input boxes is
answered by ``invert(model, output_set, Box(lo, hi), method="exact")`` until one reaches its
output set. A family is a VNN-COMP ``instances.csv``: every row is a task of the sweep runner
(:mod:`netinvert.tasks.runner`, on local processes or Ray) and gets a folder and a row in
``results.csv``; a rerun resumes (rows already answered are kept, keyed on the content of their
files, so however their paths are spelled), and a row that cannot be answered (malformed, a missing or unreadable file, a spec that does not fit the
network) is recorded with status ``error`` and its message while the others go on.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_text
from netinvert.ground.result import Item, Result
from netinvert.ground.run import time_limit_progress
from netinvert.methods import invert
from netinvert.models.load import load
from netinvert.report.finish import finish
from netinvert.targets.vnnlib import Spec, read_vnnlib
from netinvert.tasks.runner import read_records, run_sweep
from netinvert.tasks.task import Record, Task, task_key

RESULT_FIELDS = ("onnx", "vnnlib", "status", "stage", "seconds", "reason")
Row = dict[str, str]


def solve_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float = 60.0, *, alpha_steps: int = 30,
                   lp_tighten: bool = False, seed: int = 0) -> Result:
    """Answer an ONNX + VNNLIB instance: one item, found if any input box reaches its output set."""
    t0 = time.perf_counter()
    model = load(onnx_path)
    spec = read_vnnlib(vnnlib_path)
    n_in, n_out = int(np.prod(model.input_spec.shape)), model.num_outputs
    if spec.num_inputs != n_in:
        raise NetinvertError(
            f"{vnnlib_path}: the spec declares {spec.num_inputs} inputs but {Path(onnx_path).name} has {n_in}"
        )
    _check_outputs(spec, n_out, vnnlib_path, Path(onnx_path).name)
    answers: list[Result] = []
    status, reason = "none-exists", ""
    for case in spec.cases:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            status, reason = "unknown", "time limit"
            break
        box = Box(torch.from_numpy(case.lo), torch.from_numpy(case.hi))
        res = invert(model, case.output, box, method="exact", timeout=left, alpha_steps=alpha_steps,
                     lp_tighten=lp_tighten, seed=seed, progress=False)
        answers.append(res)
        if res.items[0].status == "found":
            status, reason = "found", ""
            break
        if res.items[0].status == "unknown":
            status, reason = "unknown", res.items[0].reason
    found = next((r for r in answers if r.items[0].status == "found"), None)
    elapsed = time.perf_counter() - t0
    stage = (found or answers[-1]).items[0].metrics["stage"] if answers else "load"  # no time left after loading
    item = Item(Path(vnnlib_path).name, status, reason,
                {"stage": stage, "solve_seconds": elapsed,
                 "margin": found.items[0].metrics["margin"] if found else float("nan")})
    x = found.inputs[0].double().reshape(-1) if found else torch.full((n_in,), math.nan, dtype=torch.float64)
    y = found.outputs[0].double() if found else torch.full((n_out,), math.nan, dtype=torch.float64)
    files = {}
    if found:
        with torch.no_grad():  # a plain forward pass of the saved input, beside the solver's own re-check
            fresh = model(x.float().reshape(1, *model.input_spec.shape)).double().cpu().reshape(-1)
        item.metrics["rerun_error"] = float((fresh - y).abs().max())
        files["counterexample.txt"] = counterexample_text(x.numpy(), y.numpy()).encode()
    return Result(method="exact", model=model.name, inputs=x[None], outputs=y[None], items=[item],
                  timing={"total_s": elapsed},
                  info={"status": status, "network": str(onnx_path), "spec": str(vnnlib_path), "cases": len(spec.cases),
                        "certificates": [r.info["certificates"][0] for r in answers]},
                  kind="solve", files=files)


def _check_outputs(spec: Spec, n_out: int, vnnlib_path: str | Path, net: str) -> None:
    """A spec must declare exactly the network's outputs; the error names the first variable it lacks
    or the last one (a constrained one first) it has beyond them."""
    if spec.num_outputs == n_out:
        return
    outputs = f"{net} has {n_out} outputs (Y_0..Y_{n_out - 1})"
    if spec.num_outputs < n_out:
        raise NetinvertError(f"{vnnlib_path}: the spec declares no Y_{spec.num_outputs} but {outputs}: declare "
                             "every output")
    used = [int(j) for case in spec.cases for a, _ in case.output.disjuncts for j in np.flatnonzero(a.any(axis=0))]
    beyond = [j for j in used if j >= n_out]
    if beyond:
        raise NetinvertError(f"{vnnlib_path}: the spec constrains Y_{max(beyond)} but {outputs}")
    raise NetinvertError(f"{vnnlib_path}: the spec declares Y_{spec.num_outputs - 1} but {outputs}")


def counterexample_text(x: np.ndarray, y: np.ndarray) -> str:
    """The VNN-COMP counterexample format: ``((X_0 v) ... (Y_j v))``, one pair per line."""
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.asarray(x).reshape(-1))]
    pairs += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.asarray(y).reshape(-1))]
    return "(" + "\n ".join(pairs) + ")\n"


def solve_one(onnx_path: Path, vnnlib_path: Path, timeout: float, out: Path, alpha_steps: int = 30,
              progress: bool | None = None, command: Sequence[str] | None = None) -> Row:
    """Solve one instance, save its folder (with ``counterexample.txt`` when found) and return its CSV row.

    ``progress``: the time used against the limit while it runs (see ``time_limit_progress``); ``command``: the
    command line to record with the result.
    """
    with time_limit_progress(progress, timeout, f"solving {Path(vnnlib_path).name}"):
        result = solve_instance(onnx_path, vnnlib_path, timeout, alpha_steps=alpha_steps)
    item = result.items[0]
    finish(result, out, command=command)
    return {
        "onnx": str(onnx_path),
        "vnnlib": str(vnnlib_path),
        "status": item.status,
        "stage": str(item.metrics.get("stage", "")),
        "seconds": f"{item.metrics['solve_seconds']:.2f}",
        "reason": item.reason,
    }


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
        rows.append(Instance(onnx, vnnlib, t))
    if not rows:
        raise NetinvertError(f"{path} lists no instances: expected rows onnx,vnnlib,timeout")
    return rows


def solve_task(onnx: str, vnnlib: str, timeout: float, folder: str, alpha_steps: int = 30) -> Row:
    """One family row as a runner task: :func:`solve_one` on plain strings (what a worker receives)."""
    return solve_one(Path(onnx), Path(vnnlib), timeout, Path(folder), alpha_steps)


def instance_task(onnx: str, vnnlib: str, timeout: float, alpha_steps: int = 30) -> Row:
    """An instance as a runner task that writes no folder (benchmarks): status, stage, reason, seconds, search."""
    t0 = time.perf_counter()
    result = solve_instance(onnx, vnnlib, timeout, alpha_steps=alpha_steps)
    item = result.items[0]
    return {"status": item.status, "stage": str(item.metrics.get("stage", "")), "reason": item.reason,
            "seconds": time.perf_counter() - t0,
            "search": ",".join(sorted({c.get("search", "") for c in result.info.get("certificates", [])}))}


def family_tasks(rows: list[Instance], timeout: float | None, out: Path, alpha_steps: int = 30) -> list[Task | None]:
    """One task per good row (``None`` for a malformed one), keyed by the bytes of its two files and its options.

    The runner's time limit is the instance's plus a margin for loading, so the solver normally answers
    ``unknown`` itself; the runner kills only a task stuck past that.
    """
    tasks: list[Task | None] = []
    for i, inst in enumerate(rows):
        if inst.error:
            tasks.append(None)
            continue
        t = timeout if timeout is not None else (inst.timeout if inst.timeout == inst.timeout else 60.0)
        key = task_key("solve", [inst.onnx, inst.vnnlib], timeout=t, alpha_steps=alpha_steps)
        folder = out / f"{i:03d}_{inst.onnx.stem}_{inst.vnnlib.stem}"
        tasks.append(Task(solve_task, {"onnx": str(inst.onnx), "vnnlib": str(inst.vnnlib), "timeout": t,
                                       "folder": str(folder), "alpha_steps": alpha_steps},
                          key, f"{inst.onnx.name} {inst.vnnlib.name}", timeout=t * 1.25 + 10.0))
    return tasks


def family_row(inst: Instance, record: Record | None) -> Row:
    """The CSV row of an instance from its runner record (``error`` with its message, ``unknown`` when killed)."""
    base = {"onnx": str(inst.onnx), "vnnlib": str(inst.vnnlib)}
    if record is None:
        return {**base, "status": "error", "stage": "", "seconds": "0.00", "reason": inst.error}
    if record.state == "done":
        return {**record.row, **base}
    status = "unknown" if record.state == "timeout" else "error"
    return {**base, "status": status, "stage": "", "seconds": f"{record.seconds:.2f}", "reason": record.message}


def solve_family(instances: Path, timeout: float | None, out: Path, alpha_steps: int = 30,
                 progress: Callable[[int, int, Row], None] | None = None, *, engine: Any = None,
                 command: Sequence[str] | None = None) -> list[Row]:
    """Solve every row of ``instances`` not yet answered in ``out``; all rows, in file order.

    Each row is a task of :func:`netinvert.tasks.runner.run_sweep` (``engine``: local processes or Ray),
    so a rerun resumes by the content of each row's files (however their paths are spelled), rows
    answered ``error`` are tried again, and ``out/results.csv`` is rewritten as each row is answered.
    ``progress(i, n, row)`` is called after each row solved now. At the end the family is finished into
    ``out`` as one result (:func:`family_result`; ``command`` is the command line it records).
    """
    rows = read_instances(instances)
    out.mkdir(parents=True, exist_ok=True)
    tasks = family_tasks(rows, timeout, out, alpha_steps)
    unique = list({t.key: t for t in tasks if t is not None}.values())
    known = {k: r for k, r in read_records(out).items() if r.state != "error"}
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

    write_text(table_path, _csv_text(table()))
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
