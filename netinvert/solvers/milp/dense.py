"""The exact mixed-integer encoding of a dense ReLU chain (``GraphNet.dense``) for HiGHS.

Variables: inputs ``x`` in their box, pre-activations ``z_k`` within their proven bounds, and for
each *unstable* ReLU a post-activation ``a`` and a binary ``d`` with the big-M constraints
``a >= z, a <= z - l (1 - d), a <= u d`` (``l``, ``u`` from the bounds). Stable neurons need no
binary: active ones are their pre-activation, inactive ones are zero. With ``integer=False`` the
same model is the LP (triangle) relaxation, which :func:`lp_tighten` uses to tighten bounds.
``MilpModel`` and ``minimize_violation`` serve the graph encoding (``graph.py``) too; that one writes
a column per value and equality rows per node from its transpose, while this one reads the dense
matrices and drops the columns of stable neurons, which keeps the ``mnist_fc`` MILPs small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
import torch

from netinvert.solvers.bounds.dense import Bounds
from netinvert.solvers.milp.highs import quiet_highs

_INF = highspy.kHighsInf


class MilpModel:
    """Column/row accumulator turned into a ``HighsLp``."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[int] = []
        self.row_start = [0]
        self.index: list[int] = []
        self.value: list[float] = []
        self.row_lo: list[float] = []
        self.row_hi: list[float] = []

    def cols(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        first = len(self.lower)
        self.lower.extend(np.asarray(lo, dtype=float).tolist())
        self.upper.extend(np.asarray(hi, dtype=float).tolist())
        return np.arange(first, len(self.lower))

    def row(self, idx: np.ndarray, val: np.ndarray, lo: float, hi: float) -> None:
        keep = val != 0
        self.index.extend(np.asarray(idx)[keep].tolist())
        self.value.extend(np.asarray(val)[keep].tolist())
        self.row_start.append(len(self.index))
        self.row_lo.append(lo)
        self.row_hi.append(hi)

    def highs(self, cost: dict[int, float], threads: int = 1) -> highspy._Highs:
        lp = highspy.HighsLp()
        n = len(self.lower)
        lp.num_col_ = n
        lp.num_row_ = len(self.row_lo)
        c = np.zeros(n)
        for i, v in cost.items():
            c[i] = v
        lp.col_cost_ = c
        lp.col_lower_ = np.array(self.lower)
        lp.col_upper_ = np.array(self.upper)
        lp.row_lower_ = np.array(self.row_lo)
        lp.row_upper_ = np.array(self.row_hi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.array(self.row_start, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(self.index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(self.value)
        if self.integer:
            integ = [highspy.HighsVarType.kContinuous] * n
            for i in self.integer:
                integ[i] = highspy.HighsVarType.kInteger
            lp.integrality_ = integ
        h = quiet_highs(threads)
        h.passModel(lp)
        return h


def _encode(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    bounds: Bounds,
    upto: int,
    integer: bool,
) -> tuple[MilpModel, np.ndarray, np.ndarray]:
    """Encode hidden layers ``0..upto-1`` and their ReLUs; returns the model, the x columns and the
    column of each last-layer ReLU output (-1 where the neuron is always 0)."""
    m = MilpModel()
    x = m.cols(lo, hi)
    prev_cols = x  # column of each current activation (-1: a neuron that is always 0)
    for k in range(upto):
        w = layers[k][0].numpy()
        b = layers[k][1].numpy()
        l = bounds.lower[k][0].numpy()
        u = bounds.upper[k][0].numpy()
        z = m.cols(l, u)
        live = prev_cols >= 0
        for i in range(len(z)):
            coef = w[i, live]
            m.row(np.concatenate([prev_cols[live], [z[i]]]), np.concatenate([coef, [-1.0]]), -b[i], -b[i])
        cols = np.full(len(z), -1)
        unstable = (l < 0) & (u > 0)
        cols[l >= 0] = z[l >= 0]
        idx = np.flatnonzero(unstable)
        if idx.size:
            a = m.cols(np.zeros(idx.size), u[idx])
            cols[idx] = a
            if integer:
                d = m.cols(np.zeros(idx.size), np.ones(idx.size))
                m.integer.extend(d.tolist())
            for j, i in enumerate(idx):
                m.row(np.array([a[j], z[i]]), np.array([1.0, -1.0]), 0.0, _INF)  # a >= z
                if integer:
                    m.row(np.array([a[j], z[i], d[j]]), np.array([1.0, -1.0, -l[i]]), -_INF, -l[i])  # a <= z - l(1-d)
                    m.row(np.array([a[j], d[j]]), np.array([1.0, -u[i]]), -_INF, 0.0)  # a <= u d
                else:
                    s = u[i] / (u[i] - l[i])
                    m.row(np.array([a[j], z[i]]), np.array([1.0, -s]), -_INF, -s * l[i])
        prev_cols = cols
    return m, x, prev_cols


def build_lp(
    layers: list[tuple[torch.Tensor, torch.Tensor]], lo: np.ndarray, hi: np.ndarray, bounds: Bounds, k: int
) -> tuple[highspy._Highs, np.ndarray]:
    """The LP relaxation of hidden layers ``0..k-1`` plus the pre-activation columns of layer ``k``."""
    m, _, prev_cols = _encode(layers, lo, hi, bounds, k, integer=False)
    w, b = layers[k][0].numpy(), layers[k][1].numpy()
    z = m.cols(bounds.lower[k][0].numpy(), bounds.upper[k][0].numpy())
    live = prev_cols >= 0
    for i in range(len(z)):
        m.row(np.concatenate([prev_cols[live], [z[i]]]), np.concatenate([w[i, live], [-1.0]]), -b[i], -b[i])
    return m.highs({}), z


@dataclass
class MilpOutcome:
    """``status``: 'found' (with ``x`` and objective ``t`` < 0), 'none' (no point with t < ``cutoff``) or 'unknown'."""

    status: str
    x: np.ndarray | None
    t: float
    seconds: float
    binaries: int
    reason: str = ""


def solve_disjunct(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    bounds: Bounds,
    a: np.ndarray,
    b: np.ndarray,
    *,
    t_lower: float,
    cutoff: float = 1e-6,
    target: float = -1e-5,
    time_limit: float = 60.0,
    threads: int = 1,
) -> MilpOutcome:
    """Minimize ``t`` subject to ``a @ f(x) - b <= t`` over the box; stop at the first point with ``t <= target``.

    ``none`` means no input has ``max(a f(x) - b) < cutoff``.
    """
    t0 = time.perf_counter()
    nk = len(layers) - 1
    m, x, prev_cols = _encode(layers, lo, hi, bounds, nk, integer=True)
    w, bias = layers[nk][0].numpy(), layers[nk][1].numpy()
    t = m.cols(np.array([t_lower - 1e-6]), np.array([_INF]))[0]
    live = prev_cols >= 0
    aw = a @ w
    for i in range(a.shape[0]):
        m.row(np.concatenate([prev_cols[live], [t]]), np.concatenate([aw[i, live], [-1.0]]), -_INF, b[i] - a[i] @ bias)
    return minimize_violation(m, t, x, t0, time_limit=time_limit, cutoff=cutoff, target=target, threads=threads)


def minimize_violation(m: MilpModel, t: int, x: np.ndarray, t0: float, *, time_limit: float, cutoff: float,
                       target: float, threads: int) -> MilpOutcome:
    """Solve an encoded disjunct: minimize its violation column ``t``, stopping at ``target``; ``x`` are the
    input columns and ``t0`` when the encoding started (for the reported seconds)."""
    h = m.highs({int(t): 1.0}, threads)
    h.setOptionValue("time_limit", max(float(time_limit), 0.1))
    h.setOptionValue("objective_bound", float(cutoff))
    h.setOptionValue("objective_target", float(target))
    h.setOptionValue("mip_feasibility_tolerance", 1e-7)
    h.setOptionValue("primal_feasibility_tolerance", 1e-8)
    h.run()
    status = h.getModelStatus()
    secs = time.perf_counter() - t0
    nbin = len(m.integer)
    info = h.getInfo()
    if info.primal_solution_status >= 2 and info.objective_function_value < cutoff:
        sol = np.array(h.getSolution().col_value)
        return MilpOutcome("found", sol[x], float(info.objective_function_value), secs, nbin)
    if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kOptimal):
        return MilpOutcome("none", None, float("nan"), secs, nbin)
    reason = (
        "MILP time limit"
        if status == highspy.HighsModelStatus.kTimeLimit
        else f"MILP status {h.modelStatusToString(status)}"
    )
    return MilpOutcome("unknown", None, float("nan"), secs, nbin, reason)


def lp_tighten(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    bounds: Bounds,
    upto: int,
    time_limit: float = 30.0,
) -> Bounds:
    """Tighten unstable neurons of hidden layers ``1..upto-1`` with one LP each (triangle relaxation, HiGHS)."""
    lows = [l.clone() for l in bounds.lower]
    ups = [u.clone() for u in bounds.upper]
    t0 = time.perf_counter()
    for k in range(1, min(upto, len(layers) - 1)):
        cur = Bounds(lows, ups)
        h, zvars = build_lp(layers, lo, hi, cur, k)
        for i in np.flatnonzero(((lows[k][0] < 0) & (ups[k][0] > 0)).numpy()):
            for sense in (highspy.ObjSense.kMinimize, highspy.ObjSense.kMaximize):
                if time.perf_counter() - t0 > time_limit:
                    return Bounds(lows, ups)
                h.changeColCost(zvars[i], 1.0)
                h.changeObjectiveSense(sense)
                h.run()
                optimal = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
                val = h.getInfo().objective_function_value
                h.changeColCost(zvars[i], 0.0)  # resets the model status: read it first
                if not optimal:
                    continue
                if sense == highspy.ObjSense.kMinimize:
                    lows[k][0, i] = max(float(lows[k][0, i]), val - 1e-7)
                else:
                    ups[k][0, i] = min(float(ups[k][0, i]), val + 1e-7)
    return Bounds(lows, ups)
