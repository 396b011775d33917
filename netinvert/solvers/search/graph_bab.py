"""Branch-and-bound on the ReLUs of a ``GraphNet``, for graphs too large for the MILP.

A sub-domain fixes the sign of some ReLU inputs: ``+1`` clamps the neuron's lower bound to 0,
``-1`` its upper bound. Each round pops up to ``batch`` sub-domains (lowest parent bound
first), re-bounds all of them at once (``bounds.graph.bounds`` with the clamped bounds as the
start, so the later layers see the splits; intermediate CROWN for at most a fifth of the time left) and refutes
those where a row of ``a @ y <= b`` has a positive lower bound or a clamped interval is empty.
The minimizing corner of each row's linear bound and the box centre are tried as candidates. An
open sub-domain is split on the unstable neuron whose relaxation costs the rows most: the upper
line's intercept ``-l u / (u - l)`` times the rows' negative coefficients on it (BaBSR's score). Without split multipliers (beta-CROWN) a sub-domain with every ReLU fixed
may stay open: the search is sound, not complete; such sub-domains are counted as ``stuck``.
Dense chains take ``bab.py`` instead (batched beta-CROWN on dense layers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from netinvert.solvers.bounds import graph as gbm
from netinvert.solvers.network.graph import GraphNet

REFUTE = 1e-9


@dataclass
class GraphBabOutcome:
    """``status``: 'none' (every sub-domain refuted), 'found' (``x`` reaches the set) or 'open'."""

    status: str
    x: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def graph_bab(net: GraphNet, lo: np.ndarray, hi: np.ndarray, root: gbm.GraphBounds, a: np.ndarray, b: np.ndarray,
              is_point: Callable[[np.ndarray], np.ndarray], *, time_limit: float = 60.0,
              batch: int = 32) -> GraphBabOutcome:
    """Decide whether some x in [lo, hi] has ``a @ net(x) <= b`` by splitting ReLUs (see the module)."""
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    dev = net.device
    lo_t = torch.as_tensor(lo, dtype=gbm.DT, device=dev)[None]
    hi_t = torch.as_tensor(hi, dtype=gbm.DT, device=dev)[None]
    a_t = torch.as_tensor(a, dtype=gbm.DT, device=dev)
    b_t = torch.as_tensor(b, dtype=gbm.DT, device=dev)
    relus = [j for j in root.pre if net.nodes[j].p["activation"] == "relu"]
    sizes = [net.nodes[j].size for j in relus]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    base_l = torch.cat([root.pre[j][0].reshape(1, -1) for j in relus], 1)
    base_u = torch.cat([root.pre[j][1].reshape(1, -1) for j in relus], 1)
    splits = torch.zeros(1, int(offsets[-1]), dtype=torch.int8, device=dev)
    prio = torch.zeros(1, dtype=gbm.DT, device=dev)
    stats: dict[str, Any] = {"domains": 0, "refuted": 0, "batches": 0, "max_depth": 0, "stuck": 0}

    def finish(status: str, x: np.ndarray | None = None) -> GraphBabOutcome:
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        stats["open"] = int(splits.shape[0]) + stats["stuck"]
        return GraphBabOutcome(status, x, stats)

    while splits.shape[0]:
        room = deadline - time.perf_counter()
        per_domain = (time.perf_counter() - t0) / max(stats["domains"], 1)  # the next batch fits the time left
        size = batch if not stats["domains"] else min(batch, int(room / max(per_domain, 1e-9)))
        if room <= 0 or size < 1:
            return finish("open")
        order = torch.argsort(prio)
        take, rest = order[:size], order[size:]
        sp, splits, prio = splits[take], splits[rest], prio[rest]
        n = sp.shape[0]
        l = torch.where(sp > 0, base_l.clamp(min=0), base_l).expand(n, -1)
        u = torch.where(sp < 0, base_u.clamp(max=0), base_u).expand(n, -1)
        start = gbm.GraphBounds({j: (l[:, offsets[k]:offsets[k + 1]].reshape(n, *net.nodes[j].shape),
                                     u[:, offsets[k]:offsets[k + 1]].reshape(n, *net.nodes[j].shape))
                                 for k, j in enumerate(relus)}, {}, (l, u))
        lo_b, hi_b = lo_t.expand(n, -1), hi_t.expand(n, -1)
        with torch.no_grad():
            # a fifth of the time left for this batch's intermediate CROWN rows (the rest keep the
            # clamped root bounds, never looser), so no one batch spends the whole search's time
            soon = time.perf_counter() + 0.2 * (deadline - time.perf_counter())
            gb = gbm.bounds(net, lo_b, hi_b, deadline=soon, start=start)
            lams: dict[int, torch.Tensor] = {}
            val, coef, _ = gbm.spec_rows(net, gb, lo_b, hi_b, a_t, b_t, record=lams)
        stats["domains"] += n
        stats["batches"] += 1
        stats["max_depth"] = max(stats["max_depth"], int((sp != 0).sum(1).max()))
        pl = torch.cat([gb.pre[j][0].reshape(n, -1) for j in relus], 1)
        pu = torch.cat([gb.pre[j][1].reshape(n, -1) for j in relus], 1)
        empty = (pl > pu).any(1)
        keep = ~((val > REFUTE).any(1) | empty)
        stats["refuted"] += int(n - keep.sum())
        if not keep.any():
            continue
        pull = torch.cat([lams[j].clamp(max=0).abs().sum(1).reshape(n, -1) for j in relus], 1)
        sp, val, coef, pl, pu, pull = sp[keep], val[keep], coef[keep], pl[keep], pu[keep], pull[keep]
        corners = torch.where(coef > 0, lo_t.unsqueeze(1), hi_t.unsqueeze(1)).reshape(-1, lo_t.shape[1])
        cands = torch.cat([(lo_t + hi_t) / 2, corners]).cpu().numpy()
        hits = np.flatnonzero(is_point(cands))
        if len(hits):
            return finish("found", cands[hits[0]])
        gap = -pl * pu / (pu - pl).clamp_min(1e-30)  # the upper line's intercept, times what the rows pull on it
        gap = torch.where((pl < 0) & (pu > 0) & (sp == 0), (pull + 1e-6) * gap, torch.full_like(pl, -1.0))
        best, which = gap.max(dim=1)
        ok = best > 0
        stats["stuck"] += int((~ok).sum())
        sp, which, bound = sp[ok], which[ok], val.amax(dim=1)[ok]
        rows = torch.arange(len(which), device=dev)
        on, off = sp.clone(), sp.clone()
        on[rows, which] = 1
        off[rows, which] = -1
        splits = torch.cat([splits, on, off])
        prio = torch.cat([prio, bound, bound])
    return finish("open" if stats["stuck"] else "none")
