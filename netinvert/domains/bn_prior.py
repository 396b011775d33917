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

from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target

DEFAULT_WEIGHT = 10.0
FIRST_LAYER_WEIGHT = 10.0
Penalty = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def bn_layers(model: Model) -> list[str]:
    """Names of the BatchNorm layers with running statistics (torch modules or ONNX nodes), in module order."""
    return [name for name, m in model.module.named_modules() if name and _kind(m) in ("torch", "onnx")]


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, torch.jit.ScriptModule):
        return "script" if getattr(m, "original_name", "").startswith("BatchNorm") else None
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None:
        return "torch"
    if getattr(m, "op_type", None) == "BatchNormalization" and callable(getattr(m, "attr", None)):
        return "onnx"
    return None


def _script_only(model: Model) -> bool:
    """True when the model has BatchNorm layers that hooks cannot see (inside TorchScript)."""
    return not bn_layers(model) and any(_kind(m) == "script" for m in model.module.modules())


_SCRIPT_NOTE = ("the BN prior cannot run on TorchScript models (hooks do not fire inside compiled code); "
                "load a state dict with --arch, or an ONNX file, to use it")


def resolve_weight(weight: float | None, model: Model, targets: Sequence[Target] = ()) -> float:
    """The prior's weight: ``weight`` as given; for ``None``, ``DEFAULT_WEIGHT`` when the model has BN layers
    and no target reads a hidden layer (a unit's own activation statistics are what the prior pins down,
    so it would flatten unit visualizations), else 0."""
    if weight is None:
        return DEFAULT_WEIGHT if bn_layers(model) and not any(t.layers for t in targets) else 0.0
    if weight < 0:
        raise NetinvertError(f"BN prior weight {weight} must be >= 0 (0 switches it off)")
    return float(weight)


def _layer_distance(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Per-item distance of ``x``'s channel statistics to running ``mean``/``var`` (eps included), in stds."""
    mean, var = mean.to(x.dtype).reshape(-1), var.to(x.dtype).reshape(-1)
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


Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _stats(m: nn.Module, args: tuple[Any, ...]) -> Stats:
    """(input, running mean, running variance + eps) of one BN call, from a torch module or an ONNX node."""
    if _kind(m) == "onnx":
        eps = float(m.attr("epsilon", 1e-5))  # type: ignore[operator]
        return args[0], args[3], args[4] + eps
    return args[0], m.running_mean, m.running_var + m.eps  # type: ignore[operator,return-value]


@contextmanager
def _bn_inputs(model: Model, names: list[str]) -> Iterator[dict[str, Stats]]:
    """Record each named BN layer's input and running statistics while the block runs; hooks always come off."""
    store: dict[str, Stats] = {}
    handles = []
    try:
        for name in names:

            def hook(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                store[name] = _stats(m, args)

            handles.append(model.get_layer(name).register_forward_pre_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def _weighted_distance(store: dict[str, Stats], names: list[str], first_weight: float) -> torch.Tensor:
    weights = _layer_weights(names, first_weight)
    total = None
    for w, name in zip(weights, names, strict=True):
        if name not in store:
            raise NetinvertError(f"BatchNorm layer {name!r} did not run in the forward pass; pass bn_prior=0")
        d = w * _layer_distance(*store[name])
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
            why = _SCRIPT_NOTE if _script_only(model) else "it has no BatchNorm layers with running statistics"
            raise NetinvertError(f"cannot use the BN prior on {model.name}: {why}; or pass bn_prior=0")
        yield []
        return
    with _bn_inputs(model, names) as store:

        def penalty(x: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
            return w * _weighted_distance(store, names, first_weight)

        yield [penalty]


@torch.no_grad()
def bn_distance(model: Model, inputs: torch.Tensor, first_weight: float = FIRST_LAYER_WEIGHT) -> torch.Tensor:
    """Per-item BN-statistics distance of ``inputs`` (the quantity the prior lowers); zeros without BN."""
    names = bn_layers(model)
    if not names:
        return inputs.new_zeros(inputs.shape[0])
    with _bn_inputs(model, names) as store:
        model(inputs)
        return _weighted_distance(store, names, first_weight)


def annotate(result: Result, model: Model, weight: float | None, targets: Sequence[Target] = ()) -> None:
    """On a model with BN layers: each item's ``bn_distance`` and the prior's weight in ``result.info``."""
    if _script_only(model):
        result.info["bn_prior"] = {"weight": 0.0, "note": _SCRIPT_NOTE}
    if not bn_layers(model):
        return
    values = bn_distance(model, result.inputs)
    for item, value in zip(result.items, values.tolist(), strict=True):
        item.metrics["bn_distance"] = value
    result.info["bn_prior"] = {"weight": resolve_weight(weight, model, targets),
                               "first_layer_weight": FIRST_LAYER_WEIGHT, "layers": bn_layers(model)}
