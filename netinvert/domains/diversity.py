"""Diversity: K distinct inputs per target (after Lucid's diversity objective, Olah et al. 2017).

Each target is repeated K times in a row; a hinge penalty on the cosine similarity between the
copies' features at one hidden layer (above ``MARGIN``) pushes the K copies of a target apart while
each still maximizes the target: once the copies differ enough, the push stops and the target and
the other priors have the input to themselves (a plain penalty strong enough to split the copies
under a data prior kept some of them from ever reaching the target). ``score`` measures exactly what the penalty lowers: the mean cosine distance
between copies in that layer's feature space (0 = identical features). Lucid compares Gram matrices
(the features' "style"); on small networks (3 channels after a ReLU) all Gram matrices point the
same way, so the copies stayed identical: the features themselves keep the push alive.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target

DEFAULT_WEIGHT = 100.0
MARGIN = 0.8  # feature cosine similarity between copies below which they count as different enough
Penalty = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def check(k: int) -> int:
    if not isinstance(k, int) or k < 1:
        raise NetinvertError(f"samples={k!r} must be a whole number >= 1 (inputs per target)")
    return k


def repeat(targets: list[Target], k: int) -> list[Target]:
    """Each target ``k`` times in a row: item ``i * k + j`` is copy ``j`` of target ``i``."""
    return [t for t in targets for _ in range(check(k))]


def group_chunk(chunk: int, k: int) -> int:
    """The smallest multiple of ``k`` that is >= ``chunk``, so no target's copies straddle two batches."""
    return -(-chunk // k) * k


def default_layer(model: Model) -> str:
    """The middle one of the model's leaf layers with spatial output (or of all hidden leaf layers)."""
    table = model.layer_table()
    leaves = sorted((info for info in table.values() if info.leaf and info.order is not None and info.shape),
                    key=lambda info: info.order or 0)
    hidden = leaves[:-1]
    if not hidden:
        raise NetinvertError(f"{model.name} has no hidden layer to measure diversity on: use samples=1")
    spatial = [info.name for info in hidden if len(info.shape or ()) >= 3]
    pool = spatial or [info.name for info in hidden]
    return pool[len(pool) // 2]


def _features(a: torch.Tensor) -> torch.Tensor:
    """Per-item features flattened and L2-normalized: (B, n)."""
    return F.normalize(a.flatten(1), dim=1, eps=1e-10)


def _mean_to_siblings(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """For each row, its mean dot product with the other k-1 rows of its group of k."""
    groups = vectors.reshape(-1, k, vectors.shape[1])
    sim = groups @ groups.transpose(1, 2)
    others = sim.sum(2) - torch.diagonal(sim, dim1=1, dim2=2)
    return (others / (k - 1)).reshape(-1)


def penalty(layer: str, k: int, weight: float = DEFAULT_WEIGHT, margin: float = MARGIN) -> Penalty:
    """``f(x, acts) -> (B,)``: how far each copy's mean feature similarity to the other copies of its target
    exceeds ``margin``, times ``weight``."""
    check(k)

    def fn(x: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        a = acts[layer]
        if a.shape[0] % k:
            raise NetinvertError(f"batch of {a.shape[0]} is not whole groups of {k} copies; use a multiple of {k}")
        return weight * torch.relu(_mean_to_siblings(_features(a), k) - margin)

    return fn


@torch.no_grad()
def score(model: Model, inputs: torch.Tensor, k: int, layer: str) -> torch.Tensor:
    """Per item: mean cosine distance (1 - cos) of its ``layer`` features to the other copies of its target."""
    check(k)
    if k == 1:
        return inputs.new_zeros(inputs.shape[0])
    _, acts = model.capture(inputs, (layer,))
    return 1.0 - _mean_to_siblings(_features(acts[layer]), k)


def annotate(result: Result, model: Model, k: int, layer: str, margin: float = MARGIN) -> None:
    """Add each item's ``diversity`` score and copy number, caption copies ``#1..#k``, record the layer."""
    values = score(model, result.inputs, k, layer)
    for i, item in enumerate(result.items):
        item.metrics.update(diversity=float(values[i]), copy=i % k)
    result.labels = [f"{item.target} #{i % k + 1}" for i, item in enumerate(result.items)]
    result.info["diversity"] = {"copies": k, "layer": layer, "weight": DEFAULT_WEIGHT, "margin": margin,
                                "mean": float(values.mean()) if len(values) else None}
