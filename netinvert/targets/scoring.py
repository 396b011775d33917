"""Shared scoring: the same metrics for every method, from a plain forward pass of the final inputs.

Class targets get the model's probability and logit margin and, when the model has an
independent verifier, the verifier's probability and whether its top class agrees.
Other targets get their activation value.
"""

from __future__ import annotations

import torch

from netinvert.ground.result import Item
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.units import Class

NO_VERIFIER = "no independent verifier: pass --verifier to score with a second model"


def class_goal(model: Model, target: Target, outputs: torch.Tensor, goal_prob: float) -> torch.Tensor | None:
    """Per-row bool: the row is classified as the target class with probability >= goal (None: no goal)."""
    if not isinstance(target, Class):
        return None
    k = int(target.index)
    probs = model.probabilities(outputs.reshape(outputs.shape[0], -1))
    return (probs.argmax(1) == k) & (probs[:, k] >= goal_prob)


@torch.no_grad()
def score(model: Model, targets: list[Target], inputs: torch.Tensor, goal_prob: float = 0.99) -> tuple[torch.Tensor, list[Item]]:
    """Outputs of ``inputs`` and one ``Item`` per target (row i serves target i)."""
    layers = tuple(dict.fromkeys(layer for t in targets for layer in t.layers))
    outputs, acts = model.capture(inputs, layers)
    logits = outputs.reshape(outputs.shape[0], -1)
    probs = model.probabilities(logits)
    verifier = model.verifier
    v_probs = verifier.probabilities(verifier(inputs).reshape(inputs.shape[0], -1)) if verifier is not None else None
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
        else:
            metrics["activation"] = value
        reason = "" if status == "found" else f"model probability below the goal {goal_prob:g} or another class on top"
        items.append(Item(target=target.description, status=status, reason=reason, metrics=metrics))
    return outputs, items
