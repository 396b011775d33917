"""Method ``gradient``: batched optimization of all targets at once (Adam on the domain's parameters).

Item i of the batch serves target i. Each step: parameters -> inputs -> random transforms ->
forward (hooks only on the layers the targets and priors read) -> loss -> Adam. Deterministic
for a seed. The final inputs are re-scored by a plain forward pass without transforms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch
from torch import nn

from netinvert.domains import bn_prior, priors
from netinvert.domains import diversity as diverse
from netinvert.domains.data_prior import prior_for
from netinvert.domains.domain import Domain
from netinvert.domains.sets import Ball
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.resolve import resolve_all
from netinvert.targets.scoring import class_goal, score
from netinvert.targets.units import Channel, Class, Neuron

DATA_PRIOR_WEIGHT = 20.0
PRIOR_MIN_STEPS = 256  # with BN or diversity priors, run at least this long before stopping early
Penalty = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch threads, restoring the previous setting afterwards."""
    if count is None:
        yield
        return
    if count < 1:
        raise NetinvertError(f"threads={count} must be >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _unit_gather(targets: list[Target]) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor] | None:
    """A single gather when every target is the same kind of unit target on one layer, else ``None``."""
    kinds = {(type(t), getattr(t, "layer", None), getattr(t, "log_prob", False)) for t in targets}
    if len(kinds) != 1:
        return None
    kind, layer, log_prob = kinds.pop()
    index = torch.tensor([int(getattr(t, "index", 0)) for t in targets])[:, None]
    if kind is Class and not log_prob:
        return lambda outputs, acts: outputs.reshape(outputs.shape[0], -1).gather(1, index)[:, 0]
    if kind is Channel:
        return lambda outputs, acts: (acts[layer].flatten(2).mean(2) if acts[layer].dim() >= 3
                                      else acts[layer].flatten(1)).gather(1, index)[:, 0]
    if kind is Neuron:
        def neuron(outputs: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
            a = acts[layer]
            flat = a[:, :, a.shape[2] // 2, a.shape[3] // 2] if a.dim() == 4 else a.flatten(1)
            return flat.gather(1, index)[:, 0]

        return neuron
    return None


def _batched_objective(targets: list[Target]) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """One call computing every item's objective on its own row (a single gather for uniform unit targets)."""
    fast = _unit_gather(targets)
    if fast is not None:
        return fast
    batched = getattr(type(targets[0]), "batched", None)  # a target class may batch its own kind
    if batched is not None and all(type(t) is type(targets[0]) for t in targets):
        fast = batched(targets)
        if fast is not None:
            return fast

    def per_item(outputs: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        values = []
        for i, t in enumerate(targets):
            row = {k: v[i : i + 1] for k, v in acts.items()}
            values.append(t.objective(outputs[i : i + 1], row))
        return torch.cat(values)

    return per_item


def _progress(enabled: bool | None, total: int, description: str):  # type: ignore[no-untyped-def]
    import sys

    if enabled is None:
        enabled = sys.stderr.isatty() and total >= 200
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), transient=True)


def run(
    model: Model,
    targets: Target | list[Target],
    domain: Domain | None = None,
    *,
    steps: int = 1024,
    lr: float = 0.1,
    seed: int = 0,
    threads: int | None = None,
    batch_size: int | None = None,
    early_stop: bool = True,
    goal_prob: float = 0.99,
    check_every: int = 16,
    progress: bool | None = None,
    penalties: list[Penalty] | None = None,
    penalty_layers: tuple[str, ...] = (),
    diversity: int = 1,
) -> Result:
    """Optimize one input per target; returns a scored ``Result``.

    ``penalties`` are extra per-item loss terms ``f(x, acts) -> (B,)`` reading ``penalty_layers``
    (used by the BN-statistics and diversity priors). ``early_stop`` ends the run once every
    class target is reached with probability >= ``goal_prob`` (checked every ``check_every`` steps;
    with extra penalties, not before ``PRIOR_MIN_STEPS`` so the priors can act).
    ``diversity=K`` returns K distinct inputs per target (items ``i*K .. i*K+K-1`` serve target i).
    The BN-statistics prior follows ``domain.bn_prior`` (default: on for class targets on models with BatchNorm).
    """
    if steps < 1:
        raise NetinvertError(f"steps={steps} must be >= 1")
    if lr <= 0:
        raise NetinvertError(f"lr={lr} must be > 0")
    resolved = resolve_all(targets, model)
    domain = domain or Domain()
    if batch_size is not None and batch_size < 1:
        raise NetinvertError(f"batch size {batch_size} must be >= 1")
    chunk = batch_size or len(resolved)
    layer = diverse.default_layer(model) if diverse.check(diversity) > 1 else None
    if layer is not None:
        resolved, chunk = diverse.repeat(resolved, diversity), diverse.group_chunk(chunk, diversity)
        penalties, penalty_layers = [*(penalties or []), diverse.penalty(layer, diversity)], (*penalty_layers, layer)
        if domain.init is not None:
            domain = replace(domain, init=domain.init.repeat_interleave(diversity, 0))
    start = time.perf_counter()
    with torch_threads(threads), bn_prior.bn_penalty(model, domain.bn_prior, resolved) as bn_terms:
        parts = []
        for i in range(0, len(resolved), chunk):
            part_domain = domain
            if domain.init is not None:
                part_domain = replace(domain, init=domain.init[i : i + chunk])
            parts.append(_optimize(model, resolved[i : i + chunk], part_domain, steps, lr, seed + i, early_stop,
                                   goal_prob, check_every, progress, [*(penalties or []), *bn_terms], penalty_layers))
        inputs = torch.cat([p[0] for p in parts])
        outputs, items = score(model, resolved, inputs, goal_prob)
    history = {"objective": [sum(vals, []) for vals in zip(*[p[1] for p in parts], strict=False)]}
    steps_run = sum(p[2] for p in parts)
    total = time.perf_counter() - start
    result = Result(
        method="gradient", model=model.name, inputs=inputs, outputs=outputs, items=items, history=history,
        timing={"total_s": total, "steps": steps_run, "per_step_ms": 1000 * sum(p[3] for p in parts) / max(steps_run, 1)},
        info={"options": {"steps": steps, "lr": lr, "seed": seed, "param": domain.resolved_param(model.input_spec),
                          "goal_prob": goal_prob}},
        value_range=(model.input_spec.low, model.input_spec.high),
    )
    bn_prior.annotate(result, model, domain.bn_prior, resolved)
    if layer is not None:
        diverse.annotate(result, model, diversity, layer)
    return result


def _optimize(model: Model, targets: list[Target], domain: Domain, steps: int, lr: float, seed: int,
              early_stop: bool, goal_prob: float, check_every: int, progress: bool | None,
              penalties: list[Penalty], penalty_layers: tuple[str, ...]) -> tuple[torch.Tensor, list[list[float]], int, float]:
    spec = model.input_spec
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    param: nn.Module = domain.parameterize(spec, len(targets), gen)
    transforms = domain.resolved_transforms(spec)
    span = spec.high - spec.low
    centre = (spec.high + spec.low) / 2
    objective = _batched_objective(targets)
    layers = tuple(dict.fromkeys([layer for t in targets for layer in t.layers] + list(penalty_layers)))
    project = domain.region.project if isinstance(domain.region, Ball) and domain.region.p != float("inf") else None
    weights = [(w, fn) for w, fn in ((domain.tv, lambda x: priors.total_variation(x, span)),
                                     (domain.l1, lambda x: priors.l1(x, centre, span)),
                                     (domain.l2, lambda x: priors.l2(x, centre, span)),
                                     (domain.blur, lambda x: priors.blur(x, span))) if w > 0]
    data_weight = DATA_PRIOR_WEIGHT if domain.data_prior is None else domain.data_prior
    gaussian = prior_for(model) if data_weight > 0 else None
    if gaussian is not None:
        weights.append((data_weight, gaussian.penalty))
    goals_known = early_stop and all(isinstance(t, Class) for t in targets)
    min_steps = min(steps, PRIOR_MIN_STEPS) if penalties else 0
    opt = torch.optim.Adam(param.parameters(), lr=lr)
    forward = model.module if model.normalize is None else model
    trace: list[torch.Tensor] = []
    steps_run = 0
    loop_start = time.perf_counter()
    with model.hooks(layers) as acts, _progress(progress, steps, f"{model.name}: {len(targets)} targets") as bar:
        task = bar.add_task("run", total=steps) if bar is not None else None
        for step in range(steps):
            x = param()
            if project is not None:
                x = project(x, spec)
            x_in = transforms(x, gen, centre) if not transforms.is_identity else x
            obj = objective(forward(x_in), acts)
            loss = -obj.sum()
            for w, fn in weights:
                loss = loss + w * fn(x).sum()
            for fn in penalties:
                loss = loss + fn(x, acts).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            trace.append(obj.detach())
            steps_run = step + 1
            if bar is not None and task is not None:
                bar.advance(task)
            if goals_known and step + 1 >= min_steps and (step + 1) % check_every == 0:
                with torch.no_grad():
                    out_now = model(param())
                    reached = [bool(class_goal(model, t, out_now[i : i + 1], goal_prob)[0])
                               for i, t in enumerate(targets)]
                if all(reached):
                    break
    loop_seconds = time.perf_counter() - loop_start
    with torch.no_grad():
        final = param()
        if project is not None:
            final = project(final, spec)
    history = torch.stack(trace).tolist() if trace else []
    return final.detach(), history, steps_run, loop_seconds
