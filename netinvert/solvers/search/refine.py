"""Tighter intermediate bounds by proving neuron signs with short branch-and-bound runs.

Linear relaxations lose most of their precision in deep layers: on a 256x6 MNIST network nearly
every neuron of the last hidden layer looks unstable to alpha-CROWN although no input of the box
makes it change sign. The LP (triangle) relaxation is no tighter; the MILP is, but a MILP per
neuron costs seconds with HiGHS. So, layer by layer: a batched gradient attack guesses each
unstable neuron's sign (a neuron seen on both sides is skipped, it really is unstable), a short
beta-CROWN branch-and-bound on the network cut at that layer tries to prove the guess (all of a
layer's proofs share batches, see ``bab_many``), and each proof fixes the neuron (``u := 0`` or
``l := 0``). A proof that runs out of time still narrows the
bound on the guessed side: every leaf of its search tree is refuted or open, so the weakest open
leaf's bound holds on the whole box. The bounds of the later layers are recomputed with CROWN from
the tightened ones before their turn. This plays the role of the MILP-refined intermediate bounds
used by alpha-beta-CROWN on such networks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netinvert.solvers.bounds import dense as lb
from netinvert.solvers.network.graph import forward_layers
from netinvert.solvers.search.bab import Proofs, Tuning, bab_many


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
    smallest part of their interval on the wrong side of zero), all in one batched search, in up
    to ``rounds`` rounds: the first lets each proof bound ``per_neuron`` seconds' worth of
    sub-domains (less when the layer has too many candidates for its share, down to 0.05 s), each
    later round resumes the proofs still open with twice that. The open sub-domains kept between
    rounds are held under ``memory`` bytes.
    """
    t0 = time.perf_counter()
    nk = len(layers) - 1
    lo_t, hi_t = torch.as_tensor(lo, dtype=lb.DT)[None], torch.as_tensor(hi, dtype=lb.DT)[None]
    lows = [x.clone() for x in bounds.lower]
    ups = [x.clone() for x in bounds.upper]
    stats: dict[str, Any] = {
        "unstable": [],
        "dropped": [],
        "candidates": [],
        "tried": [],
        "proved": [],
        "narrowed": [],
        "layer_seconds": [],
        "branches": 0,
    }
    rate = 1000.0  # sub-domains bounded per second: a first guess, measured from then on
    for k in range(1, nk):
        share = (time_limit - (time.perf_counter() - t0)) / (nk - k)
        if share <= 0:
            break
        t_layer = time.perf_counter()
        l, u = lows[k][0], ups[k][0]
        unstable = np.flatnonzero(((l < 0) & (u > 0)).numpy())
        guess = guess_signs(layers, lo, hi, k, unstable, seed=seed) if unstable.size else unstable
        wrong_side = np.where(guess < 0, u[unstable].numpy(), -l[unstable].numpy()) / (u - l)[unstable].numpy()
        order = np.array([int(i) for i in np.argsort(wrong_side) if guess[i] != 0], dtype=int)
        neurons = unstable[order[::-1]]  # the easiest last: the search starts on top of its stack
        signs = guess[order[::-1]].astype(float)
        outcome, rate = _prove_signs(
            layers[: k + 1],
            lo,
            hi,
            lb.Bounds(lows[:k], ups[:k]),
            neurons,
            signs,
            share,
            min(per_neuron, max(0.05, 2.0 * share / max(len(order), 1))),
            rounds,
            memory,
            rate,
        )
        proved = narrowed = 0
        for p, (i, sign) in enumerate(zip(neurons.tolist(), signs.tolist(), strict=True)):
            stats["branches"] += outcome.domains[p]
            if outcome.status[p] == "none":
                proved += 1
                bound = 0.0
            elif outcome.status[p] == "open" and outcome.domains[p] and not outcome.stuck[p]:
                narrowed += 1  # every leaf is refuted or open: the weakest open leaf bounds sign * z_i from below
                bound = min(outcome.reached[p], 0.0)
            else:
                continue
            if sign < 0:
                ups[k][0, i] = torch.clamp(ups[k][0, i], max=-bound)
            else:
                lows[k][0, i] = torch.clamp(lows[k][0, i], min=bound)
        tried = sum(1 for p in range(len(neurons)) if outcome.domains[p] or outcome.status[p] != "open")
        stats["unstable"].append(len(unstable))
        stats["dropped"].append(outcome.dropped)
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


@dataclass
class _SignProofs:
    """Per candidate of ``_prove_signs``: 'none' (proved), 'found' (the guess is wrong) or 'open'; the
    sub-domains bounded; whether a search ended undecided (``stuck``); the bound an open search
    reached. ``dropped``: searches stopped early to hold the memory cap."""

    status: list[str]
    domains: list[int]
    stuck: list[int]
    reached: list[float]
    dropped: int = 0


def _prove_signs(
    cut: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    root: lb.Bounds,
    neurons: np.ndarray,
    signs: np.ndarray,
    time_limit: float,
    slice_: float,
    rounds: int,
    memory: float,
    rate: float,
) -> tuple[_SignProofs, float]:
    """Branch-and-bound that refutes ``signs[p] * z_{neurons[p]} <= 0`` on the last layer of ``cut``
    for every candidate ``p`` at once, in rounds; returns the outcome and the sub-domains bounded per second.

    The first round lets each search bound about ``slice_`` seconds' worth of sub-domains (at
    ``rate`` per second, re-measured after every round), each later round twice that more for the
    searches still open. The searches whose open sub-domains exceed ``memory`` bytes in all stop
    where they are, largest first.
    """
    t0 = time.perf_counter()
    n_prob, width = len(neurons), cut[-1][0].shape[0]
    rows = np.zeros((n_prob, 1, width))
    rows[np.arange(n_prob), 0, neurons] = signs
    nz, sg = torch.as_tensor(neurons), torch.as_tensor(signs)

    def opposite(xs: np.ndarray, problems: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = forward_layers(cut, torch.as_tensor(xs, dtype=lb.DT))
        p = torch.as_tensor(problems)
        return (sg[p] * z[torch.arange(len(p)), nz[p]] <= 0).numpy()

    proofs: Proofs | None = None
    reached = [float("-inf")] * n_prob
    dropped = 0
    open_ = np.ones(n_prob, dtype=bool)
    for _ in range(rounds):
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0 or not open_.any() or n_prob == 0:
            break
        done_before = sum(proofs.domains) if proofs else 0
        t_round = time.perf_counter()
        proofs = bab_many(
            cut,
            lo,
            hi,
            root,
            rows,
            np.zeros((n_prob, 1)),
            np.zeros(1, dtype=int),
            opposite,
            budget=np.where(open_, max(8.0, slice_ * rate), 0.0),
            time_limit=left,
            tuning=Tuning(candidates=1),
            resume=proofs,
        )
        rate = max((sum(proofs.domains) - done_before) / max(time.perf_counter() - t_round, 1e-3), 1.0)
        for p in range(n_prob):
            if proofs.status(p) == "open" and p not in proofs.dropped:  # a dropped search keeps its last bound
                reached[p] = proofs.lowest_bound(p)
        open_ = np.array([proofs.status(p) == "open" and not proofs.stuck[p] for p in range(n_prob)])
        held = np.array([proofs.nbytes(p) for p in range(n_prob)])
        over = np.argsort(held)[np.cumsum(np.sort(held)) > memory]
        if over.size:
            proofs.drop(over.tolist())  # these stop where they are: their bounds stay as reached
            open_[over] = False
            dropped += over.size
        slice_ *= 2
    if proofs is None:
        return _SignProofs(["open"] * n_prob, [0] * n_prob, [0] * n_prob, reached), rate
    statuses = [proofs.status(p) for p in range(n_prob)]
    return _SignProofs(statuses, proofs.domains, proofs.stuck, reached, dropped), rate
