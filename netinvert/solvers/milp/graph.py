"""The exact mixed-integer encoding of a ReLU ``GraphNet`` for HiGHS.

Every node's value gets one column per element; a linear node (dense, convolution, residual add,
concatenation, average pooling, reshape, per-channel scale) is a set of equality rows read from
its transpose (``graph.transpose`` of the identity), so a residual add is just ``v = x + y``.
Each unstable ReLU gets a binary and the big-M rows of ``milp.py`` from the proven
pre-activation bounds; stable ones need none. Convolutions are written out densely here, so the
encoding is only built when ``dense_entries`` stays under ``MAX_ENTRIES``; larger graphs skip
the MILP (the certificate says so).
"""

from __future__ import annotations

import time

import highspy
import numpy as np
import torch

from netinvert.solvers.bounds.graph import GraphBounds
from netinvert.solvers.milp.dense import MilpModel, MilpOutcome, minimize_violation
from netinvert.solvers.network.graph import GraphNet, transpose

MAX_ENTRIES = 4_000_000
_INF = highspy.kHighsInf


def dense_entries(net: GraphNet) -> int:
    """Entries of the dense input-output matrices of the graph's linear nodes."""
    return sum(n.size * sum(net.nodes[i].size for i in n.inputs) for n in net.nodes
               if n.op not in ("input", "act"))


def solve_graph_disjunct(net: GraphNet, lo: np.ndarray, hi: np.ndarray, gb: GraphBounds, a: np.ndarray,
                         b: np.ndarray, *, t_lower: float, cutoff: float = 1e-6, target: float = -1e-5,
                         time_limit: float = 60.0, threads: int = 1) -> MilpOutcome:
    """Minimize ``t`` subject to ``a @ f(x) - b <= t`` over the box (as ``milp.solve_disjunct``)."""
    t0 = time.perf_counter()
    m = MilpModel()
    cols: list[np.ndarray] = [m.cols(lo, hi)]
    for j, node in enumerate(net.nodes[1:], 1):
        if node.op == "act":
            l = gb.pre[j][0][0].reshape(-1).cpu().numpy()
            u = gb.pre[j][1][0].reshape(-1).cpu().numpy()
            z = cols[node.inputs[0]]
            out = m.cols(np.maximum(l, 0.0), np.maximum(u, 0.0))
            for i in np.flatnonzero(l >= 0):
                m.row(np.array([out[i], z[i]]), np.array([1.0, -1.0]), 0.0, 0.0)
            idx = np.flatnonzero((l < 0) & (u > 0))
            if idx.size:
                d = m.cols(np.zeros(idx.size), np.ones(idx.size))
                m.integer.extend(d.tolist())
                for k, i in enumerate(idx):
                    m.row(np.array([out[i], z[i]]), np.array([1.0, -1.0]), 0.0, _INF)  # a >= z
                    m.row(np.array([out[i], z[i], d[k]]), np.array([1.0, -1.0, -l[i]]), -_INF, -l[i])
                    m.row(np.array([out[i], d[k]]), np.array([1.0, -u[i]]), -_INF, 0.0)  # a <= u d
            cols.append(out)
            continue
        eye = torch.eye(node.size, dtype=torch.float64, device=net.device).reshape(node.size, *node.shape)
        with torch.no_grad():
            ins, const = transpose(node, eye, net.nodes)
        ins_np = [t.reshape(node.size, -1).cpu().numpy() for t in ins]
        in_cols = np.concatenate([cols[i] for i in node.inputs])
        jac = np.concatenate(ins_np, axis=1)
        out = m.cols(np.full(node.size, -_INF), np.full(node.size, _INF))
        c = const.cpu().numpy()
        for r in range(node.size):
            m.row(np.concatenate([in_cols, [out[r]]]), np.concatenate([jac[r], [-1.0]]), -c[r], -c[r])
        cols.append(out)
    y = cols[-1]
    t = m.cols(np.array([t_lower - 1e-6]), np.array([_INF]))[0]
    for i in range(a.shape[0]):
        m.row(np.concatenate([y, [t]]), np.concatenate([a[i], [-1.0]]), -_INF, float(b[i]))
    return minimize_violation(m, t, cols[0], t0, time_limit=time_limit, cutoff=cutoff, target=target,
                              threads=threads)
