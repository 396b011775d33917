"""The BatchNorm-statistics prior (DeepInversion, Yin et al. 2020): inputs whose features look like training data.

Every BatchNorm layer stores the running mean and variance of its input over the training set.
An input whose feature statistics at those layers match them looks, to the network, like
training data; one that does not (adversarial noise) is pushed towards them. The first BN
layer is weighted more, as in DeepInversion, because low-level statistics matter most for
natural-looking inputs.

Statistics are per item (over the spatial positions of each channel), not over the batch, so
an item's result does not depend on which other targets share its batch. For BN layers
without spatial positions (``BatchNorm1d`` on ``(B, C)``) the item's standardized values
across channels should have mean 0 and mean square 1.

By default (weight ``None``) the prior is on for models with BN layers when the targets are
outputs (classes, as in DeepInversion) and off for hidden-unit targets, whose own activation
statistics it would pin down. The BN *inputs* are captured with forward pre-hooks that exist
only inside ``bn_penalty`` and ``bn_distance``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from netinvert.errors import NetinvertError
from netinvert.models.wrapper import Model
from netinvert.result import Result
from netinvert.targets.base import Target

DEFAULT_WEIGHT = 10.0
FIRST_LAYER_WEIGHT = 10.0
Penalty = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def bn_layers(model: Model) -> list[str]:
    """Names of the BatchNorm layers that carry running statistics, in module order."""
    return [name for name, m in model.module.named_modules()
            if name and isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
            and m.running_var is not None]


def resolve_weight(weight: float | None, model: Model, targets: Sequence[Target] = ()) -> float:
    """The prior's weight: ``weight`` as given; for ``None``, ``DEFAULT_WEIGHT`` when the model has BN layers
    and no target reads a hidden layer (a unit's own activation statistics are what the prior pins down,
    so it would flatten unit visualizations), else 0."""
    if weight is None:
        return DEFAULT_WEIGHT if bn_layers(model) and not any(t.layers for t in targets) else 0.0
    if weight < 0:
        raise NetinvertError(f"BN prior weight {weight} must be >= 0 (0 switches it off)")
    return float(weight)


def _layer_distance(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """Per-item distance of ``x``'s channel statistics to ``bn``'s running statistics, in units of its std."""
    mean = bn.running_mean.to(x.dtype)  # type: ignore[union-attr]
    var = bn.running_var.to(x.dtype) + bn.eps  # type: ignore[union-attr,operator]
    if x.dim() > 2:
        flat = x.flatten(2)
        m = flat.mean(2)
        v = flat.var(2, unbiased=False)
        mean_term = ((m - mean) ** 2 / var).mean(1)
        var_term = ((v / var - 1.0) ** 2).mean(1)
    else:
        z = (x - mean) / var.sqrt()
        mean_term = z.mean(1) ** 2
        var_term = ((z**2).mean(1) - 1.0) ** 2
    return (mean_term + 1e-12).sqrt() + (var_term + 1e-12).sqrt()


def _layer_weights(names: list[str], first_weight: float) -> list[float]:
    return [first_weight if i == 0 else 1.0 for i in range(len(names))]


@contextmanager
def _bn_inputs(model: Model, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input of each named BN layer while the block runs; hooks always come off."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:

            def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                store[name] = args[0]

            handles.append(model.get_layer(name).register_forward_pre_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def _weighted_distance(model: Model, store: dict[str, torch.Tensor], names: list[str],
                       first_weight: float) -> torch.Tensor:
    weights = _layer_weights(names, first_weight)
    total = None
    for w, name in zip(weights, names, strict=True):
        if name not in store:
            raise NetinvertError(f"BatchNorm layer {name!r} did not run in the forward pass; pass bn_prior=0")
        d = w * _layer_distance(store[name], model.get_layer(name))  # type: ignore[arg-type]
        total = d if total is None else total + d
    assert total is not None
    return total / sum(weights)


@contextmanager
def bn_penalty(model: Model, weight: float | None, targets: Sequence[Target] = (),
               first_weight: float = FIRST_LAYER_WEIGHT) -> Iterator[list[Penalty]]:
    """Inside the block: ``[penalty]`` with ``penalty(x, acts) -> (B,)`` reading the last forward's BN inputs.

    Yields an empty list when the prior is off (see ``resolve_weight``).
    """
    w = resolve_weight(weight, model, targets)
    names = bn_layers(model)
    if w == 0 or not names:
        if weight:
            raise NetinvertError(f"{model.name} has no BatchNorm layers with running statistics: pass bn_prior=0")
        yield []
        return
    with _bn_inputs(model, names) as store:

        def penalty(x: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
            return w * _weighted_distance(model, store, names, first_weight)

        yield [penalty]


@torch.no_grad()
def bn_distance(model: Model, inputs: torch.Tensor, first_weight: float = FIRST_LAYER_WEIGHT) -> torch.Tensor:
    """Per-item BN-statistics distance of ``inputs`` (the quantity the prior lowers); zeros without BN."""
    names = bn_layers(model)
    if not names:
        return inputs.new_zeros(inputs.shape[0])
    with _bn_inputs(model, names) as store:
        model(inputs)
        return _weighted_distance(model, store, names, first_weight)


def annotate(result: Result, model: Model, weight: float | None, targets: Sequence[Target] = ()) -> None:
    """On a model with BN layers: each item's ``bn_distance`` and the prior's weight in ``result.info``."""
    if not bn_layers(model):
        return
    values = bn_distance(model, result.inputs)
    for item, value in zip(result.items, values.tolist(), strict=True):
        item.metrics["bn_distance"] = value
    result.info["bn_prior"] = {"weight": resolve_weight(weight, model, targets), "first_layer_weight": FIRST_LAYER_WEIGHT,
                               "layers": bn_layers(model)}
