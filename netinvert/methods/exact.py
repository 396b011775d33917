"""The ``exact`` method: find an input in a box that reaches an output set, or prove that none exists.

Pipeline per (box, output set): interval + CROWN bounds; a batched PGD attack; alpha-CROWN
(optimized slopes) to refute disjuncts; on networks with many unstable neurons, intermediate
bounds tightened by sign proofs and branch-and-bound rounds per open disjunct; a HiGHS MILP per
disjunct still open, with stable neurons removed. Every candidate input is re-checked on the *original* network (onnxruntime
for ONNX files, the module for PyTorch) in float32 and float64 and must satisfy the output set with
a strict margin; a point that fails is never reported as found.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Item, Result
from netinvert.solvers import linear_bounds as lb
from netinvert.solvers.attack import pgd
from netinvert.solvers.bab import BabOutcome, bab
from netinvert.solvers.input_split import REFUTE, prefer_input_split, root_bounds, split_search
from netinvert.solvers.milp import solve_disjunct
from netinvert.solvers.piecewise import PLNet, from_onnx, from_torch
from netinvert.solvers.refine import refine
from netinvert.targets.output_set import OutputSet

STRICT = 1e-6  # a found input must satisfy A y <= b - STRICT in float32 and float64
Checker = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # flat inputs -> (float32 outputs, float64 outputs)


@dataclass
class CaseOutcome:
    """The answer for one input box and output set, with the certificate data."""

    status: str
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    reason: str = ""
    stage: str = ""
    margin: float = float("nan")
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def _float32_in_box(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Round to float32 without leaving the box (a float32 value may round past a float64 bound)."""
    x32 = np.clip(x, lo, hi).astype(np.float32)
    over = x32.astype(np.float64) > hi
    x32[over] = np.nextafter(x32[over], np.float32(-np.inf))
    under = x32.astype(np.float64) < lo
    x32[under] = np.nextafter(x32[under], np.float32(np.inf))
    return x32


def _accept(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: OutputSet, check: Checker
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The float32 input, its float64 outputs and margin when it satisfies ``target`` in both precisions."""
    x32 = _float32_in_box(x, lo, hi)
    if np.any(x32 < lo) or np.any(x32 > hi):
        return None
    y32, y64 = check(x32[None].astype(np.float64))
    v = max(float(target.violations(y32)[0]), float(target.violations(y64)[0]))
    if v <= -STRICT:
        return x32, y64[0], -v
    return None


def solve_case(
    net: PLNet,
    lo: np.ndarray,
    hi: np.ndarray,
    target: OutputSet,
    check: Checker,
    *,
    timeout: float = 60.0,
    attack_seconds: float | None = None,
    alpha_steps: int = 30,
    lp_tighten: bool = False,
    threads: int = 1,
    seed: int = 0,
    bab_threshold: int = 120,
    bab_share: float = 0.8,
    bab_slice: float = 2.0,
    refine_share: float = 0.75,
    input_split: bool | None = None,
) -> CaseOutcome:
    """Decide whether some x in [lo, hi] has net(x) in ``target``.

    The disjuncts that the bounds leave open are taken worst-bounded first. When more than
    ``bab_threshold`` neurons stay unstable (too many binaries for the MILP), the intermediate
    bounds are first tightened by sign proofs (at most ``refine_share`` of the time left), then
    branch-and-bound runs on each open disjunct's rows in rounds: every round gives each disjunct
    still open a slice (``bab_slice`` seconds, doubled every round) and resumes its search where
    it stopped, until ``bab_share`` of the time left is spent. The disjuncts left then get the
    MILP, one at a time, with the time left.

    ``input_split`` (None: ``prefer_input_split`` decides) replaces all of this by branch-and-bound
    on the input box; it is the only search for networks with smooth activations.
    """
    t0 = time.perf_counter()
    left = lambda: timeout - (time.perf_counter() - t0)
    stats: dict[str, Any] = {"hidden": net.hidden_sizes, "disjuncts": len(target.disjuncts), "search": "relu-split"}

    def done(
        status: str, stage: str, reason: str = "", found: tuple[np.ndarray, np.ndarray, float] | None = None
    ) -> CaseOutcome:
        secs = time.perf_counter() - t0
        if found is not None:
            return CaseOutcome("found", found[0], found[1], "", stage, found[2], secs, stats)
        return CaseOutcome(status, None, None, reason, stage, float("nan"), secs, stats)

    if input_split if input_split is not None else prefer_input_split(net, lo, hi):
        return _split_case(net, lo, hi, target, check, timeout, attack_seconds, seed, stats, done)
    # bounds: CROWN first (milliseconds), it refutes many disjuncts
    layers = lb.layers_of(net)
    lo_t = torch.as_tensor(lo, dtype=lb.DT)[None]
    hi_t = torch.as_tensor(hi, dtype=lb.DT)[None]
    with torch.no_grad():
        bounds = lb.crown(layers, lo_t, hi_t)
    stats["unstable_interval"] = lb.interval(layers, lo_t, hi_t).unstable()
    stats["unstable_crown"] = bounds.unstable()
    rows_a = np.vstack([a for a, _ in target.disjuncts])
    rows_b = np.concatenate([b for _, b in target.disjuncts])
    owner = np.concatenate([[i] * a.shape[0] for i, (a, _) in enumerate(target.disjuncts)])
    a_t, b_t = torch.as_tensor(rows_a, dtype=lb.DT), torch.as_tensor(rows_b, dtype=lb.DT)
    with torch.no_grad():
        row_lb = lb.spec_lower(layers, bounds, a_t, b_t, lo_t, hi_t)[0].numpy()
    open_ = [i for i in range(len(target.disjuncts)) if not np.any(row_lb[owner == i] > 0)]
    stats["refuted_by_crown"] = len(target.disjuncts) - len(open_)
    if not open_:
        return done("none-exists", "bounds")
    # attack: many satisfiable instances end here
    budget = attack_seconds if attack_seconds is not None else min(max(0.05 * timeout, 0.5), 5.0)
    x, v = pgd(net, lo, hi, target, time_limit=min(budget, max(left(), 0.0)), seed=seed)
    stats["attack_violation"] = v
    if v < 0 and (ok := _accept(x, lo, hi, target, check)) is not None:
        return done("found", "attack", found=ok)

    def alpha_pass(start: lb.Bounds, steps: int) -> tuple[lb.Bounds, list[torch.Tensor] | None, np.ndarray, list[int]]:
        """alpha-CROWN from ``start`` on the open disjuncts' rows (``row_lb`` tightens in place): the
        bounds, the rows' slopes, which rows they are, and the disjuncts still open."""
        keep = np.isin(owner, open_)
        tight, spec, slopes = lb.alpha_crown(layers, lo_t, hi_t, a_t[keep], b_t[keep], steps=steps, bounds=start)
        row_lb[keep] = np.maximum(row_lb[keep], spec[0].detach().numpy())
        return tight, slopes, np.flatnonzero(keep), [i for i in open_ if not np.any(row_lb[owner == i] > 0)]

    alphas, alpha_rows = None, np.arange(len(owner))
    if alpha_steps > 0 and len(layers) > 1 and left() > 0:
        bounds, alphas, alpha_rows, open_ = alpha_pass(bounds, alpha_steps)
        stats["unstable_alpha"] = bounds.unstable()
        stats["refuted_by_alpha"] = len(target.disjuncts) - len(open_) - stats["refuted_by_crown"]
        if not open_:
            return done("none-exists", "bounds")
    if lp_tighten and left() > 0:
        bounds = lb.lp_tighten(layers, lo, hi, bounds, upto=len(layers) - 1, time_limit=0.3 * left())
        stats["unstable_lp"] = bounds.unstable()
    big = sum(bounds.unstable()) > bab_threshold
    if big and refine_share > 0 and len(layers) > 2 and left() > 0:
        bounds, stats["refine"] = refine(layers, lo, hi, bounds, time_limit=refine_share * left(), seed=seed)
        stats["unstable_refined"] = bounds.unstable()
        open_before = len(open_)
        bounds, alphas, alpha_rows, open_ = alpha_pass(bounds, max(alpha_steps, 1))
        stats["refuted_by_refined"] = open_before - len(open_)
        if not open_:
            return done("none-exists", "bounds")

    # open disjuncts worst-bounded (likeliest reachable) first: branch-and-bound rounds when the MILP
    # would carry many binaries, then the MILP on those left undecided
    open_.sort(key=lambda i: float(np.max(row_lb[owner == i])))
    stats["bab"], stats["milp"] = [], []
    if big:
        runs: dict[int, BabOutcome] = {}
        record = lambda: [{"disjunct": j, "status": r.status, **r.stats} for j, r in runs.items()]
        undecided: list[int] = []  # branch-and-bound cannot settle these: left to the MILP
        bab_end = time.perf_counter() + bab_share * left()
        slice_ = bab_slice
        while (todo := [i for i in open_ if i not in undecided]) and time.perf_counter() < bab_end:
            for i in todo:
                budget = min(slice_, bab_end - time.perf_counter())
                if budget <= 0:
                    break
                a, b = target.disjuncts[i]
                one = OutputSet(((a, b),), target.num_outputs)
                rows = np.flatnonzero(owner == i)
                sub_alphas = None
                if alphas is not None:  # slopes were optimized for the rows open before alpha-CROWN
                    sub_alphas = [al[:, np.searchsorted(alpha_rows, rows)] for al in alphas]

                def is_point(xs: np.ndarray, one: OutputSet = one) -> np.ndarray:
                    return one.violations(net.forward(xs)) <= -STRICT

                zeros = np.zeros(len(rows), dtype=int)
                res = bab(
                    layers,
                    lo,
                    hi,
                    bounds,
                    a,
                    b,
                    zeros,
                    is_point,
                    alphas=sub_alphas,
                    time_limit=budget,
                    resume=runs.get(i),
                )
                runs[i] = res
                if res.status == "found" and res.x is not None:
                    if (ok := _accept(res.x, lo, hi, one, check)) is not None:
                        stats["bab"] = record()
                        return done("found", "bab", found=ok)
                    undecided.append(i)
                elif res.status == "none":
                    open_.remove(i)
                elif res.search is None:
                    undecided.append(i)
            slice_ *= 2
        stats["bab"] = record()
        runs.clear()  # frees the open sub-domains before the MILP
    for i in open_:
        if left() <= 0:
            return done("unknown", "milp", "time limit")
        a, b = target.disjuncts[i]
        one = OutputSet(((a, b),), target.num_outputs)
        t_low = float(np.max(row_lb[owner == i]))
        out = solve_disjunct(layers, lo, hi, bounds, a, b, t_lower=t_low, time_limit=left(), threads=threads)
        stats["milp"].append({"disjunct": i, "status": out.status, "seconds": out.seconds, "binaries": out.binaries})
        if out.status == "found" and out.x is not None:
            ok = _accept(out.x, lo, hi, one, check)
            if ok is None:  # a tie at the decision boundary: polish with gradient steps from the MILP point
                xr, vr = pgd(net, lo, hi, one, restarts=4, steps=40, time_limit=min(2.0, max(left(), 0.1)), start=out.x)
                ok = _accept(xr, lo, hi, one, check) if vr < 0 else None
            if ok is not None:
                return done("found", "milp", found=ok)
            return done("unknown", "milp", "the MILP point fails the re-check on the original network (a tie)")
        if out.status == "unknown":
            return done("unknown", "milp", out.reason)
    return done("none-exists", "bab" if not stats["milp"] else "milp")


def _split_case(
    net: PLNet,
    lo: np.ndarray,
    hi: np.ndarray,
    target: OutputSet,
    check: Checker,
    timeout: float,
    attack_seconds: float | None,
    seed: int,
    stats: dict[str, Any],
    done: Callable[..., CaseOutcome],
) -> CaseOutcome:
    """``solve_case`` by input splitting: CROWN on the whole box, the attack, then ``split_search``
    on each open disjunct (worst-bounded first), each with the time left."""
    t0 = time.perf_counter()
    left = lambda: timeout - (time.perf_counter() - t0)
    stats["search"] = "input-split"
    stats["activations"] = sorted(set(net.kinds))
    rows_a = np.vstack([a for a, _ in target.disjuncts])
    rows_b = np.concatenate([b for _, b in target.disjuncts])
    owner = np.concatenate([[i] * a.shape[0] for i, (a, _) in enumerate(target.disjuncts)])
    row_lb = root_bounds(net, lo, hi, rows_a, rows_b)
    open_ = [i for i in range(len(target.disjuncts)) if not np.any(row_lb[owner == i] > REFUTE)]
    stats["refuted_by_crown"] = len(target.disjuncts) - len(open_)
    if not open_:
        return done("none-exists", "bounds")
    budget = attack_seconds if attack_seconds is not None else min(max(0.005 * timeout, 0.2), 0.5)
    rest = OutputSet(tuple(target.disjuncts[i] for i in open_), target.num_outputs)
    x, v = pgd(net, lo, hi, rest, time_limit=min(budget, max(left(), 0.0)), seed=seed)
    stats["attack_violation"] = v
    if v < 0 and (ok := _accept(x, lo, hi, target, check)) is not None:
        return done("found", "attack", found=ok)
    open_.sort(key=lambda i: float(np.max(row_lb[owner == i])))
    stats["input_split"] = []
    for i in open_:
        if left() <= 0:
            return done("unknown", "input-split", "time limit")
        a, b = target.disjuncts[i]
        one = OutputSet(((a, b),), target.num_outputs)

        def is_point(xs: np.ndarray, one: OutputSet = one) -> np.ndarray:
            return one.violations(net.forward(xs)) <= -STRICT

        res = split_search(net, lo, hi, a, b, is_point, time_limit=left())
        stats["input_split"].append({"disjunct": i, "status": res.status, **res.stats})
        if res.status == "found" and res.x is not None:
            if (ok := _accept(res.x, lo, hi, one, check)) is not None:
                return done("found", "input-split", found=ok)
            return done("unknown", "input-split", "a point fails the re-check on the original network (a tie)")
        if res.status == "open":
            reason = "time limit" if left() <= 0 else "a box too small to split stays undecided"
            return done("unknown", "input-split", reason)
    return done("none-exists", "input-split")


# ------------------------------------------------------------------------------------------ checkers
def onnx_checker(path: str | Path, net: PLNet) -> Checker:
    """Re-check with onnxruntime (float32) and the float64 evaluation of the same weights."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]

    def check(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y32 = np.stack([sess.run(None, {inp.name: r.astype(np.float32).reshape(shape)})[0].reshape(-1) for r in x])
        return y32.astype(np.float64), net.forward(x)

    return check


def torch_checker(module: torch.nn.Module, input_shape: tuple[int, ...]) -> Checker:
    """Re-check with the module itself in float32 and in a float64 copy."""
    import copy

    m64 = copy.deepcopy(module).double().eval()

    def check(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            xt = torch.as_tensor(x).reshape(-1, *input_shape)
            y32 = module(xt.float()).double().reshape(x.shape[0], -1).numpy()
            y64 = m64(xt.double()).reshape(x.shape[0], -1).numpy()
        return y32, y64

    return check


# ------------------------------------------------------------------------------------------ entry points
def _item(name: str, out: CaseOutcome) -> Item:
    metrics = {"stage": out.stage, "solve_seconds": out.seconds, "margin": out.margin}
    return Item(name, out.status, out.reason, metrics)


def box_of(model: Any, domain: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 bounds of a ``Box``, an L-inf ``Ball`` or a ``Domain`` over one of them (None: the input range)."""
    from netinvert.domains.domain import Domain
    from netinvert.domains.sets import Ball, Box

    region = domain.region if isinstance(domain, Domain) else (Box() if domain is None else domain)
    if isinstance(region, Ball) and region.p != math.inf:
        raise NetinvertError(
            f"exact methods need a box or an L-inf ball; this ball has p={region.p}: use p=inf or a Box"
        )
    if not isinstance(region, (Box, Ball)):
        raise NetinvertError(f"exact methods need a Box or Ball domain, got {type(region).__name__}")
    lo_t, hi_t = region.bounds(model.input_spec)
    return lo_t.double().reshape(-1).numpy(), hi_t.double().reshape(-1).numpy()


def as_output_set(model: Any, target: Any, num_outputs: int) -> tuple[OutputSet, str]:
    """An ``OutputSet`` and its label from an ``OutputSet`` or ``Class(k, margin)`` target."""
    from netinvert.targets.units import Class

    if isinstance(target, Class):
        k = model.class_index(target.index)
        return OutputSet.from_class(k, num_outputs, target.margin), f"class {model.class_label(k)} by {target.margin:g}"
    if isinstance(target, OutputSet):
        if target.num_outputs != num_outputs:
            raise NetinvertError(f"output set is over {target.num_outputs} outputs but {model.name} has {num_outputs}")
        return target, target.description
    raise NetinvertError(f"exact methods support OutputSet and Class targets, not {type(target).__name__}")


def network_of(model: Any) -> PLNet:
    """The piecewise-linear IR of a ``Model``: read from its ONNX file when it came from one, else
    from its module; the input normalization is folded into the first layer either way."""
    spec = model.input_spec
    source = model.info.get("source")
    if model.info.get("format") != "onnx" or not source:
        return from_torch(model.module, spec.shape, mean=spec.mean, std=spec.std, name=model.name)
    net = from_onnx(source)
    n = int(np.prod(spec.shape))
    if net.num_inputs != n:
        raise NetinvertError(f"{source} takes {net.num_inputs} inputs but the model's input shape {spec.shape} has {n}")
    if not (spec.mean or spec.std):
        return net
    channels = spec.shape[0] if len(spec.shape) == 3 else 1
    mean = np.broadcast_to(np.asarray(spec.mean or (0.0,), dtype=np.float64), (channels,))
    std = np.broadcast_to(np.asarray(spec.std or (1.0,), dtype=np.float64), (channels,))
    per = n // channels
    return net.with_input_affine(np.repeat(1.0 / std, per), np.repeat(-mean / std, per))


def run(
    model: Any,
    targets: Any,
    domain: Any = None,
    *,
    timeout: float = 60.0,
    alpha_steps: int = 30,
    lp_tighten: bool = False,
    seed: int = 0,
) -> Result:
    """``invert(model, targets, domain, method="exact")``: one item per target (``OutputSet`` or ``Class``)."""
    lo, hi = box_of(model, domain)
    spec = model.input_spec
    net = network_of(model)
    check = torch_checker(model, spec.shape)
    items, rows, outs, results = [], [], [], []
    t0 = time.perf_counter()
    for target in targets if isinstance(targets, (list, tuple)) else [targets]:
        oset, name = as_output_set(model, target, net.num_outputs)
        out = solve_case(
            net, lo, hi, oset, check, timeout=timeout, alpha_steps=alpha_steps, lp_tighten=lp_tighten, seed=seed
        )
        items.append(_item(name, out))
        results.append(out)
        rows.append(out.x.astype(np.float64) if out.x is not None else np.full(lo.size, np.nan))
        outs.append(out.y if out.y is not None else np.full(net.num_outputs, np.nan))
    return Result(
        method="exact",
        model=model.name,
        inputs=torch.as_tensor(np.stack(rows)).float().reshape(-1, *spec.shape),
        outputs=torch.as_tensor(np.stack(outs)).float(),
        items=items,
        timing={"total": time.perf_counter() - t0},
        info={"certificates": [r.stats for r in results]},
        value_range=(spec.low, spec.high),
    )


def solve_files(
    onnx_path: str | Path,
    vnnlib_path: str | Path,
    timeout: float = 60.0,
    *,
    alpha_steps: int = 30,
    lp_tighten: bool = False,
    seed: int = 0,
) -> Result:
    """Answer an ONNX + VNNLIB instance: one item, found if any input box reaches its output set."""
    from netinvert.targets.vnnlib import read_vnnlib

    t0 = time.perf_counter()
    net = from_onnx(onnx_path)
    spec = read_vnnlib(vnnlib_path)
    if spec.num_inputs != net.num_inputs:
        raise NetinvertError(
            f"{vnnlib_path}: the spec declares {spec.num_inputs} inputs but {Path(onnx_path).name} has {net.num_inputs}"
        )
    if spec.num_outputs != net.num_outputs:
        raise NetinvertError(
            f"{vnnlib_path}: the spec declares {spec.num_outputs} outputs "
            f"but {Path(onnx_path).name} has {net.num_outputs}"
        )
    check = onnx_checker(onnx_path, net)
    outs: list[CaseOutcome] = []
    status, reason = "none-exists", ""
    for case in spec.cases:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            status, reason = "unknown", "time limit"
            break
        out = solve_case(
            net,
            case.lo,
            case.hi,
            case.output,
            check,
            timeout=left,
            alpha_steps=alpha_steps,
            lp_tighten=lp_tighten,
            seed=seed,
        )
        outs.append(out)
        if out.status == "found":
            status, reason = "found", ""
            break
        if out.status == "unknown":
            status, reason = "unknown", out.reason
    found = next((o for o in outs if o.status == "found"), None)
    elapsed = time.perf_counter() - t0
    stage = found.stage if found else (outs[-1].stage if outs else "")
    item = Item(
        Path(vnnlib_path).name,
        status,
        reason,
        {"stage": stage, "solve_seconds": elapsed, "margin": found.margin if found else float("nan")},
    )
    x = found.x.astype(np.float64) if found else np.full(net.num_inputs, np.nan)
    y = found.y if found else np.full(net.num_outputs, np.nan)
    return Result(
        method="exact",
        model=net.name,
        inputs=torch.as_tensor(x)[None],
        outputs=torch.as_tensor(y)[None],
        items=[item],
        timing={"total": elapsed},
        info={
            "status": status,
            "network": str(onnx_path),
            "spec": str(vnnlib_path),
            "cases": len(spec.cases),
            "certificates": [o.stats for o in outs],
        },
    )
