"""Sound linear relaxations of activation functions and CROWN bounds for networks mixing them.

Every activation of ``ACTIVATIONS`` is monotone increasing, so its interval image is
``[f(l), f(u)]``. Its CROWN relaxation on ``[l, u]`` is a pair of lines
``al z + cl <= f(z) <= au z + cu``:

- ReLU: the triangle (upper: secant; lower: slope 1 when ``u > -l`` else 0).
- Softplus (convex): upper the secant, lower the tangent at the midpoint.
- Sigmoid, Tanh (S-shaped: convex below the inflection point 0, concave above). Upper line: on
  the convex side (``u <= 0``) the secant; on the concave side (``l >= 0``) the tangent at the
  midpoint; across 0 the tangent at the point ``d >= 0`` whose tangent passes through
  ``(l, f(l))`` (found by bisection, rounded to the side that stays above), or the secant when
  that ``d`` lies beyond ``u``. The lower line is the upper line of the mirrored interval
  (``f(z) = 2 f(0) - f(-z)``).

Lines get a small slack (1e-9) against rounding; intervals narrower than 1e-7 get the constant
lines ``f(l)`` and ``f(u)``. All bounds are float64 and batched over boxes ``(B, n_in)``.
"""

from __future__ import annotations

import torch

from netinvert.solvers.piecewise import PLNet

DT = torch.float64
SLACK = 1e-9
NARROW = 1e-7
Layers = list[tuple[torch.Tensor, torch.Tensor]]
Line = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # al, cl, au, cu


def act(kind: str, z: torch.Tensor) -> torch.Tensor:
    """The activation ``kind`` on a tensor."""
    if kind == "relu":
        return torch.relu(z)
    if kind == "sigmoid":
        return torch.sigmoid(z)
    if kind == "tanh":
        return torch.tanh(z)
    return torch.nn.functional.softplus(z, beta=1.0, threshold=1e9)


def _slope(kind: str, z: torch.Tensor) -> torch.Tensor:
    if kind == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if kind == "tanh":
        return 1 - torch.tanh(z) ** 2
    return torch.sigmoid(z)  # softplus


def _secant(kind: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fl, fu = act(kind, l), act(kind, u)
    a = (fu - fl) / (u - l).clamp_min(NARROW)
    return a, fl - a * l


def _tangent(kind: str, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = _slope(kind, d)
    return a, act(kind, d) - a * d


def _s_upper(kind: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An upper line of the S-shaped ``kind`` on [l, u] (see the module docstring)."""
    sa, sc = _secant(kind, l, u)
    ta, tc = _tangent(kind, (l + u) / 2)
    a = torch.where(u <= 0, sa, ta)
    c = torch.where(u <= 0, sc, tc)
    across = (l < 0) & (u > 0)  # only these need the tangent through (l, f(l)): found by bisection on them alone
    if not bool(across.any()):
        return a, c
    lx, ux = l[across], u[across]
    fl = act(kind, lx)

    def gap(d: torch.Tensor) -> torch.Tensor:  # <= 0: the tangent at d is at or above f(l) at l
        return _slope(kind, d) * (d - lx) - act(kind, d) + fl

    lo_d, hi_d = torch.zeros_like(ux), ux.clone()
    for _ in range(40):
        mid = (lo_d + hi_d) / 2
        neg = gap(mid) <= 0
        hi_d, lo_d = torch.where(neg, mid, hi_d), torch.where(neg, lo_d, mid)
        # hi_d keeps gap <= 0 whenever the root lies in [0, u]
    da, dc = _tangent(kind, hi_d)
    cross_secant = gap(ux) > 0  # the tangent point lies beyond u: the secant stays above
    a[across] = torch.where(cross_secant, sa[across], da)
    c[across] = torch.where(cross_secant, sc[across], dc)
    return a, c


def relax(kind: str, l: torch.Tensor, u: torch.Tensor) -> Line:
    """Lines ``al z + cl <= f(z) <= au z + cu`` valid on [l, u] (element-wise)."""
    zero = torch.zeros_like(l)
    if kind == "relu":
        active, unstable = (l >= 0).to(l.dtype), (l < 0) & (u > 0)
        up = u / (u - l).clamp_min(1e-30)
        al = torch.where(unstable, (u > -l).to(l.dtype), active)
        au = torch.where(unstable, up, active)
        return al, zero, au, torch.where(unstable, -l * up, zero)
    if kind == "softplus":
        au, cu = _secant(kind, l, u)
        al, cl = _tangent(kind, (l + u) / 2)
        scale = 1 + act(kind, u).abs()
    else:
        au, cu = _s_upper(kind, l, u)
        ma, mc = _s_upper(kind, -u, -l)
        al, cl = ma, 2 * act(kind, zero) - mc
        scale = torch.ones_like(l)
    narrow = (u - l) < NARROW
    al, au = torch.where(narrow, zero, al), torch.where(narrow, zero, au)
    cl = torch.where(narrow, act(kind, l), cl) - SLACK * scale
    cu = torch.where(narrow, act(kind, u), cu) + SLACK * scale
    return al, cl, au, cu


def backsub(
    layers: Layers, lines: list[Line], k: int, lam: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower bound of ``lam @ z_k + c`` over each box, and its coefficients on the input.

    ``lam`` is (B, m, n_k), ``c`` (B, m); ``lines[j]`` relaxes hidden layer ``j``'s activation.
    """
    w, b = layers[k]
    c = c + lam @ b
    lam = lam @ w
    for j in range(k - 1, -1, -1):
        al, cl, au, cu = lines[j]
        pos = lam > 0  # a positive coefficient takes the lower line, a negative one the upper
        c = c + (lam * torch.where(pos, cl.unsqueeze(1), cu.unsqueeze(1))).sum(-1)
        lam = lam * torch.where(pos, al.unsqueeze(1), au.unsqueeze(1))
        w, b = layers[j]
        c = c + lam @ b
        lam = lam @ w
    val = c + (lam.clamp(min=0) * lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * hi.unsqueeze(1)).sum(-1)
    return val, lam


def crown(
    layers: Layers,
    kinds: list[str],
    lo: torch.Tensor,
    hi: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROWN over a batch of boxes: pre-activation bounds per hidden layer, lower bounds (B, m) of
    the spec rows ``a @ y - b``, and the linear lower bounds ``coef @ x + offset`` they come from
    (coefficients (B, m, n_in), offsets (B, m)), which hold on the whole box.

    Each hidden layer's bounds are the intersection of interval and back-substituted bounds; a
    ReLU layer only back-substitutes the neurons that interval bounds leave unstable. The spec
    rows' bounds are the better of CROWN's and the interval bounds of the outputs.
    """
    bsz = lo.shape[0]
    pre: list[tuple[torch.Tensor, torch.Tensor]] = []
    lines: list[Line] = []
    a_lo, a_hi = lo, hi
    for k in range(len(layers) - 1):
        w, bias = layers[k]
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        l = a_lo @ wp.T + a_hi @ wn.T + bias
        u = a_hi @ wp.T + a_lo @ wn.T + bias
        if k > 0:
            need = ((l < 0) & (u > 0)) if kinds[k] == "relu" else (u - l) > NARROW
            idx = need.any(dim=0).nonzero().flatten()
            if len(idx):
                r = len(idx)
                sel = torch.eye(w.shape[0], dtype=DT)[idx]
                lam = torch.cat([sel, -sel]).expand(bsz, 2 * r, -1)
                both, _ = backsub(layers, lines, k, lam, torch.zeros(bsz, 2 * r, dtype=DT), lo, hi)
                l, u = l.clone(), u.clone()
                l[:, idx] = torch.maximum(both[:, :r], l[:, idx])
                u[:, idx] = torch.minimum(-both[:, r:], u[:, idx])
        pre.append((l, u))
        lines.append(relax(kinds[k], l, u))
        a_lo, a_hi = act(kinds[k], l), act(kinds[k], u)
    lam = a.expand(bsz, *a.shape[-2:]) if a.dim() == 2 else a
    c = -(b.expand(bsz, b.shape[-1]) if b.dim() == 1 else b)
    val, coef = backsub(layers, lines, len(layers) - 1, lam, c, lo, hi)
    offset = val - (coef.clamp(min=0) * lo.unsqueeze(1)).sum(-1) - (coef.clamp(max=0) * hi.unsqueeze(1)).sum(-1)
    w, bias = layers[-1]  # intervals can beat the relaxation on wide boxes: keep the better bound
    y_lo = a_lo @ w.clamp(min=0).T + a_hi @ w.clamp(max=0).T + bias
    y_hi = a_hi @ w.clamp(min=0).T + a_lo @ w.clamp(max=0).T + bias
    box = (lam.clamp(min=0) * y_lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * y_hi.unsqueeze(1)).sum(-1) + c
    return pre, torch.maximum(val, box), coef, offset


def layers_and_kinds(net: PLNet) -> tuple[Layers, list[str]]:
    """The network's float64 (weight, bias) pairs and its activation kinds."""
    return net.torch_layers(DT), net.kinds
