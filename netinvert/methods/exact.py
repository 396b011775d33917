"""The ``exact`` method: find an input in a box that reaches an output set, or prove that none exists.

Pipeline per (box, output set): the box centre and corners; interval + CROWN bounds; a batched PGD attack; alpha-CROWN
(optimized slopes) to refute disjuncts; on networks with many unstable neurons, intermediate
bounds tightened by sign proofs and branch-and-bound rounds per open disjunct; a HiGHS MILP per
disjunct still open, with stable neurons removed. Every candidate input is re-checked on the *original* network (onnxruntime
for ONNX files, the module for PyTorch) in float32 and float64 and must satisfy the output set with
a strict margin; a point that fails is never reported as found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from netinvert.ground.options import option, progress_option, seed_option, takes
from netinvert.ground.result import Item, Result
from netinvert.ground.run import time_limit_progress
from netinvert.solvers.bounds import graph as gbm
from netinvert.solvers.bounds import dense as lb
from netinvert.solvers.bounds import smooth
from netinvert.solvers.milp import dense as milp
from netinvert.solvers.milp.graph import MAX_ENTRIES, dense_entries, solve_graph_disjunct
from netinvert.solvers.network.graph import GraphNet
from netinvert.solvers.problem import Checker, Found, accept, as_output_set, box_of, checker_of, joined, network_of
from netinvert.solvers.problem import point_test, stacked_rows
from netinvert.solvers.search import neuron_split as ns
from netinvert.solvers.search.attack import pgd
from netinvert.solvers.search.bab import BabOutcome, bab
from netinvert.solvers.search.graph_bab import graph_bab
from netinvert.solvers.search.input_split import (
    MAX_INPUTS,
    MIN_UNSTABLE,
    REFUTE,
    prefer_input_split,
    root_bounds,
    split_search,
)
from netinvert.solvers.search.refine import refine
from netinvert.targets.output_set import OutputSet

# Before input splitting (which attacks every box it keeps), the up-front attack stops after this many rounds
# of fresh starts without progress instead of spending its whole budget on a property that holds.
ATTACK_PATIENCE = 2


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


def _finisher(t0: float, stats: dict[str, Any],
              on_end: Callable[[], None] | None = None) -> Callable[..., CaseOutcome]:
    """``done(status, stage, reason="", found=None)``: the ``CaseOutcome`` of a search started at ``t0``."""

    def done(status: str, stage: str, reason: str = "", found: Found | None = None) -> CaseOutcome:
        if on_end is not None:
            on_end()
        secs = time.perf_counter() - t0
        if found is not None:
            return CaseOutcome("found", found[0], found[1], "", stage, found[2], secs, stats)
        return CaseOutcome(status, None, None, reason, stage, float("nan"), secs, stats)

    return done


def _corner_points(net: GraphNet, lo: np.ndarray, hi: np.ndarray, target: OutputSet, check: Checker) -> Found | None:
    """The box centre or one of its two extreme corners when it reaches ``target`` (one forward pass for all three)."""
    points = np.stack([0.5 * (lo + hi), lo, hi])
    for x in points[target.violations(net.forward(points)) < 0]:
        if (ok := accept(x, lo, hi, target, check)) is not None:
            return ok
    return None


def _attack_budget(timeout: float, split: bool) -> float:
    """Seconds for the attack before the search: short before input splitting, which attacks every box it
    keeps (0.5% of the limit, 0.2-0.5 s), else 5% of the limit (0.5-5 s)."""
    return min(max(0.005 * timeout, 0.2), 0.5) if split else min(max(0.05 * timeout, 0.5), 5.0)


def _patience(lo: np.ndarray, hi: np.ndarray) -> int | None:
    """``ATTACK_PATIENCE`` for a box with at most ``MAX_INPUTS`` free inputs, where the search after the attack
    (the MILP or input splitting, both complete there) finds what the attack would find late; else none."""
    return ATTACK_PATIENCE if int(np.sum(hi > lo)) <= MAX_INPUTS else None


def solve_case(
    net: GraphNet,
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
    A network without a dense chain (residual, concatenating or large convolutional graphs) takes
    ``graph_case``.
    """
    if net.dense is None:
        return graph_case(net, lo, hi, target, check, timeout=timeout, attack_seconds=attack_seconds,
                          alpha_steps=alpha_steps, threads=threads, seed=seed, input_split=input_split)
    t0 = time.perf_counter()
    left = lambda: timeout - (time.perf_counter() - t0)
    split = input_split if input_split is not None else prefer_input_split(net, lo, hi)
    neurons = not net.piecewise and not split
    stats: dict[str, Any] = {"hidden": net.hidden_sizes, "disjuncts": len(target.disjuncts),
                             "search": "input-split" if split else "neuron-split" if neurons else "relu-split"}

    done = _finisher(t0, stats)
    if (ok := _corner_points(net, lo, hi, target, check)) is not None:
        return done("found", "points", found=ok)
    if split:
        return _split_case(net, lo, hi, target, check, timeout, attack_seconds, seed, stats, done)
    if neurons:
        return _neuron_split_case(net, lo, hi, target, check, timeout, attack_seconds, alpha_steps, seed, stats,
                                  done)
    # bounds: CROWN (milliseconds on fully connected nets), it refutes many disjuncts
    layers = lb.layers_of(net)
    lo_t = torch.as_tensor(lo, dtype=lb.DT)[None]
    hi_t = torch.as_tensor(hi, dtype=lb.DT)[None]
    with torch.no_grad():
        bounds = lb.crown(layers, lo_t, hi_t)
    stats["unstable_interval"] = lb.interval(layers, lo_t, hi_t).unstable()
    stats["unstable_crown"] = bounds.unstable()
    rows_a, rows_b, owner = stacked_rows(target)
    a_t, b_t = torch.as_tensor(rows_a, dtype=lb.DT), torch.as_tensor(rows_b, dtype=lb.DT)
    with torch.no_grad():
        row_lb = lb.spec_lower(layers, bounds, a_t, b_t, lo_t, hi_t)[0].numpy()
    open_ = [i for i in range(len(target.disjuncts)) if not np.any(row_lb[owner == i] > 0)]
    stats["refuted_by_crown"] = len(target.disjuncts) - len(open_)
    if not open_:
        return done("none-exists", "bounds")
    # attack: many satisfiable instances end here
    budget = attack_seconds if attack_seconds is not None else _attack_budget(timeout, False)
    x, v = pgd(net, lo, hi, target, time_limit=min(budget, max(left(), 0.0)), seed=seed,
               patience=_patience(lo, hi))
    stats["attack_violation"] = v
    if v < 0 and (ok := accept(x, lo, hi, target, check)) is not None:
        return done("found", "attack", found=ok)

    def alpha_pass(start: lb.Bounds, steps: int) -> tuple[lb.Bounds, list[torch.Tensor] | None, np.ndarray, list[int]]:
        """alpha-CROWN from ``start`` on the open disjuncts' rows (``row_lb`` tightens in place): the
        bounds, the rows' slopes, which rows they are, and the disjuncts still open."""
        keep = np.isin(owner, open_)
        tight, spec, slopes = lb.alpha_crown(
            layers, lo_t, hi_t, a_t[keep], b_t[keep], steps=steps, bounds=start, deadline=t0 + timeout
        )
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
        bounds = milp.lp_tighten(layers, lo, hi, bounds, upto=len(layers) - 1, time_limit=0.3 * left())
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

                is_point = point_test(net, one)
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
                    if (ok := accept(res.x, lo, hi, one, check)) is not None:
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
        out = milp.solve_disjunct(layers, lo, hi, bounds, a, b, t_lower=t_low, time_limit=left(), threads=threads)
        stats["milp"].append({"disjunct": i, "status": out.status, "seconds": out.seconds, "binaries": out.binaries})
        if out.status == "found" and out.x is not None:
            ok = accept(out.x, lo, hi, one, check)
            if ok is None:  # a tie at the decision boundary: polish with gradient steps from the MILP point
                xr, vr = pgd(net, lo, hi, one, restarts=4, steps=40, time_limit=min(2.0, max(left(), 0.1)), start=out.x)
                ok = accept(xr, lo, hi, one, check) if vr < 0 else None
            if ok is not None:
                return done("found", "milp", found=ok)
            return done("unknown", "milp", "the MILP point fails the re-check on the original network (a tie)")
        if out.status == "unknown":
            return done("unknown", "milp", out.reason)
    return done("none-exists", "bab" if not stats["milp"] else "milp")


def _split_case(
    net: GraphNet,
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
    budget = attack_seconds if attack_seconds is not None else _attack_budget(timeout, True)
    opened = _bounds_then_attack(net, lo, hi, target, check, t0, t0 + timeout, budget, seed, stats, done,
                                 patience=ATTACK_PATIENCE)
    if isinstance(opened, CaseOutcome):
        return opened
    open_ = sorted(opened.disjuncts, key=lambda i: float(np.max(opened.row_lb[opened.owner == i])))
    return _split_disjuncts(net, lo, hi, target, open_, check, t0 + timeout, stats, done)


@dataclass
class _Open:
    """What CROWN and the first attack leave: the open disjuncts, the stacked rows (``rows_a y <= rows_b``,
    their disjunct ``owner``, CROWN's lower bound ``row_lb`` on each row's violation) and the attack's point."""

    disjuncts: list[int]
    rows_a: np.ndarray
    rows_b: np.ndarray
    owner: np.ndarray
    row_lb: np.ndarray
    x: np.ndarray


def _mark(stats: dict[str, Any], t0: float, stage: str) -> None:
    """Record the seconds since ``t0`` at the end of ``stage`` (the certificate's ``elapsed``)."""
    stats.setdefault("elapsed", {})[stage] = round(time.perf_counter() - t0, 3)


def _bounds_then_attack(
    net: GraphNet,
    lo: np.ndarray,
    hi: np.ndarray,
    target: OutputSet,
    check: Checker,
    t0: float,
    deadline: float,
    budget: float,
    seed: int,
    stats: dict[str, Any],
    done: Callable[..., CaseOutcome],
    **attack: Any,
) -> CaseOutcome | _Open:
    """CROWN on every row over the whole box, then at most half a second (of ``budget``) of attack on the
    disjuncts it leaves open: the outcome when either decides, else what stays open."""
    stats["activations"] = sorted(set(net.activations))
    rows_a, rows_b, owner = stacked_rows(target)
    row_lb = root_bounds(net, lo, hi, rows_a, rows_b)
    open_ = [i for i in range(len(target.disjuncts)) if not np.any(row_lb[owner == i] > REFUTE)]
    stats["refuted_by_crown"] = len(target.disjuncts) - len(open_)
    _mark(stats, t0, "bounds")
    if not open_:
        return done("none-exists", "bounds")
    rest = OutputSet(tuple(target.disjuncts[i] for i in open_), target.num_outputs)
    x, v = pgd(net, lo, hi, rest, time_limit=min(budget, 0.5, max(deadline - time.perf_counter(), 0.0)), seed=seed,
               **attack)
    stats["attack_violation"] = v
    if v < 0 and (ok := accept(x, lo, hi, target, check)) is not None:
        return done("found", "attack", found=ok)
    _mark(stats, t0, "attack")
    return _Open(open_, rows_a, rows_b, owner, row_lb, x)


def _neuron_split_case(
    net: GraphNet,
    lo: np.ndarray,
    hi: np.ndarray,
    target: OutputSet,
    check: Checker,
    timeout: float,
    attack_seconds: float | None,
    alpha_steps: int,
    seed: int,
    stats: dict[str, Any],
    done: Callable[..., CaseOutcome],
) -> CaseOutcome:
    """``solve_case`` on a chain with smooth activations and many inputs: CROWN on the whole box, the attack,
    alpha-CROWN (optimized tangent points, every intermediate bound too) on the open rows, then
    branch-and-bound on neuron splits (``NeuronSplitSearch``) for each open disjunct, worst-bounded first."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    left = lambda: deadline - time.perf_counter()
    budget = attack_seconds if attack_seconds is not None else min(max(0.05 * timeout, 0.5), 5.0)
    # half a second of attack first, the rest of its budget after alpha-CROWN (on what alpha-CROWN leaves open)
    opened = _bounds_then_attack(net, lo, hi, target, check, t0, deadline, budget, seed, stats, done)
    if isinstance(opened, CaseOutcome):
        return opened
    open_, rows_a, rows_b, owner, row_lb, x = (opened.disjuncts, opened.rows_a, opened.rows_b, opened.owner,
                                               opened.row_lb, opened.x)
    layers, activations = smooth.layers_and_activations(net)
    lo_t, hi_t = torch.as_tensor(lo, dtype=ns.DT)[None], torch.as_tensor(hi, dtype=ns.DT)[None]
    spent = time.perf_counter() - t0 - stats["elapsed"]["bounds"]
    keep = np.isin(owner, open_)
    pre, spec = ns.alpha_bounds(layers, activations, lo_t, hi_t, torch.as_tensor(rows_a[keep]),
                                torch.as_tensor(rows_b[keep]), steps=alpha_steps, deadline=t0 + 0.5 * timeout)
    row_lb[keep] = np.maximum(row_lb[keep], spec[0].numpy())
    still = [i for i in open_ if not np.any(row_lb[owner == i] > REFUTE)]
    stats["refuted_by_alpha"] = len(open_) - len(still)
    _mark(stats, t0, "alpha")
    open_ = sorted(still, key=lambda i: float(np.max(row_lb[owner == i])))
    if not open_:
        return done("none-exists", "bounds")
    if budget - spent > 0.1:
        rest = OutputSet(tuple(target.disjuncts[i] for i in open_), target.num_outputs)
        x, v = pgd(net, lo, hi, rest, time_limit=min(budget - spent, max(left(), 0.0)), seed=seed + 1, start=x)
        stats["attack_violation"] = min(v, stats["attack_violation"])
        if v < 0 and (ok := accept(x, lo, hi, target, check)) is not None:
            return done("found", "attack", found=ok)
        _mark(stats, t0, "attack_after_alpha")
    stats["neuron_split"] = []
    for i in open_:
        if left() <= 0:
            return done("unknown", "neuron-split", "time limit")
        a, b = target.disjuncts[i]
        one = OutputSet(((a, b),), target.num_outputs)
        search = ns.NeuronSplitSearch(layers, activations, lo, hi, pre, a, b, point_test(net, one), deadline=deadline)
        res = search.run(left())
        stats["neuron_split"].append({"disjunct": i, "status": res.status, **res.stats})
        if res.status == "found" and res.x is not None:
            if (ok := accept(res.x, lo, hi, one, check)) is not None:
                return done("found", "neuron-split", found=ok)
            return done("unknown", "neuron-split", "a point fails the re-check on the original network (a tie)")
        if res.status == "open":
            return done("unknown", "neuron-split", "time limit")
    return done("none-exists", "neuron-split")


def _split_disjuncts(
    net: GraphNet,
    lo: np.ndarray,
    hi: np.ndarray,
    target: OutputSet,
    open_: list[int],
    check: Checker,
    deadline: float,
    stats: dict[str, Any],
    done: Callable[..., CaseOutcome],
) -> CaseOutcome:
    """``split_search`` on each open disjunct in turn, each with the time left until ``deadline``."""
    left = lambda: deadline - time.perf_counter()
    stats["input_split"] = []
    for i in open_:
        if left() <= 0:
            return done("unknown", "input-split", "time limit")
        a, b = target.disjuncts[i]
        one = OutputSet(((a, b),), target.num_outputs)

        is_point = point_test(net, one)
        res = split_search(net, lo, hi, a, b, is_point, time_limit=left())
        stats["input_split"].append({"disjunct": i, "status": res.status, **res.stats})
        if res.status == "found" and res.x is not None:
            if (ok := accept(res.x, lo, hi, one, check)) is not None:
                return done("found", "input-split", found=ok)
            return done("unknown", "input-split", "a point fails the re-check on the original network (a tie)")
        if res.status == "open":
            reason = "time limit" if left() <= 0 else "a box too small to split stays undecided"
            return done("unknown", "input-split", reason)
    return done("none-exists", "input-split")


def graph_case(
    net: GraphNet,
    lo: np.ndarray,
    hi: np.ndarray,
    target: OutputSet,
    check: Checker,
    *,
    timeout: float = 60.0,
    attack_seconds: float | None = None,
    alpha_steps: int = 30,
    threads: int = 1,
    seed: int = 0,
    input_split: bool | None = None,
) -> CaseOutcome:
    """``solve_case`` on a graph: the box centre and corners (one forward pass), CROWN over the DAG
    (intermediate rows until 40% of the time), the attack, alpha-CROWN on the open rows, then input
    splitting (smooth units, or few free inputs and many unstable ReLUs), the MILP (ReLU graphs small
    enough to write out densely) or, for larger ReLU graphs, ``graph_bab`` (the MILP's skip is
    recorded in the certificate). Every stage checks the deadline."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    left = lambda: deadline - time.perf_counter()
    stats: dict[str, Any] = {"network": "graph", "nodes": len(net.nodes), "hidden": net.hidden_sizes,
                             "disjuncts": len(target.disjuncts), "activations": sorted(set(net.activations))}
    done = _finisher(t0, stats, on_end=lambda: _mark(stats, t0, "end"))
    if (ok := _corner_points(net, lo, hi, target, check)) is not None:
        return done("found", "points", found=ok)
    _mark(stats, t0, "points")
    if left() <= 0:
        return done("unknown", "points", "time limit")
    dev = net.device
    lo_t = torch.as_tensor(lo, dtype=gbm.DT, device=dev)[None]
    hi_t = torch.as_tensor(hi, dtype=gbm.DT, device=dev)[None]
    rows_a, rows_b, owner = stacked_rows(target)
    a_t, b_t = torch.as_tensor(rows_a, dtype=gbm.DT, device=dev), torch.as_tensor(rows_b, dtype=gbm.DT, device=dev)
    with torch.no_grad():
        gb = gbm.bounds(net, lo_t, hi_t, deadline=t0 + 0.4 * timeout)
        row_lb = gbm.spec_rows(net, gb, lo_t, hi_t, a_t, b_t)[0][0].cpu().numpy()
    stats.update(unstable_crown=gb.unstable(), crown_rows=gb.crown_rows, interval_rows=gb.skipped_rows)
    _mark(stats, t0, "bounds")
    open_ = [i for i in range(len(target.disjuncts)) if not np.any(row_lb[owner == i] > REFUTE)]
    stats["refuted_by_crown"] = len(target.disjuncts) - len(open_)
    if not open_:
        return done("none-exists", "bounds")
    if left() <= 0:
        return done("unknown", "bounds", "time limit")
    split = input_split if input_split is not None else (
        not net.piecewise or (int(np.sum(hi > lo)) <= MAX_INPUTS and sum(gb.unstable()) >= MIN_UNSTABLE))
    budget = attack_seconds if attack_seconds is not None else _attack_budget(timeout, split)
    rest = OutputSet(tuple(target.disjuncts[i] for i in open_), target.num_outputs)
    x, v = pgd(net, lo, hi, rest, time_limit=min(budget, max(left(), 0.0)), seed=seed, patience=_patience(lo, hi))
    stats["attack_violation"] = v
    if v < 0 and (ok := accept(x, lo, hi, target, check)) is not None:
        return done("found", "attack", found=ok)
    _mark(stats, t0, "attack")
    if alpha_steps > 0 and net.piecewise and left() > 0:
        keep = np.isin(owner, open_)
        best = gbm.alpha_rows(net, gb, lo_t, hi_t, a_t[keep], b_t[keep], steps=alpha_steps,
                              deadline=time.perf_counter() + 0.3 * left())
        row_lb[keep] = np.maximum(row_lb[keep], best[0].cpu().numpy())
        still = [i for i in open_ if not np.any(row_lb[owner == i] > REFUTE)]
        stats["refuted_by_alpha"] = len(open_) - len(still)
        open_ = still
        if not open_:
            return done("none-exists", "bounds")
    if left() <= 0:
        return done("unknown", "bounds", "time limit")
    open_.sort(key=lambda i: float(np.max(row_lb[owner == i])))
    stats["search"] = "input-split" if split else "milp"
    if split:
        return _split_disjuncts(net, lo, hi, target, open_, check, deadline, stats, done)
    if (entries := dense_entries(net)) > MAX_ENTRIES:
        stats["search"] = "relu-split"
        stats["milp_skipped"] = f"the graph's linear maps have {entries} dense entries (the MILP takes {MAX_ENTRIES})"
        return _graph_bab_disjuncts(net, lo, hi, gb, target, open_, check, deadline, stats, done)
    stats["milp"] = []
    for i in open_:
        if left() <= 0:
            return done("unknown", "milp", "time limit")
        a, b = target.disjuncts[i]
        one = OutputSet(((a, b),), target.num_outputs)
        out = solve_graph_disjunct(net, lo, hi, gb, a, b, t_lower=float(np.max(row_lb[owner == i])),
                                   time_limit=left(), threads=threads)
        stats["milp"].append({"disjunct": i, "status": out.status, "seconds": out.seconds, "binaries": out.binaries})
        if out.status == "found" and out.x is not None:
            ok = accept(out.x, lo, hi, one, check)
            if ok is None:
                xr, vr = pgd(net, lo, hi, one, restarts=4, steps=40, time_limit=min(2.0, max(left(), 0.1)), start=out.x)
                ok = accept(xr, lo, hi, one, check) if vr < 0 else None
            if ok is not None:
                return done("found", "milp", found=ok)
            return done("unknown", "milp", "the MILP point fails the re-check on the original network (a tie)")
        if out.status == "unknown":
            return done("unknown", "milp", out.reason)
    return done("none-exists", "milp")


def _graph_bab_disjuncts(
    net: GraphNet,
    lo: np.ndarray,
    hi: np.ndarray,
    gb: gbm.GraphBounds,
    target: OutputSet,
    open_: list[int],
    check: Checker,
    deadline: float,
    stats: dict[str, Any],
    done: Callable[..., CaseOutcome],
) -> CaseOutcome:
    """``graph_bab`` on each open disjunct in turn, each with the time left until ``deadline``."""
    stats["bab"] = []
    for i in open_:
        left = deadline - time.perf_counter()
        if left <= 0:
            return done("unknown", "bab", "time limit")
        a, b = target.disjuncts[i]
        one = OutputSet(((a, b),), target.num_outputs)

        is_point = point_test(net, one)
        res = graph_bab(net, lo, hi, gb, a, b, is_point, time_limit=left)
        stats["bab"].append({"disjunct": i, "status": res.status, **res.stats})
        if res.status == "found" and res.x is not None:
            if (ok := accept(res.x, lo, hi, one, check)) is not None:
                return done("found", "bab", found=ok)
            return done("unknown", "bab", "a point fails the re-check on the original network (a tie)")
        if res.status == "open":
            reason = "time limit" if not res.stats["stuck"] else \
                "a sub-domain with every ReLU fixed stays open (no split multipliers on graphs)"
            return done("unknown", "bab", reason)
    return done("none-exists", "bab")


# ------------------------------------------------------------------------------------------ entry points
def _item(name: str, out: CaseOutcome) -> Item:
    metrics = {"stage": out.stage, "solve_seconds": out.seconds, "margin": out.margin}
    return Item(name, out.status, out.reason, metrics)


@dataclass(frozen=True)
class Options:
    """The options of method ``exact``."""

    timeout: float = option(60.0, "Time for each target's search.", above=0.0, unit="seconds")
    alpha_steps: int = option(30, "Slope-optimization steps of alpha-CROWN (0: plain CROWN).", at_least=0)
    lp_tighten: bool = option(False, "Tighten intermediate bounds by LP before the MILP.")
    seed: int = seed_option()
    progress: bool | None = progress_option()


@takes(Options)
def run(
    model: Any,
    targets: Any,
    domain: Any = None,
    *,
    timeout: float,
    alpha_steps: int,
    lp_tighten: bool,
    seed: int,
    progress: bool | None,
) -> Result:
    """``invert(model, targets, domain, method="exact")``: one item per target (``OutputSet`` or ``Class``).

    ``progress``: the time each target's search has used against ``timeout`` while it runs.
    """
    lo, hi = box_of(model, domain)
    spec = model.input_spec
    net = network_of(model)
    check = checker_of(model, net)
    items, rows, outs, results = [], [], [], []
    t0 = time.perf_counter()
    for target in targets if isinstance(targets, (list, tuple)) else [targets]:
        oset, name = as_output_set(model, target, net.num_outputs)
        solved, checked, rows_set = joined(net, check, oset)  # rows that read the input: on [outputs, input]
        with time_limit_progress(progress, timeout, f"exact {name}"):
            out = solve_case(
                solved, lo, hi, rows_set, checked, timeout=timeout, alpha_steps=alpha_steps, lp_tighten=lp_tighten,
                seed=seed
            )
        items.append(_item(name, out))
        results.append(out)
        rows.append(out.x.astype(np.float64) if out.x is not None else np.full(lo.size, np.nan))
        outs.append(out.y[: net.num_outputs] if out.y is not None else np.full(net.num_outputs, np.nan))
    return Result(
        method="exact",
        model=model.name,
        inputs=torch.as_tensor(np.stack(rows)).float().reshape(-1, *spec.shape),
        outputs=torch.as_tensor(np.stack(outs)),
        items=items,
        timing={"total_s": time.perf_counter() - t0},
        info={"certificates": [r.stats for r in results]},
        value_range=(spec.low, spec.high),
    )

