"""Tighter intermediate bounds by proving neuron signs with short branch-and-bound runs.

Linear relaxations lose most of their precision in deep layers: on a 256x6 MNIST network nearly
every neuron of the last hidden layer looks unstable to alpha-CROWN although no input of the box
makes it change sign. The LP (triangle) relaxation is no tighter; the MILP is, but a MILP per
neuron costs seconds with HiGHS. So, layer by layer: a batched gradient attack guesses each
unstable neuron's sign (a neuron seen on both sides is skipped, it really is unstable), a short
beta-CROWN branch-and-bound on the network cut at that layer tries to prove the guess, and each
proof fixes the neuron (``u := 0`` or ``l := 0``). A proof that runs out of time still narrows the
bound on the guessed side: every leaf of its search tree is refuted or open, so the weakest open
leaf's bound holds on the whole box. The bounds of the later layers are recomputed with CROWN from
the tightened ones before their turn. This plays the role of the MILP-refined intermediate bounds
used by alpha-beta-CROWN on such networks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from netinvert.solvers import linear_bounds as lb
from netinvert.solvers.attack import forward_layers
from netinvert.solvers.bab import BabOutcome, bab


def guess_signs(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    k: int,
    neurons: np.ndarray,
    *,
    steps: int = 40,
    seed: int = 0,
) -> np.ndarray:
    """Per neuron of layer ``k``: -1 when no attack made it positive, +1 when none made it negative, 0 otherwise."""
    gen = torch.Generator().manual_seed(seed)
    l32 = [(w.float(), b.float()) for w, b in layers[: k + 1]]
    lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    width = hi_t - lo_t
    n = len(neurons)
    rows = torch.arange(n)
    idx = torch.as_tensor(neurons)
    seen = {}
    for direction in (1.0, -1.0):
        x = lo_t + width * torch.rand(n, lo_t.numel(), generator=gen)
        x.requires_grad_(True)
        for step in range(steps):
            z = forward_layers(l32, x)[rows, idx]
            (g,) = torch.autograd.grad((direction * z).sum(), x)
            with torch.no_grad():
                x += (0.2 * (1.0 - step / steps) + 0.01) * width * g.sign()
                x.copy_(torch.maximum(torch.minimum(x, hi_t), lo_t))
        with torch.no_grad():
            seen[direction] = forward_layers(l32, x)[rows, idx].double().numpy()
    return np.where(seen[1.0] <= 0, -1, np.where(seen[-1.0] >= 0, 1, 0))


def refine(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    bounds: lb.Bounds,
    *,
    time_limit: float,
    per_neuron: float = 0.3,
    rounds: int = 3,
    memory: float = 2**30,
    seed: int = 0,
) -> tuple[lb.Bounds, dict[str, Any]]:
    """Bounds with every provable sign of hidden layers ``1..`` fixed, within ``time_limit`` seconds.

    Each layer gets an even share of the time left. Its candidates are tried easiest first (the
    smallest part of their interval on the wrong side of zero) in up to ``rounds`` rounds: the
    first gives each proof ``per_neuron`` seconds (less when the layer has too many candidates for
    its share, down to 0.05 s), each later round resumes the proofs still open with twice the time.
    The open sub-domains kept between rounds are held under ``memory`` bytes.
    """
    t0 = time.perf_counter()
    nk = len(layers) - 1
    lo_t, hi_t = torch.as_tensor(lo, dtype=lb.DT)[None], torch.as_tensor(hi, dtype=lb.DT)[None]
    lows = [x.clone() for x in bounds.lower]
    ups = [x.clone() for x in bounds.upper]
    stats: dict[str, Any] = {
        "unstable": [],
        "candidates": [],
        "tried": [],
        "proved": [],
        "narrowed": [],
        "layer_seconds": [],
        "branches": 0,
    }
    for k in range(1, nk):
        share = (time_limit - (time.perf_counter() - t0)) / (nk - k)
        if share <= 0:
            break
        t_layer = time.perf_counter()
        l, u = lows[k][0], ups[k][0]
        unstable = np.flatnonzero(((l < 0) & (u > 0)).numpy())
        guess = guess_signs(layers, lo, hi, k, unstable, seed=seed) if unstable.size else unstable
        wrong_side = np.where(guess < 0, u[unstable].numpy(), -l[unstable].numpy()) / (u - l)[unstable].numpy()
        order = [int(i) for i in np.argsort(wrong_side) if guess[i] != 0]
        cut = layers[: k + 1]
        root = lb.Bounds(lows[:k], ups[:k])
        runs: dict[int, BabOutcome] = {}  # per candidate: its latest proof attempt
        pending = list(order)
        slice_ = min(per_neuron, max(0.05, 2.0 * share / max(len(order), 1)))
        for _ in range(rounds):
            for j in list(pending):
                left = share - (time.perf_counter() - t_layer)
                if left <= 0:
                    break
                runs[j] = _prove_sign(
                    cut, lo, hi, root, int(unstable[j]), float(guess[j]), min(slice_, left), runs.get(j)
                )
                if runs[j].open_domains is None:  # proved, or the guess is wrong: nothing more to do
                    pending.remove(j)
            if share - (time.perf_counter() - t_layer) <= 0:
                break
            slice_ *= 2
            pending = _within_memory(pending, runs, memory)
        proved = narrowed = 0
        for j, out in runs.items():
            stats["branches"] += out.stats.get("domains", 0)
            if out.status == "none":
                proved += 1
                bound = 0.0
            elif "open_lowest_bound" in out.stats and not out.stats.get("stuck"):
                narrowed += 1  # every leaf is refuted or open: the weakest open leaf bounds sign * z_i from below
                bound = min(float(out.stats["open_lowest_bound"]), 0.0)
            else:
                continue
            i = int(unstable[j])
            if guess[j] < 0:
                ups[k][0, i] = torch.clamp(ups[k][0, i], max=-bound)
            else:
                lows[k][0, i] = torch.clamp(lows[k][0, i], min=bound)
        tried = len(runs)
        stats["unstable"].append(len(unstable))
        stats["candidates"].append(len(order))
        stats["tried"].append(tried)
        stats["proved"].append(proved)
        stats["narrowed"].append(narrowed)
        stats["layer_seconds"].append(round(time.perf_counter() - t_layer, 2))
        if (proved or narrowed) and k + 1 < nk:
            with torch.no_grad():
                tight = lb.crown(layers, lo_t, hi_t, start=lb.Bounds(lows, ups), from_layer=k + 1)
            lows, ups = tight.lower, tight.upper
    stats["seconds"] = time.perf_counter() - t0
    return lb.Bounds(lows, ups), stats


def _within_memory(pending: list[int], runs: dict[int, BabOutcome], memory: float) -> list[int]:
    """The open proofs whose searches fit in ``memory`` bytes, smallest first; the others stop where they are."""
    pending = sorted(pending, key=lambda j: runs[j].open_domains.nbytes())
    held = np.cumsum([runs[j].open_domains.nbytes() for j in pending])
    keep = int(np.searchsorted(held, memory, side="right"))
    for j in pending[keep:]:
        runs[j].open_domains = None  # the bound it reached stays in its stats
    return pending[:keep]


def _prove_sign(
    cut: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    root: lb.Bounds,
    i: int,
    sign: float,
    time_limit: float,
    resume: BabOutcome | None,
) -> BabOutcome:
    """Branch-and-bound that refutes ``sign * z_i <= 0`` on the last layer of ``cut`` (resuming ``resume``)."""
    row = np.zeros((1, cut[-1][0].shape[0]))
    row[0, i] = sign

    def opposite(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = forward_layers(cut, torch.as_tensor(xs, dtype=lb.DT))[:, i]
        return (sign * z <= 0).numpy()

    zero = np.zeros(1, dtype=int)
    return bab(cut, lo, hi, root, row, np.zeros(1), zero, opposite, time_limit=time_limit, candidates=1, resume=resume)
