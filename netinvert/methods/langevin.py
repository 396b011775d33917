"""Method ``langevin``: sample what a classifier accepts as class y, p(x | y) ∝ exp(log p(y | x) / T) · prior(x).

Many chains run in one batch (``samples`` per target). Each step follows the gradient of the
log density, normalized per chain so one step size suits any model and value range, plus
Gaussian noise annealed from ``noise`` to a tenth of it: annealed Langevin dynamics. Chains start
from random draws of the data prior when the model knows its data, else from uniform noise.
"""

from __future__ import annotations

import time

import torch

from netinvert.domains.data_prior import prior_for
from netinvert.domains.domain import Domain
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.ground.run import progress_bar, torch_threads
from netinvert.methods.gradient import DATA_PRIOR_WEIGHT
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.resolve import resolve_all
from netinvert.targets.scoring import DEFAULT_GOAL, score
from netinvert.targets.units import Class

DOMAIN_FIELDS = ("box", "data_prior")


def pairwise_diversity(x: torch.Tensor, span: float) -> float:
    """Mean pairwise RMS distance between samples, in units of the value range (0 for one sample)."""
    if x.shape[0] < 2:
        return 0.0
    flat = x.reshape(x.shape[0], -1) / span
    d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    n = flat.shape[0]
    return float(d.sum() / (n * (n - 1)))


def run(
    model: Model,
    targets: Target | list[Target],
    domain: Domain | None = None,
    *,
    samples: int = 8,
    steps: int = 400,
    step_size: float = 0.01,
    noise: float = 0.02,
    temperature: float = 0.1,
    goal: float = DEFAULT_GOAL,
    seed: int = 0,
    threads: int | None = None,
    progress: bool | None = None,
) -> Result:
    """``samples`` chains per class target; step size and noise are fractions of the value range.

    The domain's box bounds the chains and its ``data_prior`` weights the data prior; no other field applies.
    """
    resolved = resolve_all(targets, model)
    if not all(isinstance(t, Class) for t in resolved):
        raise NetinvertError("langevin samples class targets (p(x | y)); use the gradient method for units")
    if samples < 1 or steps < 1 or temperature <= 0:
        raise NetinvertError("langevin needs samples >= 1, steps >= 1 and temperature > 0")
    if not 0 < goal < 1:
        raise NetinvertError(f"goal={goal} must be a probability in (0, 1), e.g. 0.99")
    domain = domain or Domain()
    spec = model.input_spec
    device, dtype = model.device, model.dtype
    low, high = (bound.to(device, dtype) for bound in domain.bounds(spec))
    span = spec.high - spec.low
    chains = [t for t in resolved for _ in range(samples)]
    index = torch.tensor([int(t.index) for t in chains], device=device)  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(seed)
    prior_weight = DATA_PRIOR_WEIGHT if domain.data_prior is None else domain.data_prior
    prior = prior_for(model) if prior_weight > 0 else None
    prior = prior.to(device, dtype) if prior is not None else None
    start = time.perf_counter()
    with torch_threads(threads), progress_bar(progress, steps, f"{model.name}: {len(chains)} chains",
                                              min_total=200) as bar:
        task = bar.add_task("run", total=steps) if bar is not None else None
        x = _initial(len(chains), spec.shape, low, high, prior, gen)
        for step in range(steps):
            x.requires_grad_(True)
            logits = model(x).reshape(len(chains), -1)
            if model.output_activation == "sigmoid":
                signs = 2 * torch.nn.functional.one_hot(index, logits.shape[1]).to(logits.dtype) - 1
                log_p = torch.nn.functional.logsigmoid(signs * logits).sum(1)
            else:
                log_p = torch.log_softmax(logits, dim=1).gather(1, index[:, None])[:, 0]
            log_density = log_p / temperature
            if prior is not None:
                log_density = log_density - prior_weight * prior.penalty(x)
            (grad,) = torch.autograd.grad(log_density.sum(), x)
            with torch.no_grad():
                rms = grad.reshape(len(chains), -1).pow(2).mean(1).sqrt().clamp_min(1e-12)
                direction = grad / rms.reshape(-1, *([1] * len(spec.shape)))
                sigma = noise * (1.0 - step / max(steps - 1, 1))
                x = x.detach() + step_size * span * direction
                x = x + sigma * span * torch.randn(x.shape, generator=gen).to(x)  # CPU draws: same on any device
                x = torch.maximum(torch.minimum(x, high), low)
            if bar is not None and task is not None:
                bar.advance(task)
        inputs = x.detach()
        outputs, items = score(model, chains, inputs, goal)
    for t_index, target in enumerate(resolved):
        group = inputs[t_index * samples : (t_index + 1) * samples]
        value = pairwise_diversity(group, span)
        for item in items[t_index * samples : (t_index + 1) * samples]:
            item.metrics["diversity"] = value
    return Result(
        method="langevin", model=model.name, inputs=inputs, outputs=outputs, items=items,
        timing={"total_s": time.perf_counter() - start, "steps": steps},
        info={"device": str(device), "options": {"samples": samples, "steps": steps, "step_size": step_size, "noise": noise,
                          "temperature": temperature, "goal": goal, "seed": seed, "threads": threads,
                          "data_prior": prior_weight if prior is not None else 0.0}},
        value_range=(spec.low, spec.high),
    )


def _initial(n: int, shape: tuple[int, ...], low: torch.Tensor, high: torch.Tensor, prior, gen: torch.Generator):  # type: ignore[no-untyped-def]
    if prior is None:
        return low + (high - low) * torch.rand((n, *shape), generator=gen).to(low)
    coeff = torch.randn((n, prior.components.shape[0]), generator=gen).to(low) / prior.inv_std
    x = (prior.mean + coeff @ prior.components).reshape(n, *shape)
    return torch.maximum(torch.minimum(x, high), low)
