"""A batched projected-gradient attack: many restarts per output disjunct, signed steps, box projection.

It only ever proposes candidates; the caller re-checks every one on the original network.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from netinvert.solvers.network.graph import GraphNet, forward_layers
from netinvert.targets.output_set import OutputSet


FINAL_STEP = 1e-3  # signed-gradient steps shrink geometrically from a quarter of the box to this fraction of that


def forward_of(net: GraphNet, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network as a differentiable function of flat inputs (B, n_in) in ``dtype`` (its dense chain's
    layers when it has one)."""
    if net.dense is None:
        return net.cast(dtype).torch_forward
    layers, activations = net.dense.layers(dtype), net.dense.activations
    return lambda x: forward_layers(layers, x, activations)


def pgd(
    net: GraphNet,
    lo: np.ndarray,
    hi: np.ndarray,
    target: OutputSet,
    *,
    restarts: int = 64,
    steps: int = 60,
    time_limit: float = 5.0,
    seed: int = 0,
    start: np.ndarray | None = None,
    patience: int | None = None,
) -> tuple[np.ndarray, float]:
    """The best input found (flat, float64) and its violation (< 0 means inside ``target``).

    ``patience``: stop after that many rounds of fresh starts in a row that do not improve the best
    violation (``None``: run until ``time_limit``). A caller with its own search for counterexamples
    (input splitting attacks every box) need not spend the whole budget here on a property that holds.

    Each disjunct gets ``restarts`` random starts (plus the box centre and ``start``); the loss of a
    start is the largest violation of its disjunct's rows, minimized by signed-gradient steps. On a
    network where one item's gradient step is slow (a CIFAR ResNet), fewer starts are taken, so
    that one step of all of them costs at most a twentieth of ``time_limit``.
    """
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    fwd = forward_of(net, torch.float32)
    dev = net.device
    lo_t = torch.as_tensor(lo, dtype=torch.float32, device=dev)
    hi_t = torch.as_tensor(hi, dtype=torch.float32, device=dev)
    width = hi_t - lo_t
    d = len(target.disjuncts)
    a = [torch.as_tensor(ad, dtype=torch.float32, device=dev) for ad, _ in target.disjuncts]
    b = [torch.as_tensor(bd, dtype=torch.float32, device=dev) for _, bd in target.disjuncts]
    best_x = (lo + hi) / 2.0
    tick = time.perf_counter()
    best_v = float(target.violations(net.forward(best_x[None]))[0])
    per_item = time.perf_counter() - tick  # a float64 pass: about a float32 step's cost
    restarts = max(1, min(restarts, int(time_limit / 20 / max(per_item * d, 1e-9))))
    rounds = stale = 0
    while time.perf_counter() - t0 < time_limit and best_v >= 0 and (patience is None or stale < patience):
        x = lo_t + width * torch.rand(d * restarts, lo_t.numel(), generator=gen).to(dev)
        if rounds == 0:
            x[::restarts] = (lo_t + hi_t) / 2
            if start is not None:
                x[1::restarts] = torch.as_tensor(start, dtype=torch.float32, device=dev)
        x.requires_grad_(True)
        for step in range(steps):
            y = fwd(x)
            losses = [(y[i * restarts : (i + 1) * restarts] @ a[i].T - b[i]).amax(dim=1) for i in range(d)]
            loss = torch.cat(losses)
            (g,) = torch.autograd.grad(loss.sum(), x)
            with torch.no_grad():
                size = 0.25 * width * FINAL_STEP ** (step / max(steps - 1, 1))
                x -= size * g.sign()
                x.copy_(torch.maximum(torch.minimum(x, hi_t), lo_t))
            if time.perf_counter() - t0 > time_limit:
                break
        xs = x.detach().double().cpu().numpy()
        xs = np.clip(xs, lo, hi)
        v = target.violations(net.forward(xs))
        i = int(np.argmin(v))
        stale = 0 if v[i] < best_v - 1e-6 * max(1.0, abs(best_v)) else stale + 1
        if v[i] < best_v:
            best_x, best_v = xs[i], float(v[i])
        rounds += 1
    return best_x, best_v


def descend(
    fwd: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
    *, steps: int, start: torch.Tensor | None = None, penalty: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Signed-gradient descent on the largest row violation of ``a @ y - b`` (plus ``penalty(x)``, per point) from
    ``start`` (default: each box's centre), kept inside the boxes ``[lo, hi]`` (B, n); returns the final points
    (candidates only)."""
    x = ((lo + hi) / 2 if start is None else start).clone().requires_grad_(True)
    width = hi - lo
    for step in range(steps):
        loss = (fwd(x) @ a.T - b).amax(dim=1)
        if penalty is not None:
            loss = loss + penalty(x)
        (g,) = torch.autograd.grad(loss.sum(), x)
        with torch.no_grad():
            x -= (0.2 * (1 - step / steps) + 0.01) * width * g.sign()
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    return x.detach()
