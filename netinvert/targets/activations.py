"""``Activations(layer, value)``: make a hidden layer reproduce given activations (feature inversion).

The objective is minus the per-item mismatch, so maximizing it matches the activations:
``mse`` is the squared error normalized by the target's squared norm (scale-free, 0 at a
perfect match); ``cosine`` is ``1 - cos`` between the flattened activations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.base import Acts, Target

METRICS = ("mse", "cosine")
_EPS = 1e-12


@dataclass(frozen=True, eq=False)
class Activations(Target):
    """Match ``value`` (the layer's activation for one input, with or without a batch axis of 1)."""

    layer: str
    value: torch.Tensor
    metric: str = "mse"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise NetinvertError(f"unknown activation metric {self.metric!r}: use one of {choices(METRICS)}")
        if not isinstance(self.value, torch.Tensor):
            raise NetinvertError(f"activations for {self.layer!r} must be a tensor, not {type(self.value).__name__}")

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"activations {self.layer}[{self.value.numel()}]"

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def error(self, acts: Acts) -> torch.Tensor:
        """Per-item mismatch (>= 0): normalized squared error or ``1 - cos``."""
        return _mismatch(acts, self.layer, self.value.reshape(1, -1), self.metric)

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        return -self.error(acts)

    @staticmethod
    def batched(targets: list[Activations]) -> Callable[[torch.Tensor, Acts], torch.Tensor] | None:
        """One objective for a batch (row i serves target i) when all read one layer with one metric."""
        first = targets[0]
        if any(t.layer != first.layer or t.metric != first.metric or t.value.numel() != first.value.numel()
               for t in targets):
            return None
        values = torch.stack([t.value.reshape(-1) for t in targets])
        return lambda outputs, acts: -_mismatch(acts, first.layer, values, first.metric)


def _mismatch(acts: Acts, layer: str, values: torch.Tensor, metric: str) -> torch.Tensor:
    """Row-wise mismatch between the layer's activations and ``values`` (1 or B rows, flattened)."""
    if layer not in acts:
        raise NetinvertError(f"layer {layer!r} produced no activation in the forward pass")
    a = acts[layer]
    flat = a.reshape(a.shape[0], -1)
    v = values.to(dtype=flat.dtype, device=flat.device)
    if flat.shape[1] != v.shape[1]:
        raise NetinvertError(
            f"target activations have {v.shape[1]} values but layer {layer!r} has "
            f"{flat.shape[1]} (shape {tuple(a.shape[1:])}): give activations of that layer"
        )
    if metric == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(flat, v.expand_as(flat), dim=1, eps=1e-8)
    return (flat - v).pow(2).sum(1) / v.pow(2).sum(1).clamp_min(_EPS)


def layer_shape(model: Model, layer: str) -> tuple[int, ...]:
    """The output shape of ``layer`` (no batch axis); clear errors for unknown or tensor-less layers."""
    model.get_layer(layer)
    shape = model.layer_shapes().get(layer)
    if shape is None:
        raise NetinvertError(f"layer {layer!r} of {model.name} produces no tensor; choose another layer")
    return shape


@torch.no_grad()
def capture_activations(model: Model, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """The activations of ``layer`` for a batch of inputs (B, *layer shape)."""
    _, acts = model.capture(inputs, (layer,))
    if layer not in acts:
        raise NetinvertError(f"layer {layer!r} produced no activation in the forward pass")
    return acts[layer].detach().clone()


def targets_for(model: Model, layer: str, values: torch.Tensor, metric: str = "mse") -> list[Activations]:
    """One ``Activations`` target per row of ``values`` (B, *layer shape), checked against the layer."""
    shape = layer_shape(model, layer)
    values = torch.as_tensor(values, dtype=torch.float32)
    expected = int(np.prod(shape))
    if values.dim() == 0 or values[0].numel() != expected:
        raise NetinvertError(
            f"activations of shape {tuple(values.shape)} do not fit layer {layer!r} of {model.name}, "
            f"whose output is {shape}: give (N, {', '.join(map(str, shape))}) values of that layer"
        )
    return [Activations(layer, row.reshape(shape), metric) for row in values]


def load_activations(path: str, model: Model, layer: str) -> torch.Tensor:
    """Read an ``.npy`` file of activations for ``layer`` (one item or a batch) as (N, *layer shape)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NetinvertError(f"cannot read activations from {path}: {exc}; give an .npy file") from exc
    shape = layer_shape(model, layer)
    n = int(np.prod(shape))
    fits = array.shape == shape or array.shape[1:] == shape or array.shape == (n,) or (
        array.ndim == 2 and array.shape[1] == n)
    if not fits or array.size == 0:
        raise NetinvertError(
            f"{path} holds activations of shape {array.shape}, but layer {layer!r} of {model.name} outputs "
            f"{shape}: give an array of shape {shape} or (N, {', '.join(map(str, shape))})"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise NetinvertError(f"{path} holds {array.dtype} values; give numbers")
    return torch.from_numpy(array.astype(np.float32).reshape(-1, *shape))


def activation_targets(targets: Target | list[Target]) -> list[Activations]:
    """The targets as a list of ``Activations`` (inversion methods take no other kind)."""
    items = [targets] if isinstance(targets, Target) else list(targets)
    if not items:
        raise NetinvertError("no targets given: pass at least one Activations target")
    for t in items:
        if not isinstance(t, Activations):
            raise NetinvertError(f"{t!r} is not an Activations target: inversion methods match layer activations")
    return items  # type: ignore[return-value]


def add_errors(result: Result, targets: list[Activations]) -> Result:
    """Add each item's ``activation_error`` (the target's mismatch, >= 0) to its metrics."""
    for item in result.items:
        value = item.metrics.get("objective")
        if value is not None:
            item.metrics["activation_error"] = -float(value)  # type: ignore[arg-type]
    result.labels = [f"{t.layer} #{i}" for i, t in enumerate(targets)]
    return result
