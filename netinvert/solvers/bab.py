"""Branch-and-bound on ReLU splits with batched CROWN bounds.

A sub-domain fixes some unstable ReLUs active (``l := max(l, 0)``) or inactive (``u := min(u, 0)``);
its intermediate bounds are recomputed from the split layer on, and the output rows are bounded
with the root's optimized slopes (any slopes in [0, 1] are sound). A sub-domain dies when every
disjunct has a row with a positive lower bound. The neuron to split is the unstable one whose
relaxation intercept costs the most in the weakest disjunct's bound (the BaBSR score). Every
sub-domain's bound minimizer is tried on the network as a free counterexample candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from netinvert.solvers import linear_bounds as lb


@dataclass
class BabOutcome:
    """``status``: 'none' (every sub-domain refuted), 'found' (``x``) or 'unknown' (``reason``)."""

    status: str
    x: np.ndarray | None = None
    reason: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


def bab(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    root: lb.Bounds,
    a: np.ndarray,
    b: np.ndarray,
    owner: np.ndarray,
    is_point: Callable[[np.ndarray], np.ndarray],
    *,
    alphas: list[torch.Tensor] | None = None,
    time_limit: float = 60.0,
    batch: int = 64,
) -> BabOutcome:
    """Refute the rows ``a y - b`` grouped into disjuncts by ``owner`` on every sub-domain, or find a point.

    ``is_point(xs)`` says which candidate inputs (rows) satisfy the target on the real network.
    """
    t0 = time.perf_counter()
    nk = len(layers) - 1
    n_disj = int(owner.max()) + 1
    a_t = torch.as_tensor(a, dtype=lb.DT)
    b_t = torch.as_tensor(b, dtype=lb.DT)
    masks = [torch.as_tensor(owner == d) for d in range(n_disj)]
    lo_t = torch.as_tensor(lo, dtype=lb.DT)[None]
    hi_t = torch.as_tensor(hi, dtype=lb.DT)[None]
    stack_l = [l.clone() for l in root.lower]
    stack_u = [u.clone() for u in root.upper]
    stats = {"domains": 0, "max_open": 1, "stuck": 0}
    while stack_l[0].shape[0]:
        if time.perf_counter() - t0 > time_limit:
            return BabOutcome("unknown", reason="time limit in branch-and-bound", stats=stats)
        take = min(batch, stack_l[0].shape[0])
        cur_l = [l[-take:] for l in stack_l]
        cur_u = [u[-take:] for u in stack_u]
        stack_l = [l[:-take] for l in stack_l]
        stack_u = [u[:-take] for u in stack_u]
        with torch.no_grad():
            coeffs: dict[int, torch.Tensor] = {}
            val = _spec(layers, lb.Bounds(cur_l, cur_u), a_t, b_t, lo_t, hi_t, alphas, coeffs)
            worst = _weakest_row(val, masks)  # (B,) row index of the weakest open disjunct
            layer, idx, ok = _choose(cur_l, cur_u, coeffs, worst)
        if not bool(ok.all()):
            stats["stuck"] += int((~ok).sum())
            keep = ok.nonzero().flatten()
            cur_l = [l[keep] for l in cur_l]
            cur_u = [u[keep] for u in cur_u]
            layer, idx = layer[keep], idx[keep]
            if not len(keep):
                continue
        n = cur_l[0].shape[0]
        child_l = [torch.cat([l, l]) for l in cur_l]
        child_u = [u.clone().repeat(2, 1) for u in cur_u]
        lay2, idx2 = torch.cat([layer, layer]), torch.cat([idx, idx])
        for k in range(nk):
            sel = (lay2 == k).nonzero().flatten()
            act, ina = sel[sel < n], sel[sel >= n]
            child_l[k][act, idx2[act]] = child_l[k][act, idx2[act]].clamp(min=0.0)
            child_u[k][ina, idx2[ina]] = child_u[k][ina, idx2[ina]].clamp(max=0.0)
        first = int(layer.min()) + 1
        with torch.no_grad():
            lo_b, hi_b = lo_t.expand(2 * n, -1), hi_t.expand(2 * n, -1)
            if first < nk:
                fresh = lb.crown(layers, lo_b, hi_b, start=lb.Bounds(child_l, child_u), from_layer=first)
                child_l = [torch.maximum(l, f) for l, f in zip(child_l, fresh.lower)]
                child_u = [torch.minimum(u, f) for u, f in zip(child_u, fresh.upper)]
            empty = torch.zeros(2 * n, dtype=torch.bool)
            for l, u in zip(child_l, child_u):
                empty |= (l > u + 1e-9).any(dim=1)
            coeffs = {}
            val = _spec(layers, lb.Bounds(child_l, child_u), a_t, b_t, lo_b, hi_b, alphas, coeffs)
        stats["domains"] += 2 * n
        refuted = torch.stack([(val[:, m] > 0).any(dim=1) for m in masks], dim=1).all(dim=1) | empty
        alive = (~refuted).nonzero().flatten()
        if len(alive):
            worst = _weakest_row(val[alive], masks)
            lam_in = coeffs[-1][alive, worst]
            xs = torch.where(lam_in > 0, lo_b[alive], hi_b[alive]).numpy()
            hit = is_point(xs)
            if hit.any():
                return BabOutcome("found", xs[int(np.argmax(hit))], stats=stats)
            stack_l = [torch.cat([s, c[alive]]) for s, c in zip(stack_l, child_l)]
            stack_u = [torch.cat([s, c[alive]]) for s, c in zip(stack_u, child_u)]
        stats["max_open"] = max(stats["max_open"], int(stack_l[0].shape[0]))
    stats["seconds"] = time.perf_counter() - t0
    if stats["stuck"]:
        return BabOutcome("unknown", reason="sub-domains with every ReLU fixed stay undecided", stats=stats)
    return BabOutcome("none", stats=stats)


def _spec(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    bounds: lb.Bounds,
    a: torch.Tensor,
    b: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    alphas: list[torch.Tensor] | None,
    coeffs: dict[int, torch.Tensor],
) -> torch.Tensor:
    bsz = bounds.lower[0].shape[0]
    lo, hi = lo.expand(bsz, -1), hi.expand(bsz, -1)
    al = [x.expand(bsz, -1, -1) for x in alphas] if alphas is not None else None
    lam = a.expand(bsz, *a.shape)
    return lb.backsub(layers, bounds, len(layers) - 1, lam, -b.expand(bsz, -1), lo, hi, al, coeffs)


def _weakest_row(val: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """Per domain: the best row of the open disjunct whose best row bound is lowest."""
    best_rows, best_vals = [], []
    for m in masks:
        rows = m.nonzero().flatten()
        v, i = val[:, rows].max(dim=1)
        best_rows.append(rows[i])
        best_vals.append(torch.where(v > 0, torch.full_like(v, float("inf")), v))
    pick = torch.stack(best_vals, dim=1).argmin(dim=1)
    return torch.stack(best_rows, dim=1)[torch.arange(val.shape[0]), pick]


def _choose(
    lows: list[torch.Tensor], ups: list[torch.Tensor], coeffs: dict[int, torch.Tensor], row: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (layer, neuron) with the largest BaBSR-style score per domain, and whether any was unstable."""
    bsz = row.shape[0]
    best = torch.full((bsz,), -1.0, dtype=lb.DT)
    layer = torch.zeros(bsz, dtype=torch.long)
    idx = torch.zeros(bsz, dtype=torch.long)
    for k, (l, u) in enumerate(zip(lows, ups)):
        unstable = (l < 0) & (u > 0)
        lam = coeffs[k][torch.arange(bsz), row]
        intercept = torch.where(unstable, -l * u / (u - l).clamp_min(1e-30), torch.zeros_like(l))
        score = (-lam).clamp(min=0) * intercept + 1e-6 * intercept
        score = torch.where(unstable, score, torch.full_like(score, -1.0))
        s, i = score.max(dim=1)
        better = s > best
        best = torch.where(better, s, best)
        layer = torch.where(better, torch.full_like(layer, k), layer)
        idx = torch.where(better, i, idx)
    return layer, idx, best >= 0
