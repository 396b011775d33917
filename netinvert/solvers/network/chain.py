"""A fully connected model read as a chain of stages: an affine map followed by an element-wise activation.

The reader accepts ``Linear`` layers and the activations that can be inverted (sigmoid, tanh,
ReLU, leaky ReLU, identity); ``Flatten``/``Identity``/``Dropout`` are no-ops and ``AppendBias``
is a fixed input feature equal to 1. The input normalization is folded into the first stage, and
the chain is checked against the model's own forward. The analytic method inverts this chain and
the unit patterns project through it.

It is not the exact solvers' network (``graph.py``, whose dense chain composes every stretch between
activations): it keeps the model's own named layers (a target names one: ``positions``), each
``Linear`` its own stage (consecutive ones get an identity activation between them, never composed),
a leaky ReLU as one invertible activation (the graph writes it as a ReLU and a skip) and an
activation after the last layer, all of which inverting stage by stage needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from netinvert.domains.sets import Ball, Box
from netinvert.ground.errors import NetinvertError, choices
from netinvert.models.wrapper import Model

_SUPPORTED = "Linear, Sigmoid, Tanh, ReLU, LeakyReLU, Identity, Flatten, Dropout and AppendBias"
_ACTIVATIONS = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu"}
_NOOPS = (nn.Identity, nn.Dropout, nn.Flatten)
RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, math.inf)}
EPS = 1e-6  # hidden sigmoid/tanh targets stay this far inside the open range (|logit| <= 13.8)


@dataclass
class AffineStage:
    """One affine map of the previous stage's output (or the raw input) followed by an activation."""

    linear: str
    act_name: str
    act: str
    weight: np.ndarray
    bias: np.ndarray
    slope: float = 0.0

    def activate(self, z: np.ndarray) -> np.ndarray:
        if self.act == "sigmoid":
            return 1.0 / (1.0 + np.exp(-z))
        if self.act == "tanh":
            return np.tanh(z)
        if self.act == "relu":
            return np.maximum(z, 0.0)
        if self.act == "leaky_relu":
            return np.where(z >= 0, z, self.slope * z)
        return z

    def gain(self, z: np.ndarray) -> np.ndarray:
        """d activation / d pre-activation at ``z``."""
        if self.act == "sigmoid":
            a = self.activate(z)
            return a * (1.0 - a)
        if self.act == "tanh":
            return 1.0 - np.tanh(z) ** 2
        if self.act == "relu":
            return (z > 0).astype(np.float64)
        if self.act == "leaky_relu":
            return np.where(z >= 0, 1.0, self.slope)
        return np.ones_like(z)


@dataclass
class Chain:
    """The stages in order, where each named layer sits, and the input's reference point."""

    stages: list[AffineStage]
    positions: dict[str, tuple[int, str]]  # layer name -> (stage, "pre" | "post")
    ref: np.ndarray  # raw input whose normalized value is 0: the input layer's reference point

    def forward(self, x: np.ndarray, upto: tuple[int, str] | None = None) -> np.ndarray:
        """Float64 forward of raw flattened inputs (rows), up to a position (default: the output)."""
        s_end, where = upto or (len(self.stages) - 1, "post")
        h = x
        for i, st in enumerate(self.stages[: s_end + 1]):
            z = h @ st.weight.T + st.bias
            h = z if (i == s_end and where == "pre") else st.activate(z)
        return h

    def activations(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(pre-activation, activation) of every stage for one raw flattened input."""
        out, h = [], x
        for st in self.stages:
            z = st.weight @ h + st.bias
            h = st.activate(z)
            out.append((z, h))
        return out

    def bounds(self, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Interval bounds of every stage's output over the input box (sound, exact for the first stage).

        Open ranges are shrunk by ``EPS`` so that sigmoid and tanh targets keep finite logits.
        """
        out = []
        for st in self.stages:
            w_pos, w_neg = np.maximum(st.weight, 0), np.minimum(st.weight, 0)
            with np.errstate(invalid="ignore"):
                z_lo = np.nan_to_num(w_pos @ lo + w_neg @ hi, nan=-np.inf) + st.bias
                z_hi = np.nan_to_num(w_pos @ hi + w_neg @ lo, nan=np.inf) + st.bias
            lo, hi = st.activate(z_lo), st.activate(z_hi)
            if st.act in RANGES and st.act != "relu":
                r_lo, r_hi = RANGES[st.act]
                lo, hi = np.clip(lo, r_lo + EPS, r_hi - EPS), np.clip(hi, r_lo + EPS, r_hi - EPS)
            out.append((lo, hi))
        return out


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            out.extend(_leaves(child, path))
        else:
            out.append((path, child))
    return out


def _appends_constant(module: nn.Module) -> bool:
    return type(module).__name__ == "AppendBias" or getattr(module, "appends_constant", None) == 1.0


def read_chain(model: Model) -> Chain:
    """Read ``model`` as a chain of stages; raise naming the first layer that is not supported."""
    spec = model.input_spec
    dim = int(np.prod(spec.shape))
    mean, std = _normalization(model, dim)
    module = model.module
    leaves = _leaves(module) if list(module.children()) else [("(model)", module)]
    stages: list[AffineStage] = []
    positions: dict[str, tuple[int, str]] = {}
    # pending affine map from the last anchor (input or previous stage output): v -> [scale*v + shift, 1...]
    scale, shift, appended, width = 1.0 / std, -mean / std, 0, dim
    flat = len(spec.shape) == 1
    pending_linear: tuple[str, np.ndarray, np.ndarray] | None = None

    def close(act_name: str, act: str, slope: float = 0.0) -> None:
        nonlocal scale, shift, appended, pending_linear
        if pending_linear is None:
            name = act_name
            weight, bias = np.diag(np.broadcast_to(scale, (width,)).astype(np.float64)), np.asarray(shift) * np.ones(width)
            if appended:
                raise NetinvertError(f"analytic cannot read layer {act_name!r}: a constant feature is appended "
                                     "right before an activation")
        else:
            name, weight, bias = pending_linear
        stages.append(AffineStage(name, act_name, act, weight, bias, slope))
        if pending_linear is not None:
            positions[name] = (len(stages) - 1, "pre")
        if act_name:
            positions[act_name] = (len(stages) - 1, "post")
        scale, shift, appended, pending_linear = np.ones(weight.shape[0]), np.zeros(weight.shape[0]), 0, None

    for name, leaf in leaves:
        if isinstance(leaf, nn.Linear):
            if pending_linear is not None:
                close("", "identity")
            if not flat and not stages:
                raise NetinvertError(f"analytic: layer {name!r} (Linear) sees a {len(spec.shape)}-d input: "
                                     "add nn.Flatten() before it")
            w = leaf.weight.detach().double().cpu().numpy()
            b = leaf.bias.detach().double().cpu().numpy() if leaf.bias is not None else np.zeros(w.shape[0])
            n = w.shape[1] - appended
            if n != (stages[-1].weight.shape[0] if stages else dim):
                raise NetinvertError(f"analytic: layer {name!r} expects {w.shape[1]} inputs but receives "
                                     f"{(stages[-1].weight.shape[0] if stages else dim) + appended}")
            weight = w[:, :n] * scale
            bias = w[:, :n] @ (np.ones(n) * shift) + w[:, n:].sum(axis=1) + b
            pending_linear = (name, weight, bias)
        elif type(leaf) in _ACTIVATIONS:
            slope = float(getattr(leaf, "negative_slope", 0.0))
            if type(leaf) is nn.LeakyReLU and slope <= 0:
                raise NetinvertError(f"analytic: layer {name!r} is a LeakyReLU with slope {slope}; need slope > 0")
            if not stages and pending_linear is None:
                width = dim
            elif pending_linear is None:
                width = stages[-1].weight.shape[0]
            close(name, _ACTIVATIONS[type(leaf)], slope)
        elif _appends_constant(leaf):
            appended += 1
        elif isinstance(leaf, _NOOPS):
            if isinstance(leaf, nn.Flatten):
                if leaf.start_dim != 1 or leaf.end_dim != -1:
                    raise NetinvertError(f"analytic: layer {name!r} flattens dims {leaf.start_dim}..{leaf.end_dim};"
                                         " only Flatten(1, -1) is supported")
                if not stages and pending_linear is None:
                    flat = True
        else:
            raise NetinvertError(
                f"analytic cannot invert layer {name!r} ({type(leaf).__name__}): it supports {_SUPPORTED}; "
                "use method gradient or exact for this model"
            )
    if pending_linear is not None:
        close("", "identity")
    if appended or not stages:
        raise NetinvertError(f"analytic found no Linear layer to invert in {model.name}: it supports {_SUPPORTED}")
    chain = Chain(stages, positions, mean)
    _check_chain(model, chain)
    return chain


def _normalization(model: Model, dim: int) -> tuple[np.ndarray, np.ndarray]:
    spec = model.input_spec
    if model.normalize is None:
        return np.zeros(dim), np.ones(dim)
    shape = spec.shape
    mean = model.normalize.mean.double().cpu().numpy()
    std = model.normalize.std.double().cpu().numpy()
    full = (1, *shape)
    return np.broadcast_to(mean, full).reshape(-1).copy(), np.broadcast_to(std, full).reshape(-1).copy()


def _check_chain(model: Model, chain: Chain) -> None:
    """The chain read from the module list must compute what the model computes."""
    g = torch.Generator().manual_seed(0)
    spec = model.input_spec
    x = spec.low + (spec.high - spec.low) * torch.rand((3, *spec.shape), generator=g)
    with torch.no_grad():
        out = model(x.to(model._dtype())).double().reshape(3, -1).cpu().numpy()
    mine = chain.forward(x.double().reshape(3, -1).numpy())
    if mine.shape != out.shape or not np.allclose(mine, out, rtol=1e-3, atol=1e-3 * (1 + np.abs(out).max())):
        raise NetinvertError(
            f"analytic read {model.name} as a chain of layers but it computes something else "
            "(its forward is not the order of its submodules): wrap the layers in an nn.Sequential"
        )


def input_bounds(model: Model, domain: Box | Ball | None) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 bounds of a box-shaped domain (``None``: the model's input range)."""
    spec = model.input_spec
    if domain is None:
        domain = Box()
    if isinstance(domain, Ball) and domain.p != math.inf:
        raise NetinvertError(f"analytic needs a box-shaped domain; a Ball with p={domain.p} is not one: "
                             "use Box or a Ball with p=inf")
    if not hasattr(domain, "bounds"):
        raise NetinvertError(f"analytic needs a Box or Ball domain, not {type(domain).__name__}")
    lo, hi = domain.bounds(spec)
    return lo.double().reshape(-1).numpy(), hi.double().reshape(-1).numpy()



def layer_position(model: Model, chain: Chain, layer_name: str) -> tuple[int, str]:
    """(stage, ``pre`` or ``post``) of a ``Linear`` or activation layer of the chain."""
    if layer_name not in chain.positions:
        model.get_layer(layer_name)  # unknown names get the wrapper's error listing all layers
        raise NetinvertError(f"analytic can target only Linear and activation layers; {layer_name!r} is neither: "
                             f"choose one of {choices(chain.positions)}")
    return chain.positions[layer_name]


def layer_value(value: torch.Tensor | np.ndarray | Sequence[float], chain: Chain, position: tuple[int, str],
                layer_name: str) -> np.ndarray:
    """``value`` as a flat float64 vector checked against the layer's unit count."""
    v = torch.as_tensor(value).detach().double().reshape(-1).cpu().numpy()
    n = chain.stages[position[0]].weight.shape[0]
    if v.size != n:
        raise NetinvertError(f"target for layer {layer_name!r} has {v.size} values but the layer has {n} units")
    if not np.isfinite(v).all():
        raise NetinvertError(f"target for layer {layer_name!r} has NaN or infinite values")
    return v

