"""VNN-COMP instances (an ONNX network and a VNNLIB property) answered exactly.

An instance is loaded with :func:`~netinvert.models.load.load` and each of its input boxes is
answered by ``invert(model, output_set, Box(lo, hi), method="exact")`` until one reaches its
output set. A whole family (a VNN-COMP ``instances.csv``) is :mod:`netinvert.sweeps.solve`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import check, values
from netinvert.ground.output import write_text
from netinvert.ground.result import Item, Result
from netinvert.ground.run import time_limit_progress
from netinvert.methods import invert, options_of
from netinvert.models.load import load
from netinvert.models.wrapper import Model
from netinvert.report.finish import finish
from netinvert.solvers.problem import network_of
from netinvert.targets.vnnlib import Spec, read_vnnlib

# seconds of a time limit counted from a harness's start (``started_at``) kept back for what follows the search:
# its last step's overrun on a busy machine (up to 0.7 s seen at a load of 8 on 2 cores), writing the answer and
# the folder, and the exit
FINISH_RESERVE = 1.5
Row = dict[str, str]


def read_instance(onnx_path: str | Path, vnnlib_path: str | Path) -> tuple[Model, Spec]:
    """The network and the spec of an instance (plain or gzipped files), checked to fit each other."""
    model = load(onnx_path)
    spec = read_vnnlib(vnnlib_path)
    n_in, n_out = int(np.prod(model.input_spec.shape)), model.num_outputs
    if spec.num_inputs != n_in:
        raise NetinvertError(
            f"{vnnlib_path}: the spec declares {spec.num_inputs} inputs but {Path(onnx_path).name} has {n_in}"
        )
    _check_outputs(spec, n_out, vnnlib_path, Path(onnx_path).name)
    return model, spec


def check_instance(onnx_path: str | Path, vnnlib_path: str | Path) -> str:
    """Read an instance as :func:`solve_instance` would, the exact solvers' form of the network included, and
    solve nothing: a line saying what was read (what ``vnncomp/prepare_instance.sh`` checks)."""
    model, spec = read_instance(onnx_path, vnnlib_path)
    net = network_of(model)
    return (f"{Path(onnx_path).name}: {spec.num_inputs} inputs, {spec.num_outputs} outputs, "
            f"read as a {'graph' if net.dense is None else 'chain'}; {Path(vnnlib_path).name}: "
            f"{len(spec.cases)} input box{'es' if len(spec.cases) != 1 else ''}")


def solve_instance(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float | None = None, *,
                   spent: float = 0.0, **options: Any) -> Result:
    """Answer an ONNX + VNNLIB instance: one item, found if any input box reaches its output set.

    ``timeout`` (default: method ``exact``'s) and ``options`` are method ``exact``'s options for the instance as a
    whole. ``spent``: seconds of ``timeout`` used up before the call (a harness's start, :func:`solve_one`); an
    instance with no time left is still read, and answered ``unknown`` (time limit).
    """
    settings = exact_options(timeout, options)
    timeout = settings.timeout
    t0 = time.perf_counter()
    budget = timeout - spent
    model, spec = read_instance(onnx_path, vnnlib_path)
    network_of(model)  # the solvers' form of the network, built on the clock (the model keeps it for invert)
    n_in, n_out = spec.num_inputs, spec.num_outputs
    answers: list[Result] = []
    status, reason = "none-exists", ""
    for case in spec.cases:
        left = budget - (time.perf_counter() - t0)
        if left <= 0:
            status, reason = "unknown", "time limit"
            break
        box = Box(torch.from_numpy(case.lo), torch.from_numpy(case.hi))
        res = invert(model, case.output, box, method="exact", **values(replace(settings, timeout=left, progress=False)))
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
                        "time_limit": budget, "certificates": [r.info["certificates"][0] for r in answers]},
                  kind="solve", files=files)


def exact_options(timeout: float | None, options: Mapping[str, Any]) -> Any:
    """Method ``exact``'s options for an instance: ``options`` and ``timeout`` (``None``: the method's default)."""
    given = {**options, **({"timeout": timeout} if timeout is not None else {})}
    return check(options_of("exact"), given, "exact")


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


def vnncomp_answer(result: Result) -> str:
    """An instance's result file in the VNN-COMP convention: ``sat`` and the counterexample on the lines after it,
    ``unsat``, ``timeout`` (undecided when the time limit was reached) or ``unknown``."""
    item = result.items[0]
    if item.status == "found":
        return "sat\n" + result.files["counterexample.txt"].decode()
    if item.status == "none-exists":
        return "unsat\n"
    return "timeout\n" if "time limit" in item.reason else "unknown\n"


def solve_one(onnx_path: Path, vnnlib_path: Path, timeout: float | None, out: Path, progress: bool | None = None,
              command: Sequence[str] | None = None, *, result_file: Path | None = None,
              started_at: float | None = None, **options: Any) -> Row:
    """Solve one instance, save its folder (with ``counterexample.txt`` when found) and return its CSV row.

    ``timeout`` and ``options``: method ``exact``'s (:func:`solve_instance`). ``progress``: the time used against the
    limit while it runs (see ``time_limit_progress``); ``command``: the command line to record with the result.
    ``result_file``: also write the VNN-COMP result file there (:func:`vnncomp_answer`), before the folder.
    ``started_at``: the Unix time ``timeout`` counts from (a harness's start, so that the interpreter's start and
    reading the files count too); the search then gets what is left of it, less :data:`FINISH_RESERVE`.
    """
    timeout = exact_options(timeout, options).timeout
    spent = time.time() - started_at + FINISH_RESERVE if started_at is not None else 0.0
    with time_limit_progress(progress, max(timeout - spent, 0.0), f"solving {Path(vnnlib_path).name}"):
        result = solve_instance(onnx_path, vnnlib_path, timeout, spent=spent, **options)
    item = result.items[0]
    if result_file is not None:
        write_text(result_file, vnncomp_answer(result))
    finish(result, out, command=command)
    return {
        "onnx": str(onnx_path),
        "vnnlib": str(vnnlib_path),
        "status": item.status,
        "stage": str(item.metrics.get("stage", "")),
        "seconds": f"{item.metrics['solve_seconds']:.2f}",
        "reason": item.reason,
    }
