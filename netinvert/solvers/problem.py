"""A model, a domain and a target as the problem the exact solvers take.

The solvers work on a network (the dense chain ``PLNet``, or the ``GraphNet`` of residual,
concatenating and convolutional graphs), a flat float64 input box and an ``OutputSet``; every candidate input is re-checked on the original network by a ``Checker``. This
module derives those from a :class:`~netinvert.models.wrapper.Model`: an ONNX model gives its
network and its onnxruntime re-check from the graph it carries (the file is not read again), any
other model from its module.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from netinvert.domains.domain import Domain
from netinvert.domains.sets import Ball, Box
from netinvert.ground.errors import NetinvertError
from netinvert.models.onnx import OnnxModule
from netinvert.models.wrapper import Model
from netinvert.solvers.network.graph import GraphNet
from netinvert.solvers.network.fx import graph_from_torch
from netinvert.solvers.network.onnx import graph_from_onnx
from netinvert.solvers.network.piecewise import ACTIVATIONS, PLNet, from_onnx_model, from_torch
from netinvert.targets.output_set import OutputSet
from netinvert.targets.regression import Regression
from netinvert.targets.units import Class

Network = PLNet | GraphNet
DENSE_LIMIT = 5e6  # chains whose dense matrices need more entries than this are solved as graphs
Checker = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # flat inputs -> (float32 outputs, float64 outputs)


def box_of(model: Model, domain: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 bounds of a ``Box``, an L-inf ``Ball`` or a ``Domain`` over one of them (None: the input range)."""
    region = domain.region if isinstance(domain, Domain) else (Box() if domain is None else domain)
    if isinstance(region, Ball) and region.p != math.inf:
        raise NetinvertError(
            f"exact methods need a box or an L-inf ball; this ball has p={region.p}: use p=inf or a Box"
        )
    if not isinstance(region, (Box, Ball)):
        raise NetinvertError(f"exact methods need a Box or Ball domain, got {type(region).__name__}")
    lo_t, hi_t = region.bounds(model.input_spec, dtype=torch.float64)
    return lo_t.reshape(-1).numpy(), hi_t.reshape(-1).numpy()


def as_output_set(model: Model, target: Any, num_outputs: int) -> tuple[OutputSet, str]:
    """An ``OutputSet`` and its label from an ``OutputSet``, ``Class(k, margin)`` or ``Regression`` target."""
    if isinstance(target, Class):
        k = model.class_index(target.index)
        return OutputSet.from_class(k, num_outputs, target.margin), f"class {model.class_label(k)} by {target.margin:g}"
    if isinstance(target, Regression):
        return target.output_set(num_outputs), target.description
    if isinstance(target, OutputSet):
        if target.num_outputs != num_outputs:
            raise NetinvertError(f"output set is over {target.num_outputs} outputs but {model.name} has {num_outputs}")
        return target, target.description
    raise NetinvertError(f"exact methods support OutputSet, Class and Regression (with a tolerance) targets, "
                         f"not {type(target).__name__}")


def network_of(model: Model) -> Network:
    """The network of ``model``, input normalization folded into the first layer.

    Feed-forward chains whose dense form is small (``DENSE_LIMIT`` matrix entries) become a
    ``PLNet`` (the fast path: dense layers, ReLU branch-and-bound, MILP); residual adds,
    concatenations, average pooling and large convolutional networks a ``GraphNet``. An ONNX
    model's network comes from the graph it carries and is kept in ``model.info`` (a model loaded
    from a file does not change); any other model's is read from its module each time.
    """
    spec = model.input_spec
    if not isinstance(model.module, OnnxModule):
        module = model.module
        return choose_network(
            lambda: _normalized(model, graph_from_torch(module, spec.shape, name=model.name)),
            lambda: from_torch(module, spec.shape, mean=spec.mean, std=spec.std, name=model.name))
    if "piecewise" not in model.info:
        onnx_module = model.module
        model.info["piecewise"] = choose_network(
            lambda: _normalized(model, _sized(model, graph_from_onnx(onnx_module))),
            lambda: _onnx_network(model, onnx_module))
    return model.info["piecewise"]


def choose_network(graph: Callable[[], GraphNet], chain: Callable[[], PLNet]) -> Network:
    """The dense chain when the network is a small chain (from the chain reader, or composed from
    the graph when only the graph reader reads it, e.g. a custom module's forward; max-pooling only
    the chain reader reads), else the graph (also for chains with activations the dense form lacks:
    sin, cos, powers). When neither reads it, the graph reader's error."""
    try:
        g = graph()
    except NetinvertError as exc:
        try:
            return chain()
        except NetinvertError:
            raise exc from None
    if g.is_chain() and g.dense_cost() <= DENSE_LIMIT and set(g.kinds) <= set(ACTIVATIONS):
        try:
            return chain()
        except NetinvertError:  # a chain the dense reader cannot read (a custom module's forward)
            return g.as_plnet()
    return g


def _sized(model: Model, net: GraphNet) -> GraphNet:
    n = int(np.prod(model.input_spec.shape))
    if net.num_inputs != n:
        raise NetinvertError(f"{net.info.get('source', model.name)} takes {net.num_inputs} inputs but the model's "
                             f"input shape {model.input_spec.shape} has {n}")
    return net


def _normalized(model: Model, net: GraphNet) -> GraphNet:
    scale, shift = _input_affine(model)
    return net if scale is None or shift is None else net.with_input_affine(scale, shift)


def _onnx_network(model: Model, module: OnnxModule) -> PLNet:
    spec = model.input_spec
    net = from_onnx_model(module.proto, module.source)
    n = int(np.prod(spec.shape))
    if net.num_inputs != n:
        raise NetinvertError(
            f"{module.source} takes {net.num_inputs} inputs but the model's input shape {spec.shape} has {n}"
        )
    scale, shift = _input_affine(model)
    return net if scale is None or shift is None else net.with_input_affine(scale, shift)


def _input_affine(model: Model) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Flat ``1 / std`` and ``-mean / std`` of the model's input normalization (None, None without one)."""
    spec = model.input_spec
    if not (spec.mean or spec.std):
        return None, None
    n = int(np.prod(spec.shape))
    channels = spec.shape[0] if len(spec.shape) == 3 else 1
    mean = np.broadcast_to(np.asarray(spec.mean or (0.0,), dtype=np.float64), (channels,))
    std = np.broadcast_to(np.asarray(spec.std or (1.0,), dtype=np.float64), (channels,))
    per = n // channels
    return np.repeat(1.0 / std, per), np.repeat(-mean / std, per)


def checker_of(model: Model, net: Network) -> Checker:
    """The re-check of candidate inputs: onnxruntime for ONNX models, the module itself otherwise."""
    if isinstance(model.module, OnnxModule):
        scale, shift = _input_affine(model)
        return onnx_checker(model.module, net, scale, shift)
    return torch_checker(model, model.input_spec.shape)


def onnx_checker(module: OnnxModule, net: Network, scale: np.ndarray | None = None,
                 shift: np.ndarray | None = None) -> Checker:
    """Re-check with onnxruntime on the module's graph (float32) and the float64 evaluation of ``net``.

    ``scale``/``shift`` are the model's input normalization (the graph takes normalized inputs).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(module.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]

    def check(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fed = x if scale is None or shift is None else x * scale + shift
        y32 = np.stack([sess.run(None, {inp.name: r.astype(np.float32).reshape(shape)})[0].reshape(-1) for r in fed])
        return y32.astype(np.float64), net.forward(x)

    return check


def torch_checker(module: torch.nn.Module, input_shape: tuple[int, ...]) -> Checker:
    """Re-check with the module itself in float32 and in a float64 copy."""
    m64 = copy.deepcopy(module).double().eval()

    def check(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            xt = torch.as_tensor(x).reshape(-1, *input_shape)
            y32 = module(xt.float()).double().reshape(x.shape[0], -1).numpy()
            y64 = m64(xt.double()).reshape(x.shape[0], -1).numpy()
        return y32, y64

    return check
