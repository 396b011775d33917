"""Method ``dbn``: run a deep belief net top-down to imagine inputs of a class.

The model's module must be a :class:`netinvert.models.dbn.DBN` (its forward returns label
logits, so the shared scoring and the verifier apply unchanged). For each class target the
label units are clamped, the top RBM is Gibbs-sampled and one top-down pass yields pixels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import goal_option, option, seed_option, takes, threads_option
from netinvert.ground.result import Result
from netinvert.ground.run import torch_threads
from netinvert.models.dbn import DBN
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.scoring import DEFAULT_GOAL, score
from netinvert.targets.units import Class

DOMAIN_FIELDS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Options:
    """The options of method ``dbn``."""

    samples: int = option(16, "Generated inputs per class target.", at_least=1)
    gibbs_steps: int = option(200, "Alternating Gibbs steps in the top RBM.", at_least=0)
    goal: float = goal_option(DEFAULT_GOAL)
    seed: int = seed_option()
    threads: int | None = threads_option()


@takes(Options)
def run(model: Model, targets: Target | Sequence[Target], domain: Box | None = None, *, samples: int,
        gibbs_steps: int, goal: float, seed: int, threads: int | None) -> Result:
    """``samples`` generated inputs per class target; status ``found`` when the DBN itself gives the class
    probability >= ``goal`` and ranks it first."""
    if not isinstance(model.module, DBN):
        raise NetinvertError(f"method dbn needs a deep belief net (e.g. zoo model dbn-digits); {model.name} is a "
                             f"{type(model.module).__name__}")
    if domain is not None and domain != Box():
        raise NetinvertError("method dbn samples from the net's own distribution: it takes no domain")
    targets = [targets] if isinstance(targets, Target) else list(targets)
    classes = []
    for t in targets:
        if not isinstance(t, Class):
            raise NetinvertError(f"method dbn generates classes only; {t.description!r} is not a class target")
        classes.append(Class(model.class_index(t.index), output_activation=model.output_activation))
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    with torch_threads(threads, model.step_work(samples * len(classes))):
        rows = [model.module.generate(int(c.index), samples, gibbs_steps, gen) for c in classes]
        inputs = torch.cat(rows).clamp(model.input_spec.low, model.input_spec.high)
        plan = [c for c in classes for _ in range(samples)]
        outputs, items = score(model, plan, inputs, goal)
    for item in items:
        item.reason = item.reason or "label clamped, Gibbs sampling in the top RBM, one top-down pass"
    labels = [f"{model.class_label(int(c.index))}" for c in plan]
    spec = model.input_spec
    return Result(method="dbn", model=model.name, inputs=inputs, outputs=outputs, items=items,
                  timing={"total_s": time.perf_counter() - t0},
                  info={"options": {"samples": samples, "gibbs_steps": gibbs_steps, "goal": goal, "seed": seed,
                                    "threads": threads}},
                  labels=labels, value_range=(spec.low, spec.high))
