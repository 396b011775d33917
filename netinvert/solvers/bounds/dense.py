"""Sound bounds on a dense ReLU chain (``GraphNet.dense``) over an input box: interval arithmetic,
CROWN back-substitution (with optimizable lower ReLU slopes, alpha-CROWN style). LP tightening with
HiGHS lives beside the MILP in ``milp/dense.py``.

All bounds are computed in float64. Pre-activation bounds of hidden layer ``k`` are ``lower[k]``,
``upper[k]``; a neuron with ``lower >= 0`` or ``upper <= 0`` is *stable* and needs no integer
variable. Functions take a batch of boxes ``(B, n_in)`` so branch-and-bound can bound many
sub-problems at once; ``splits`` clamps split neurons (``+1`` active, ``-1`` inactive).

The same CROWN runs over any graph in ``graph.py`` (node by node, convolutions through their
transposes). This dense form stays separate because the ReLU branch-and-bound and the sign
refinement bound hundreds of sub-domains per batch, each with its own split clamps, slopes and
beta multipliers: one batched matrix product per layer, which the graph pass cannot match.
``smooth.py`` holds the dense CROWN for any activation (input splitting).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from netinvert.ground.errors import NetinvertError
from netinvert.solvers.bounds.adam import Adam
from netinvert.solvers.network.graph import GraphNet

DT = torch.float64


@dataclass
class Bounds:
    """Pre-activation bounds per hidden layer, each (B, n_k)."""

    lower: list[torch.Tensor]
    upper: list[torch.Tensor]

    def unstable(self) -> list[int]:
        """Unstable neuron count per hidden layer (summed over the batch)."""
        return [int(((l < 0) & (u > 0)).sum()) for l, u in zip(self.lower, self.upper)]

    def select(self, idx: torch.Tensor) -> Bounds:
        return Bounds([l[idx] for l in self.lower], [u[idx] for u in self.upper])


def layers_of(net: GraphNet) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The float64 layers of an all-ReLU dense chain (everything in this module assumes ReLUs)."""
    if not net.piecewise:
        raise NetinvertError(
            f"{net.name} has {', '.join(sorted(set(net.activations) - {'relu'}))} activations: this needs an all-ReLU "
            "network (smooth activations are bounded by solvers.bounds.smooth and searched by input or neuron splitting)"
        )
    assert net.dense is not None, "a dense chain (GraphNet.composed)"
    return net.dense.layers(DT)


def affine_interval(w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor,
                    hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds of ``x @ w.T + b`` for ``lo <= x <= hi``."""
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    return lo @ wp.T + hi @ wn.T + b, hi @ wp.T + lo @ wn.T + b


def interval(layers: list[tuple[torch.Tensor, torch.Tensor]], lo: torch.Tensor, hi: torch.Tensor) -> Bounds:
    """Interval arithmetic through the hidden layers."""
    lows, ups = [], []
    a_lo, a_hi = lo, hi
    for w, b in layers[:-1]:
        z_lo, z_hi = affine_interval(w, b, a_lo, a_hi)
        lows.append(z_lo)
        ups.append(z_hi)
        a_lo, a_hi = z_lo.clamp(min=0), z_hi.clamp(min=0)
    return Bounds(lows, ups)


@dataclass
class Relaxation:
    """The ReLU relaxation of every hidden layer that depends only on the bounds, each (B, n_j).

    ``lower`` is CROWN's default lower slope; optimized slopes replace it on ``unstable`` neurons,
    ``active`` (1.0 or 0.0) is the slope elsewhere. Computed once, it serves every slope update.
    """

    lower: list[torch.Tensor]
    upper: list[torch.Tensor]
    intercept: list[torch.Tensor]
    unstable: list[torch.Tensor]
    active: list[torch.Tensor]


def relaxation(bounds: Bounds) -> Relaxation:
    """Triangle relaxation of each hidden layer's ReLUs under ``bounds``."""
    out = Relaxation([], [], [], [], [])
    for l, u in zip(bounds.lower, bounds.upper, strict=True):
        active = (l >= 0).to(l.dtype)
        unstable = (l < 0) & (u > 0)
        denom = (u - l).clamp_min(1e-30)
        out.lower.append(torch.where(unstable, (u > -l).to(l.dtype), active))
        out.upper.append(torch.where(unstable, u / denom, active))
        out.intercept.append(torch.where(unstable, -l * u / denom, torch.zeros_like(l)))
        out.unstable.append(unstable)
        out.active.append(active)
    return out


def backsub(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    bounds: Bounds,
    k: int,
    lam: torch.Tensor,
    c: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    alphas: list[torch.Tensor] | None = None,
    coeffs: dict[int, torch.Tensor] | None = None,
    betas: list[torch.Tensor] | None = None,
    signs: list[torch.Tensor] | None = None,
    relaxed: Relaxation | None = None,
) -> torch.Tensor:
    """Lower bound of ``lam @ z_k + c`` over the box, where ``z_k`` is layer ``k``'s pre-activation.

    ``lam`` is (B, m, n_k) and ``c`` (B, m); ``alphas[j]`` (B, m, n_j) are lower ReLU slopes for the
    hidden layers ``j < k`` (default: the CROWN choice). ``coeffs``, when given, receives the
    coefficients on each hidden layer's post-activation and (key -1) on the input. ``betas[j]``
    (B, m, n_j) >= 0 with ``signs[j]`` (B, n_j) in {-1, 0, 1} add the Lagrangian terms
    ``-beta * sign * z_j`` of split constraints ``sign * z_j >= 0`` (beta-CROWN): the result then
    bounds the minimum over the inputs that satisfy the splits. ``relaxed`` is
    ``relaxation(bounds)`` when the caller already has it.
    """
    rel = relaxed if relaxed is not None else relaxation(bounds)
    w, b = layers[k]
    c = c + lam @ b
    lam = lam @ w
    for j in range(k - 1, -1, -1):
        if alphas is None:
            lo_s = rel.lower[j].unsqueeze(1)
        else:
            lo_s = torch.where(rel.unstable[j].unsqueeze(1), alphas[j], rel.active[j].unsqueeze(1))
        if coeffs is not None:
            coeffs[j] = lam
        lp, ln = lam.clamp(min=0), lam.clamp(max=0)
        c = c + (ln * rel.intercept[j].unsqueeze(1)).sum(-1)
        lam = lp * lo_s + ln * rel.upper[j].unsqueeze(1)
        if betas is not None and signs is not None:
            lam = lam - betas[j] * signs[j].unsqueeze(1)
        w, b = layers[j]
        c = c + lam @ b
        lam = lam @ w
    if coeffs is not None:
        coeffs[-1] = lam
    return c + (lam.clamp(min=0) * lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * hi.unsqueeze(1)).sum(-1)


def _clamp(l: torch.Tensor, u: torch.Tensor, split: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if split is None:
        return l, u
    return torch.where(split > 0, l.clamp(min=0), l), torch.where(split < 0, u.clamp(max=0), u)


def crown(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: torch.Tensor,
    hi: torch.Tensor,
    splits: list[torch.Tensor] | None = None,
    start: Bounds | None = None,
    from_layer: int = 0,
) -> Bounds:
    """CROWN pre-activation bounds of every hidden layer (intersected with interval bounds).

    With ``start`` and ``from_layer``, layers before ``from_layer`` are taken from ``start``.
    """
    ib = interval(layers, lo, hi)
    lows: list[torch.Tensor] = []
    ups: list[torch.Tensor] = []
    for k in range(len(layers) - 1):
        if start is not None and k < from_layer:
            l, u = start.lower[k], start.upper[k]
        elif k == 0:
            l, u = ib.lower[0], ib.upper[0]
        else:
            l, u = ib.lower[k], ib.upper[k]
            if start is not None:
                l, u = torch.maximum(l, start.lower[k]), torch.minimum(u, start.upper[k])
            idx = ((l < 0) & (u > 0)).any(dim=0).nonzero().flatten()  # only neurons not yet stable
            if len(idx):
                r = len(idx)
                sel = torch.eye(layers[k][0].shape[0], dtype=DT)[idx]
                lam = torch.cat([sel, -sel]).expand(lo.shape[0], 2 * r, -1)
                both = backsub(layers, Bounds(lows, ups), k, lam, torch.zeros(lo.shape[0], 2 * r, dtype=DT), lo, hi)
                l, u = l.clone(), u.clone()
                l[:, idx] = torch.maximum(both[:, :r], l[:, idx])
                u[:, idx] = torch.minimum(-both[:, r:], u[:, idx])
        l, u = _clamp(l, u, None if splits is None else splits[k])
        lows.append(l)
        ups.append(u)
    return Bounds(lows, ups)


def spec_lower(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    bounds: Bounds,
    a: torch.Tensor,
    b: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    steps: int = 0,
    lr: float = 0.1,
) -> torch.Tensor:
    """Lower bounds of ``a @ y - b`` (rows of ``a``: (m, n_out) or (B, m, n_out)), optimizing slopes for ``steps``."""
    bsz = lo.shape[0]
    lam = a.expand(bsz, *a.shape[-2:]) if a.dim() == 2 else a
    c = -(b.expand(bsz, b.shape[-1]) if b.dim() == 1 else b)
    k = len(layers) - 1
    best = backsub(layers, bounds, k, lam, c, lo, hi)
    if steps <= 0 or k == 0:
        return best
    rel = relaxation(bounds)
    alphas = [rel.lower[j].unsqueeze(1).expand(bsz, lam.shape[1], -1).clone().requires_grad_(True) for j in range(k)]
    opt = Adam(alphas, lr=lr)
    for _ in range(steps):
        val = backsub(layers, bounds, k, lam, c, lo, hi, alphas, relaxed=rel)
        best = torch.maximum(best, val.detach())
        opt.zero_grad()
        (-val.sum()).backward()
        opt.step()
        with torch.no_grad():
            for al in alphas:
                al.clamp_(0.0, 1.0)
    with torch.no_grad():
        best = torch.maximum(best, backsub(layers, bounds, k, lam, c, lo, hi, alphas, relaxed=rel))
    return best


def alpha_crown(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: torch.Tensor,
    hi: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    steps: int = 20,
    lr: float = 0.1,
    bounds: Bounds | None = None,
    splits: list[torch.Tensor] | None = None,
    deadline: float = math.inf,
) -> tuple[Bounds, torch.Tensor, list[torch.Tensor] | None]:
    """Joint optimization of lower slopes for every intermediate bound and for the spec rows ``a @ y - b``.

    Only neurons still unstable in the starting bounds get rows. Intermediate bounds only ever
    tighten (each step keeps the best seen), so the optimization may stop at any step: after
    ``steps``, or once ``time.perf_counter()`` passes ``deadline``. Returns the final bounds, the
    best lower bounds of the spec rows (B, m) and the spec's optimized slopes (any slopes in [0, 1]
    are sound, so branch-and-bound may reuse them on sub-domains).
    """
    bsz = lo.shape[0]
    base = bounds if bounds is not None else crown(layers, lo, hi, splits)
    best_l = [l.clone() for l in base.lower]
    best_u = [u.clone() for u in base.upper]
    nk = len(layers) - 1
    lam_out = a.expand(bsz, *a.shape[-2:]) if a.dim() == 2 else a
    c_out = -(b.expand(bsz, b.shape[-1]) if b.dim() == 1 else b)
    best_spec = backsub(layers, base, nk, lam_out, c_out, lo, hi)
    if steps <= 0:
        return base, best_spec, None
    rows = {k: ((base.lower[k] < 0) & (base.upper[k] > 0)).any(dim=0).nonzero().flatten() for k in range(1, nk)}
    sizes = {k: 2 * len(r) for k, r in rows.items() if len(r)} | {nk: lam_out.shape[1]}
    # alphas[k][j]: slopes of hidden layer j used when bounding layer k (k = nk: the spec)
    start = relaxation(base).lower
    alphas = {
        k: [start[j].unsqueeze(1).expand(bsz, m, -1).clone().requires_grad_(True) for j in range(k)]
        for k, m in sizes.items()
    }
    opt = Adam([t for v in alphas.values() for t in v], lr=lr)
    for _ in range(steps):
        if time.perf_counter() >= deadline:
            break
        lows, ups = [best_l[0]], [best_u[0]]
        loss = torch.zeros((), dtype=DT)
        for k in range(1, nk):
            l, u = best_l[k], best_u[k]
            if k in sizes:
                idx, r = rows[k], len(rows[k])
                sel = torch.eye(layers[k][0].shape[0], dtype=DT)[idx]
                lam = torch.cat([sel, -sel]).expand(bsz, 2 * r, -1)
                both = backsub(layers, Bounds(lows, ups), k, lam, torch.zeros(bsz, 2 * r, dtype=DT), lo, hi, alphas[k])
                l, u = l.clone(), u.clone()
                l[:, idx] = torch.maximum(both[:, :r], l[:, idx])
                u[:, idx] = torch.minimum(-both[:, r:], u[:, idx])
                loss = loss - 1e-3 * ((l - u) * ((l < 0) & (u > 0))).sum()
            l, u = _clamp(l, u, None if splits is None else splits[k])
            lows.append(l)
            ups.append(u)
        val = backsub(layers, Bounds(lows, ups), nk, lam_out, c_out, lo, hi, alphas[nk])
        best_spec = torch.maximum(best_spec, val.detach())
        for k in range(1, nk):
            best_l[k] = torch.maximum(best_l[k], lows[k].detach())
            best_u[k] = torch.minimum(best_u[k], ups[k].detach())
        opt.zero_grad()
        (loss - val.sum()).backward()
        opt.step()
        with torch.no_grad():
            for v in alphas.values():
                for al in v:
                    al.clamp_(0.0, 1.0)
    return Bounds(best_l, best_u), best_spec, [al.detach() for al in alphas[nk]]

