"""The solvers' network of a module or an ONNX file: read as a graph, input normalization folded in,
and a small feed-forward chain composed into its dense form (``choose_network``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from netinvert.models.onnx import load_onnx
from netinvert.solvers.network.fx import graph_from_torch
from netinvert.solvers.network.graph import DENSE_ACTIVATIONS, GraphNet
from netinvert.solvers.network.onnx import graph_from_onnx

DENSE_LIMIT = 5e6  # chains whose dense matrices need more entries than this keep their graph form


def choose_network(net: GraphNet) -> GraphNet:
    """The form the solvers take: a feed-forward chain whose dense matrices need at most ``DENSE_LIMIT``
    entries composed into its dense chain (the fast path: dense bounds, ReLU branch-and-bound, sign
    refinement, the MILP, neuron splitting), any other graph as it is (also chains with sin, cos or
    powers, which the dense chain lacks)."""
    if net.is_chain() and net.dense_cost() <= DENSE_LIMIT and set(net.activations) <= set(DENSE_ACTIVATIONS):
        return net.composed()
    return net


def input_affine(shape: tuple[int, ...], mean: tuple[float, ...] | None, std: tuple[float, ...] | None
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Flat ``1 / std`` and ``-mean / std`` of an input normalization (per channel for (C, H, W)
    inputs), or None without one."""
    if not (mean or std):
        return None
    n = int(np.prod(shape))
    channels = shape[0] if len(shape) == 3 else 1
    m = np.broadcast_to(np.asarray(mean or (0.0,), dtype=np.float64), (channels,))
    s = np.broadcast_to(np.asarray(std or (1.0,), dtype=np.float64), (channels,))
    return np.repeat(1.0 / s, n // channels), np.repeat(-m / s, n // channels)


def normalized(net: GraphNet, affine: tuple[np.ndarray, np.ndarray] | None) -> GraphNet:
    """The network applied to normalized inputs (``input_affine``), or as it is without one."""
    return net if affine is None else net.with_input_affine(*affine)


def from_torch(module: nn.Module, input_shape: tuple[int, ...], *, mean: tuple[float, ...] | None = None,
               std: tuple[float, ...] | None = None, name: str = "model") -> GraphNet:
    """The solvers' network of a module (per-item ``input_shape``; ``mean``/``std`` folded into it)."""
    graph = graph_from_torch(module, input_shape, name=name)
    return choose_network(normalized(graph, input_affine(tuple(input_shape), mean, std)))


def from_onnx(path: str | Path) -> GraphNet:
    """The solvers' network of an ONNX file (read by ``models/onnx``, the one parser of ONNX)."""
    return choose_network(graph_from_onnx(load_onnx(path)))
