"""Convex solves over a box: a linear program (HiGHS) and the closest point in a quadratic metric.

Both take equality rows ``a_eq x = b_eq``, inequality rows ``a_le x <= b_le`` and bounds
``lo <= x <= hi`` (infinite bounds allowed).
"""

from __future__ import annotations

import math

import highspy
import numpy as np
from scipy.optimize import lsq_linear

from netinvert.solvers.milp.highs import quiet_highs


def _highs_model(a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray, b_le: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray, cost: np.ndarray) -> highspy.HighsLp:
    inf = highspy.kHighsInf
    a = np.vstack([a_eq, a_le])
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = lo.size, a.shape[0]
    lp.col_cost_ = cost.tolist()
    lp.col_lower_ = np.where(np.isfinite(lo), lo, -inf).tolist()
    lp.col_upper_ = np.where(np.isfinite(hi), hi, inf).tolist()
    lp.row_lower_ = np.concatenate([b_eq, np.full(a_le.shape[0], -inf)]).tolist()
    lp.row_upper_ = np.concatenate([b_eq, b_le]).tolist()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = _colwise(a)
    return lp


def _colwise(a: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    nz = a.T != 0
    return (np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(int).tolist(), np.nonzero(nz)[1].tolist(),
            a.T[nz].tolist())


def _highs_run(model: highspy.HighsLp | highspy.HighsModel) -> np.ndarray | None:
    h = quiet_highs()
    h.passModel(model)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    return np.asarray(h.getSolution().col_value, dtype=np.float64)


def solve_lp(a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray, b_le: np.ndarray, lo: np.ndarray,
        hi: np.ndarray, cost: np.ndarray) -> np.ndarray | None:
    """min c'x  s.t.  a_eq x = b_eq, a_le x <= b_le, lo <= x <= hi (HiGHS); None unless solved."""
    return _highs_run(_highs_model(a_eq, b_eq, a_le, b_le, lo, hi, cost))


def solve_qp(prec: np.ndarray, center: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray,
        b_le: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """argmin (h - center)' prec (h - center) over {a_eq h = b_eq, a_le h <= b_le, lo <= h <= hi} (non-empty).

    A primal-dual active-set iteration (Hintermueller, Ito & Kunisch 2002) solves the KKT system
    of a guessed set of active bounds and rows exactly and corrects the guess from the
    multipliers and violations until it repeats; the first guess is the centre clipped to the
    box. If the guesses cycle, bounded least squares (BVLS on the whitened distance plus heavily
    weighted rows) gives a second, better guess; failing that, its point is polished.
    """
    m_le = a_le.shape[0]
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    start = np.clip(center, lo, hi)
    for guess in ("centre", "bvls"):
        if guess == "bvls":
            start = _bvls_start(prec, center, a_eq, b_eq, a_le, b_le, lo, hi)
        at_lo, at_hi = start <= lo + 1e-9 * span, start >= hi - 1e-9 * span
        rows = a_le @ start >= b_le - 1e-9 * (1.0 + np.abs(b_le)) if m_le else np.zeros(0, dtype=bool)
        x = _active_set(prec, center, a_eq, b_eq, a_le, b_le, lo, hi, at_lo, at_hi, rows)
        if x is not None:
            return x
    return polish(start, a_eq, b_eq, a_le, b_le, lo, hi)


def _bvls_start(prec: np.ndarray, center: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray,
                b_le: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The QP as a bounded least-squares problem with heavily weighted rows (they hold approximately)."""
    n, m_eq, m_le = center.size, a_eq.shape[0], a_le.shape[0]
    root = np.linalg.cholesky(prec).T  # root' root = prec
    norms = np.linalg.norm(np.vstack([a_eq, a_le]), axis=1)
    weight = 1e4 * math.sqrt(float(np.diag(prec).max())) / np.maximum(norms, 1e-300)
    w_eq, w_le = weight[:m_eq, None], weight[m_eq:, None]
    a = np.block([[root, np.zeros((n, m_le))], [w_eq * a_eq, np.zeros((m_eq, m_le))], [w_le * a_le, w_le * np.eye(m_le)]])
    rhs = np.concatenate([root @ center, w_eq[:, 0] * b_eq, w_le[:, 0] * b_le])
    lo_t = np.concatenate([lo, np.zeros(m_le)])
    hi_t = np.concatenate([np.maximum(hi, lo + 1e-12), np.full(m_le, np.inf)])
    return np.clip(lsq_linear(a, rhs, bounds=(lo_t, hi_t), method="bvls", tol=1e-13).x[:n], lo, hi)


def _active_set(prec: np.ndarray, center: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray,
                b_le: np.ndarray, lo: np.ndarray, hi: np.ndarray, at_lo: np.ndarray, at_hi: np.ndarray,
                rows: np.ndarray) -> np.ndarray | None:
    """Primal-dual active-set iterations from a guess; the exact minimizer, or None if the guesses cycle."""
    m_eq, m_le = a_eq.shape[0], a_le.shape[0]
    c = np.diag(prec)
    for _ in range(30):
        free, fixed = ~(at_lo | at_hi), at_lo | at_hi
        x = np.where(at_lo, lo, np.where(at_hi, hi, 0.0))
        act, act_b = np.vstack([a_eq, a_le[rows]]), np.concatenate([b_eq, b_le[rows]])
        k, m = int(free.sum()), act.shape[0]
        kkt = np.block([[prec[np.ix_(free, free)], act[:, free].T], [act[:, free], np.zeros((m, m))]])
        r = np.concatenate([prec[free] @ center - prec[np.ix_(free, fixed)] @ x[fixed], act_b - act[:, fixed] @ x[fixed]])
        sol = np.linalg.lstsq(kkt, r, rcond=None)[0]
        x[free] = sol[:k]
        mult = np.zeros(m_le)
        mult[rows] = sol[k + m_eq :]
        nu = np.where(free, 0.0, prec @ (x - center) + act.T @ sol[k:])
        new_lo = nu + c * (lo - x) > 0
        new_hi = (nu + c * (hi - x) < 0) & ~new_lo
        new_rows = mult + (a_le @ x - b_le) > 0 if m_le else rows
        if (new_lo == at_lo).all() and (new_hi == at_hi).all() and (new_rows == rows).all():
            return np.clip(x, lo, hi)
        at_lo, at_hi, rows = new_lo, new_hi, new_rows
    return None


def polish(x: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray, a_le: np.ndarray, b_le: np.ndarray,
            lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Remove the residual on equality and active inequality rows, moving only variables off their bounds."""
    active = np.abs(a_le @ x - b_le) < 1e-6 if a_le.size else np.zeros(0, dtype=bool)
    a = np.vstack([a_eq, a_le[active]])
    b = np.concatenate([b_eq, b_le[active]])
    if a.shape[0] == 0:
        return x
    for _ in range(3):
        free = (x > lo + 1e-10) & (x < hi - 1e-10)
        r = a @ x - b
        if not free.any() or np.abs(r).max() < 1e-13:
            break
        step = np.linalg.lstsq(a[:, free], r, rcond=None)[0]
        y = x.copy()
        y[free] -= step
        y = np.clip(y, lo, hi)
        if np.linalg.norm(a @ y - b) >= np.linalg.norm(r):
            break
        x = y
    return x

