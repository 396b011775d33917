"""Method ``adjoint``: inverse design with the neural-adjoint method (Ren, Padilla & Malof, NeurIPS 2020).

For each ``Regression`` target, ``restarts`` inputs are drawn from the model's training inputs (its data
prior) or, when the model knows no data, uniformly from the domain box; Adam moves them all at once
(many targets in one batch) to minimize the squared error to y plus a boundary loss that is zero
inside the search box and grows linearly outside it, with the learning rate halved on plateaus.
Candidates are ranked by that loss; the first ``samples`` distinct ones per target are returned,
each with its surrogate error and, with a ``simulator``, its re-simulation error.

An item is ``found`` when every chosen output is within ``tolerance`` of y (re-simulated when a
simulator is given, else on the network); otherwise ``not-reached``, and its metrics say which output
was reached and how far it is (``residual``). A target whose best candidate misses is handed to
``exact`` (``prove`` seconds, piecewise-linear networks) to prove that no input in the search box
reaches it (``none-exists``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from netinvert.data.simulators import SIMULATORS, simulate
from netinvert.domains.domain import Domain
from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import option, progress_option, seed_option, takes, threads_option
from netinvert.ground.result import Item, Result
from netinvert.ground.run import progress_bar, torch_threads
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.regression import Regression

TOLERANCE = 0.02  # default bar: every chosen output within 0.02 of y
BATCH_ROWS = 65536  # candidate rows optimized together (memory bound)
RESOLUTION = 1e-6  # surrogate MSEs below this count as ties, broken by nearness to the training data
NEIGHBOURS = 10
PATIENCE, CUT = 10, 0.5
PROOF_BOXES = 4000  # plateau schedule: halve the learning rate after 10 steps without 0.1 % progress


@dataclass(frozen=True)
class Options:
    """The options of method ``adjoint``."""

    samples: int = option(50, "Distinct solutions per target (T), ranked.", at_least=1)
    restarts: int = option(1024, "Random starting points per target, optimized at once.", at_least=1)
    steps: int = option(300, "Adam steps.", at_least=1)
    lr: float = option(0.5, "Adam learning rate, in half-widths of the search box per step.", above=0.0)
    seed: int = seed_option()
    tolerance: float | None = option(None, "Largest output error that counts as reached.", at_least=0.0,
                                     default_text=f"the targets' own, else {TOLERANCE}")
    simulator: Callable[[np.ndarray], np.ndarray] | None = option(
        None, "Re-simulates (n, d) inputs to (n, m) outputs.", cli=False, default_text="none")
    prove: float = option(20.0, "Time to prove an unreached target unreachable.", at_least=0.0, unit="seconds")
    threads: int | None = threads_option()
    progress: bool | None = progress_option()


@takes(Options)
def run(
    model: Model,
    targets: Target | list[Target],
    domain: Domain | Box | None = None,
    *,
    samples: int,
    restarts: int,
    steps: int,
    lr: float,
    seed: int,
    tolerance: float | None,
    simulator: Callable[[np.ndarray], np.ndarray] | None,
    prove: float,
    threads: int | None,
    progress: bool | None,
) -> Result:
    """``samples`` distinct solutions per ``Regression`` target (items ``i*samples .. i*samples+samples-1``).

    ``lr`` is in units of the search box's half-width per step; ``tolerance`` overrides the targets'
    own (default ``TOLERANCE``); ``simulator`` maps (n, d) inputs to (n, m) outputs for re-simulation.
    """
    regs = _check(model, targets, samples, restarts)
    spec = model.input_spec
    if len(spec.shape) != 1:
        raise NetinvertError(f"adjoint searches flat inputs (d,), {model.name} takes {spec.shape}: "
                             "inverse design needs a regression network on feature vectors")
    lo, hi, pool = _search_box(model, domain)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    chosen, losses, errs = [], [], []
    per_chunk = max(1, BATCH_ROWS // restarts)
    chunks = [regs[i : i + per_chunk] for i in range(0, len(regs), per_chunk)]
    with torch_threads(threads, model.step_work(per_chunk)), \
            progress_bar(progress, len(chunks) * steps, "adjoint search") as bar:
        task = bar.add_task("search", total=len(chunks) * steps) if bar is not None else None
        tick = (lambda: bar.advance(task)) if bar is not None and task is not None else (lambda: None)
        for chunk in chunks:
            x, loss, err = _search(model, chunk, lo, hi, pool, restarts, steps, lr, gen, tick)
            for k in range(len(chunk)):
                keep = _distinct(x[k], _rank_key(x[k], loss[k], pool), lo, hi, samples)
                chosen.append(x[k][keep])
                losses.append(loss[k][keep])
                errs.append(err[k][keep])
    search_s = time.perf_counter() - t0
    inputs = torch.cat(chosen)
    with torch.no_grad():
        outputs = model(inputs).reshape(len(inputs), -1)
    resim = None
    if simulator is not None:
        resim = simulate(simulator, inputs.double().numpy(), outputs.shape[1])
    items, curves, summary = [], [], []
    for i, target in enumerate(regs):
        rows = slice(i * samples, (i + 1) * samples)
        t_items, curve, best = _score(target, outputs[rows], None if resim is None else resim[rows], losses[i],
                                      errs[i], inputs[rows], lo, hi, tolerance)
        items.extend(t_items)
        curves.append(curve)
        summary.append(best)
    proofs = _prove(model, regs, summary, items, samples, lo, hi, tolerance, prove)
    info: dict[str, Any] = {
        "options": {"samples": samples, "restarts": restarts, "steps": steps, "lr": lr, "seed": seed,
                    "tolerance": tolerance, "simulator": _simulator_name(simulator), "prove": prove},
        "search_box": {"low": lo.tolist(), "high": hi.tolist(), "from": "training data" if pool is not None
                       else "domain"},
        "targets": summary,
        "proofs": proofs,
    }
    if resim is not None:
        info["r_curve"] = np.nanmean(np.array(curves), axis=0).tolist()
    return Result(method="adjoint", model=model.name, inputs=inputs.reshape(-1, *spec.shape), outputs=outputs,
                  items=items, timing={"total_s": time.perf_counter() - t0, "search_s": search_s,
                                       "per_target_s": search_s / len(regs)},
                  info=info, value_range=(spec.low, spec.high))


def _check(model: Model, targets: Target | list[Target], samples: int, restarts: int) -> list[Regression]:
    regs = [targets] if isinstance(targets, Target) else list(targets)
    if not regs:
        raise NetinvertError("no targets given: pass at least one Regression target")
    for t in regs:
        if not isinstance(t, Regression):
            raise NetinvertError(f"adjoint answers Regression targets (inverse design), not {t!r}")
        t.indices(model.num_outputs)
    if restarts < samples:
        raise NetinvertError(f"restarts={restarts} must be at least samples={samples}: the solutions are chosen "
                             "among the restarts")
    return regs


def _search_box(model: Model, domain: Domain | Box | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The box the boundary loss keeps candidates in, and the training inputs to start from (if known).

    An explicit domain wins; otherwise the training data's box, else the model's input range.
    """
    spec = model.input_spec
    data = model.training_inputs() if domain is None else None
    if data is not None:
        pool = torch.as_tensor(np.asarray(data), dtype=torch.float32).reshape(len(data), -1)
        return pool.amin(0), pool.amax(0), pool
    region = domain.region if isinstance(domain, Domain) else (domain or Box())
    if not isinstance(region, Box):
        raise NetinvertError(f"adjoint searches a Box, not a {type(region).__name__}")
    lo, hi = region.bounds(spec)
    return lo.reshape(-1), hi.reshape(-1), None


def _search(model: Model, regs: list[Regression], lo: torch.Tensor, hi: torch.Tensor, pool: torch.Tensor | None,
            restarts: int, steps: int, lr: float, gen: torch.Generator,
            tick: Callable[[], None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam on ``restarts`` candidates per target at once; returns (targets, restarts, d) inputs, losses, errors."""
    n, d = len(regs), lo.numel()
    center, half = (hi + lo) / 2, ((hi - lo) / 2).clamp_min(1e-6)
    if pool is not None:
        x0 = pool[torch.randint(len(pool), (n * restarts,), generator=gen)]
    else:
        x0 = lo + (hi - lo) * torch.rand((n * restarts, d), generator=gen)
    z = ((x0 - center) / half).requires_grad_(True)
    num_outputs = model.num_outputs
    index = torch.tensor([j for t in regs for j in t.indices(num_outputs)])
    width = len(regs[0].indices(num_outputs))
    if any(len(t.indices(num_outputs)) != width for t in regs):
        raise NetinvertError("targets in one adjoint run must choose the same number of outputs")
    cols = index.reshape(n, width).repeat_interleave(restarts, 0)
    y = torch.tensor([t.y for t in regs], dtype=torch.float32).repeat_interleave(restarts, 0)

    def losses(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(center + half * z).reshape(len(z), -1)
        err = (out.gather(1, cols) - y).pow(2).mean(1)
        return err + (z.abs() - 1.0).clamp_min(0.0).sum(1), err

    opt = torch.optim.Adam([z], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=CUT, patience=PATIENCE, threshold=1e-3)
    for _ in range(steps):
        loss, _ = losses(z)
        total = loss.sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step(float(total.detach()))
        tick()
    with torch.no_grad():
        loss, err = losses(z)
        x = center + half * z
    return x.reshape(n, restarts, d), loss.reshape(n, restarts), err.reshape(n, restarts)


def _rank_key(x: torch.Tensor, loss: torch.Tensor, pool: torch.Tensor | None) -> torch.Tensor:
    """Sort key: the loss, except that candidates below ``RESOLUTION`` tie and rank by their mean distance to
    the ``NEIGHBOURS`` nearest training inputs (standardized): the surrogate is most accurate near its data."""
    if pool is None:
        return loss
    mean, std = pool.mean(0), pool.std(0).clamp_min(1e-12)
    near = torch.cdist((x - mean) / std, (pool - mean) / std).topk(NEIGHBOURS, largest=False).values.mean(1)
    tied = loss <= RESOLUTION
    return torch.where(tied, RESOLUTION * near / (1.0 + near), loss + RESOLUTION)


def _distinct(x: torch.Tensor, key: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` first candidates by ``key``, skipping any within 1e-3 of the box size of an
    earlier one. When fewer distinct candidates exist, the best remaining ones fill the list.
    """
    order = torch.argsort(key)
    scaled = x[order] / (hi - lo).clamp_min(1e-6)
    keep: list[int] = []
    for i in range(len(order)):
        if len(keep) == count:
            break
        if not keep or bool(torch.cdist(scaled[i : i + 1], scaled[keep]).min() > 1e-3):
            keep.append(i)
    taken = set(keep)
    rest = [i for i in range(len(order)) if i not in taken][: count - len(keep)]
    return order[torch.tensor(keep + rest)]


def _score(target: Regression, out: torch.Tensor, resim: np.ndarray | None, loss: torch.Tensor, err: torch.Tensor,
           x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
           tolerance: float | None) -> tuple[list[Item], list[float], dict[str, Any]]:
    """Items for one target's solutions, its r_T curve (min re-simulation MSE of the first T) and a summary."""
    idx = target.indices(out.shape[1])
    y = np.asarray(target.y)
    tol = tolerance if tolerance is not None else (target.tolerance or TOLERANCE)
    net = out.double().numpy()[:, idx]
    checked = net if resim is None else resim[:, idx]
    mse_resim = None if resim is None else np.mean((checked - y) ** 2, axis=1)
    items = []
    for r in range(len(out)):
        residual = np.abs(checked[r] - y)
        finite = bool(np.all(np.isfinite(residual)))
        ok = finite and bool(np.max(residual) <= tol)
        metrics: dict[str, Any] = {
            "rank": r + 1, "input": x[r].tolist(), "surrogate_mse": float(err[r]), "loss": float(loss[r]),
            "in_search_box": bool(torch.all((x[r] >= lo - 1e-6) & (x[r] <= hi + 1e-6))),
            "network_output": net[r].tolist(), "reached_output": checked[r].tolist(),
            "residual": float(np.max(residual)) if finite else float("nan"), "tolerance": tol,
        }
        if mse_resim is not None:
            metrics["resim_mse"] = float(mse_resim[r])
            metrics["resim_output"] = resim[r].tolist()  # type: ignore[index]
        reason = "" if ok else (
            "the simulator gave no output for this input (e.g. the ball never lands)" if not finite
            else f"closest reachable output {_fmt(checked[r])} misses y by {float(np.max(residual)):.3g} > {tol:g}")
        items.append(Item(target.description, "found" if ok else "not-reached", reason, metrics))
    curve = (np.fmin.accumulate(np.where(np.isfinite(mse_resim), mse_resim, np.inf)).tolist()
             if mse_resim is not None else [])
    best = min(range(len(items)), key=lambda r: (items[r].metrics["residual"]
                                                 if np.isfinite(items[r].metrics["residual"]) else np.inf))
    summary = {"target": target.description, "y": list(target.y), "found": sum(i.status == "found" for i in items),
               "closest_output": items[best].metrics["reached_output"],
               "residual": items[best].metrics["residual"], "tolerance": tol}
    return items, curve, summary


def _prove(model: Model, regs: list[Regression], summary: list[dict[str, Any]], items: list[Item], samples: int,
           lo: torch.Tensor, hi: torch.Tensor, tolerance: float | None, seconds: float) -> list[dict[str, Any]]:
    """Ask whether targets that no solution reached are reachable at all inside the search box: ``bounds``
    (input splitting, at most ``PROOF_BOXES`` boxes) for up to ``bounds.MAX_DIM`` inputs, else ``exact``
    with ``seconds``. A network the exact solvers cannot read leaves the answer unknown."""
    from netinvert.methods import bounds, exact

    proofs: list[dict[str, Any]] = []
    if seconds <= 0:
        return proofs
    shape = model.input_spec.shape
    region = Box(lo.reshape(shape), hi.reshape(shape))
    for i, (target, s) in enumerate(zip(regs, summary, strict=True)):
        if s["found"]:
            continue
        box = Regression(target.y, target.outputs, s["tolerance"])
        try:
            if lo.numel() <= bounds.MAX_DIM:
                res = bounds.run(model, box, region, max_boxes=PROOF_BOXES)
            else:
                res = exact.run(model, box, region, timeout=seconds)
        except NetinvertError as exc:
            proofs.append({"target": target.description, "status": "unknown", "reason": str(exc)})
            continue
        status = res.items[0].status
        proofs.append({"target": target.description, "status": status, "reason": res.items[0].reason,
                       "method": res.method})
        s["proof"] = status
        if status == "none-exists":
            for item in items[i * samples : (i + 1) * samples]:
                item.status = "none-exists"
                item.reason = (f"no input in the search box brings the network within {s['tolerance']:g} of y "
                               f"(proof by {res.method}); {item.reason}")
    return proofs


def _fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(a):.4g}" for a in np.atleast_1d(v)) + ")"


def _simulator_name(simulator: Callable[[np.ndarray], np.ndarray] | None) -> str | None:
    """What ``--simulator`` takes to rerun with ``simulator``: a built-in's name, else ``module:function``."""
    if simulator is None:
        return None
    builtin = next((name for name, s in SIMULATORS.items() if s.simulate is simulator), None)
    return builtin or f"{getattr(simulator, '__module__', '?')}:{getattr(simulator, '__qualname__', '?')}"
