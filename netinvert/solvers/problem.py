"""A model, a domain and a target as the problem the exact solvers take.

The solvers work on a network (a ``GraphNet``, whose small feed-forward chains carry their dense
form), a flat float64 input box and an ``OutputSet``; every candidate input is re-checked on the original
network by a ``Checker`` and accepted (``accept``) only when it reaches the set in float32 and float64. This
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
from netinvert.solvers.network.onnx import graph_from_onnx
from netinvert.solvers.network.read import choose_network, from_torch, input_affine, normalized
from netinvert.targets.output_set import OutputSet
from netinvert.targets.regression import Regression
from netinvert.targets.units import Class

Checker = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # flat inputs -> (float32 outputs, float64 outputs)
Found = tuple[np.ndarray, np.ndarray, float]  # a found input in float32, its float64 outputs, its margin
STRICT = 1e-6  # a found input must satisfy A y <= b - STRICT in float32 and float64


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


def joined(net: GraphNet, check: Checker, target: OutputSet) -> tuple[GraphNet, Checker, OutputSet]:
    """The problem of a set whose rows read the input too (``target.num_inputs`` > 0): the network with
    its flat input appended to its outputs, the re-check likewise, and the set over both.
    Any other set comes back as it is."""
    if not target.num_inputs:
        return net, check, target
    if target.num_inputs != net.num_inputs:
        raise NetinvertError(f"output set reads {target.num_inputs} inputs but {net.name} has {net.num_inputs}")

    def check_joined(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y32, y64 = check(x)
        flat = np.asarray(x, dtype=np.float64).reshape(len(y32), -1)
        return np.hstack([y32, flat]), np.hstack([y64, flat])

    return net.with_inputs(), check_joined, target.joined()


def network_of(model: Model) -> GraphNet:
    """The network of ``model`` in the form the solvers take (``choose_network``), input normalization
    folded into it. An ONNX model's network comes from the graph it carries and is kept in
    ``model.info`` (a model loaded from a file does not change); any other model's is read from its
    module each time."""
    spec = model.input_spec
    if not isinstance(model.module, OnnxModule):
        return from_torch(model.module, spec.shape, mean=spec.mean, std=spec.std, name=model.name)
    if "network" not in model.info:
        net = graph_from_onnx(model.module)
        n = int(np.prod(spec.shape))
        if net.num_inputs != n:
            raise NetinvertError(f"{model.module.source} takes {net.num_inputs} inputs but the model's input shape "
                                 f"{spec.shape} has {n}")
        model.info["network"] = choose_network(normalized(net, input_affine(spec.shape, spec.mean, spec.std)))
    return model.info["network"]


def checker_of(model: Model, net: GraphNet) -> Checker:
    """The re-check of candidate inputs: onnxruntime for ONNX models, the module itself otherwise."""
    if isinstance(model.module, OnnxModule):
        spec = model.input_spec
        return onnx_checker(model.module, net, input_affine(spec.shape, spec.mean, spec.std))
    return torch_checker(model, model.input_spec.shape)


def onnx_checker(module: OnnxModule, net: GraphNet, affine: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> Checker:
    """Re-check with onnxruntime on the module's graph (float32) and the float64 evaluation of ``net``.

    ``affine`` is the model's input normalization (``input_affine``: the graph takes normalized inputs).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(module.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]

    def check(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fed = x if affine is None else x * affine[0] + affine[1]
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


def stacked_rows(target: OutputSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every disjunct's rows ``A y <= b`` stacked, and the disjunct each row belongs to."""
    rows_a = np.vstack([a for a, _ in target.disjuncts])
    rows_b = np.concatenate([b for _, b in target.disjuncts])
    owner = np.concatenate([[i] * a.shape[0] for i, (a, _) in enumerate(target.disjuncts)])
    return rows_a, rows_b, owner


def point_test(net: GraphNet, one: OutputSet) -> Callable[[np.ndarray], np.ndarray]:
    """Which inputs (rows of ``xs``) reach the single-disjunct set ``one`` with the strict margin."""
    return lambda xs: one.violations(net.forward(xs)) <= -STRICT


def float32_in_box(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Round to float32 without leaving the box (a float32 value may round past a float64 bound)."""
    x32 = np.clip(x, lo, hi).astype(np.float32)
    over = x32.astype(np.float64) > hi
    x32[over] = np.nextafter(x32[over], np.float32(-np.inf))
    under = x32.astype(np.float64) < lo
    x32[under] = np.nextafter(x32[under], np.float32(np.inf))
    return x32


def accept(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: OutputSet, check: Checker
) -> Found | None:
    """The float32 input, its float64 outputs and margin when it satisfies ``target`` in both precisions."""
    x32 = float32_in_box(x, lo, hi)
    if np.any(x32 < lo) or np.any(x32 > hi):
        return None
    y32, y64 = check(x32[None].astype(np.float64))
    v = max(float(target.violations(y32)[0]), float(target.violations(y64)[0]))
    if v <= -STRICT:
        return x32, y64[0], -v
    return None
