"""Sound linear relaxations of activation functions and CROWN bounds for networks mixing them.

Every activation of the dense chain (``DENSE_ACTIVATIONS``) is monotone increasing, so its interval image is
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

Graphs also take ``sin``, ``cos`` and integer powers ``pow<p>`` (``p >= 2``), which ``image``
bounds by their extrema inside the interval (sin and cos reach +-1 where a peak lies inside it, an
even power 0 where the interval holds 0). Even powers (convex): the secant above, the midpoint
tangent below. Sin and odd powers: any slope ``a`` gives a sound upper line ``a z + peak(a)``,
where ``peak(a)``, the maximum of ``f(z) - a z`` on [l, u], is read from the end points and the
interior local maxima (``_peak``); the slope minimizing the line's value at the midpoint (a convex
function of ``a``) is found by golden-section search, which gives the midpoint tangent on a
concave stretch, the secant on a convex one, and the constant 1 over several periods of sin. The lower line is the mirrored interval's upper line (both functions are odd); cos is sin
shifted by pi / 2. Their slack grows with the size of the values involved (``_curve_scale``).

Lines get a small slack (1e-9) against rounding; intervals narrower than 1e-7 get the constant
lines ``f(l)`` and ``f(u)``. All bounds are float64 and batched over boxes ``(B, n_in)``.
"""

from __future__ import annotations

import math

import torch

from netinvert.solvers.bounds.dense import affine_interval
from netinvert.solvers.network.graph import GraphNet, act, power

DT = torch.float64
SLACK = 1e-9
NARROW = 1e-7
BISECT = 16  # bisection steps for a tangent point (on [0, u]: within u / 2**16, always on the sound side)
Layers = list[tuple[torch.Tensor, torch.Tensor]]
Line = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # al, cl, au, cu
NONMONOTONE = ("sin", "cos")  # with the even powers ``pow<p>``: their image on [l, u] is not [f(l), f(u)]
TWO_PI = 2 * math.pi
GOLDEN, GOLDEN_STEPS = (math.sqrt(5) - 1) / 2, 24  # golden-section search for the slopes of sin and odd powers


def slope(activation: str, z: torch.Tensor) -> torch.Tensor:
    """The derivative of ``activation`` (sigmoid, tanh, softplus, sin, cos, pow<p>)."""
    if activation == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if activation == "tanh":
        return 1 - torch.tanh(z) ** 2
    if activation == "sin":
        return torch.cos(z)
    if activation == "cos":
        return -torch.sin(z)
    if activation.startswith("pow"):
        return power(activation) * z ** (power(activation) - 1)
    return torch.sigmoid(z)  # softplus


def _secant(activation: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fl, fu = act(activation, l), act(activation, u)
    a = (fu - fl) / (u - l).clamp_min(NARROW)
    return a, fl - a * l


def tangent(activation: str, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and intercept of ``activation``'s tangent at ``d``."""
    a = slope(activation, d)
    return a, act(activation, d) - a * d


def tangent_limit(activation: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For the S-shaped ``activation`` on [l, u] with l < 0: the point ``d >= 0`` whose tangent passes through
    ``(l, f(l))`` (bisection, rounded up so that the tangent stays at or above f on [l, u]), and whether it lies
    within [0, u]. Every tangent at a point from ``d`` to ``u`` is an upper line on [l, u]."""
    fl = act(activation, l)

    def gap(d: torch.Tensor) -> torch.Tensor:  # <= 0: the tangent at d is at or above f(l) at l
        f = act(activation, d)
        df = f * (1 - f) if activation == "sigmoid" else 1 - f * f  # the slope, from the value (sigmoid, tanh)
        return df * (d - l) - f + fl

    lo_d, hi_d = torch.zeros_like(u), u.clamp_min(0)
    for _ in range(BISECT):
        mid = (lo_d + hi_d) / 2
        neg = gap(mid) <= 0
        hi_d, lo_d = torch.where(neg, mid, hi_d), torch.where(neg, lo_d, mid)
        # hi_d keeps gap <= 0 whenever the root lies in [0, u]
    return hi_d, gap(u.clamp_min(0)) <= 0


def _s_upper(activation: str, l: torch.Tensor, u: torch.Tensor,
             limit: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An upper line of the S-shaped ``activation`` on [l, u] (see the module docstring); ``limit`` is
    ``tangent_limit(activation, l, u)`` when the caller has it."""
    sa, sc = _secant(activation, l, u)
    ta, tc = tangent(activation, (l + u) / 2)
    if limit is None:  # only the intervals across 0 need the bisection (it cut a tanh search's time by 40%)
        across = (l < 0) & (u > 0)
        d, within = torch.zeros_like(l), torch.zeros_like(l, dtype=torch.bool)
        if bool(across.any()):
            d[across], within[across] = tangent_limit(activation, l[across], u[across])
    else:
        d, within = limit
    da, dc = tangent(activation, d)
    cross_secant = ~within  # the tangent point lies beyond u: the secant stays above
    a = torch.where(u <= 0, sa, torch.where(l >= 0, ta, torch.where(cross_secant, sa, da)))
    c = torch.where(u <= 0, sc, torch.where(l >= 0, tc, torch.where(cross_secant, sc, dc)))
    return a, c


def relax(activation: str, l: torch.Tensor, u: torch.Tensor,
          limits: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> Line:
    """Lines ``al z + cl <= f(z) <= au z + cu`` valid on [l, u] (element-wise). For sigmoid and tanh,
    ``limits`` are ``tangent_limit`` on [l, u] and on the mirrored [-u, -l] when the caller has them."""
    if activation in NONMONOTONE or activation.startswith("pow"):
        return _relax_curved(activation, l, u)
    zero = torch.zeros_like(l)
    if activation == "relu":
        active, unstable = (l >= 0).to(l.dtype), (l < 0) & (u > 0)
        up = u / (u - l).clamp_min(1e-30)
        al = torch.where(unstable, (u > -l).to(l.dtype), active)
        au = torch.where(unstable, up, active)
        return al, zero, au, torch.where(unstable, -l * up, zero)
    if activation == "softplus":
        au, cu = _secant(activation, l, u)
        al, cl = tangent(activation, (l + u) / 2)
        scale = 1 + act(activation, u).abs()
    else:
        au, cu = _s_upper(activation, l, u, None if limits is None else limits[0])
        ma, mc = _s_upper(activation, -u, -l, None if limits is None else limits[1])
        al, cl = ma, 2 * act(activation, zero) - mc
        scale = torch.ones_like(l)
    narrow = (u - l) < NARROW
    al, au = torch.where(narrow, zero, al), torch.where(narrow, zero, au)
    cl = torch.where(narrow, act(activation, l), cl) - SLACK * scale
    cu = torch.where(narrow, act(activation, u), cu) + SLACK * scale
    return al, cl, au, cu


def _curve_scale(activation: str, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The size of the values a line of ``activation`` on [l, u] adds up (its slack is ``SLACK`` times this)."""
    if activation.startswith("pow"):
        return (power(activation) + 1) * (1 + torch.maximum(l.abs(), u.abs())) ** power(activation)
    return 1 + l.abs() + u.abs()


def image(activation: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of ``f([l, u])`` (element-wise): ``[f(l), f(u)]`` for the monotone activations; for sin, cos
    and even powers the extrema inside the interval count too (with the lines' slack)."""
    if activation == "cos":  # cos z = sin(z + pi / 2)
        return image("sin", l + math.pi / 2, u + math.pi / 2)
    if activation == "sin":
        s = SLACK * _curve_scale(activation, l, u)
        fl, fu = torch.sin(l), torch.sin(u)
        top = torch.where(_crosses(l, u, math.pi / 2), torch.ones_like(l), torch.maximum(fl, fu))
        bottom = torch.where(_crosses(l, u, -math.pi / 2), -torch.ones_like(l), torch.minimum(fl, fu))
        return (bottom - s).clamp_min(-1.0), (top + s).clamp_max(1.0)
    if activation.startswith("pow"):
        s = SLACK * _curve_scale(activation, l, u)
        fl, fu = act(activation, l), act(activation, u)
        if power(activation) % 2:
            return fl - s, fu + s
        low = torch.where((l < 0) & (u > 0), torch.zeros_like(l), torch.minimum(fl, fu))
        return (low - s).clamp_min(0.0), torch.maximum(fl, fu) + s
    return act(activation, l), act(activation, u)


def _crosses(l: torch.Tensor, u: torch.Tensor, phase: float) -> torch.Tensor:
    """Whether [l, u] holds a point ``phase + 2 k pi``."""
    return torch.ceil((l - phase) / TWO_PI) <= torch.floor((u - phase) / TWO_PI)


def _peak(activation: str, a: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``max f(z) - a z`` over [l, u] for sin or an odd power, from the end points and the interior
    local maxima that can win: for sin those at ``acos(a) + 2 k pi`` (the first one in [l, u] when
    ``a >= 0``, the last one when ``a <= 0``; both are tried), for ``z ** p`` the one at
    ``-(a / p) ** (1 / (p - 1))``. A point computed slightly off is still inside [l, u] after
    clamping, and off by rounding it loses only a second-order amount (the slack covers it)."""
    if activation == "sin":
        r = torch.acos(a.clamp(-1.0, 1.0))
        inner = [r + TWO_PI * torch.ceil((l - r) / TWO_PI), r + TWO_PI * torch.floor((u - r) / TWO_PI)]
    else:
        p = power(activation)
        inner = [-((a.clamp_min(0.0) / p) ** (1.0 / (p - 1)))]
    points = [l, u, *(torch.minimum(torch.maximum(z, l), u) for z in inner)]
    return torch.stack([act(activation, z) - a * z for z in points]).amax(0)


def _upper_curved(activation: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An upper line ``a z + peak(a)`` of sin or an odd power on [l, u]. Every slope gives a sound
    line (``_peak``); the slope is the one, within the range of ``f'`` on [l, u] (where the best
    lies), that minimizes the line's value at the midpoint, ``a * mid + peak(a)``: a convex function
    of ``a``, minimized by golden-section search (then slope 0 and the secant's slope are tried too).
    On a concave stretch this is the midpoint tangent, on a convex one the secant, over several
    periods of sin the constant 1; so where [l, u] holds no inflection point ``k pi`` of sin, those are
    taken directly and only the other intervals are searched."""
    if activation == "sin":
        half = torch.floor(l / math.pi)
        even = half == torch.floor(u / math.pi)  # sin keeps one curvature on [l, u]
        if bool(even.any()):
            concave = torch.remainder(half, 2) == 0
            a = torch.where(concave, torch.cos((l + u) / 2), _secant(activation, l, u)[0])
            if bool((~even).any()):
                a[~even] = _best_slope(activation, l[~even], u[~even])
            return a, _peak(activation, a, l, u)
    a = _best_slope(activation, l, u)
    return a, _peak(activation, a, l, u)


def _best_slope(activation: str, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The slope of ``_upper_curved``'s line by golden-section search (see there)."""
    mid = (l + u) / 2
    if activation == "sin":
        a_lo, a_hi = image("cos", l, u)
    else:
        a_lo, a_hi = (power(activation) * v for v in image(f"pow{power(activation) - 1}", l, u))
    value = lambda a: a * mid + _peak(activation, a, l, u)
    x1, x2 = a_hi - GOLDEN * (a_hi - a_lo), a_lo + GOLDEN * (a_hi - a_lo)
    f1, f2 = value(x1), value(x2)
    for _ in range(GOLDEN_STEPS):
        left = f1 <= f2  # the minimum lies in [a_lo, x2]: drop (x2, a_hi], else [a_lo, x1)
        a_hi, a_lo = torch.where(left, x2, a_hi), torch.where(left, a_lo, x1)
        new = torch.where(left, a_hi - GOLDEN * (a_hi - a_lo), a_lo + GOLDEN * (a_hi - a_lo))
        f_new = value(new)
        x1, x2, f1, f2 = (torch.where(left, new, x2), torch.where(left, x1, new),
                          torch.where(left, f_new, f2), torch.where(left, f1, f_new))
    a = torch.where(f1 <= f2, x1, x2)
    for other in (torch.zeros_like(a), _secant(activation, l, u)[0]):  # exact where the search ends near them
        a = torch.where(value(other) < value(a), other, a)
    return a


def _relax_curved(activation: str, l: torch.Tensor, u: torch.Tensor) -> Line:
    """``relax`` for sin, cos and integer powers (see the module docstring)."""
    if activation == "cos":  # cos z = sin(z + pi / 2): the lines of sin on the shifted interval
        al, cl, au, cu = _relax_curved("sin", l + math.pi / 2, u + math.pi / 2)
        return al, cl + al * (math.pi / 2), au, cu + au * (math.pi / 2)
    if activation.startswith("pow") and power(activation) % 2 == 0:  # convex
        au, cu = _secant(activation, l, u)
        al, cl = tangent(activation, (l + u) / 2)
    else:  # sin and odd powers are odd functions: the lower line is the mirrored interval's upper line
        au, cu = _upper_curved(activation, l, u)
        ma, mc = _upper_curved(activation, -u, -l)
        al, cl = ma, -mc
    low, high = image(activation, l, u)
    narrow = (u - l) < NARROW
    zero = torch.zeros_like(l)
    slack = SLACK * _curve_scale(activation, l, u)
    return (torch.where(narrow, zero, al), torch.where(narrow, low, cl - slack),
            torch.where(narrow, zero, au), torch.where(narrow, high, cu + slack))


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
    activations: list[str],
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
        l, u = affine_interval(w, bias, a_lo, a_hi)
        if k > 0:
            need = ((l < 0) & (u > 0)) if activations[k] == "relu" else (u - l) > NARROW
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
        lines.append(relax(activations[k], l, u))
        a_lo, a_hi = act(activations[k], l), act(activations[k], u)
    lam = a.expand(bsz, *a.shape[-2:]) if a.dim() == 2 else a
    c = -(b.expand(bsz, b.shape[-1]) if b.dim() == 1 else b)
    val, coef = backsub(layers, lines, len(layers) - 1, lam, c, lo, hi)
    offset = val - (coef.clamp(min=0) * lo.unsqueeze(1)).sum(-1) - (coef.clamp(max=0) * hi.unsqueeze(1)).sum(-1)
    w, bias = layers[-1]  # intervals can beat the relaxation on wide boxes: keep the better bound
    y_lo = a_lo @ w.clamp(min=0).T + a_hi @ w.clamp(max=0).T + bias
    y_hi = a_hi @ w.clamp(min=0).T + a_lo @ w.clamp(max=0).T + bias
    box = (lam.clamp(min=0) * y_lo.unsqueeze(1)).sum(-1) + (lam.clamp(max=0) * y_hi.unsqueeze(1)).sum(-1) + c
    return pre, torch.maximum(val, box), coef, offset


def layers_and_activations(net: GraphNet) -> tuple[Layers, list[str]]:
    """The float64 (weight, bias) pairs and the activations of a network's dense chain."""
    assert net.dense is not None, "a dense chain (GraphNet.composed)"
    return net.dense.layers(DT), net.dense.activations
