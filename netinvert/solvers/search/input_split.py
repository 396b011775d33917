"""Branch-and-bound on the input box: split boxes until every one is refuted by sound bounds, or
a point of one reaches the output set (``split_search``); or until every box is refuted or proved
inside the set, within a box budget (``preimage_search``, the certified preimage of ``method="bounds"``).

Both bound batches of boxes at once with CROWN (``rows_bounder``: ``smooth.crown`` on the dense chain
of a chain with ReLU, sigmoid, tanh, softplus; ``bounds.graph.crown`` on other graphs), refute a box when some row
of a disjunct ``a @ y <= b`` has a positive lower bound or the rows' linear lower bounds cannot
all be <= 0 at once (``_joint``), and halve a box left open along ``split_dimension`` (the largest
sensitivity ``|coefficient| * width`` summed over the rows, as nnenum and alpha-beta-CROWN's ACAS
Xu settings split on the input). ``split_search`` pops up to ``batch`` boxes (lowest parent bound
first) and tries as candidates the centre of every box left, per row, the box corner that
minimizes the row's linear lower bound, and the end points of a short gradient attack inside the
worst-bounded boxes (every round at first, then every fourth). This pays when the input has few
dimensions and the network many unstable neurons; ``prefer_input_split`` makes that choice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from netinvert.solvers.bounds import graph as graph_bounds
from netinvert.solvers.bounds import smooth
from netinvert.solvers.network.graph import GraphNet
from netinvert.solvers.search.attack import descend, forward_of
from netinvert.targets.output_set import OutputSet

Bounder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                   tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

REFUTE = 1e-9  # a row refutes a box when its lower bound exceeds this
MAX_INPUTS = 16  # input splitting is chosen for at most this many free input dimensions
MIN_UNSTABLE = 64  # ... on ReLU networks with at least this many unstable neurons under CROWN
ATTACKED, ATTACK_STEPS = 32, 12  # per round, the boxes with the lowest bounds get this many gradient steps
# ... in each of the first ATTACK_ROUNDS rounds, then in every ATTACK_EVERY-th: on a long search that
# holds, the steps cost a quarter of the time, while every box's centre and corners are still tried each round
ATTACK_ROUNDS, ATTACK_EVERY = 16, 4


def rows_bounder(net: GraphNet, deadline: float = float("inf")) -> Bounder:
    """CROWN on a batch of boxes for either network form: ``(lo, hi, a, b) -> (val, coef, offset)``,
    the rows' lower bounds (B, m) and the linear lower bounds ``coef @ x + offset`` behind them."""
    if net.dense is None:
        return lambda lo, hi, a, b: graph_bounds.crown(net, lo, hi, a, b, deadline=deadline)[1:]
    layers, activations = smooth.layers_and_activations(net)

    def bound(lo: torch.Tensor, hi: torch.Tensor, a: torch.Tensor, b: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return smooth.crown(layers, activations, lo, hi, a, b)[1:]

    return bound


def prefer_input_split(net: GraphNet, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Split the input, not the neurons, when at most ``MAX_INPUTS`` inputs are free: for smooth networks
    always, for ReLU networks when CROWN leaves at least ``MIN_UNSTABLE`` neurons unstable on the whole box."""
    if int(np.sum(hi > lo)) > MAX_INPUTS:
        return False
    if not net.piecewise:
        return True
    lo_t, hi_t = _box(net, lo, hi)
    if net.dense is None:
        with torch.no_grad():
            return sum(graph_bounds.bounds(net, lo_t, hi_t).unstable()) >= MIN_UNSTABLE
    layers, activations = smooth.layers_and_activations(net)
    empty = torch.zeros(0, net.num_outputs, dtype=smooth.DT)
    with torch.no_grad():
        pre, *_ = smooth.crown(layers, activations, lo_t, hi_t, empty, torch.zeros(0, dtype=smooth.DT))
    return sum(int(((l < 0) & (u > 0)).sum()) for l, u in pre) >= MIN_UNSTABLE


def _box(net: GraphNet, lo: np.ndarray, hi: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The box as float64 tensors (1, n_in) on the network's device."""
    return (torch.as_tensor(lo, dtype=smooth.DT, device=net.device)[None],
            torch.as_tensor(hi, dtype=smooth.DT, device=net.device)[None])


@dataclass
class SplitOutcome:
    """``status``: 'none' (every box refuted), 'found' (``x`` reaches the set) or 'open' (time)."""

    status: str
    x: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def root_bounds(net: GraphNet, lo: np.ndarray, hi: np.ndarray, a: np.ndarray, b: np.ndarray,
                deadline: float = float("inf")) -> np.ndarray:
    """CROWN lower bounds of the rows ``a @ y - b`` over the whole box (m,)."""
    lo_t, hi_t = _box(net, lo, hi)
    a_t = torch.as_tensor(a, dtype=smooth.DT, device=lo_t.device)
    b_t = torch.as_tensor(b, dtype=smooth.DT, device=lo_t.device)
    val = rows_bounder(net, deadline)(lo_t, hi_t, a_t, b_t)[0]
    return val[0].cpu().numpy()


def split_search(
    net: GraphNet,
    lo: np.ndarray,
    hi: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    is_point: Callable[[np.ndarray], np.ndarray],
    *,
    time_limit: float = 60.0,
    batch: int = 2048,
) -> SplitOutcome:
    """Decide whether some x in [lo, hi] has ``a @ net(x) <= b`` by splitting the box.

    ``is_point`` takes candidate inputs (N, n_in) and says which truly reach the set (the caller
    re-checks on the original network). Returns 'none' only when every box was refuted.
    """
    t0 = time.perf_counter()
    bound = rows_bounder(net, t0 + time_limit)
    fwd = forward_of(net, smooth.DT)
    los, his = _box(net, lo, hi)
    a_t = torch.as_tensor(a, dtype=smooth.DT, device=los.device)
    b_t = torch.as_tensor(b, dtype=smooth.DT, device=los.device)
    depth = torch.zeros(1, dtype=torch.long, device=los.device)
    prio = torch.zeros(1, dtype=smooth.DT, device=los.device)  # the parent's best row bound: the lowest is popped first
    stats: dict[str, Any] = {"boxes": 0, "refuted": 0, "batches": 0, "max_depth": 0, "stuck": 0}

    def finish(status: str, x: np.ndarray | None = None) -> SplitOutcome:
        stats["seconds"] = time.perf_counter() - t0
        stats["open"] = int(los.shape[0]) + stats["stuck"]
        return SplitOutcome(status, x, stats)

    while los.shape[0]:
        if time.perf_counter() - t0 > time_limit:
            return finish("open")
        per_box = (time.perf_counter() - t0) / max(stats["boxes"], 1)  # keeps the last batch inside the limit
        room = time_limit - (time.perf_counter() - t0)
        n = min(batch, los.shape[0], max(1, int(room / max(per_box, 1e-6))) if stats["boxes"] else 1)
        order = torch.argsort(prio)
        take, rest = order[:n], order[n:]
        lo_b, hi_b, d_b = los[take], his[take], depth[take]
        los, his, depth, prio = los[rest], his[rest], depth[rest], prio[rest]
        with torch.no_grad():
            val, coef, offset = bound(lo_b, hi_b, a_t, b_t)
            joint, x_mix = _joint(coef, offset, lo_b, hi_b)
        stats["boxes"] += n
        stats["batches"] += 1
        stats["max_depth"] = max(stats["max_depth"], int(d_b.max()))
        keep = ~((val > REFUTE).any(dim=1) | (joint > REFUTE))
        stats["refuted"] += int(n - keep.sum())
        if not keep.any():
            continue
        lo_b, hi_b, d_b, val, coef = lo_b[keep], hi_b[keep], d_b[keep], val[keep], coef[keep]
        joint, x_mix = joint[keep], x_mix[keep]
        corners = torch.where(coef > 0, lo_b.unsqueeze(1), hi_b.unsqueeze(1))  # (B, m, n_in)
        tried = lo_b[:0]
        if stats["batches"] <= ATTACK_ROUNDS or stats["batches"] % ATTACK_EVERY == 0:
            worst = torch.argsort(val.amax(dim=1))[:ATTACKED]
            tried = descend(fwd, lo_b[worst], hi_b[worst], a_t, b_t, steps=ATTACK_STEPS)
        cands = torch.cat([((lo_b + hi_b) / 2).unsqueeze(1), corners], dim=1).reshape(-1, lo_b.shape[1])
        cands = torch.cat([tried, x_mix, cands]).cpu().numpy()
        hits = np.flatnonzero(is_point(cands))
        if len(hits):
            return finish("found", cands[hits[0]])
        dim, splittable = split_dimension(coef, lo_b, hi_b)
        stats["stuck"] += int((~splittable).sum())
        best = torch.maximum(val.amax(dim=1), joint)[splittable]
        halves = halve(lo_b[splittable], hi_b[splittable], dim[splittable])
        los, his = torch.cat([los, halves[0]]), torch.cat([his, halves[1]])
        depth = torch.cat([depth, d_b[splittable] + 1, d_b[splittable] + 1])
        prio = torch.cat([prio, best, best])
    return finish("open" if stats["stuck"] else "none")


@dataclass
class Preimage:
    """The boxes (K, 2, n_in) of a preimage search: ``inside`` (every input reaches the set) and
    ``uncertain`` (neither proved); the preimage lies in inside + uncertain and contains inside.
    ``stats``: boxes (bounded), outside, batches, max_depth, stuck, seconds."""

    inside: np.ndarray
    uncertain: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


def preimage_search(
    net: GraphNet, lo: np.ndarray, hi: np.ndarray, target: OutputSet, *, max_boxes: int = 4000,
    batch: int = 512,
) -> Preimage:
    """Split [lo, hi] into boxes outside, inside or uncertain for the union of ``target``'s disjuncts.

    Boxes are bounded in batches (shallowest first) with the rows ``a @ y - b`` and their negations,
    so one CROWN pass gives each row's lower and upper bound. A box is *outside* when every disjunct
    is refuted (some row's lower bound, or the rows' joint bound, is positive), *inside* when every
    row of some disjunct has an upper bound <= 0; any other box is halved (``split_dimension`` on
    the rows of the disjuncts it leaves open) while at most ``max_boxes`` boxes get bounded in all,
    and is *uncertain* after that.
    """
    t0 = time.perf_counter()
    bound = rows_bounder(net)
    los, his = _box(net, lo, hi)
    a = np.vstack([d[0] for d in target.disjuncts])
    b = np.concatenate([d[1] for d in target.disjuncts])
    m = len(b)
    a_t = torch.as_tensor(np.vstack([a, -a]), dtype=smooth.DT, device=los.device)
    b_t = torch.as_tensor(np.concatenate([b, -b]), dtype=smooth.DT, device=los.device)
    ends = np.cumsum([0] + [len(d[1]) for d in target.disjuncts])
    owner = torch.as_tensor(np.repeat(np.arange(len(ends) - 1), np.diff(ends)), device=los.device)
    depth = torch.zeros(1, dtype=torch.long, device=los.device)
    inside: list[torch.Tensor] = []
    uncertain: list[torch.Tensor] = []
    stats: dict[str, Any] = {"boxes": 0, "outside": 0, "batches": 0, "max_depth": 0, "stuck": 0}
    while los.shape[0]:
        lo_b, hi_b, d_b = los[:batch], his[:batch], depth[:batch]
        los, his, depth = los[batch:], his[batch:], depth[batch:]
        with torch.no_grad():
            val, coef, offset = bound(lo_b, hi_b, a_t, b_t)
            low, up = val[:, :m], -val[:, m:]
            refuted = torch.stack([(low[:, s:e] > REFUTE).any(dim=1)
                                   | (_joint(coef[:, s:e], offset[:, s:e], lo_b, hi_b)[0] > REFUTE)
                                   for s, e in zip(ends[:-1], ends[1:])], dim=1)
            covered = torch.stack([(up[:, s:e] <= 0).all(dim=1) for s, e in zip(ends[:-1], ends[1:])], dim=1)
        stats["boxes"] += len(lo_b)
        stats["batches"] += 1
        stats["max_depth"] = max(stats["max_depth"], int(d_b.max()))
        outside = refuted.all(dim=1)
        stats["outside"] += int(outside.sum())
        is_in = ~outside & covered.any(dim=1)
        inside.append(torch.stack([lo_b[is_in], hi_b[is_in]], dim=1))
        open_ = ~outside & ~is_in
        live = (~refuted[open_])[:, owner].repeat(1, 2).unsqueeze(-1)  # the rows of the disjuncts left open
        lo_o, hi_o, d_o = lo_b[open_], hi_b[open_], d_b[open_]
        dim, splittable = split_dimension(coef[open_] * live, lo_o, hi_o)
        stats["stuck"] += int((~splittable).sum())
        room = max(0, (max_boxes - stats["boxes"] - los.shape[0]) // 2)
        split = splittable & (torch.cumsum(splittable.long(), dim=0) <= room)
        uncertain.append(torch.stack([lo_o[~split], hi_o[~split]], dim=1))
        halves = halve(lo_o[split], hi_o[split], dim[split])
        los, his = torch.cat([los, halves[0]]), torch.cat([his, halves[1]])
        depth = torch.cat([depth, d_o[split] + 1, d_o[split] + 1])
    stats["seconds"] = time.perf_counter() - t0
    return Preimage(torch.cat(inside).cpu().numpy(), torch.cat(uncertain).cpu().numpy(), stats)


def split_dimension(coef: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dimension (B,) each box is halved along, and whether it can be (B,) (wider than 1e-9, relative).

    The rows' linear bounds ``coef`` (B, m, n_in) give each dimension the score
    ``(sum_r |coef_rd| + 0.1 * mean) * width_d``: the sum over rows because any one row may decide
    the box, and a tenth of the mean added so that a wide dimension whose coefficients cancel still
    gets split, since its width also loosens the relaxations behind the bounds.
    """
    width = hi - lo
    sens = coef.abs().sum(1)
    score = (sens + 0.1 * sens.mean(dim=1, keepdim=True)) * width
    score = torch.where(width > 0, score + 1e-12 * width, torch.full_like(score, -1.0))
    dim = score.argmax(dim=1)
    rows = torch.arange(len(dim), device=lo.device)
    return dim, width[rows, dim] > 1e-9 * (1 + lo.abs().amax(dim=1))


def halve(lo: torch.Tensor, hi: torch.Tensor, dim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both halves of each box (B, n_in) along ``dim``: corners (2B, n_in), the lower halves first."""
    rows = torch.arange(len(dim), device=lo.device)
    mid = (lo[rows, dim] + hi[rows, dim]) / 2
    left_hi, right_lo = hi.clone(), lo.clone()
    left_hi[rows, dim] = mid
    right_lo[rows, dim] = mid
    return torch.cat([lo, right_lo]), torch.cat([left_hi, hi])


def _joint(
    coef: torch.Tensor, offset: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, steps: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """A lower bound of ``max_r L_r(x)`` over each box, where ``L_r = coef_r @ x + offset_r`` are the
    rows' linear lower bounds: the rows must all be <= 0 at once, and for any weights ``w >= 0``
    summing to 1, ``min_x sum_r w_r L_r(x)`` bounds that maximum from below (weak duality). The
    weights are tuned by multiplicative updates. Returns the best bound (B,) and the box point
    minimizing the best weighted row (B, n_in), a candidate."""
    bsz, m = offset.shape
    w = torch.full((bsz, m), 1.0 / max(m, 1), dtype=coef.dtype, device=coef.device)
    best = torch.full((bsz,), -torch.inf, dtype=coef.dtype, device=coef.device)
    best_x = (lo + hi) / 2
    for step in range(steps if m > 1 else 1):
        mix = (w.unsqueeze(-1) * coef).sum(1)
        x = torch.where(mix > 0, lo, hi)
        rows = (coef * x.unsqueeze(1)).sum(-1) + offset
        bound = (w * rows).sum(1)
        better = bound > best
        best = torch.where(better, bound, best)
        best_x = torch.where(better.unsqueeze(1), x, best_x)
        spread = (rows.amax(1, keepdim=True) - rows.amin(1, keepdim=True)).clamp_min(1e-12)
        w = w * torch.exp(2.0 / (step + 1) ** 0.5 * (rows - rows.amax(1, keepdim=True)) / spread)
        w = w / w.sum(1, keepdim=True)
    return best, best_x
