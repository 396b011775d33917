"""Method ``dbn``: run a deep belief net top-down to imagine inputs of a class.

The model's module must be a :class:`netinvert.models.dbn.DBN` (its forward returns label
logits, so the shared scoring and the verifier apply unchanged). For each class target the
label units are clamped, the top RBM is Gibbs-sampled and one top-down pass yields pixels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.models.dbn import DBN
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.scoring import score
from netinvert.targets.units import Class


def run(model: Model, targets: Target | Sequence[Target], domain: Box | None = None, *, n: int = 16,
        gibbs_steps: int = 200, seed: int = 0, probability: float = 0.5) -> Result:
    """``n`` generated inputs per class target; status ``found`` when the DBN itself gives the class
    probability >= ``probability`` and ranks it first."""
    if not isinstance(model.module, DBN):
        raise NetinvertError(f"method dbn needs a deep belief net (e.g. zoo model dbn-digits); {model.name} is a "
                             f"{type(model.module).__name__}")
    if domain is not None and domain != Box():
        raise NetinvertError("method dbn samples from the net's own distribution: it takes no --domain")
    if n < 1 or gibbs_steps < 0:
        raise NetinvertError(f"n={n}, gibbs_steps={gibbs_steps}: give n >= 1 and gibbs_steps >= 0")
    targets = [targets] if isinstance(targets, Target) else list(targets)
    classes = []
    for t in targets:
        if not isinstance(t, Class):
            raise NetinvertError(f"method dbn generates classes only; {t.description!r} is not a class target")
        classes.append(Class(model.class_index(t.index), output_activation=model.output_activation))
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    rows = [model.module.generate(int(c.index), n, gibbs_steps, gen) for c in classes]
    inputs = torch.cat(rows).clamp(model.input_spec.low, model.input_spec.high)
    plan = [c for c in classes for _ in range(n)]
    outputs, items = score(model, plan, inputs, goal_prob=probability)
    for item in items:
        item.reason = item.reason or "label clamped, Gibbs sampling in the top RBM, one top-down pass"
    labels = [f"{model.class_label(int(c.index))}" for c in plan]
    spec = model.input_spec
    return Result(method="dbn", model=model.name, inputs=inputs, outputs=outputs, items=items,
                  timing={"total_s": time.perf_counter() - t0}, info={"n": n, "gibbs_steps": gibbs_steps, "seed": seed},
                  labels=labels, value_range=(spec.low, spec.high))
