"""Optimized bounds and branch-and-bound on neuron splits for chains with any activation.

For networks whose inputs are too many to split the box (an MNIST MLP with sigmoid units, the 401 inputs of
``roman-mlp``), the search splits neurons instead, as GenBaB does for general nonlinearities: a neuron's
pre-activation interval ``[l, u]`` is cut at a point ``s`` into ``[l, s]`` and ``[s, u]``, and each part gets
its own, tighter relaxation.

Bounds are CROWN back-substitution with *optimized* relaxations (alpha-CROWN): every line that may move is a
parameter. For sigmoid and tanh (S-shaped, inflection at 0) a line is the tangent at a point ``d`` of the range
where that tangent stays on the right side of the function on ``[l, u]``: on the convex side the lower line may
touch anywhere in ``[l, u]``; on the concave side the upper line; across 0 the upper line may touch at any
``d`` from the point whose tangent passes through ``(l, f(l))`` up to ``u`` (and the lower line mirrored);
the other line is the secant. Softplus (convex): the lower tangent anywhere, the secant above. ReLU: the lower
slope anywhere in [0, 1]. Other activations keep ``smooth.relax``'s fixed lines. Every parameter value gives
sound lines, so the bounds at every optimization step hold (all in float64, with the lines' 1e-9 slack).

Split constraints enter the bound through Lagrange multipliers (beta-CROWN): a sub-domain with ``z <= s``
adds ``beta * (z - s)`` (``beta >= 0``) to the row it bounds, so the layers before the split see it. A
conjunction of rows ``A y <= b`` is bounded through one weighted row ``w @ (A y - b)`` with ``w`` on the
simplex (optimized too): its lower bound above 0 refutes the conjunction.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from netinvert.solvers.bounds.adam import Adam
from netinvert.solvers.bounds.dense import affine_interval
from netinvert.solvers.bounds.smooth import NARROW, SLACK, relax, tangent, tangent_limit
from netinvert.solvers.network.graph import act, forward_layers
from netinvert.solvers.search.attack import descend

DT = torch.float64
Layers = list[tuple[torch.Tensor, torch.Tensor]]
Line = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # al, cl, au, cu
REFUTE = 1e-9  # a sub-domain is refuted when its lower bound exceeds this
LR_DECAY = 0.96  # per Adam step of alpha-CROWN on the whole box: the last steps settle instead of oscillating
BAB_DECAY = 0.9  # per Adam step of a batch of sub-domains


# ------------------------------------------------------------------------------------------- relaxations
@dataclass
class Relax:
    """The relaxation of one hidden layer under bounds ``[l, u]`` (B, n): CROWN's fixed lines, and where a
    line may move, the range ``[*0, *1]`` of its tangent point (ReLU: of its lower slope)."""

    activation: str
    l: torch.Tensor
    u: torch.Tensor
    fixed: Line
    free_lo: torch.Tensor
    lo0: torch.Tensor
    lo1: torch.Tensor
    free_up: torch.Tensor
    up0: torch.Tensor
    up1: torch.Tensor

    def lines(self, tl: torch.Tensor | None, tu: torch.Tensor | None) -> Line:
        """The lines for parameters ``tl``, ``tu`` in [0, 1] (B, m, n), or CROWN's when they are ``None``;
        the result broadcasts as (B, m, n) (or (B, 1, n) for the fixed lines)."""
        al, cl, au, cu = (t.unsqueeze(1) for t in self.fixed)
        if tl is not None and bool(self.free_lo.any()):
            free = self.free_lo.unsqueeze(1)
            if self.activation == "relu":
                sl, il = tl, torch.zeros_like(tl)
            else:
                sl, il = tangent(self.activation, self.lo0.unsqueeze(1) + (self.lo1 - self.lo0).unsqueeze(1) * tl)
                il = il - SLACK * self._scale().unsqueeze(1)
            al, cl = torch.where(free, sl, al), torch.where(free, il, cl)
        if tu is not None and bool(self.free_up.any()):
            free = self.free_up.unsqueeze(1)
            su, iu = tangent(self.activation, self.up0.unsqueeze(1) + (self.up1 - self.up0).unsqueeze(1) * tu)
            au, cu = torch.where(free, su, au), torch.where(free, iu + SLACK * self._scale().unsqueeze(1), cu)
        return al, cl, au, cu

    def start(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial parameters (B, m, n): CROWN's choice for ReLU, the middle of the range otherwise."""
        if self.activation == "relu":
            tl = (self.u > -self.l).to(self.l.dtype)
        else:
            tl = torch.full_like(self.l, 0.5)
        tu = torch.full_like(self.l, 0.5)
        b, n = self.l.shape
        return tl.unsqueeze(1).expand(b, m, n).clone(), tu.unsqueeze(1).expand(b, m, n).clone()

    def take(self, idx: torch.Tensor) -> Relax:
        """The relaxation of the boxes ``idx`` of the batch."""
        return Relax(self.activation, *(t[idx] for t in (self.l, self.u)), tuple(t[idx] for t in self.fixed),
                     *(t[idx] for t in (self.free_lo, self.lo0, self.lo1, self.free_up, self.up0, self.up1)))

    def put(self, rows: torch.Tensor, cols: torch.Tensor, other: Relax) -> None:
        """Overwrite neuron ``cols[i]`` of box ``rows[i]`` with ``other``'s box ``i`` (``other`` is (len(rows), 1))."""
        for name in ("l", "u", "free_lo", "lo0", "lo1", "free_up", "up0", "up1"):
            getattr(self, name)[rows, cols] = getattr(other, name)[:, 0]
        for mine, theirs in zip(self.fixed, other.fixed):
            mine[rows, cols] = theirs[:, 0]

    def _scale(self) -> torch.Tensor:
        return 1 + act(self.activation, self.u).abs() if self.activation == "softplus" else torch.ones_like(self.u)


def relaxation(activation: str, l: torch.Tensor, u: torch.Tensor) -> Relax:
    """The relaxation of ``activation`` on ``[l, u]`` with the ranges of its movable lines."""
    s_shaped = activation in ("sigmoid", "tanh")
    limits = (tangent_limit(activation, l, u), tangent_limit(activation, -u, -l)) if s_shaped else None
    fixed = relax(activation, l, u, limits)
    none = torch.zeros_like(l, dtype=torch.bool)
    zero = torch.zeros_like(l)
    wide = (u - l) >= NARROW
    if activation == "relu":
        unstable = (l < 0) & (u > 0)
        return Relax(activation, l, u, fixed, unstable, zero, torch.ones_like(l), none, zero, zero)
    if activation == "softplus":
        return Relax(activation, l, u, fixed, wide, l, u, none, zero, zero)
    if activation not in ("sigmoid", "tanh"):
        return Relax(activation, l, u, fixed, none, zero, zero, none, zero, zero)
    # upper line: concave side anywhere in [l, u]; across 0 from the tangent through (l, f(l)) up to u
    assert limits is not None
    (d_up, up_ok), (d_lo, lo_ok) = limits
    free_up = wide & ((l >= 0) | ((l < 0) & (u > 0) & up_ok))
    up0 = torch.where(l >= 0, l, d_up)
    # lower line, mirrored: convex side anywhere in [l, u]; across 0 from l up to minus the mirrored limit
    free_lo = wide & ((u <= 0) | ((l < 0) & (u > 0) & lo_ok))
    lo1 = torch.where(u <= 0, u, -d_lo)
    return Relax(activation, l, u, fixed, free_lo, l, torch.maximum(lo1, l), free_up, torch.minimum(up0, u), u)


# ------------------------------------------------------------------------------------------- back-substitution
@dataclass
class Splits:
    """Split constraints of a batch of sub-domains, per hidden layer (each (B, n_j)): which neurons' upper
    bound ``z <= u`` (``up``) or lower bound ``z >= l`` (``lo``) come from a split."""

    lo: list[torch.Tensor]
    up: list[torch.Tensor]

    def any(self) -> bool:
        return any(bool(t.any()) for t in (*self.lo, *self.up))


def backsub(
    layers: Layers,
    rel: list[Relax],
    k: int,
    lam: torch.Tensor,
    c: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    params: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    betas: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    splits: Splits | None = None,
    coeffs: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower bound (B, m) of ``lam @ z_k + c`` over the box and its coefficients on the input (B, m, n_in).

    ``lam`` is (B, m, n_k) on layer ``k``'s pre-activation; ``params[j]`` are layer ``j``'s line parameters
    (None: CROWN's lines); ``betas[j]`` (lower, upper), each (B, m, n_j) >= 0, are the multipliers of the split
    constraints ``z_j >= l_j`` and ``z_j <= u_j`` marked in ``splits``. ``coeffs[j]``, when asked for, receives
    the coefficients on hidden layer ``j``'s output.
    """
    w, b = layers[k]
    c = c + lam @ b
    lam = lam @ w
    for j in range(k - 1, -1, -1):
        if coeffs is not None:
            coeffs[j] = lam
        tl, tu = params[j] if params is not None else (None, None)
        al, cl, au, cu = rel[j].lines(tl, tu)
        pos = lam > 0
        c = c + (lam * torch.where(pos, cl, cu)).sum(-1)
        lam = lam * torch.where(pos, al, au)
        if betas is not None and splits is not None:
            bl, bu = betas[j]
            bl = bl * splits.lo[j].unsqueeze(1)
            bu = bu * splits.up[j].unsqueeze(1)
            # + bu (z - u) + bl (l - z): both <= 0 on the sub-domain
            lam = lam + bu - bl
            c = c - (bu * rel[j].u.unsqueeze(1)).sum(-1) + (bl * rel[j].l.unsqueeze(1)).sum(-1)
        w, b = layers[j]
        c = c + lam @ b
        lam = lam @ w
    val = c + (lam.clamp(min=0) * lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * hi.unsqueeze(1)).sum(-1)
    return val, lam


def _rows(n: int, idx: torch.Tensor, bsz: int, dtype: torch.dtype) -> torch.Tensor:
    sel = torch.eye(n, dtype=dtype)[idx]
    return torch.cat([sel, -sel]).expand(bsz, 2 * len(idx), -1)


def _need(activation: str, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Neurons (any box of the batch) whose bounds back-substitution may tighten usefully."""
    need = ((l < 0) & (u > 0)) if activation == "relu" else (u - l) > NARROW
    return need.any(dim=0).nonzero().flatten()


@dataclass
class RowParams:
    """Line parameters of the layers below the rows one bound propagates: the rows are neurons ``rows`` of a
    hidden layer (their lower and upper bounds), or the spec rows (``rows`` None)."""

    rows: torch.Tensor | None
    lines: list[tuple[torch.Tensor, torch.Tensor]]


def intermediate(
    layers: Layers,
    activations: list[str],
    lo: torch.Tensor,
    hi: torch.Tensor,
    params: dict[int, RowParams] | None = None,
    start: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[Relax]]:
    """Pre-activation bounds of every hidden layer (CROWN; with ``params[k]``, those neurons of layer ``k``
    get their bounds through those line parameters) intersected with interval bounds and with ``start``, and
    the relaxations they give."""
    bsz = lo.shape[0]
    pre: list[tuple[torch.Tensor, torch.Tensor]] = []
    rel: list[Relax] = []
    a_lo, a_hi = lo, hi
    for k in range(len(layers) - 1):
        w, bias = layers[k]
        l, u = affine_interval(w, bias, a_lo, a_hi)
        if start is not None:
            l, u = torch.maximum(l, start[k][0]), torch.minimum(u, start[k][1])
        if k > 0:
            own = params.get(k) if params is not None else None
            idx = own.rows if own is not None and own.rows is not None else _need(activations[k], l, u)
            if len(idx):
                r = len(idx)
                both, _ = backsub(layers, rel, k, _rows(w.shape[0], idx, bsz, lo.dtype), lo.new_zeros(bsz, 2 * r),
                                  lo, hi, own.lines if own is not None else None)
                l, u = l.clone(), u.clone()
                l[:, idx] = torch.maximum(both[:, :r], l[:, idx])
                u[:, idx] = torch.minimum(-both[:, r:], u[:, idx])
        pre.append((l, u))
        rel.append(relaxation(activations[k], l, u))
        a_lo, a_hi = act(activations[k], l), act(activations[k], u)
    return pre, rel


def output_interval(layers: Layers, activations: list[str], pre: list[tuple[torch.Tensor, torch.Tensor]]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds of the outputs from the last hidden layer's bounds."""
    l, u = pre[-1]
    a_lo, a_hi = act(activations[-1], l), act(activations[-1], u)
    w, bias = layers[-1]
    return (a_lo @ w.clamp(min=0).T + a_hi @ w.clamp(max=0).T + bias,
            a_hi @ w.clamp(min=0).T + a_lo @ w.clamp(max=0).T + bias)


def alpha_bounds(
    layers: Layers,
    activations: list[str],
    lo: torch.Tensor,
    hi: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    steps: int = 30,
    lr: float = 0.2,
    deadline: float = math.inf,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """alpha-CROWN on one box (batch 1): the lines of every intermediate bound and of the rows ``a @ y - b``
    are optimized jointly by Adam for ``steps`` steps (fewer once every row's bound is positive, or at
    ``deadline``). Every step is a sound float64 pass that starts from the bounds of the steps before it, so
    intermediate bounds only tighten and each row keeps its best bound.

    Returns the hidden layers' bounds and the rows' lower bounds (1, m).
    """
    pre, rel = intermediate(layers, activations, lo, hi)
    nk = len(layers) - 1
    lam_out, c_out = a.expand(1, *a.shape), -b.expand(1, b.shape[-1])
    spec, _ = backsub(layers, rel, nk, lam_out, c_out, lo, hi)
    spec = torch.maximum(spec, _interval_rows(layers, activations, pre, lam_out, c_out))
    if steps <= 0 or nk == 0 or bool((spec > REFUTE).all()):
        return pre, spec
    params: dict[int, RowParams] = {}
    for k in range(1, nk + 1):
        idx = _need(activations[k], *pre[k]) if k < nk else None
        if idx is not None and not len(idx):
            continue
        m = lam_out.shape[1] if idx is None else 2 * len(idx)
        params[k] = RowParams(idx, [_grad(rel[j].start(m)) for j in range(k)])
    opt = Adam([t for p in params.values() for pair in p.lines for t in pair], lr=lr)
    inner = {k: p for k, p in params.items() if k < nk}
    best = pre
    for _ in range(steps):
        if time.perf_counter() >= deadline:
            break
        pre_t, rel_t = intermediate(layers, activations, lo, hi, inner, best)
        val, _ = backsub(layers, rel_t, nk, lam_out, c_out, lo, hi, params[nk].lines)
        best = [(torch.maximum(bl, l.detach()), torch.minimum(bu, u.detach())) for (bl, bu), (l, u) in zip(best, pre_t)]
        spec = torch.maximum(spec, val.detach())
        if bool((spec > REFUTE).all()):
            break
        opt.zero_grad()
        (-val.sum()).backward()
        opt.step()
        opt.lr *= LR_DECAY
        with torch.no_grad():
            for t in opt.params:
                t.clamp_(0.0, 1.0)
    return best, torch.maximum(spec, _interval_rows(layers, activations, best, lam_out, c_out))


def _grad(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return pair[0].requires_grad_(True), pair[1].requires_grad_(True)


def _interval_rows(layers: Layers, activations: list[str], pre: list[tuple[torch.Tensor, torch.Tensor]],
                   lam: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    y_lo, y_hi = output_interval(layers, activations, pre)
    return (lam.clamp(min=0) * y_lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * y_hi.unsqueeze(1)).sum(-1) + c


# ------------------------------------------------------------------------------------------- branch-and-bound
@dataclass
class _Pool:
    """Open sub-domains of one conjunction, as tensors with a leading domain axis.

    ``pre[j]``: bounds of hidden layer ``j`` (N, n_j); ``up``/``down``: which of them come from splits;
    ``tl``/``tu``/``bl``/``bu``: the parent's line parameters and split multipliers (N, 1, n_j), warm starts;
    ``w``: row-weight logits (N, m); ``val``: the sub-domain's lower bound; ``depth``: its number of splits.
    """

    lower: list[torch.Tensor]
    upper: list[torch.Tensor]
    split_lo: list[torch.Tensor]
    split_up: list[torch.Tensor]
    tl: list[torch.Tensor]
    tu: list[torch.Tensor]
    bl: list[torch.Tensor]
    bu: list[torch.Tensor]
    w: torch.Tensor
    val: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return int(self.val.shape[0])

    def take(self, idx: torch.Tensor) -> _Pool:
        pick = lambda ts: [t[idx] for t in ts]  # noqa: E731
        return _Pool(pick(self.lower), pick(self.upper), pick(self.split_lo), pick(self.split_up), pick(self.tl),
                     pick(self.tu), pick(self.bl), pick(self.bu), self.w[idx], self.val[idx], self.depth[idx])

    @staticmethod
    def join(parts: list[_Pool]) -> _Pool:
        cat = lambda name: [torch.cat(ts) for ts in zip(*(getattr(p, name) for p in parts))]  # noqa: E731
        return _Pool(cat("lower"), cat("upper"), cat("split_lo"), cat("split_up"), cat("tl"), cat("tu"), cat("bl"),
                     cat("bu"), torch.cat([p.w for p in parts]), torch.cat([p.val for p in parts]),
                     torch.cat([p.depth for p in parts]))


@dataclass
class SplitOutcome:
    """``status``: 'none' (every sub-domain refuted), 'found' (``x``) or 'open' (time limit; the search goes on
    with ``NeuronSplitSearch.run``)."""

    status: str
    x: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class NeuronSplitSearch:
    """Branch-and-bound on neuron splits refuting one conjunction of rows ``a @ y <= b`` on an input box.

    Each round pops the ``batch`` open sub-domains with the lowest bounds, splits each at the neuron whose
    relaxation costs its bound the most (the largest gap between the line in use and the activation on the
    neuron's interval, times the neuron's coefficient, measured after the split at 0 or at the middle of the
    interval, whichever leaves the smaller gap in the worse child), and bounds the children with their line
    parameters, split multipliers and row weights optimized by ``steps`` Adam steps from the parent's. A child
    is refuted when its bound exceeds ``REFUTE``; every child's bound minimizer (a corner of the input box) is a
    candidate point. ``run`` may be called again after an 'open' outcome to go on.
    """

    def __init__(self, layers: Layers, activations: list[str], lo: np.ndarray, hi: np.ndarray,
                 pre: list[tuple[torch.Tensor, torch.Tensor]], a: np.ndarray, b: np.ndarray,
                 is_point: Callable[[np.ndarray], np.ndarray], *, batch: int = 64, steps: int = 20,
                 root_steps: int = 40, lr: float = 0.1, lr_beta: float = 0.1, deadline: float = math.inf) -> None:
        self.layers, self.activations = layers, activations
        self.lo = torch.as_tensor(lo, dtype=DT)[None]
        self.hi = torch.as_tensor(hi, dtype=DT)[None]
        self.a, self.b = torch.as_tensor(a, dtype=DT), torch.as_tensor(b, dtype=DT)
        self.is_point = is_point
        self.batch, self.steps, self.lr, self.lr_beta = batch, steps, lr, lr_beta
        self.forward = lambda x: forward_layers(layers, x, activations)
        # CROWN again on every child's intermediate bounds when that costs little next to bounding its rows
        weights = [w.numel() for w, _ in layers]
        cost = sum(2 * layers[k][0].shape[0] * sum(weights[:k]) for k in range(1, len(layers) - 1))
        self.refresh = cost <= REFRESH_COST * sum(weights)
        self.stats: dict[str, Any] = {"domains": 0, "refuted": 0, "batches": 0, "max_depth": 0, "seconds": 0.0}
        n = [l.shape[-1] for l, _ in pre]
        none = [torch.zeros(1, k, dtype=torch.bool) for k in n]
        rel = [relaxation(activations[j], l, u) for j, (l, u) in enumerate(pre)]
        initial = [r.start(1) for r in rel]
        zeros = [torch.zeros(1, 1, k, dtype=DT) for k in n]
        root = _Pool([l.clone() for l, _ in pre], [u.clone() for _, u in pre], none, [t.clone() for t in none],
                     [s[0] for s in initial], [s[1] for s in initial], zeros, [z.clone() for z in zeros],
                     torch.zeros(1, len(b), dtype=DT), torch.full((1,), -math.inf, dtype=DT),
                     torch.zeros(1, dtype=torch.long))
        self.pool: _Pool | None = None
        self.found: np.ndarray | None = None
        self.deadline = deadline
        self._bound(root, root_steps, LR_DECAY)
        self.stats["root_bound"] = self.lowest

    @property
    def lowest(self) -> float:
        return float(self.pool.val.min()) if self.pool is not None and len(self.pool) else math.inf

    def run(self, time_limit: float) -> SplitOutcome:
        t0 = time.perf_counter()
        self.deadline = t0 + time_limit
        while self.found is None and self.pool is not None and len(self.pool):
            if time.perf_counter() - t0 >= time_limit:
                break
            k = min(self.batch, len(self.pool))
            order = torch.argsort(self.pool.val)
            parents, rest = self.pool.take(order[:k]), order[k:]
            self.pool = self.pool.take(rest) if len(rest) else None
            self._bound(self._split(parents), self.steps)
            self.stats["batches"] += 1
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["open"] = len(self.pool) if self.pool is not None else 0
        self.stats["lowest_bound"] = self.lowest
        if self.found is not None:
            return SplitOutcome("found", self.found, self.stats)
        return SplitOutcome("none" if self.stats["open"] == 0 else "open", None, self.stats)

    # -------------------------------------------------------------------------------- bounding
    def _bound(self, d: _Pool, steps: int, decay: float = 0.0) -> None:
        """Optimize and keep the best bound of each sub-domain of ``d``; refute, try candidates, keep the rest."""
        if self.refresh and len(self.layers) > 2:
            with torch.no_grad():
                pre, _ = intermediate(self.layers, self.activations, self.lo.expand(len(d), -1),
                                      self.hi.expand(len(d), -1), start=list(zip(d.lower, d.upper)))
            d.lower, d.upper = [l for l, _ in pre], [u for _, u in pre]
        rel = [relaxation(self.activations[j], l, u) for j, (l, u) in enumerate(zip(d.lower, d.upper))]
        splits = Splits(d.split_lo, d.split_up)
        use_beta = splits.any()
        lines = [(tl.clone().requires_grad_(True), tu.clone().requires_grad_(True)) for tl, tu in zip(d.tl, d.tu)]
        betas = [(bl.clone().requires_grad_(True), bu.clone().requires_grad_(True)) for bl, bu in zip(d.bl, d.bu)]
        w = d.w.clone().requires_grad_(True)
        y_lo, y_hi = output_interval(self.layers, self.activations, list(zip(d.lower, d.upper)))
        nk = len(self.layers) - 1

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
            weights = torch.softmax(w, dim=-1)
            lam = (weights @ self.a).unsqueeze(1)
            c = -(weights @ self.b).unsqueeze(1)
            val, coef = backsub(self.layers, rel, nk, lam, c, self.lo, self.hi, lines,
                                betas if use_beta else None, splits if use_beta else None)
            box = (lam.clamp(min=0) * y_lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * y_hi.unsqueeze(1)).sum(-1) + c
            return torch.maximum(val, box)[:, 0], coef[:, 0]

        params = [t for pair in lines for t in pair] + [t for pair in betas for t in pair] + [w]
        opt = Adam(params[:2 * len(lines)] + [w], lr=self.lr)
        opt_beta = Adam(params[2 * len(lines):-1], lr=self.lr_beta)
        best = d.val.clone()
        best_params = [t.detach().clone() for t in params]
        coef = None
        for step in range(steps + 1):
            val, cf = evaluate()
            better = val.detach() > best
            if step == 0 or bool(better.any()):
                best = torch.where(better, val.detach(), best)
                for keep, t in zip(best_params, params):
                    keep[better] = t.detach()[better]
                coef = cf.detach() if coef is None else torch.where(better[:, None], cf.detach(), coef)
            if step == steps or bool((best > REFUTE).all()) or time.perf_counter() >= self.deadline:
                break
            opt.zero_grad()
            opt_beta.zero_grad()
            (-val.sum()).backward()
            opt.step()
            opt_beta.step()
            opt.lr *= decay or BAB_DECAY
            opt_beta.lr *= decay or BAB_DECAY
            with torch.no_grad():
                for pair in lines:
                    for t in pair:
                        t.clamp_(0.0, 1.0)
                for pair in betas:
                    for t in pair:
                        t.clamp_(min=0.0)
        self.stats["domains"] += len(d)
        self.stats["max_depth"] = max(self.stats["max_depth"], int(d.depth.max()))
        assert coef is not None
        x = torch.where(coef > 0, self.lo, self.hi)
        alive = best <= REFUTE
        worst = torch.argsort(best)[:min(ATTACKED, int(alive.sum()))]
        if len(worst):  # a short descent inside the weakest sub-domains, from their bound minimizers
            n_w = len(worst)
            x = torch.cat([x, descend(self.forward, self.lo.expand(n_w, -1), self.hi.expand(n_w, -1), self.a, self.b,
                                      steps=ATTACK_STEPS, start=x[worst], penalty=self._outside(d.take(worst)))])
        hit = self.is_point(x.numpy())
        if hit.any():
            self.found = x.numpy()[int(np.flatnonzero(hit)[0])]
            return
        self.stats["refuted"] += int((~alive).sum())
        if not bool(alive.any()):
            return
        n = len(self.layers) - 1
        d = _Pool(d.lower, d.upper, d.split_lo, d.split_up, best_params[0:2 * n:2], best_params[1:2 * n:2],
                  best_params[2 * n:4 * n:2], best_params[2 * n + 1:4 * n:2], best_params[-1], best, d.depth)
        keep = d.take(alive.nonzero().flatten())
        self.pool = keep if self.pool is None else _Pool.join([self.pool, keep])

    def _outside(self, d: _Pool) -> Callable[[torch.Tensor], torch.Tensor]:
        """How far inputs (one per sub-domain of ``d``) take the split neurons outside their sub-domain's intervals:
        the descent's penalty, so that it searches inside the sub-domain."""

        def penalty(x: torch.Tensor) -> torch.Tensor:
            out, z = x.new_zeros(len(x)), x
            for j, (w, b) in enumerate(self.layers[:-1]):
                z = z @ w.T + b
                split = d.split_lo[j] | d.split_up[j]
                out = out + ((d.lower[j] - z).clamp(min=0) + (z - d.upper[j]).clamp(min=0)).mul(split).sum(-1)
                z = act(self.activations[j], z)
            return out

        return penalty

    # -------------------------------------------------------------------------------- branching
    def _split(self, d: _Pool) -> _Pool:
        """Two children per sub-domain, split at the neuron with the largest gap reduction."""
        rel = [relaxation(self.activations[j], l, u) for j, (l, u) in enumerate(zip(d.lower, d.upper))]
        coeffs: dict[int, torch.Tensor] = {}
        weights = torch.softmax(d.w, dim=-1)
        lam = (weights @ self.a).unsqueeze(1)
        c = -(weights @ self.b).unsqueeze(1)
        splits = Splits(d.split_lo, d.split_up)
        with torch.no_grad():
            backsub(self.layers, rel, len(self.layers) - 1, lam, c, self.lo, self.hi, list(zip(d.tl, d.tu)),
                    list(zip(d.bl, d.bu)), splits, coeffs)
        scored = [_split_scores(self.activations[j], r.l, r.u, coeffs[j][:, 0],
                                [t[:, 0] for t in r.lines(d.tl[j], d.tu[j])]) for j, r in enumerate(rel)]
        flat = torch.cat([sc for sc, _ in scored], dim=1)
        where = torch.cat([p for _, p in scored], dim=1)
        offsets = np.cumsum([0, *[r.l.shape[1] for r in rel]])
        # strong branching among the best few: bound both children of each with the parent's parameters
        k = min(STRONG, flat.shape[1])
        cand = flat.topk(k, dim=1).indices  # (N, k)
        rows = torch.arange(len(d)).repeat_interleave(k)
        cand = cand.reshape(-1)
        point = where[rows, cand]
        layer = torch.as_tensor(np.searchsorted(offsets, cand.numpy(), side="right") - 1)
        col = cand - torch.as_tensor(offsets)[layer]
        kids = self._children(d, rel, rows, layer, col, point)
        weights = torch.softmax(kids.w, dim=-1)
        lam, c = (weights @ self.a).unsqueeze(1), -(weights @ self.b).unsqueeze(1)
        with torch.no_grad():
            kid_rel = self._child_relax(rel, rows, layer, col, point)
            val, _ = backsub(self.layers, kid_rel, len(self.layers) - 1, lam, c, self.lo, self.hi,
                             list(zip(kids.tl, kids.tu)), list(zip(kids.bl, kids.bu)),
                             Splits(kids.split_lo, kids.split_up))
            val = torch.maximum(val, _interval_rows(self.layers, self.activations, list(zip(kids.lower, kids.upper)),
                                                    lam, c))
        val = val[:, 0].reshape(2, len(d), k)  # children: all lower halves, then all upper halves
        score = torch.minimum(val[0], val[1]) + 1e-3 * torch.maximum(val[0], val[1])
        choice = score.argmax(dim=1) + torch.arange(len(d)) * k
        out = kids.take(torch.cat([choice, choice + len(rows)]))
        out.depth = out.depth + 1
        return out

    def _children(self, d: _Pool, rel: list[Relax], rows: torch.Tensor, layer: torch.Tensor, col: torch.Tensor,
                  point: torch.Tensor) -> _Pool:
        """Both children of sub-domain ``rows[i]`` split at neuron ``col[i]`` of hidden layer ``layer[i]`` at
        ``point[i]``: all the lower halves (``z <= point``), then all the upper halves."""
        low, high = d.take(rows), d.take(rows)
        for j in range(len(rel)):
            mine = (layer == j).nonzero().flatten()
            if not len(mine):
                continue
            low.upper[j][mine, col[mine]] = point[mine]
            low.split_up[j][mine, col[mine]] = True
            high.lower[j][mine, col[mine]] = point[mine]
            high.split_lo[j][mine, col[mine]] = True
        return _Pool.join([low, high])

    def _child_relax(self, rel: list[Relax], rows: torch.Tensor, layer: torch.Tensor, col: torch.Tensor,
                     point: torch.Tensor) -> list[Relax]:
        """The relaxations of ``_children``'s sub-domains: the parent's, with the split neuron's redone."""
        out = [r.take(torch.cat([rows, rows])) for r in rel]
        n = len(rows)
        for j, r in enumerate(rel):
            mine = (layer == j).nonzero().flatten()
            if not len(mine):
                continue
            l, u = r.l[rows[mine], col[mine]], r.u[rows[mine], col[mine]]
            s = point[mine]
            both = torch.cat([mine, mine + n])
            part = relaxation(self.activations[j], torch.cat([l, s])[:, None], torch.cat([s, u])[:, None])
            out[j].put(both, torch.cat([col[mine], col[mine]]), part)
        return out


REFRESH_COST = 64  # children's intermediate bounds are recomputed when that costs at most this many row passes
ATTACKED, ATTACK_STEPS = 8, 12  # per batch, the weakest children's bound minimizers get this many descent steps
STRONG = 6  # neurons per sub-domain, the best by estimate, whose children are bounded before one is chosen


def _split_scores(activation: str, l: torch.Tensor, u: torch.Tensor, lam: torch.Tensor, lines: list[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per neuron (N, n): the estimated gain of the bound from splitting it (the worse child's), and the point.

    The estimate (BBPS, as GenBaB scores general nonlinearities): with everything else fixed, replacing the
    line ``a z + c`` in use (the lower one where the neuron's coefficient ``lam`` is positive) by the child's
    CROWN line ``a' z + c'`` moves the bound by ``lam (c' - c) + min over the child's interval of
    lam (a' - a) z``. Points tried: the middle of the interval and, where the interval spans it, 0.
    """
    al, cl, au, cu = lines
    pos = lam > 0
    a_use, c_use = torch.where(pos, al, au), torch.where(pos, cl, cu)
    best_score = torch.full_like(l, -math.inf)
    best_point = (l + u) / 2
    cands = [(l + u) / 2] + ([torch.zeros_like(l)] if activation != "softplus" else [])
    for s in cands:
        inside = (s > l) & (s < u)
        worst = torch.full_like(l, math.inf)
        for lo_, hi_ in ((l, s), (s, u)):
            new = relax(activation, lo_, hi_)
            da = lam * (torch.where(pos, new[0], new[2]) - a_use)
            gain = lam * (torch.where(pos, new[1], new[3]) - c_use) + torch.minimum(da * lo_, da * hi_)
            worst = torch.minimum(worst, gain)
        score = torch.where(inside, worst, torch.full_like(l, -math.inf))
        better = score > best_score
        best_score, best_point = torch.where(better, score, best_score), torch.where(better, s, best_point)
    narrow = (u - l) < NARROW
    return torch.where(narrow, torch.full_like(l, -math.inf), best_score), best_point
