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
    steps: int = 10,
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
    stack_s = [torch.zeros_like(l) for l in root.lower]
    stats = {"domains": 0, "max_open": 1, "stuck": 0}
    while stack_l[0].shape[0]:
        if time.perf_counter() - t0 > time_limit:
            return BabOutcome("unknown", reason="time limit in branch-and-bound", stats=stats)
        take = min(batch, stack_l[0].shape[0])
        cur_l = [l[-take:] for l in stack_l]
        cur_u = [u[-take:] for u in stack_u]
        cur_s = [x[-take:] for x in stack_s]
        stack_l = [l[:-take] for l in stack_l]
        stack_u = [u[:-take] for u in stack_u]
        stack_s = [x[:-take] for x in stack_s]
        with torch.no_grad():
            coeffs: dict[int, torch.Tensor] = {}
            val = _spec(layers, lb.Bounds(cur_l, cur_u), a_t, b_t, lo_t, hi_t, alphas, coeffs)
            worst = _weakest_row(val, masks)  # (B,) row index of the weakest open disjunct
            layer, idx, ok = _choose(cur_l, cur_u, coeffs, worst)
        if not bool(ok.all()):
            for j in (~ok).nonzero().flatten().tolist():  # every ReLU fixed: the sub-domain is one LP
                pattern = [(l[j] >= 0).numpy() for l in cur_l]
                x, refuted = _fixed_pattern(layers, lo, hi, pattern, a, b, owner)
                if x is not None and bool(is_point(x[None])[0]):
                    return BabOutcome("found", x, stats=stats)
                stats["stuck"] += int(not refuted)
            keep = ok.nonzero().flatten()
            cur_l = [l[keep] for l in cur_l]
            cur_u = [u[keep] for u in cur_u]
            cur_s = [x[keep] for x in cur_s]
            layer, idx = layer[keep], idx[keep]
            if not len(keep):
                continue
        n = cur_l[0].shape[0]
        child_l = [torch.cat([l, l]) for l in cur_l]
        child_u = [u.clone().repeat(2, 1) for u in cur_u]
        child_s = [x.clone().repeat(2, 1) for x in cur_s]
        lay2, idx2 = torch.cat([layer, layer]), torch.cat([idx, idx])
        for k in range(nk):
            sel = (lay2 == k).nonzero().flatten()
            act, ina = sel[sel < n], sel[sel >= n]
            child_l[k][act, idx2[act]] = child_l[k][act, idx2[act]].clamp(min=0.0)
            child_u[k][ina, idx2[ina]] = child_u[k][ina, idx2[ina]].clamp(max=0.0)
            child_s[k][act, idx2[act]] = 1.0
            child_s[k][ina, idx2[ina]] = -1.0
        lo_b, hi_b = lo_t.expand(2 * n, -1), hi_t.expand(2 * n, -1)
        empty = torch.zeros(2 * n, dtype=torch.bool)
        for l, u in zip(child_l, child_u, strict=True):
            empty |= (l > u + 1e-9).any(dim=1)
        coeffs = {}
        val = _optimized_spec(layers, lb.Bounds(child_l, child_u), child_s, a_t, b_t, lo_b, hi_b, alphas, coeffs, steps)
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
            stack_s = [torch.cat([s, c[alive]]) for s, c in zip(stack_s, child_s)]
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


def _fixed_pattern(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    pattern: list[np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    owner: np.ndarray,
) -> tuple[np.ndarray | None, bool]:
    """Solve the sub-domain where every ReLU follows ``pattern`` exactly: one LP per disjunct.

    Returns the best point of a disjunct that the LP cannot refute (or None) and whether every
    disjunct is refuted (no point of the region has all its rows below zero).
    """
    from scipy.optimize import linprog

    m_x, m_c = np.eye(lo.size), np.zeros(lo.size)
    rows, rhs = [], []
    for (w_t, b_t), on in zip(layers[:-1], pattern, strict=True):
        w, bias = w_t.numpy(), b_t.numpy()
        z_x, z_c = w @ m_x, w @ m_c + bias
        sign = np.where(on, -1.0, 1.0)  # active: -z <= 0, inactive: z <= 0
        rows.append(sign[:, None] * z_x)
        rhs.append(-sign * z_c)
        m_x, m_c = on[:, None] * z_x, on * z_c
    y_x, y_c = layers[-1][0].numpy() @ m_x, layers[-1][0].numpy() @ m_c + layers[-1][1].numpy()
    n = lo.size
    best_x, best_t = None, np.inf
    for d in range(int(owner.max()) + 1):
        ad, bd = a[owner == d], b[owner == d]
        a_ub = np.vstack(
            [np.hstack([r, np.zeros((r.shape[0], 1))]) for r in rows] + [np.hstack([ad @ y_x, -np.ones((len(bd), 1))])]
        )
        b_ub = np.concatenate([*rhs, bd - ad @ y_c])
        res = linprog(np.r_[np.zeros(n), 1.0], A_ub=a_ub, b_ub=b_ub, bounds=[*zip(lo, hi, strict=True), (None, None)])
        if res.status == 0 and res.fun < best_t:
            best_x, best_t = res.x[:n], float(res.fun)
        elif res.status not in (0, 2):  # neither solved nor proven infeasible
            best_t = -np.inf
    return best_x, bool(best_t > 1e-7)


def _optimized_spec(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    bounds: lb.Bounds,
    signs: list[torch.Tensor],
    a: torch.Tensor,
    b: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    alphas: list[torch.Tensor] | None,
    coeffs: dict[int, torch.Tensor],
    steps: int,
) -> torch.Tensor:
    """Best lower bounds of the rows over each sub-domain, optimizing slopes and split multipliers (Adam)."""
    bsz, m = bounds.lower[0].shape[0], a.shape[0]
    if alphas is None:
        alphas = [lb._relax(l, u, None)[0].unsqueeze(1).expand(-1, m, -1) for l, u in zip(bounds.lower, bounds.upper)]
    al = [x.expand(bsz, m, -1).clone().requires_grad_(True) for x in alphas]
    be = [torch.zeros(bsz, m, s.shape[1], dtype=lb.DT, requires_grad=True) for s in signs]
    lam = a.expand(bsz, *a.shape)
    c = -b.expand(bsz, -1)
    opt = torch.optim.Adam([{"params": al, "lr": 0.1}, {"params": be, "lr": 0.5}])
    best = torch.full((bsz, m), -torch.inf, dtype=lb.DT)
    for _ in range(steps):
        val = lb.backsub(layers, bounds, len(layers) - 1, lam, c, lo, hi, al, betas=be, signs=signs)
        best = torch.maximum(best, val.detach())
        opt.zero_grad()
        (-val.sum()).backward()
        opt.step()
        with torch.no_grad():
            for x in al:
                x.clamp_(0.0, 1.0)
            for x in be:
                x.clamp_(min=0.0)
    with torch.no_grad():
        val = lb.backsub(layers, bounds, len(layers) - 1, lam, c, lo, hi, al, coeffs, be, signs)
    return torch.maximum(best, val)


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
