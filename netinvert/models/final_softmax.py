"""Networks that end in a softmax: find that layer so methods optimize the logits before it.

A classifier exported with its softmax (``nn.Softmax``, ``nn.LogSoftmax``, ONNX ``Softmax`` /
``LogSoftmax``) returns probabilities. Maximizing those as if they were logits both reports the
wrong probability (the softmax of probabilities) and starves the optimizer (the gradient of a
saturated softmax vanishes), so the model's output is taken at the softmax's input instead.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

SOFTMAX_TYPES = ("Softmax", "LogSoftmax")
log = logging.getLogger(__name__)


def layer_type(module: nn.Module) -> str:
    """The layer's type: the ONNX op type for imported graphs, else the class name."""
    return str(getattr(module, "op_type", type(module).__name__))


def find_final_softmax(module: nn.Module, example: torch.Tensor) -> str | None:
    """The name of the softmax layer whose output is the network's output, or ``None``."""
    outputs: dict[str, Any] = {}
    handles = []
    try:
        for name, layer in module.named_modules():
            if name and layer_type(layer) in SOFTMAX_TYPES and not isinstance(layer, torch.jit.ScriptModule):
                handles.append(layer.register_forward_hook(
                    lambda _m, _i, out, name=name: outputs.__setitem__(name, out)))
        if not handles:
            return None
        with torch.no_grad():
            result = module(example)
    finally:
        for handle in handles:
            handle.remove()
    return next((name for name, value in outputs.items() if value is result), None)


def looks_like_probabilities(outputs: torch.Tensor) -> bool:
    """True when every row is non-negative and sums to one (a softmax the hooks could not see)."""
    flat = outputs.reshape(outputs.shape[0], -1)
    return flat.shape[1] > 1 and bool((flat >= 0).all()) and bool(torch.allclose(flat.sum(1), torch.ones(1),
                                                                                  atol=1e-4))
