"""Check targets against a model before a run: class names to indices, layers and unit indices in range."""

from __future__ import annotations

from dataclasses import replace

import torch

from netinvert.ground.errors import NetinvertError
from netinvert.models.wrapper import Model
from netinvert.targets.base import Product, Sum, Target
from netinvert.targets.units import Channel, Class, Neuron


def resolve(target: Target, model: Model) -> Target:
    """A copy of ``target`` with class names resolved and every layer/unit checked (clear errors)."""
    if isinstance(target, Sum):
        return Sum(tuple((w, resolve(t, model)) for w, t in target.terms))
    if isinstance(target, Product):
        return Product(resolve(target.left, model), resolve(target.right, model))
    if isinstance(target, Class):
        k = model.class_index(target.index)
        return replace(target, index=k, name=model.class_label(k), output_activation=model.output_activation)
    for layer in target.layers:
        if isinstance(model.get_layer(layer), torch.jit.ScriptModule):
            raise NetinvertError(f"TorchScript models take output targets only (a class, an output set): layer "
                                 f"{layer!r} is compiled and cannot be observed; for hidden-layer targets load a "
                                 "state dict with --arch or an ONNX export")
    if isinstance(target, (Neuron, Channel)):
        shape = model.layer_shapes().get(target.layer)
        if shape is None:
            raise NetinvertError(f"layer {target.layer!r} produced no tensor output; choose another layer")
        count = shape[0] if isinstance(target, Channel) or len(shape) == 3 else _numel(shape)
        what = "channel" if isinstance(target, Channel) or len(shape) == 3 else "neuron"
        if not 0 <= target.index < count:
            raise NetinvertError(
                f"{what} index {target.index} is out of range for layer {target.layer!r} "
                f"(output shape {shape}): use 0..{count - 1}"
            )
    return target


def resolve_all(targets: Target | list[Target], model: Model) -> list[Target]:
    items = [targets] if isinstance(targets, Target) else list(targets)
    if not items:
        raise NetinvertError("no targets given: pass at least one target")
    for t in items:
        if not isinstance(t, Target):
            raise NetinvertError(f"{t!r} is not a target: use Class, Neuron, Channel, Layer, Direction, ...")
    return [resolve(t, model) for t in items]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
