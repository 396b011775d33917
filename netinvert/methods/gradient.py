"""Method ``gradient``: batched optimization of all targets at once (Adam on the domain's parameters).

Item i of the batch serves target i. Each step: parameters -> inputs -> random transforms ->
forward (hooks only on the layers the targets and priors read) -> loss -> Adam. Deterministic
for a seed, and an item's start depends only on the seed and its target, never on the other
targets in the batch. The final inputs are re-scored by a plain forward pass without transforms.

Two schedules: ``imagine`` (one run with the domain's parameterization, transforms and priors)
and ``inversion``, the regularized maximum-likelihood attack for ``Activations`` targets:
minimize the normalized activation error plus a total-variation prior, in pixel space, without
random transforms, from a constant mid-gray image (or a given start), in phases chosen by the
layer's depth (each phase starts Adam again from the previous phase's inputs). ``auto`` picks
``inversion`` when every target is ``Activations`` and no domain is given.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from netinvert.domains import bn_prior, generative, priors
from netinvert.domains import diversity as diverse
from netinvert.domains.data_prior import prior_for
from netinvert.domains.domain import Domain
from netinvert.domains.sets import Ball, Box
from netinvert.ground.device import PRECISIONS, autocast, split_on_oom
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import goal_option, option, progress_option, seed_option, takes, threads_option
from netinvert.ground.result import Result
from netinvert.ground.run import progress_bar, torch_threads
from netinvert.models.wrapper import Model
from netinvert.targets.activations import Activations, add_errors
from netinvert.targets.base import Target
from netinvert.targets.resolve import resolve_all
from netinvert.targets.scoring import DEFAULT_GOAL, class_goal, score, unit_scales
from netinvert.targets.units import Channel, Class, Neuron

DOMAIN_FIELDS = ("region", "param", "decay", "decorrelate", "transforms", "tv", "l1", "l2", "blur", "bn_prior",
                 "data_prior", "vae_prior", "init")
SCHEDULES = ("auto", "imagine", "inversion")
DATA_PRIOR_WEIGHT = 20.0
# With any prior on, an item runs at least this fraction of its steps before it may stop early: reaching the
# goal is quick, shaping the picture is not (roman-mlp X: verifier p 0.06 after 256 of 1024 steps, 0.54 after
# 512, 0.85 after 768).
PRIOR_MIN_FRACTION = 0.75
IMAGINE_STEPS = 1024
RESTART_SEED = 1_000_003  # restart r runs with seed + r * RESTART_SEED
# Without priors, an item reached at a check stops only once its picture has settled: the mean absolute change
# of its input since the previous check (``check_every`` steps) is below this fraction of the input range. A
# pixel image reaches the goal long before it looks like anything (an adversarially trained MNIST CNN: p 0.99
# after 32 steps, grey blotches); with priors, PRIOR_MIN_FRACTION gives them their time instead (settling
# there as well ran the learned prior's codes on, further from the data). See docs/imagine.md, "Stopping".
SETTLE = 0.01
Penalty = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """One phase of the inversion schedule: Adam ``steps`` at learning rate ``lr`` with TV weight ``tv``."""

    steps: int
    lr: float
    tv: float


def schedule_for(model: Model, layer: str, steps: int | None = None) -> list[Phase]:
    """Phases for inverting ``layer``: light prior for depth <= 1, stronger TV for deeper layers.

    ``steps`` rescales the total number of steps (the default schedule has about 1000).
    """
    if model.layer_depth(layer) <= 1:
        phases = [Phase(400, 0.1, 1e-3), Phase(400, 0.03, 1e-5), Phase(300, 0.01, 0.0)]
    else:
        phases = [Phase(400, 0.1, 3e-3), Phase(400, 0.03, 1e-3), Phase(200, 0.01, 3e-4)]
    if steps is None:
        return phases
    if steps < len(phases):
        raise NetinvertError(f"steps={steps} must be >= {len(phases)}")
    total = sum(p.steps for p in phases)
    return [Phase(max(1, round(p.steps * steps / total)), p.lr, p.tv) for p in phases]


def _unit_gather(targets: list[Target], device: torch.device
                 ) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor] | None:
    """A single gather when every target is a unit target of one type on one layer, else ``None``."""
    groups = {(type(t), getattr(t, "layer", None), getattr(t, "log_prob", False)) for t in targets}
    if len(groups) != 1:
        return None
    target_type, layer, log_prob = groups.pop()
    index = torch.tensor([int(getattr(t, "index", 0)) for t in targets], device=device)[:, None]
    # squeeze, not [:, 0]: its backward is a view, where a select's allocates and fills a zero tensor per step
    if target_type is Class and not log_prob:
        return lambda outputs, acts: (outputs if outputs.dim() == 2 else outputs.flatten(1)).gather(1, index).squeeze(1)
    if target_type is Channel:
        return lambda outputs, acts: (acts[layer].flatten(2).mean(2) if acts[layer].dim() >= 3
                                      else acts[layer].flatten(1)).gather(1, index).squeeze(1)
    if target_type is Neuron:
        def neuron(outputs: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
            a = acts[layer]
            flat = a[:, :, a.shape[2] // 2, a.shape[3] // 2] if a.dim() == 4 else a.flatten(1)
            return flat.gather(1, index).squeeze(1)

        return neuron
    return None


def _batched_objective(targets: list[Target], device: torch.device
                       ) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """One call computing every item's objective on its own row (a single gather for uniform unit targets)."""
    fast = _unit_gather(targets, device)
    if fast is not None:
        return fast
    batched = getattr(type(targets[0]), "batched", None)  # a target class may batch its own targets
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


def item_seeds(targets: list[Target], seed: int, copies: int = 1) -> list[int]:
    """One seed per item from ``seed``, its target's description and its copy number (``i % copies``).

    An item's random start and transforms thus depend on its own target alone, never on which targets
    share the batch: a target repeated in a batch gives the same input each time, while the ``samples``
    copies of a target start apart.
    """
    return [(seed * 1_000_003 + zlib.crc32(f"{t.description}#{i % copies}".encode())) % 2**62
            for i, t in enumerate(targets)]


@dataclass(frozen=True)
class Options:
    """The options of method ``gradient``."""

    schedule: str = option("auto", "imagine (one run with the domain's priors), inversion (the layer-depth schedule "
                           "for Activations targets) or auto (inversion for Activations targets without a domain).",
                           choices=SCHEDULES)
    steps: int | None = option(None, "Optimization steps.", at_least=1,
                               default_text=f"{IMAGINE_STEPS}; inversion: the layer's schedule of about 1000")
    lr: float = option(0.1, "Adam learning rate.", above=0.0)
    samples: int = option(1, "Distinct inputs per target, pushed apart by the diversity prior.", at_least=1)
    goal: float = goal_option(DEFAULT_GOAL)
    early_stop: bool = option(True, "Let each class target stop once reached (after the priors act).")
    check_every: int = option(16, "Steps between two early-stop checks.", at_least=1)
    batch_size: int | None = option(None, "Targets per batch.", at_least=1, default_text="all at once")
    seed: int = seed_option()
    threads: int | None = threads_option()
    progress: bool | None = progress_option()
    penalties: list[Penalty] | None = option(None, "Extra per-item loss terms f(x, acts) -> (B,).", cli=False)
    penalty_layers: tuple[str, ...] = option((), "The layers the penalties read.", cli=False)
    precision: str = option("float32", "The forward pass's precision: float32, or float16 (GPU) / bfloat16 under "
                            "autocast.", choices=tuple(PRECISIONS))
    restarts: int = option(1, "Runs from different seeds; per item, keep the one the model scores best.", at_least=1)


@takes(Options)
def run(
    model: Model,
    targets: Target | list[Target],
    domain: Domain | None = None,
    *,
    schedule: str,
    steps: int | None,
    lr: float,
    samples: int,
    goal: float,
    early_stop: bool,
    check_every: int,
    batch_size: int | None,
    seed: int,
    threads: int | None,
    progress: bool | None,
    penalties: list[Penalty] | None,
    penalty_layers: tuple[str, ...],
    precision: str,
    restarts: int,
) -> Result:
    """Optimize one input per target (``samples`` per target); returns a scored ``Result``.

    ``schedule``: ``imagine`` runs ``steps`` (default 1024) Adam steps at ``lr`` in ``domain``;
    ``inversion`` runs the depth schedule for ``Activations`` targets (``steps`` rescales its ~1000 steps;
    only the domain's region applies); ``auto`` picks inversion for ``Activations`` targets without a domain.
    ``early_stop`` lets each class target's item stop once it is classified with probability >= ``goal``
    (checked every ``check_every`` steps; with any prior on, not before ``PRIOR_MIN_FRACTION`` of the steps,
    so the priors shape the input; without, not before the input has settled, see ``SETTLE``). Items stop one
    by one, so an item's result does not depend on its batch.
    ``samples=K`` returns K distinct inputs per target (items ``i*K .. i*K+K-1`` serve target i), pushed
    apart by the diversity prior. ``penalties`` are extra per-item loss terms ``f(x, acts) -> (B,)`` reading
    ``penalty_layers``. The BatchNorm-statistics prior follows ``domain.bn_prior`` (default: on for class
    targets on models with BatchNorm). Everything runs on the model's device; ``precision`` ``float16`` or
    ``bfloat16`` runs the forward pass under autocast (float16 needs a GPU). A batch that runs out of device
    memory is split in halves and the run goes on (``info["notes"]`` says so). ``restarts=R`` runs the imagine
    schedule R times from different seeds and keeps, per item, the run the model scores best (see ``best_of``).
    """
    autocast(precision, model.device)  # refuses float16 on the CPU up front
    resolved = resolve_all(targets, model)
    if schedule == "auto":
        inversion = domain is None and all(isinstance(t, Activations) for t in resolved)
        schedule = "inversion" if inversion else "imagine"
    options = {"schedule": schedule, "steps": steps, "lr": lr, "samples": samples, "goal": goal,
               "early_stop": early_stop, "check_every": check_every, "batch_size": batch_size, "seed": seed,
               "threads": threads, "precision": precision}
    with torch_threads(threads, model.step_work(batch_size or len(resolved) * samples)):
        if schedule == "inversion":
            if restarts != 1:
                raise NetinvertError("schedule='inversion' starts from one fixed image: use restarts=1")
            return _inversion(model, resolved, domain, options, progress)
        runs = [_imagine(model, resolved, domain or Domain(), {**options, "seed": seed + RESTART_SEED * r},
                         progress, penalties or [], penalty_layers) for r in range(restarts)]
        return best_of(runs) if restarts > 1 else runs[0]


def best_of(runs: list[Result]) -> Result:
    """Per item, the run the model scores best: found before not found, then the larger logit margin (class
    targets) or activation (unit targets). Copies of a target (``samples``) are chosen one by one: runs
    start from different seeds, so the copies stay distinct. The verifier never selects: it is the
    evaluation.
    """
    first = runs[0]

    def score(run: Result, i: int) -> tuple[bool, float]:
        item = run.items[i]
        return item.status == "found", float(item.metrics.get("margin", item.metrics.get("activation", 0.0)))

    rows = [max(range(len(runs)), key=lambda r: score(runs[r], i)) for i in range(len(first.items))]
    items = [runs[r].items[i] for i, r in enumerate(rows)]
    for item, r in zip(items, rows, strict=True):
        item.metrics["restart"] = r
    inputs = torch.stack([runs[r].inputs[i] for i, r in enumerate(rows)])
    outputs = torch.stack([runs[r].outputs[i] for i, r in enumerate(rows)])
    timing = {"total_s": sum(run.timing["total_s"] for run in runs), "steps": sum(run.timing["steps"] for run in runs)}
    return replace(first, inputs=inputs, outputs=outputs, items=items, timing={**first.timing, **timing},
                   info={**first.info, "options": {**first.info["options"], "restarts": len(runs)}})


def _inversion(model: Model, targets: list[Target], domain: Domain | None, options: dict[str, Any],
               progress: bool | None) -> Result:
    """Gradient inversion from mid-gray (or ``domain.init``) with each layer's schedule."""
    bad = [t for t in targets if not isinstance(t, Activations)]
    if bad:
        raise NetinvertError(f"schedule='inversion' matches layer activations; {bad[0].description!r} is not an "
                             "Activations target: use schedule='imagine'")
    ignored = [name for name in (domain.changed() if domain is not None else []) if name not in ("region", "init")]
    if ignored:
        raise NetinvertError(f"schedule='inversion' sets its own priors and parameterization; it would ignore "
                             f"the domain's {', '.join(ignored)}: leave them at their defaults or use schedule='imagine'")
    if options["samples"] != 1:
        raise NetinvertError("schedule='inversion' gives one input per target: use samples=1")
    start = time.perf_counter()
    init = domain.init if domain is not None and domain.init is not None else model.example_input(len(targets))
    region = domain.region if domain is not None else Box()
    inputs = refine(model, targets, init.to(model.dtype), steps=options["steps"], region=region,
                    seed=options["seed"], progress=progress)
    outputs, scored = score(model, targets, inputs)
    phases = {layer: [vars(p) for p in schedule_for(model, layer, options["steps"])]
              for layer in dict.fromkeys(t.layer for t in targets)}  # type: ignore[attr-defined]
    result = Result(method="gradient", model=model.name, inputs=inputs, outputs=outputs, items=scored,
                    timing={"total_s": time.perf_counter() - start},
                    info={"options": {**options, "init": "given" if domain is not None and domain.init is not None
                                      else "gray", "phases": phases}},
                    value_range=(model.input_spec.low, model.input_spec.high))
    return add_errors(result, targets)  # type: ignore[arg-type]


def refine(model: Model, targets: list[Target], init: torch.Tensor, *, steps: int | None = None,
           region: Box | Ball = Box(), seed: int = 0, progress: bool | None = None) -> torch.Tensor:
    """Gradient inversion of each layer's ``Activations`` targets from ``init`` with that layer's schedule."""
    out = init.detach().to(device="cpu", dtype=model.dtype).clone()
    for layer in dict.fromkeys(t.layer for t in targets):  # type: ignore[attr-defined]
        rows = [i for i, t in enumerate(targets) if t.layer == layer]  # type: ignore[attr-defined]
        x = init[rows]
        for i, phase in enumerate(schedule_for(model, layer, steps)):
            domain = Domain(region=region, param="pixel", transforms=None, tv=phase.tv, bn_prior=0.0,
                            data_prior=0.0, init=x)
            options = {"steps": phase.steps, "lr": phase.lr, "samples": 1, "goal": 0.99, "early_stop": False,
                       "check_every": 16, "batch_size": None, "seed": seed + i, "threads": None,
                       "precision": "float32"}
            x = _imagine(model, [targets[r] for r in rows], domain, options, progress, [], ()).inputs
        out[rows] = x
    return out


def _imagine(model: Model, targets: list[Target], domain: Domain, options: dict[str, Any], progress: bool | None,
             penalties: list[Penalty], penalty_layers: tuple[str, ...]) -> Result:
    steps = options["steps"] or IMAGINE_STEPS
    samples = options["samples"]
    chunk = options["batch_size"] or len(targets) * samples
    layer = diverse.default_layer(model) if samples > 1 else None
    resolved = targets
    domain = generative.resolve(model, domain, targets)
    margin = generative.DIVERSITY_MARGIN if domain.param == "latent" else diverse.MARGIN
    if layer is not None:
        resolved, chunk = diverse.repeat(targets, samples), diverse.group_chunk(chunk, samples)
        penalties = [*penalties, diverse.penalty(layer, samples, margin=margin)]
        penalty_layers = (*penalty_layers, layer)
        if domain.init is not None:
            domain = replace(domain, init=domain.init.repeat_interleave(samples, 0))
    seeds = item_seeds(resolved, options["seed"], samples)
    start = time.perf_counter()
    notes: list[str] = []
    with bn_prior.bn_penalty(model, domain.bn_prior, resolved) as bn_terms:

        def part(i: int, j: int) -> tuple[torch.Tensor, list[list[float]], int, float]:
            part_domain = domain if domain.init is None else replace(domain, init=domain.init[i:j])
            return _optimize(model, resolved[i:j], part_domain, steps, options, seeds[i:j], progress,
                             [*penalties, *bn_terms], penalty_layers)

        parts = split_on_oom(part, len(resolved), chunk, samples, notes)
        inputs = torch.cat([p[0] for p in parts])
        outputs, items = score(model, resolved, inputs, options["goal"])
    history = {"objective": [sum(vals, []) for vals in zip(*[p[1] for p in parts], strict=False)]}
    steps_run = sum(p[2] for p in parts)
    result = Result(
        method="gradient", model=model.name, inputs=inputs, outputs=outputs, items=items, history=history,
        timing={"total_s": time.perf_counter() - start, "steps": steps_run,
                "per_step_ms": 1000 * sum(p[3] for p in parts) / max(steps_run, 1)},
        info={"options": {**options, "steps": steps, "param": domain.resolved_param(model.input_spec)},
              "device": str(model.device), **({"notes": notes} if notes else {})},
        value_range=(model.input_spec.low, model.input_spec.high),
    )
    bn_prior.annotate(result, model, domain.bn_prior, resolved)
    if layer is not None:
        diverse.annotate(result, model, samples, layer, margin)
    return result


def _optimize(model: Model, targets: list[Target], domain: Domain, steps: int, options: dict[str, Any],
              seeds: list[int], progress: bool | None, penalties: list[Penalty],
              penalty_layers: tuple[str, ...]) -> tuple[torch.Tensor, list[list[float]], int, float]:
    spec = model.input_spec
    device, dtype = model.device, model.dtype
    # Seed the global generators a stochastic model might draw from, on the devices in use only:
    # torch.manual_seed also seeds every accelerator backend and costs milliseconds per call.
    torch.random.default_generator.manual_seed(options["seed"])
    if device.type == "cuda":
        torch.cuda.manual_seed(options["seed"])
    param: nn.Module = generative.parameterize(model, domain, len(targets),
                                               [torch.Generator().manual_seed(s) for s in seeds])
    param = param.to(device=device, dtype=dtype)
    gens = [torch.Generator().manual_seed(s + 1) for s in seeds]
    transforms = domain.resolved_transforms(spec)
    identity = transforms.is_identity
    span = spec.high - spec.low
    centre = (spec.high + spec.low) / 2
    optimized = generative.objective_targets(domain, targets)
    objective = _batched_objective(optimized, device)
    # the history records each item's own objective (the table's), also where the run optimizes another one
    reported = None if all(a is b for a, b in zip(optimized, targets, strict=True)) \
        else _batched_objective(targets, device)
    scales = unit_scales(model, targets)
    # one multiply less per step (about 3 % of a small model's step) when no unit is rescaled, as for classes
    inv_scale = None if bool((scales == 1).all()) else 1.0 / scales.to(device=device, dtype=dtype)
    layers = tuple(dict.fromkeys([layer for t in targets for layer in t.layers] + list(penalty_layers)))
    project = domain.region.project if isinstance(domain.region, Ball) and domain.region.p != float("inf") else None
    weights = [(w, fn) for w, fn in ((domain.tv, lambda x: priors.total_variation(x, span)),
                                     (domain.l1, lambda x: priors.l1(x, centre, span)),
                                     (domain.l2, lambda x: priors.l2(x, centre, span)),
                                     (domain.blur, lambda x: priors.blur(x, span))) if w > 0]
    data_weight = DATA_PRIOR_WEIGHT if domain.data_prior is None else domain.data_prior
    gaussian = prior_for(model) if data_weight > 0 else None
    if gaussian is not None:
        weights.append((data_weight, gaussian.to(device, dtype).penalty))
    weights.extend(generative.penalty_terms(model, domain, param))
    goal, check_every = options["goal"], options["check_every"]
    stoppable = torch.tensor([options["early_stop"] and isinstance(t, Class) for t in targets])
    can_stop = bool(stoppable.any())
    min_steps = round(PRIOR_MIN_FRACTION * steps) if (weights or penalties) else 0
    done = torch.zeros(len(targets), dtype=torch.bool)
    kept: torch.Tensor | None = None
    before: torch.Tensor | None = None
    settle = options.get("settle", SETTLE) if min_steps == 0 else 0.0  # with priors, PRIOR_MIN_FRACTION rules
    opt = torch.optim.Adam(param.parameters(), lr=options["lr"])
    precision = autocast(options["precision"], device)
    scaler = torch.amp.GradScaler(device.type) if options["precision"] == "float16" else None
    forward = model.module if model.normalize is None else model
    trace: list[torch.Tensor] = []
    steps_run = 0
    loop_start = time.perf_counter()
    with model.hooks(layers) as acts, progress_bar(progress, steps, f"{model.name}: {len(targets)} targets",
                                                   min_total=200) as bar:
        task = bar.add_task("run", total=steps) if bar is not None else None
        for step in range(steps):
            x = param()
            if project is not None:
                x = project(x, spec)
            x_in = x if identity else transforms(x, gens, centre)
            with precision:
                out = forward(x_in)
                obj = objective(out, acts)
            if obj.dtype != dtype:  # autocast: back to the model's dtype for the loss
                obj = obj.to(dtype)
            if reported is None:
                trace.append(obj.detach())
            else:
                with torch.no_grad():
                    trace.append(reported(out, acts).detach().to(dtype))
            loss = -(obj.sum() if inv_scale is None else (obj * inv_scale).sum())
            for w, fn in weights:
                loss = loss + w * fn(x).sum()
            for fn in penalties:
                loss = loss + fn(x, acts).sum()
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:  # float16: scale the loss so small gradients do not underflow
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            steps_run = step + 1
            if bar is not None and task is not None:
                bar.advance(task)
            if can_stop and step + 1 >= min_steps and (step + 1) % check_every == 0:
                with torch.no_grad():
                    now = param() if project is None else project(param(), spec)
                    # settled: the picture moved little since the previous check (never at the first one)
                    settled = torch.ones(len(targets), dtype=torch.bool)
                    if settle > 0:
                        settled = (now - before).abs().flatten(1).mean(1).cpu() / span < settle \
                            if before is not None else ~settled
                        before = now
                    out_now = model(now)
                    reached = torch.tensor([bool(class_goal(model, t, out_now[i : i + 1], goal)[0])
                                            and bool(settled[i]) if stoppable[i] else False
                                            for i, t in enumerate(targets)])
                    new = reached & ~done
                    if bool(new.any()):
                        kept = now.clone() if kept is None else kept
                        kept[new.to(device)] = now[new.to(device)]
                        done |= new
                if bool(done.all()):
                    break
    loop_seconds = time.perf_counter() - loop_start
    with torch.no_grad():
        final = param()
        if project is not None:
            final = project(final, spec)
        if kept is not None:
            final = torch.where(done.to(device).reshape(-1, *[1] * len(spec.shape)), kept, final)
    history = torch.stack(trace).tolist() if trace else []
    if isinstance(param, generative.Latent) and not bool(done.all()):
        final, nudged = _nudge(model, targets, final.detach(), domain, options, seeds, done)
        steps_run += nudged
    return final.detach(), history, steps_run, loop_seconds


def _nudge(model: Model, targets: list[Target], x: torch.Tensor, domain: Domain, options: dict[str, Any],
           seeds: list[int], done: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Move decoded images that missed the goal a little in pixel space until the model reaches it.

    The learned prior's images can sit just short of a weak model's goal; a few small pixel steps without
    transforms or priors (each item stops once reached) close that gap and barely change the picture.
    """
    rows = [i for i in range(len(targets)) if not done[i]]
    nudge = Domain(region=domain.region, param="pixel", transforms=None, bn_prior=0.0, data_prior=0.0,
                   init=x[rows])
    settings = {**options, "steps": generative.NUDGE_STEPS, "lr": generative.NUDGE_LR, "early_stop": True,
                "check_every": 4, "settle": 0.0}
    moved, _, steps, _ = _optimize(model, [targets[i] for i in rows], nudge, generative.NUDGE_STEPS, settings,
                                   [seeds[i] for i in rows], False, [], ())
    out = x.clone()
    out[rows] = moved
    return out, steps
