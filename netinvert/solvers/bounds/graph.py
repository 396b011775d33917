"""Sound bounds on a ``GraphNet`` over boxes: interval arithmetic and CROWN / alpha-CROWN
back-substitution over the DAG.

Backward propagation visits the nodes in reverse topological order; the coefficients reaching
a node from several readers (a residual branch point) are summed before it is passed, and
every linear node is passed through its transpose (``graph.transpose``: a convolution through
``conv_transpose2d``), so no dense matrix of a convolution is ever built. Activations take the
relaxations of ``smooth.relax`` (ReLU triangle; sigmoid, tanh, softplus, sin, cos and power
tangents and secants) and their interval images ``smooth.image``.

Intermediate (pre-activation) bounds: interval bounds, tightened by CROWN for the neurons they
leave unstable, in chunks of rows (at most ``MEMORY`` bytes, and timed so that the last one ends
near the ``deadline``) until the ``deadline``: neurons not
reached by then keep their interval bounds, which are sound too. A pre-activation that is an
affine function of the (box-shaped) input has exact interval bounds and gets no CROWN pass.
Everything is float64 and batched over boxes ``(B, n_in)``; tensors follow ``lo``'s device.
A network with a dense chain (``GraphNet.dense``) takes the dense passes instead (``dense.py``,
``smooth.py``: batched matrix products, split clamps and multipliers for branch-and-bound).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from netinvert.solvers.bounds.adam import Adam
from netinvert.solvers.bounds.smooth import NARROW, Line, image, relax
from netinvert.solvers.network.graph import GNode, GraphNet, apply, transpose

DT = torch.float64
MEMORY = 256 * 2**20  # bytes of coefficients one chunk of intermediate rows may hold
FIRST_CHUNK = 16  # rows of the first chunk; later chunks grow while they fit the time left


@dataclass
class GraphBounds:
    """Per activation node ``j``: bounds ``pre[j] = (l, u)`` of its input (B, *shape) and the
    relaxation ``lines[j]``; ``crown_rows``/``interval_rows`` count the neurons each bounded."""

    pre: dict[int, tuple[torch.Tensor, torch.Tensor]]
    lines: dict[int, Line]
    out: tuple[torch.Tensor, torch.Tensor]
    crown_rows: int = 0
    skipped_rows: int = 0

    def unstable(self) -> list[int]:
        """Neurons whose pre-activation interval straddles 0, per activation node (summed over boxes)."""
        return [int(((l < 0) & (u > 0)).sum()) for l, u in self.pre.values()]


def _abs_node(node: GNode) -> GNode:
    """The node with every weight replaced by its absolute value and no offsets (radius propagation)."""
    p = dict(node.p)
    for k in ("w", "s"):
        if k in p:
            p[k] = p[k].abs()
    if "t" in p:
        p["t"] = torch.zeros_like(p["t"])
    p["b"] = None
    p.update({"sign": abs(node.p.get("sign", 1.0))} if node.op == "add" else {})
    p.update({"value": 0.0} if node.op == "append" else {})
    return GNode(node.op, node.inputs, node.shape, p, node.label)


def _interval(net: GraphNet, j: int, ivals: list[tuple[torch.Tensor, torch.Tensor] | None]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds of linear node ``j`` from its inputs' intervals (centre and radius)."""
    node = net.nodes[j]
    mids = [(ivals[i][0] + ivals[i][1]) / 2 for i in node.inputs]  # type: ignore[index]
    rads = [(ivals[i][1] - ivals[i][0]) / 2 for i in node.inputs]  # type: ignore[index]
    mid = apply(node, mids, net.nodes)
    rad = apply(_abs_node(node), rads, net.nodes)
    return mid - rad, mid + rad


def _exact_interval(net: GraphNet) -> list[bool]:
    """Which node values have exact interval bounds on a box: affine functions of the input read
    through at most one non-diagonal linear map (a neuron's interval is then its true range)."""
    boxlike = [True] + [False] * (len(net.nodes) - 1)
    exact = [True] + [False] * (len(net.nodes) - 1)
    for i, n in enumerate(net.nodes[1:], 1):
        src = n.inputs[0] if len(n.inputs) == 1 else None
        if src is None:
            continue
        if n.op in ("reshape", "scale", "append") or (n.op == "gather" and n.p["injective"]):
            boxlike[i], exact[i] = boxlike[src], exact[src]
        elif n.op == "gather":  # repeated elements: exact, but no longer independent
            exact[i] = exact[src]
        elif n.op in ("linear", "conv", "convt", "avgpool", "sum"):
            exact[i] = boxlike[src]
    return exact


def backward(
    net: GraphNet,
    k: int,
    lam: torch.Tensor,
    c: torch.Tensor,
    lines: dict[int, Line],
    lo: torch.Tensor,
    hi: torch.Tensor,
    alphas: dict[int, torch.Tensor] | None = None,
    record: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower bound (B, m) of ``lam . v_k + c`` over each box and its input coefficients (B, m, n_in).

    ``lam`` (B, m, *shape of node k); ``alphas[j]`` (B, m, *shape) replace the lower ReLU slopes of
    activation node ``j`` where its neurons are unstable (alpha-CROWN; any value in [0, 1] is sound).
    ``record``, when given, receives the coefficients on each activation node's output.
    """
    bsz, m = lam.shape[:2]
    pending: dict[int, torch.Tensor] = {k: lam}
    for j in range(k, 0, -1):
        coef = pending.pop(j, None)
        if coef is None:
            continue
        node = net.nodes[j]
        if node.op == "act":
            if record is not None:
                record[j] = coef
            al, cl, au, cu = (t.unsqueeze(1) for t in lines[j])
            if alphas is not None and j in alphas:  # a ReLU: unstable where the upper slope is in (0, 1)
                unstable = ((lines[j][2] > 0) & (lines[j][2] < 1)).unsqueeze(1)
                al = torch.where(unstable, alphas[j], al)
            pos, neg = coef.clamp(min=0), coef.clamp(max=0)
            c = c + (pos * cl + neg * cu).reshape(bsz, m, -1).sum(-1)
            ins = [pos * al + neg * au]
        else:
            flat, const = transpose(node, coef.reshape(bsz * m, *node.shape), net.nodes)
            c = c + const.reshape(bsz, m)
            ins = [t.reshape(bsz, m, *t.shape[1:]) for t in flat]
        for i, t in zip(node.inputs, ins):
            pending[i] = pending[i] + t if i in pending else t
    coef = pending.get(0, lam.new_zeros(bsz, m, net.num_inputs)).reshape(bsz, m, -1)
    val = c + (coef.clamp(min=0) * lo.unsqueeze(1)).sum(-1) + (coef.clamp(max=0) * hi.unsqueeze(1)).sum(-1)
    return val, coef


def bounds(net: GraphNet, lo: torch.Tensor, hi: torch.Tensor, *, deadline: float = math.inf,
           use_crown: bool = True, start: GraphBounds | None = None) -> GraphBounds:
    """Pre-activation bounds of every activation node: intervals, tightened by CROWN on the neurons
    they leave unstable (or wider than ``NARROW`` for smooth units) until ``deadline``.

    ``start`` (bounds of the same boxes, e.g. with split neurons clamped) is intersected in.
    """
    exact = _exact_interval(net)
    ivals: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(net.nodes)
    ivals[0] = (lo.reshape(lo.shape[0], *net.input_shape), hi.reshape(hi.shape[0], *net.input_shape))
    readers = net.consumers()
    last_read = [max(r) if r else len(net.nodes) for r in readers]
    pre: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    lines: dict[int, Line] = {}
    crowned = skipped = 0
    for j, node in enumerate(net.nodes[1:], 1):
        if node.op != "act":
            ivals[j] = _interval(net, j, ivals)
        else:
            src = node.inputs[0]
            l, u = ivals[src]  # type: ignore[misc]
            if start is not None and j in start.pre:
                l, u = torch.maximum(l, start.pre[j][0]), torch.minimum(u, start.pre[j][1])
            if use_crown and not exact[src]:
                l, u, done, left = _crown_rows(net, src, node.p["activation"], l, u, lines, lo, hi, deadline)
                crowned, skipped = crowned + done, skipped + left
            pre[j] = (l, u)
            lines[j] = relax(node.p["activation"], l, u)
            ivals[j] = image(node.p["activation"], l, u)
        for i in node.inputs:  # intervals nobody reads any more are dropped
            if last_read[i] == j and i != 0:
                ivals[i] = None
    out = ivals[-1]
    assert out is not None
    return GraphBounds(pre, lines, (out[0].reshape(lo.shape[0], -1), out[1].reshape(lo.shape[0], -1)),
                       crowned, skipped)


def _crown_rows(net: GraphNet, src: int, activation: str, l: torch.Tensor, u: torch.Tensor, lines: dict[int, Line],
                lo: torch.Tensor, hi: torch.Tensor, deadline: float
                ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """CROWN bounds of node ``src``'s neurons that the intervals leave open, chunk by chunk."""
    bsz = lo.shape[0]
    lf, uf = l.reshape(bsz, -1), u.reshape(bsz, -1)
    need = ((lf < 0) & (uf > 0)) if activation == "relu" else (uf - lf) > NARROW
    idx = need.any(dim=0).nonzero().flatten()
    if not len(idx):
        return l, u, 0, 0
    widest = max(n.size for n in net.nodes[: src + 1])
    most = max(1, int(MEMORY / (8 * 4 * bsz * widest)))  # 2 rows per neuron, and the summed branches
    lf, uf = lf.clone(), uf.clone()
    n = net.nodes[src].size
    done, chunk, start = 0, min(FIRST_CHUNK, most), time.perf_counter()
    while done < len(idx) and time.perf_counter() < deadline:
        part = idx[done: done + chunk]
        r = len(part)
        lam = lf.new_zeros(bsz, 2 * r, n)
        rows = torch.arange(r, device=lam.device)
        lam[:, rows, part] = 1.0
        lam[:, rows + r, part] = -1.0
        with torch.no_grad():
            both, _ = backward(net, src, lam.reshape(bsz, 2 * r, *net.nodes[src].shape), lf.new_zeros(bsz, 2 * r),
                               lines, lo, hi)
        lf[:, part] = torch.maximum(lf[:, part], both[:, :r])
        uf[:, part] = torch.minimum(uf[:, part], -both[:, r:])
        done += r
        per_row = max(time.perf_counter() - start, 1e-9) / done  # the next chunk fits in half the time left
        fit = 0.5 * (deadline - time.perf_counter()) / per_row
        chunk = max(1, min(most, 2 * chunk, int(fit) if math.isfinite(fit) else most))
    return lf.reshape(l.shape), uf.reshape(u.shape), done, len(idx) - done


def spec_rows(net: GraphNet, gb: GraphBounds, lo: torch.Tensor, hi: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
              alphas: dict[int, torch.Tensor] | None = None, record: dict[int, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower bounds (B, m) of the rows ``a @ y - b`` (the better of CROWN and the output intervals)
    and CROWN's linear lower bounds ``coef @ x + offset`` behind them (coef (B, m, n_in), offset (B, m));
    ``record`` as in ``backward``."""
    bsz = lo.shape[0]
    a = a.to(lo.device, DT)
    b = b.to(lo.device, DT)
    lam = (a.expand(bsz, *a.shape[-2:]) if a.dim() == 2 else a)
    c = -(b.expand(bsz, b.shape[-1]) if b.dim() == 1 else b)
    val, coef = backward(net, len(net.nodes) - 1, lam.reshape(bsz, lam.shape[1], *net.nodes[-1].shape), c,
                         gb.lines, lo, hi, alphas, record)
    offset = val - (coef.clamp(min=0) * lo.unsqueeze(1)).sum(-1) - (coef.clamp(max=0) * hi.unsqueeze(1)).sum(-1)
    y_lo, y_hi = gb.out
    box = (lam.clamp(min=0) * y_lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * y_hi.unsqueeze(1)).sum(-1) + c
    return torch.maximum(val, box), coef, offset


def crown(net: GraphNet, lo: torch.Tensor, hi: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
          *, deadline: float = math.inf) -> tuple[GraphBounds, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``bounds`` then ``spec_rows``: the bounds, the rows' lower bounds, coefficients and offsets."""
    with torch.no_grad():
        gb = bounds(net, lo, hi, deadline=deadline)
        return (gb, *spec_rows(net, gb, lo, hi, a, b))


def alpha_rows(net: GraphNet, gb: GraphBounds, lo: torch.Tensor, hi: torch.Tensor, a: torch.Tensor,
               b: torch.Tensor, *, steps: int = 20, lr: float = 0.1, deadline: float = math.inf) -> torch.Tensor:
    """alpha-CROWN on the spec rows: the lower slopes of unstable ReLUs (one per row) optimized by
    Adam for at most ``steps`` steps or until ``deadline``; returns the best lower bounds (B, m)."""
    with torch.no_grad():
        best = spec_rows(net, gb, lo, hi, a, b)[0]
    m = best.shape[1]
    relus = [j for j in gb.lines if net.nodes[j].p["activation"] == "relu"]
    if not relus or steps <= 0:
        return best
    alphas = {j: gb.lines[j][0].unsqueeze(1).expand(-1, m, *gb.lines[j][0].shape[1:]).clone().requires_grad_(True)
              for j in relus}
    opt = Adam(list(alphas.values()), lr=lr)
    for _ in range(steps):
        if time.perf_counter() >= deadline:
            break
        val = spec_rows(net, gb, lo, hi, a, b, alphas)[0]
        best = torch.maximum(best, val.detach())
        opt.zero_grad()
        (-val.sum()).backward()
        opt.step()
        with torch.no_grad():
            for t in alphas.values():
                t.clamp_(0.0, 1.0)
    with torch.no_grad():
        return torch.maximum(best, spec_rows(net, gb, lo, hi, a, b, alphas)[0])
