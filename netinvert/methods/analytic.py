"""Method ``analytic``: invert a fully connected network layer by layer, from the output back to the input.

The network must be a chain of ``Linear`` layers and element-wise activations that can be inverted
(sigmoid, tanh, ReLU, leaky ReLU, identity); ``Flatten``/``Identity``/``Dropout`` are no-ops and
``AppendBias`` is a fixed input feature equal to 1. Two modes:

* ``pseudoinverse``: at each layer invert the activation (logit for sigmoid, atanh for tanh; a ReLU
  output of 0 becomes the inequality ``z <= 0``), subtract the bias and solve the linear system
  for the layer below inside its domain (the previous activation's range narrowed by interval
  bounds, or the input box). Among the solutions it takes the one closest to the data in the
  model's Gaussian prior (``metric="data"``, the default when the model knows its data) or the
  minimum-norm one (``metric="euclidean"``); hidden layers use that metric pushed forward
  through the layers below. Where a layer cannot be met it takes the closest reachable values;
  the best pass's input is then refined by Newton steps on the layer equations (each a solve of
  the linearized rows in the same metric and box). What is left is reported as the residual.
* ``transpose``: the naive baseline: multiply the target backwards by the transposed weights,
  ignoring biases and activations, and rescale into the input box. It rarely reaches its target
  and is kept only to show why the pseudoinverse is needed.

Many inputs reach the same output; :func:`solve_layerwise` exposes the first layer's solution set
(the metric's closest solution plus null-space directions) and :func:`sample_solutions` draws
distinct inputs from it inside the box, from the same metric, all reaching the same output.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import lsq_linear
from threadpoolctl import threadpool_limits

from netinvert.domains.data_prior import prior_for
from netinvert.domains.sets import Ball, Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import option, seed_option, takes
from netinvert.ground.result import Item, Result
from netinvert.models.wrapper import Model
from netinvert.solvers.milp.convex import polish, solve_lp, solve_qp
from netinvert.solvers.network.chain import (EPS, RANGES, AffineStage, Chain, input_bounds, layer_position, layer_value,
                                             read_chain)
from netinvert.targets.activations import Activations
from netinvert.targets.base import Target
from netinvert.targets.scoring import DEFAULT_GOAL, score
from netinvert.targets.units import Class

MODES = ("pseudoinverse", "transpose")
METRICS = ("data", "euclidean")
_ROUNDS = 3  # layer-wise passes in all: re-picks the hidden targets around the reached point while not exact
_NEWTON = 40  # Newton steps on the layer equations at most, after the layer-wise passes
_RIDGE = 1e-4  # added to a pushed-forward hidden covariance, relative to its mean variance
_TOL = 1e-7  # a layer counts as reached when its residual is below this (relative to the target's size)


# --------------------------------------------------------------------------- the metric
@dataclass
class _Metric:
    """Distance on the input: ``(x - center)' prec (x - center)``; ``cov`` is the inverse of ``prec``.

    ``data``: the Mahalanobis distance of the model's Gaussian data prior (closest to the data);
    ``euclidean``: the plain distance from the normalization mean (minimum norm).
    """

    name: str
    center: np.ndarray
    cov: np.ndarray
    prec: np.ndarray


def _metric(model: Model, chain: Chain, lo: np.ndarray, hi: np.ndarray, metric: str | None) -> _Metric:
    prior = prior_for(model) if metric in (None, "data") else None
    if metric == "data" and prior is None:
        raise NetinvertError(f"metric 'data' needs the training inputs of {model.name}, which it does not know: "
                             "use metric='euclidean' (or a zoo model)")
    n = lo.size
    if prior is None:
        eye = np.eye(n)
        return _Metric("euclidean", np.clip(chain.ref, lo, hi), eye, eye)
    comps = prior.components.double().numpy()
    if comps.shape[1] != n:
        raise NetinvertError(f"the data prior of {model.name} has {comps.shape[1]} values per input, the model "
                             f"{n}: use metric='euclidean'")
    floor = float(prior.floor_inv_std) ** -2
    spread = prior.inv_std.double().numpy() ** -2 - floor  # variance along each component above the floor
    cov = (comps.T * spread) @ comps + floor * np.eye(n)
    factor = cho_factor(cov)
    return _Metric("data", prior.mean.double().numpy(), cov, cho_solve(factor, np.eye(n)))



@dataclass
class _Layer:
    """One linear system ``a_eq h = b_eq``, ``a_le h <= b_le`` over a box, and the metric that picks a solution."""

    name: str
    a_eq: np.ndarray
    b_eq: np.ndarray
    a_le: np.ndarray
    b_le: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    center: np.ndarray
    prec: np.ndarray
    h: np.ndarray = field(default_factory=lambda: np.zeros(0))
    residual: float = 0.0
    reachable: bool = True


def _residual(a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray, b_le: np.ndarray, h: np.ndarray) -> float:
    r_eq = a_eq @ h - b_eq
    r_le = np.maximum(a_le @ h - b_le, 0.0) if a_le.size else np.zeros(0)
    return float(np.sqrt(r_eq @ r_eq + r_le @ r_le))


def _solve_layer(layer: _Layer) -> None:
    """Closest point to ``center`` (in the ``prec`` metric) among the box points satisfying the rows.

    A bounded least-squares solve (BVLS) first says whether the rows can be met inside the box
    (an inequality row's excess is measured with a slack t >= 0). If not, the rows are replaced by
    the values the least-squares point reaches, so the answer is the closest of the closest
    reachable points.
    """
    n = layer.lo.size
    m_eq, m_le = layer.a_eq.shape[0], layer.a_le.shape[0]
    a = np.block([[layer.a_eq, np.zeros((m_eq, m_le))], [layer.a_le, np.eye(m_le)]])
    lo = np.concatenate([layer.lo, np.zeros(m_le)])
    hi = np.concatenate([np.maximum(layer.hi, layer.lo + 1e-12), np.full(m_le, np.inf)])
    ls = lsq_linear(a, np.concatenate([layer.b_eq, layer.b_le]), bounds=(lo, hi), method="bvls", tol=1e-13)
    h_ls = np.clip(ls.x[:n], layer.lo, layer.hi)
    scale = 1.0 + float(np.abs(np.concatenate([layer.b_eq, layer.b_le])).max(initial=0.0))
    b_eq, b_le = layer.b_eq, layer.b_le
    if _residual(layer.a_eq, b_eq, layer.a_le, b_le, h_ls) > _TOL * scale:
        b_eq = layer.a_eq @ h_ls
        b_le = np.maximum(layer.b_le, layer.a_le @ h_ls)
    h = solve_qp(layer.prec, layer.center, layer.a_eq, b_eq, layer.a_le, b_le, layer.lo, layer.hi)
    if _residual(layer.a_eq, b_eq, layer.a_le, b_le, h) > max(_residual(layer.a_eq, b_eq, layer.a_le, b_le, h_ls),
                                                             _TOL * scale):
        h = h_ls
    layer.h = h
    layer.residual = _residual(layer.a_eq, layer.b_eq, layer.a_le, layer.b_le, h)
    layer.reachable = layer.residual <= _TOL * scale


def _invert_activation(st: AffineStage, value: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pre-activation target for a post-activation ``value``: (z, equality mask, range residual).

    Rows outside the mask are ReLU zeros, whose pre-activation need only be <= 0. Values outside
    the activation's range are moved to the nearest reachable value; the move is the residual.
    """
    eq = np.ones(value.size, dtype=bool)
    if st.act in ("sigmoid", "tanh"):
        lo, hi = RANGES[st.act]
        v = np.clip(value, lo + EPS, hi - EPS)
        z = np.log(v) - np.log1p(-v) if st.act == "sigmoid" else np.arctanh(v)
    elif st.act == "relu":
        v = np.maximum(value, 0.0)
        eq = v > 0
        z = v
    elif st.act == "leaky_relu":
        v = value
        z = np.where(v >= 0, v, v / st.slope)
    else:
        v, z = value, value
    return z, eq, float(np.linalg.norm(value - v))


@dataclass
class _Goal:
    """What the pre-activation ``z`` of stage ``stage`` must satisfy: ``c_eq z = d_eq``, ``c_le z <= d_le``.

    ``clip`` is how far an asked activation lies outside the activation's range (0 if inside).
    """

    stage: int
    c_eq: np.ndarray
    d_eq: np.ndarray
    c_le: np.ndarray
    d_le: np.ndarray
    clip: float = 0.0

    @staticmethod
    def of_value(st_index: int, st: AffineStage, where: str, value: np.ndarray) -> _Goal:
        """The goal "this layer's activation (``post``) or pre-activation (``pre``) equals ``value``"."""
        if where == "post":
            z, eq, clip = _invert_activation(st, value)
        else:
            z, eq, clip = value, np.ones(value.size, dtype=bool), 0.0
        eye = np.eye(value.size)
        return _Goal(st_index, eye[eq], z[eq], eye[~eq], z[~eq], clip)

    def rows(self, st: AffineStage) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The goal as rows on the stage's input ``h`` (``z = W h + b``)."""
        return (self.c_eq @ st.weight, self.d_eq - self.c_eq @ st.bias,
                self.c_le @ st.weight, self.d_le - self.c_le @ st.bias)

    def miss(self, z: np.ndarray) -> float:
        r_eq = self.c_eq @ z - self.d_eq
        r_le = np.maximum(self.c_le @ z - self.d_le, 0.0)
        return float(np.sqrt(r_eq @ r_eq + r_le @ r_le)) + self.clip


class Solution:
    """The layer-wise inverse of one target.

    ``x`` is the chosen input and ``metric`` the name of the distance that chose it (``data`` or
    ``euclidean``). ``reachable`` says whether ``x`` meets the goal exactly (to ~1e-7);
    ``residual`` is its miss in pre-activation units at the goal layer. ``layer_residuals`` are
    the per-layer least-squares residuals of the best layer-wise pass (before the Newton
    refinement: ``rounds`` passes, then ``newton_steps`` steps). ``min_norm`` and ``null_space`` describe the first
    layer's solution set without the box: every ``min_norm + null_space @ c`` gives the same
    first-layer activity as ``x``, hence the same output; ``min_norm`` is the point of that set
    closest to the metric's centre (the minimum-norm solution for ``euclidean``).
    """

    def __init__(self, x: torch.Tensor, reachable: bool, residual: float, layer_residuals: dict[str, float],
                 rounds: int, newton_steps: int, first: _Layer, metric: _Metric) -> None:
        self.x = x
        self.reachable = reachable
        self.residual = residual
        self.layer_residuals = layer_residuals
        self.rounds = rounds
        self.newton_steps = newton_steps
        self.metric = metric.name
        self._first = first
        self._metric = metric
        self._basis: tuple[np.ndarray, np.ndarray] | None = None

    def _solution_set(self) -> tuple[np.ndarray, np.ndarray]:
        if self._basis is None:
            self._basis = _solution_set(self._first, self._metric)
        return self._basis

    @property
    def min_norm(self) -> torch.Tensor:
        return torch.from_numpy(self._solution_set()[0]).float().reshape(self.x.shape)

    @property
    def null_space(self) -> torch.Tensor:
        """(input size, k) orthonormal directions that leave the first layer's activity unchanged."""
        return torch.from_numpy(self._solution_set()[1]).float()


def _solve(chain: Chain, goal: _Goal, lo_in: np.ndarray, hi_in: np.ndarray, metric: _Metric,
           shape: tuple[int, ...]) -> Solution:
    """Invert from the goal's stage down to the input, then refine while the goal is not met exactly.

    Layer-wise passes: each picks, at every hidden layer, the solution of its system closest to the
    activity of a reference input, in the input metric pushed forward to that layer (hidden
    targets move the way data-like inputs move them); the input is always the solution closest to
    the metric's centre. The first pass uses the centre as reference, later ones the input the
    previous pass reached (an alternating projection between "maps to the target above" and
    "reachable from below"). Hidden targets picked this way are often slightly out of reach, so
    the best pass's input is then refined by Newton steps on the layer equations: the chain is
    linearized at the current input and the linearized goal rows are solved in the same metric
    and box (the same convex solve as a layer), halving the step while the miss grows; where the
    solution closest to the centre does not lower the miss, the one closest to the current input
    (a plain Gauss-Newton step, which converges near a solution) is taken.
    """
    bounds = chain.bounds(lo_in, hi_in)
    x_ref = np.clip(metric.center, lo_in, hi_in)
    best: tuple[float, np.ndarray, dict[str, float]] | None = None
    rounds = 0
    for rounds in range(1, _ROUNDS + 1):
        layers, residuals, reachable = _pass(chain, goal, bounds, lo_in, hi_in, metric, x_ref)
        x_ref = layers[-1].h
        miss = goal.miss(chain.forward(x_ref[None], (goal.stage, "pre"))[0])
        if best is None or miss < best[0]:
            best = (miss, x_ref, residuals)
        if reachable:
            break
    assert best is not None
    miss, x, residuals = best
    tol = _TOL * (1.0 + float(np.abs(np.concatenate([goal.d_eq, goal.d_le])).max(initial=0.0)))
    steps = stalled = 0
    while miss > tol and goal.clip == 0 and steps < _NEWTON:
        steps += 1
        for center in (metric.center, x):
            x_new = _newton_target(chain, goal, x, lo_in, hi_in, metric, center)
            for _ in range(6):
                new_miss = goal.miss(chain.forward(x_new[None], (goal.stage, "pre"))[0])
                if new_miss < miss:
                    break
                x_new = 0.5 * (x + x_new)
            if new_miss < miss:
                break
        if new_miss >= miss:
            break
        stalled = stalled + 1 if new_miss > 0.99 * miss and miss > 1e3 * tol else 0
        x, miss = x_new, new_miss
        if stalled == 3:  # far from the goal and hardly moving: the target is out of reach
            break
    first = _first_layer(chain, x, lo_in, hi_in)
    return Solution(torch.from_numpy(x.copy()).float().reshape(shape), miss <= tol, miss, residuals, rounds,
                    steps, first, metric)


def _newton_target(chain: Chain, goal: _Goal, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, metric: _Metric,
                   center: np.ndarray) -> np.ndarray:
    """The input closest to ``center`` (in the metric) that meets the goal rows of the chain linearized at ``x``."""
    h, jac = x, np.eye(x.size)
    for s, st in enumerate(chain.stages[: goal.stage + 1]):
        z = st.weight @ h + st.bias
        jac = st.weight @ jac
        if s < goal.stage:
            jac = jac * st.gain(z)[:, None]
            h = st.activate(z)
    offset = z - jac @ x
    layer = _Layer("linearized", goal.c_eq @ jac, goal.d_eq - goal.c_eq @ offset, goal.c_le @ jac,
                   goal.d_le - goal.c_le @ offset, lo, hi, center, metric.prec)
    _solve_layer(layer)
    return layer.h


def _first_layer(chain: Chain, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> _Layer:
    """The first layer's rows "same activity as at ``x``" (a ReLU unit at 0 only needs z <= 0)."""
    st = chain.stages[0]
    z = st.weight @ x + st.bias
    eq = z > 0 if st.act == "relu" else np.ones(z.size, dtype=bool)
    eye = np.eye(x.size)
    layer = _Layer(st.linear or st.act_name, st.weight[eq], z[eq] - st.bias[eq], st.weight[~eq],
                   np.zeros(int((~eq).sum())) - st.bias[~eq], lo, hi, x, eye)
    layer.h = x.copy()
    return layer


def _hidden_metrics(chain: Chain, upto: int, metric: _Metric, x_ref: np.ndarray) -> list[np.ndarray]:
    """Precision matrices of stages ``0 .. upto-1``'s activity: the input covariance pushed through the
    chain linearized at ``x_ref`` (``J cov J'`` plus a small ridge so that it can be inverted)."""
    out, jac, h = [], None, x_ref
    for st in chain.stages[:upto]:
        z = st.weight @ h + st.bias
        h = st.activate(z)
        jac = (st.weight if jac is None else st.weight @ jac) * st.gain(z)[:, None]
        cov = jac @ metric.cov @ jac.T
        ridge = _RIDGE * float(np.trace(cov)) / cov.shape[0] + 1e-12
        out.append(cho_solve(cho_factor(cov + ridge * np.eye(cov.shape[0])), np.eye(cov.shape[0])))
    return out


def _pass(chain: Chain, goal: _Goal, bounds: list[tuple[np.ndarray, np.ndarray]], lo_in: np.ndarray,
          hi_in: np.ndarray, metric: _Metric, x_ref: np.ndarray) -> tuple[list[_Layer], dict[str, float], bool]:
    acts = chain.activations(x_ref)
    precs = _hidden_metrics(chain, goal.stage, metric, x_ref)
    layers: list[_Layer] = []
    residuals: dict[str, float] = {}
    reachable = goal.clip == 0
    if goal.clip:
        st = chain.stages[goal.stage]
        residuals[st.act_name or st.linear] = goal.clip
    for s in range(goal.stage, -1, -1):
        st = chain.stages[s]
        if s < goal.stage:
            goal = _Goal.of_value(s, st, "post", layers[-1].h)
        a_eq, b_eq, a_le, b_le = goal.rows(st)
        if s == 0:
            lo, hi, center, prec = lo_in, hi_in, metric.center, metric.prec
        else:
            lo, hi = bounds[s - 1]
            center, prec = np.clip(acts[s - 1][1], lo, hi), precs[s - 1]
        layer = _Layer(st.linear or st.act_name, a_eq, b_eq, a_le, b_le, lo, hi, center, prec)
        _solve_layer(layer)
        layers.append(layer)
        residuals[layer.name] = residuals.get(layer.name, 0.0) + layer.residual
        reachable = reachable and layer.reachable
    return layers, residuals, reachable


def _solution_set(layer: _Layer, metric: _Metric) -> tuple[np.ndarray, np.ndarray]:
    """The first layer's equality solution closest to the metric's centre (no box) and the null space:
    ``center + S A' (A S A')^+ (b - A center)`` with ``S`` the metric's covariance."""
    a, b, c = layer.a_eq, layer.a_eq @ layer.h, metric.center
    if a.shape[0] == 0:
        return c.copy(), np.eye(c.size)
    _, s, vt = np.linalg.svd(a, full_matrices=True)
    rank = int((s > s.max() * max(a.shape) * np.finfo(np.float64).eps).sum())
    sa = metric.cov @ a.T
    return c + sa @ (np.linalg.pinv(a @ sa) @ (b - a @ c)), vt[rank:].T.copy()


# --------------------------------------------------------------------------- public API
def solve_layerwise(model: Model, layer_name: str, value: torch.Tensor | np.ndarray | Sequence[float],
                    domain: Box | Ball | None = None, *, metric: str | None = None) -> Solution:
    """Find an input whose activation at ``layer_name`` equals ``value`` (pseudoinverse mode).

    ``layer_name`` is a ``Linear`` layer (its pre-activation) or an activation layer of the model.
    ``metric`` picks among the solutions: ``data`` (closest to the model's training data in its
    Gaussian prior; the default when the model knows its data) or ``euclidean`` (minimum norm).
    """
    chain = read_chain(model)
    lo, hi = input_bounds(model, domain)
    position = layer_position(model, chain, layer_name)
    v = layer_value(value, chain, position, layer_name)
    goal = _Goal.of_value(position[0], chain.stages[position[0]], position[1], v)
    chosen = _metric(model, chain, lo, hi, metric)
    with threadpool_limits(1, "blas"):
        return _solve(chain, goal, lo, hi, chosen, model.input_spec.shape)


def sample_solutions(solution: Solution, k: int, *, seed: int = 0, steps: int = 200) -> torch.Tensor:
    """``k`` distinct inputs from the solution set of ``solution`` inside its box.

    All of them give the same first-layer activity as ``solution.x`` (hence the same output). The
    null-space coefficients are drawn from the solution's metric restricted to the solution set
    and truncated to the box (hit-and-run with exact one-dimensional truncated-normal steps): with
    the ``data`` metric the samples are the data prior's draws that reach the target.
    """
    from scipy.stats import truncnorm  # here: scipy.stats takes most of a second to import, and few runs sample

    if k < 1:
        raise NetinvertError(f"number of samples k={k} must be >= 1")
    layer, metric = solution._first, solution._metric
    a_eq, b_eq = layer.a_eq, layer.a_eq @ layer.h
    a_le = layer.a_le
    b_le = np.maximum(layer.b_le, a_le @ layer.h) if a_le.size else layer.b_le
    lo, hi = layer.lo, layer.hi
    null = solution._solution_set()[1]
    if null.shape[1] == 0:
        raise NetinvertError("the solution is unique (the first layer has no null space): cannot sample distinct inputs")
    with threadpool_limits(1, "blas"):
        x = _interior(layer.h, a_eq, b_eq, a_le, b_le, lo, hi)
        # directions whitened by the metric inside the null space, so that every step moves as far as the prior does
        spread = np.linalg.cholesky(null.T @ metric.prec @ null)
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(k):
            for _ in range(steps):
                d = null @ solve_triangular(spread, rng.standard_normal(null.shape[1]), trans="T", lower=True)
                t_lo, t_hi = _segment(x, d, lo, hi, a_le, b_le)
                if t_hi > t_lo:
                    pd = metric.prec @ d
                    scale = 1.0 / math.sqrt(float(d @ pd))
                    mean = -float(pd @ (x - metric.center)) * scale**2
                    t = truncnorm.rvs((t_lo - mean) / scale, (t_hi - mean) / scale, loc=mean, scale=scale,
                                      random_state=rng)
                    x = x + float(np.clip(t, t_lo, t_hi)) * d
            out.append(x.copy())
    shape = tuple(solution.x.shape)
    return torch.from_numpy(np.stack(out)).float().reshape(k, *shape)


def _interior(h: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray, b_le: np.ndarray,
              lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A point of the solution set strictly inside the box (a step from ``h`` toward its Chebyshev centre)."""
    n = h.size
    width = np.where(np.isfinite(hi - lo), hi - lo, 2.0)
    cap = float(width.min()) / 2
    # variables [x, delta]: maximize delta with lo + delta <= x <= hi - delta
    fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
    eye = np.eye(n)
    rows = [np.hstack([-eye[fin_lo], np.ones((fin_lo.sum(), 1))]), np.hstack([eye[fin_hi], np.ones((fin_hi.sum(), 1))])]
    rhs = [-lo[fin_lo], hi[fin_hi]]
    if a_le.size:
        norms = np.linalg.norm(a_le, axis=1, keepdims=True)
        rows.append(np.hstack([a_le, norms]))
        rhs.append(b_le)
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    sol = solve_lp(np.hstack([a_eq, np.zeros((a_eq.shape[0], 1))]), b_eq, np.vstack(rows), np.concatenate(rhs),
              np.concatenate([np.full(n, -np.inf), [0.0]]), np.concatenate([np.full(n, np.inf), [cap]]), cost)
    if sol is None or sol[-1] <= 1e-9:
        raise NetinvertError("the solution set has no interior inside the box: the solution is (nearly) unique")
    c = polish(sol[:n], a_eq, b_eq, np.zeros((0, n)), np.zeros(0), lo, hi)
    return h + 0.5 * (c - h)


def _segment(x: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray, a_le: np.ndarray,
             b_le: np.ndarray) -> tuple[float, float]:
    """The range of t for which x + t d stays in the box and satisfies the inequality rows."""
    t_lo, t_hi = -np.inf, np.inf
    pos, neg = d > 1e-15, d < -1e-15
    with np.errstate(invalid="ignore", divide="ignore"):
        if pos.any():
            t_hi = min(t_hi, float(((hi - x)[pos] / d[pos]).min()))
            t_lo = max(t_lo, float(((lo - x)[pos] / d[pos]).max()))
        if neg.any():
            t_hi = min(t_hi, float(((lo - x)[neg] / d[neg]).min()))
            t_lo = max(t_lo, float(((hi - x)[neg] / d[neg]).max()))
        if a_le.size:
            ad, slack = a_le @ d, b_le - a_le @ x
            p, q = ad > 1e-15, ad < -1e-15
            if p.any():
                t_hi = min(t_hi, float((slack[p] / ad[p]).min()))
            if q.any():
                t_lo = max(t_lo, float((slack[q] / ad[q]).max()))
    return (t_lo, t_hi) if np.isfinite(t_lo) and np.isfinite(t_hi) else (0.0, 0.0)


def _class_goal(model: Model, chain: Chain, k: int, probability: float) -> tuple[_Goal, np.ndarray]:
    """Rows on the logits meaning "class ``k`` has probability ``probability``", and the ideal probabilities.

    Sigmoid outputs: logit_k = logit(p) exactly and every other logit <= logit(1 - p). Softmax
    outputs: logit_j - logit_k <= log((1 - p) / ((n - 1) p)) for every j != k, so that p_k >= p.
    """
    n = model.num_outputs
    last = len(chain.stages) - 1
    if chain.stages[last].act != "identity":
        raise NetinvertError(f"analytic: class targets need {model.name} to end with a Linear layer (its logits); "
                             f"it ends with {chain.stages[last].act_name!r}")
    eye, others = np.eye(n), [j for j in range(n) if j != k]
    if model.output_activation == "sigmoid":
        q = np.full(n, 1.0 - probability)
        q[k] = probability
        logit = math.log(probability / (1.0 - probability))
        return _Goal(last, eye[[k]], np.array([logit]), eye[others], np.full(n - 1, -logit)), q
    if model.output_activation == "softmax":
        q = np.full(n, (1.0 - probability) / max(n - 1, 1))
        q[k] = probability
        gap = math.log((1.0 - probability) / (max(n - 1, 1) * probability))
        return _Goal(last, np.zeros((0, n)), np.zeros(0), eye[others] - eye[[k]], np.full(n - 1, gap)), q
    raise NetinvertError(f"{model.name} is a regression model (output activation 'none'): give an "
                         "Activations target on one of its layers instead of a class")


def _goal(model: Model, chain: Chain, target: Target, probability: float) -> tuple[_Goal, np.ndarray]:
    """The goal rows of a target and the vector the transpose baseline multiplies backwards."""
    if isinstance(target, Class):
        return _class_goal(model, chain, int(target.index), probability)
    if isinstance(target, Activations):
        position = layer_position(model, chain, target.layer)
        v = layer_value(target.value, chain, position, target.layer)
        return _Goal.of_value(position[0], chain.stages[position[0]], position[1], v), v
    raise NetinvertError(f"analytic supports Class and Activations targets, not {target.description!r}")


@dataclass(frozen=True)
class Options:
    """The options of method ``analytic``."""

    mode: str = option("pseudoinverse", "pseudoinverse (layer by layer, inside each layer's range) or transpose "
                       "(the naive baseline).", choices=MODES)
    metric: str | None = option(None, "Which of the inputs that reach a target: data (closest to the training "
                                "data) or euclidean (minimum norm).", choices=METRICS,
                                default_text="data when the model knows its data, else euclidean")
    goal: float = option(DEFAULT_GOAL, "Class probability a class target asks for.", at_least=0.5, below=1.0)
    samples: int = option(1, "Inputs per target: the closest and samples - 1 more from the solution set "
                          "(pseudoinverse only).", at_least=1)
    seed: int = seed_option()


@takes(Options)
def run(model: Model, targets: Target | Sequence[Target], domain: Box | Ball | None = None, *,
        mode: str, metric: str | None, goal: float, samples: int, seed: int) -> Result:
    """Invert ``model`` for each target (``Class`` or ``Activations``); one result row per input.

    A ``Class`` target asks for the class's probability to be ``goal`` (see
    :func:`_class_goal` for the exact rows). ``metric`` picks among the inputs that reach a
    target: ``data`` (closest to the training data in the model's Gaussian prior; the default when
    the model knows its data) or ``euclidean`` (minimum norm); ``info["metric"]`` says which was
    used. ``samples`` > 1 adds ``samples - 1`` random inputs from the solution set, drawn from the
    same metric (pseudoinverse mode only). Status ``found``:
    every layer's system was met exactly; ``not-reached``: the closest reachable input is
    returned and ``residual`` (pre-activation units at the target layer) says how far it is.
    """
    if samples > 1 and mode == "transpose":
        raise NetinvertError(f"samples={samples}: the transpose baseline gives one input per target: use samples=1")
    targets = [targets] if isinstance(targets, Target) else list(targets)
    t0 = time.perf_counter()
    chain = read_chain(model)
    lo, hi = input_bounds(model, domain)
    shape = model.input_spec.shape
    chosen = _metric(model, chain, lo, hi, metric) if mode == "pseudoinverse" else None
    rows: list[torch.Tensor] = []
    plan: list[tuple[Target, _Goal, Solution | None]] = []
    for target in targets:
        if isinstance(target, Class):
            target = Class(model.class_index(target.index), output_activation=model.output_activation)
        aim, vector = _goal(model, chain, target, goal)
        if mode == "transpose":
            rows.append(_transpose(chain, aim.stage, vector, lo, hi, shape))
            plan.append((target, aim, None))
            continue
        assert chosen is not None
        with threadpool_limits(1, "blas"):
            sol = _solve(chain, aim, lo, hi, chosen, shape)
        for x in [sol.x] + ([] if samples == 1 else list(sample_solutions(sol, samples - 1, seed=seed))):
            rows.append(x)
            plan.append((target, aim, sol))
    inputs = torch.stack(rows).to(model._dtype())
    outputs, items = score(model, [t for t, _, _ in plan], inputs, goal_prob=goal)
    flat = inputs.double().reshape(len(rows), -1).numpy()
    for i, (target, aim, sol) in enumerate(plan):
        item = items[i]
        residual = aim.miss(chain.forward(flat[i : i + 1], (aim.stage, "pre"))[0])
        item.metrics["residual"] = residual
        if isinstance(target, Activations):
            position = chain.positions[target.layer]
            reached = chain.forward(flat[i : i + 1], position)[0]
            item.metrics["activation_error"] = float(np.linalg.norm(reached - target.value.double().reshape(-1).numpy()))
        if sol is None:
            ok = residual <= _TOL * (1.0 + float(np.abs(aim.d_eq).max(initial=0.0)))
            item.reason = "transpose baseline: weights multiplied backwards, biases and activations ignored"
        else:
            ok = sol.reachable
            item.metrics.update(layer_residuals=sol.layer_residuals, rounds=sol.rounds, newton_steps=sol.newton_steps)
            item.reason = "the goal is met exactly" if ok else (
                "not reached: the closest input found is returned (layer-wise least squares, then Newton steps)")
        item.status = "found" if ok else "not-reached"
        item.target = (f"class {model.class_label(int(target.index))} p={goal:g}" if isinstance(target, Class)
                       else target.description)
    labels = [_label(model, t, it) for (t, _, _), it in zip(plan, items)]
    spec = model.input_spec
    return Result(method="analytic", model=model.name, inputs=inputs.detach(), outputs=outputs.detach(), items=items,
                  timing={"total_s": time.perf_counter() - t0},
                  info={"mode": mode, "metric": chosen.name if chosen else None, "goal": goal,
                        "samples": samples},
                  labels=labels, value_range=(spec.low, spec.high))


def _label(model: Model, target: Target, item: Item) -> str:
    if isinstance(target, Class):
        return f"{model.class_label(int(target.index))} p={item.metrics['model_prob']:.2f}"
    return target.description


def _transpose(chain: Chain, stage: int, vector: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               shape: tuple[int, ...]) -> torch.Tensor:
    """The naive baseline: W1' W2' ... vector, rescaled into the input box."""
    v = vector
    for s in range(stage, -1, -1):
        v = chain.stages[s].weight.T @ v
    lo_f = np.where(np.isfinite(lo), lo, -1.0)
    hi_f = np.where(np.isfinite(hi), hi, 1.0)
    span = v.max() - v.min()
    u = (v - v.min()) / span if span > 0 else np.full_like(v, 0.5)
    return torch.from_numpy(lo_f + u * (hi_f - lo_f)).float().reshape(shape)
