"""VNN-COMP instances (an ONNX network and a VNNLIB property) answered exactly, one or a whole family.

An instance is loaded with :func:`~netinvert.models.load.load` and each of its input boxes is
answered by ``invert(model, output_set, Box(lo, hi), method="exact")`` until one reaches its
output set. A family is a VNN-COMP ``instances.csv``: every row gets a folder and a row in
``results.csv``; a rerun resumes (rows already answered are kept, keyed on resolved paths), and a
row that cannot be answered (malformed, a missing or unreadable file, a spec that does not fit the
network) is recorded with status ``error`` and its message while the others go on.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_text
from netinvert.ground.result import Item, Result
from netinvert.methods import invert
from netinvert.models.load import load
from netinvert.targets.vnnlib import read_vnnlib

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
    if spec.num_outputs != n_out:
        raise NetinvertError(
            f"{vnnlib_path}: the spec declares {spec.num_outputs} outputs but {Path(onnx_path).name} has {n_out}"
        )
    answers: list[Result] = []
    status, reason = "none-exists", ""
    for case in spec.cases:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            status, reason = "unknown", "time limit"
            break
        box = Box(torch.from_numpy(case.lo), torch.from_numpy(case.hi))
        res = invert(model, case.output, box, method="exact", timeout=left, alpha_steps=alpha_steps,
                     lp_tighten=lp_tighten, seed=seed)
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
    return Result(method="exact", model=model.name, inputs=x[None], outputs=y[None], items=[item],
                  timing={"total_s": elapsed},
                  info={"status": status, "network": str(onnx_path), "spec": str(vnnlib_path), "cases": len(spec.cases),
                        "certificates": [r.info["certificates"][0] for r in answers]})


def counterexample_text(x: np.ndarray, y: np.ndarray) -> str:
    """The VNN-COMP counterexample format: ``((X_0 v) ... (Y_j v))``, one pair per line."""
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.asarray(x).reshape(-1))]
    pairs += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.asarray(y).reshape(-1))]
    return "(" + "\n ".join(pairs) + ")\n"


def solve_one(onnx_path: Path, vnnlib_path: Path, timeout: float, out: Path, alpha_steps: int = 30) -> Row:
    """Solve one instance, save its folder (with ``counterexample.txt`` when found) and return its CSV row."""
    result = solve_instance(onnx_path, vnnlib_path, timeout, alpha_steps=alpha_steps)
    item = result.items[0]

    def counterexample(folder: Path) -> None:
        if item.status == "found":
            write_text(folder / "counterexample.txt",
                       counterexample_text(result.inputs[0].numpy(), result.outputs[0].numpy()))

    result.save(out, images=False, extras=counterexample)
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

    @property
    def key(self) -> tuple[str, str]:
        """The row's identity for resuming: its resolved paths, however they were spelled."""
        return _key(self.onnx, self.vnnlib)


def _key(onnx: str | Path, vnnlib: str | Path) -> tuple[str, str]:
    return str(Path(onnx).resolve()), str(Path(vnnlib).resolve())


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


def solve_family(instances: Path, timeout: float | None, out: Path, alpha_steps: int = 30,
                 progress: Callable[[int, int, Row], None] | None = None) -> list[Row]:
    """Solve every row of ``instances`` not yet answered in ``out/results.csv``; all rows, in file order.

    ``progress(i, n, row)`` is called after each row solved now. Rows recorded as ``error`` are
    tried again on a rerun.
    """
    rows = read_instances(instances)
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "results.csv"
    done: dict[tuple[str, str], Row] = {}
    if table_path.exists():
        with table_path.open() as f:
            for r in csv.DictReader(f):
                if r.get("status") != "error":
                    done[_key(r["onnx"], r["vnnlib"])] = r
    for i, inst in enumerate(rows):
        if inst.key in done:
            continue
        t = timeout if timeout is not None else (inst.timeout if inst.timeout == inst.timeout else 60.0)
        folder = out / f"{i:03d}_{inst.onnx.stem}_{inst.vnnlib.stem}"
        try:
            if inst.error:
                raise NetinvertError(inst.error)
            row = solve_one(inst.onnx, inst.vnnlib, t, folder, alpha_steps)
        except NetinvertError as exc:
            row = {"onnx": str(inst.onnx), "vnnlib": str(inst.vnnlib), "status": "error", "stage": "",
                   "seconds": "0.00", "reason": str(exc)}
        done[inst.key] = row
        if progress is not None:
            progress(i, len(rows), row)
        write_text(table_path, _csv_text([done[r.key] for r in rows if r.key in done]))
    return [done[r.key] for r in rows]


def _csv_text(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_FIELDS)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
