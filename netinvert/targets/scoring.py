"""Shared scoring: the same metrics and one meaning of ``found`` for every method, from a plain forward
pass of the final inputs.

``found`` per target kind (docs/imagine.md):

- a class target: the class is the model's top class with probability >= the goal (``DEFAULT_GOAL``
  0.99 unless the run sets another); otherwise ``not-reached``;
- a unit target (neuron, channel, layer, direction, their sums): the objective exceeds the highest value
  it takes on the model's held-out data (``data_max``, over up to ``REFERENCE_INPUTS`` inputs); otherwise
  ``not-reached``; ``unknown`` when the model does not know its data;
- an ``Activations`` target: always ``found`` (a reconstruction); its quality is ``activation_error``.

Class targets also get the logit margin and, when the model has an independent verifier, the
verifier's probability and whether its top class agrees. Other targets get their activation value.
"""

from __future__ import annotations

import torch

from netinvert.ground.result import Item
from netinvert.models.wrapper import Model
from netinvert.targets.activations import Activations
from netinvert.targets.base import Target
from netinvert.targets.units import Class

DEFAULT_GOAL = 0.99
REFERENCE_INPUTS = 128
TYPICAL_SPREAD = 5.0
NO_VERIFIER = "no independent verifier: pass --verifier to score with a second model"


def class_goal(model: Model, target: Target, outputs: torch.Tensor, goal_prob: float) -> torch.Tensor | None:
    """Per-row bool: the row is classified as the target class with probability >= goal (None: no goal)."""
    if not isinstance(target, Class):
        return None
    k = int(target.index)
    probs = model.probabilities(outputs.reshape(outputs.shape[0], -1))
    return (probs.argmax(1) == k) & (probs[:, k] >= goal_prob)


@torch.no_grad()
def score(model: Model, targets: list[Target], inputs: torch.Tensor,
          goal_prob: float = DEFAULT_GOAL) -> tuple[torch.Tensor, list[Item]]:
    """Outputs of ``inputs`` and one ``Item`` per target (row i serves target i)."""
    layers = tuple(dict.fromkeys(layer for t in targets for layer in t.layers))
    outputs, acts = model.capture(inputs, layers)
    logits = outputs.reshape(outputs.shape[0], -1)
    probs = model.probabilities(logits)
    verifier = model.verifier
    v_probs = (verifier.probabilities(verifier.outputs_for(inputs, model.input_spec).reshape(inputs.shape[0], -1))
               if verifier is not None else None)
    reference = _data_max(model, targets)
    items = []
    for i, target in enumerate(targets):
        row_acts = {k: v[i : i + 1] for k, v in acts.items()}
        value = float(target.objective(outputs[i : i + 1], row_acts)[0])
        metrics: dict[str, object] = {"objective": value}
        status = "found"
        if isinstance(target, Class):
            k = int(target.index)
            others = torch.cat([logits[i, :k], logits[i, k + 1 :]])
            metrics.update(
                class_index=k,
                class_name=model.class_label(k),
                model_prob=float(probs[i, k]),
                margin=float(logits[i, k] - others.max()) if others.numel() else float("inf"),
                predicted=model.class_label(int(probs[i].argmax())),
            )
            reached = bool(class_goal(model, target, outputs[i : i + 1], goal_prob)[0])
            status = "found" if reached else "not-reached"
            if v_probs is not None:
                metrics.update(verifier_prob=float(v_probs[i, k]), verifier_agrees=bool(v_probs[i].argmax() == k))
            else:
                metrics.update(verifier_prob=None, verifier_agrees=None, verifier_note=NO_VERIFIER)
            reason = "" if reached else f"model probability below the goal {goal_prob:g} or another class on top"
        elif isinstance(target, Activations):
            metrics["activation"] = value
            reason = ""
        else:
            metrics["activation"] = value
            status, reason = _unit_status(value, reference.get(i))
            metrics["data_max"] = reference.get(i)
        items.append(Item(target=target.description, status=status, reason=reason, metrics=metrics))
    return outputs, items


def _unit_status(value: float, data_max: float | None) -> tuple[str, str]:
    if data_max is None:
        return "unknown", "unit targets are found when they exceed every value on the data: pass --data to compare"
    if value > data_max:
        return "found", ""
    return "not-reached", f"activation {value:.4g} does not exceed the highest value on the data ({data_max:.4g})"


@torch.no_grad()
def _reference_values(model: Model, targets: list[Target]) -> dict[int, torch.Tensor]:
    """For each unit target (by row), its objective on the model's held-out inputs (none without data)."""
    rows = [i for i, t in enumerate(targets) if not isinstance(t, (Class, Activations))]
    if not rows or not model.has_data:
        return {}
    x = torch.as_tensor(model.data_split().x_held[:REFERENCE_INPUTS], dtype=torch.float32)
    layers = tuple(dict.fromkeys(layer for i in rows for layer in targets[i].layers))
    with torch.no_grad():
        outputs, acts = model.capture(x, layers)
        return {i: targets[i].objective(outputs, acts).detach().cpu() for i in rows}


def _data_max(model: Model, targets: list[Target]) -> dict[int, float]:
    """For each unit target (by row), the highest objective it takes on the model's held-out inputs."""
    return {i: float(v.max()) for i, v in _reference_values(model, targets).items()}


def unit_scales(model: Model, targets: list[Target]) -> torch.Tensor:
    """Per target, what to divide its objective by so that a weak unit weighs like a class logit against priors.

    A unit whose objective varies on held-out data by less than ``TYPICAL_SPREAD`` (the spread of a trained
    classifier's logits, which the priors' weights are set against) is scaled up to it: without this the data
    prior outweighs weak units (a digits conv layer varies by 0.04-0.15) and every unit renders as the same
    data-like blob. Stronger units, class and feature-inversion targets, dead units (no spread at all) and
    models without data get 1.
    """
    scales = torch.ones(len(targets))
    for i, values in _reference_values(model, targets).items():
        spread = float(values.double().std()) if values.numel() > 1 else 0.0
        if spread > 1e-6 * max(1.0, float(values.abs().max())):
            scales[i] = min(1.0, spread / TYPICAL_SPREAD)
    return scales
