"""Hidden-unit patterns of fully connected nets, in input space.

Two patterns for every unit of a ``Linear`` or activation layer:

* ``weights``: the unit's incoming weights composed back to the pixels through every earlier
  ``Linear`` layer (activations and biases skipped): row ``j`` of ``W_l ... W_1``. Signed.
* ``backprojected``: the input the analytic pseudoinverse returns (closest to the data when the
  model knows its data, else minimum norm) when the layer's activity is that of the reference
  input with unit ``j`` raised (to ``level`` for sigmoid/tanh units,
  by ``level`` otherwise): the activity run back through the inverse activations. In input range.

The pattern of a set of activities is the activity-weighted sum of the weight patterns
(``weights``) or the pseudoinverse input of the whole activity vector (``backprojected``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from netinvert.domains.sets import Ball, Box
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.result import Item, Result, npy_bytes
from netinvert.methods import invert
from netinvert.models.wrapper import Model
from netinvert.solvers.network.chain import Chain, input_bounds, layer_position, layer_value, read_chain
from netinvert.targets.activations import Activations

PATTERNS = ("weights", "backprojected")


def _projection(chain: Chain, stage: int) -> np.ndarray:
    m = chain.stages[0].weight
    for s in range(1, stage + 1):
        m = chain.stages[s].weight @ m
    return m


def _check(pattern: str) -> None:
    if pattern not in PATTERNS:
        raise NetinvertError(f"pattern {pattern!r} is unknown: use one of {choices(PATTERNS)}")


def unit_patterns(model: Model, layer: str, pattern: str = "weights", *, level: float | None = None,
                  domain: Box | Ball | None = None, metric: str | None = None) -> torch.Tensor:
    """One input-space pattern per unit of ``layer``: a tensor (units, *input_shape).

    ``metric`` (``backprojected`` only) picks the input as in
    :func:`netinvert.methods.analytic.solve_layerwise`.
    """
    _check(pattern)
    chain = _fully_connected(model)
    stage, where = layer_position(model, chain, layer)
    shape = model.input_spec.shape
    if pattern == "weights":
        return torch.from_numpy(_projection(chain, stage)).float().reshape(-1, *shape)
    lo, hi = input_bounds(model, domain)
    x_ref = np.clip(chain.ref, lo, hi)
    z_rest, a_rest = chain.activations(x_ref)[stage]
    rest = a_rest if where == "post" else z_rest
    act = chain.stages[stage].act if where == "post" else "identity"
    targets = []
    for j in range(rest.size):
        value = rest.copy()
        if act in ("sigmoid", "tanh"):
            value[j] = 0.9 if level is None else level
        else:
            value[j] = rest[j] + (1.0 if level is None else level)
        targets.append(Activations(layer, torch.from_numpy(value)))
    return _backprojected(model, targets, domain, metric)


def activity_pattern(model: Model, layer: str, activities: torch.Tensor | np.ndarray | Sequence[float],
                     pattern: str = "weights", *, domain: Box | Ball | None = None,
                     metric: str | None = None) -> torch.Tensor:
    """The input-space pattern (*input_shape) of a whole activity vector of ``layer``."""
    _check(pattern)
    chain = _fully_connected(model)
    position = layer_position(model, chain, layer)
    v = layer_value(activities, chain, position, layer)
    if pattern == "backprojected":
        return _backprojected(model, [Activations(layer, torch.from_numpy(v))], domain, metric)[0]
    return torch.from_numpy(v @ _projection(chain, position[0])).float().reshape(model.input_spec.shape)


def _backprojected(model: Model, targets: list[Activations], domain: Box | Ball | None,
                   metric: str | None) -> torch.Tensor:
    """The analytic pseudoinverse's input for each target, one row each (float32, like the method's inputs)."""
    return invert(model, targets, domain, method="analytic", metric=metric).inputs.float()


def for_display(patterns: torch.Tensor) -> torch.Tensor:
    """Signed patterns mapped to [0, 1] per pattern, 0.5 meaning zero (for a contact sheet)."""
    flat = patterns.reshape(patterns.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12).reshape(-1, *([1] * (patterns.dim() - 1)))
    return 0.5 + 0.5 * patterns / scale


def _fully_connected(model: Model) -> Chain:
    """The model as a chain of Linear layers and elementwise activations, or an error saying patterns need one."""
    try:
        return read_chain(model)
    except NetinvertError as exc:
        raise NetinvertError(f"hidden-unit patterns need a fully connected network (Linear layers and elementwise "
                             f"activations), and {model.name} is not one ({exc}); for convolutional units use "
                             "`netinvert atlas`") from None


def patterns_result(model: Model, layer: str, pattern: str = "weights") -> Result:
    """Every unit's pattern as a :class:`Result`: one item per unit, inputs ready to show (signed weight patterns
    mapped to [0, 1] around 0.5), the raw patterns in its file ``patterns.npy``."""
    found = unit_patterns(model, layer, pattern)
    shown = for_display(found) if pattern == "weights" else found
    with torch.no_grad():
        outputs = model(found) if pattern == "backprojected" else torch.empty(0)
    flat = found.reshape(found.shape[0], -1)
    items = [Item(f"{layer}:{j}", "found", metrics={"unit": j, "norm": float(flat[j].norm())})
             for j in range(found.shape[0])]
    value_range = (0.0, 1.0) if pattern == "weights" else (model.input_spec.low, model.input_spec.high)
    result = Result(method="patterns", model=model.name, inputs=shown, outputs=outputs, items=items,
                    info={"layer": layer, "patterns": pattern, "units": int(found.shape[0]),
                          "input_shape": list(model.input_spec.shape), "options": {"layer": layer, "pattern": pattern}},
                    labels=[item.target for item in items], value_range=value_range, kind="patterns",
                    files={"patterns.npy": npy_bytes(found)})
    return result
