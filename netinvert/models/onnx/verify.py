"""How each ONNX op becomes nodes of the exact solvers' graph: the verification column of the op table.

Every function takes the solvers' graph builder (``Builder``, implemented by
``solvers/network/build.py``), the ONNX node, its arguments (node ids for values that depend on the
input, tensors for constants) and the node's label for messages; it returns the id of the node it
built (a tuple of ids for ops with several outputs). Ops that only move elements (slices, splits,
transposes, nearest resizing, ...) are read by running the op's own torch function (the loading
column of the table) on its input's element indices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError

if TYPE_CHECKING:
    from netinvert.models.onnx.ops import Node

Pads = tuple[int, int, int, int]  # left, right, top, bottom (F.pad's order)


class Builder(Protocol):
    """The node kinds of the exact solvers' graph; ``i``, ``j`` are node ids, arrays are float64."""

    def shape(self, i: int) -> tuple[int, ...]: ...
    def fail(self, label: str, what: str) -> NetinvertError: ...
    def act(self, i: int, function: str, label: str) -> int: ...
    def linear(self, i: int, w: np.ndarray, b: np.ndarray | None, label: str) -> int: ...
    def conv(self, i: int, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int], pads: Pads,
             dilation: tuple[int, int], groups: int, label: str) -> int: ...
    def convt(self, i: int, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int], pads: Pads,
              dilation: tuple[int, int], groups: int, output_padding: tuple[int, int], label: str) -> int: ...
    def avgpool(self, i: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                include_pad: bool, label: str) -> int: ...
    def maxpool(self, i: int, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads, label: str) -> int: ...
    def scale(self, i: int, s: Any, t: Any, label: str) -> int: ...
    def add2(self, i: int, j: int, sign: float, label: str) -> int: ...
    def concat(self, ins: list[int], axis: int, label: str) -> int: ...
    def reshape(self, i: int, target: list[int], label: str) -> int: ...
    def gather(self, i: int, index: Any, label: str) -> int: ...
    def sum(self, i: int, axes: list[int], keepdims: bool, label: str) -> int: ...
    def mean(self, i: int, axes: list[int], keepdims: bool, label: str) -> int: ...
    def leaky(self, i: int, slope: Any, label: str) -> int: ...
    def power(self, i: int, exponent: Any, label: str) -> int: ...


Build = Any  # the signature of a verification function: (Builder, Node, args, label) -> node id(s)


def _data(args: list[Any]) -> int:
    """The input-dependent argument (the first one that is a node id)."""
    return next(x for x in args if isinstance(x, int))


def _const(b: Builder, args: list[Any], k: int, label: str) -> np.ndarray:
    if k >= len(args) or isinstance(args[k], int) or args[k] is None:
        raise b.fail(label, f"needs a constant argument {k}: only the first argument may depend on the input")
    return args[k].detach().double().cpu().numpy()


def _optional(b: Builder, args: list[Any], k: int, label: str) -> np.ndarray | None:
    return _const(b, args, k, label) if len(args) > k and args[k] is not None else None


def _explicit_pads(b: Builder, n: Node, label: str) -> None:
    if n.attr("auto_pad", "NOTSET") != "NOTSET":
        raise b.fail(label, "uses auto_pad, which is not supported; export with explicit pads")


def _pads(n: Node) -> Pads:
    top, left, bottom, right = tuple(n.attr("pads", [0, 0, 0, 0]))
    return left, right, top, bottom


def identity(b: Builder, n: Node, args: list[Any], label: str) -> int:
    return _data(args)


def activation(function: str) -> Build:
    """The activation node of ``function`` (``relu``, ``sigmoid``, ...)."""

    def build(b: Builder, n: Node, args: list[Any], label: str) -> int:
        if function == "softplus" and n.attrs:
            raise b.fail(label, "has attributes: only Softplus without attributes is supported")
        return b.act(_data(args), function, label)

    return build


def leaky_relu(b: Builder, n: Node, args: list[Any], label: str) -> int:
    return b.leaky(_data(args), float(n.attr("alpha", 0.01)), label)


def prelu(b: Builder, n: Node, args: list[Any], label: str) -> int:
    return b.leaky(_data(args), _const(b, args, 1, label), label)


def gemm(b: Builder, n: Node, args: list[Any], label: str) -> int:
    if not isinstance(args[0], int) or n.attr("transA", 0):
        raise b.fail(label, "is not supported: only Gemm(input, constant weight) without transA")
    w = _const(b, args, 1, label)
    w = float(n.attr("alpha", 1.0)) * (w if n.attr("transB", 0) else w.T)
    bias = _optional(b, args, 2, label)
    return b.linear(args[0], w, None if bias is None else float(n.attr("beta", 1.0)) * bias.reshape(-1), label)


def matmul(b: Builder, n: Node, args: list[Any], label: str) -> int:
    """``x @ W``, or ``W @ x`` on a 1-D input (VNN-COMP's test_small layout)."""
    x, y = args
    if isinstance(x, int) and not isinstance(y, int) and y.dim() == 2:
        return b.linear(x, _const(b, args, 1, label).T, None, label)
    if isinstance(y, int) and not isinstance(x, int) and x.dim() == 2 and len(b.shape(y)) == 1:
        return b.linear(y, _const(b, args, 0, label), None, label)
    raise b.fail(label, "is not supported: only MatMul(input, constant matrix), or MatMul(constant matrix, input) "
                        "on a 1-D input")


def add_sub(b: Builder, n: Node, args: list[Any], label: str) -> int:
    sign = 1.0 if n.op_type == "Add" else -1.0
    x, y = args
    if isinstance(x, int) and isinstance(y, int):
        return b.add2(x, y, sign, label)
    if isinstance(x, int):
        return b.scale(x, 1.0, sign * _const(b, args, 1, label), label)
    return b.scale(y, sign, _const(b, args, 0, label), label)


def mul_div(b: Builder, n: Node, args: list[Any], label: str) -> int:
    x, y = args
    if n.op_type == "Mul" and isinstance(x, int) and isinstance(y, int) and x == y:
        return b.power(x, 2, label)  # x * x
    if isinstance(x, int) == isinstance(y, int) or (n.op_type == "Div" and not isinstance(x, int)):
        raise b.fail(label, "multiplies or divides by an input-dependent tensor, which is not supported")
    i, c = (x, _const(b, args, 1, label)) if isinstance(x, int) else (y, _const(b, args, 0, label))
    return b.scale(i, c if n.op_type == "Mul" else 1.0 / c, 0.0, label)


def neg(b: Builder, n: Node, args: list[Any], label: str) -> int:
    return b.scale(_data(args), -1.0, 0.0, label)


def power(b: Builder, n: Node, args: list[Any], label: str) -> int:
    if not isinstance(args[0], int):
        raise b.fail(label, "raises a constant to an input-dependent power, which is not supported")
    return b.power(args[0], _const(b, args, 1, label), label)


def flatten(b: Builder, n: Node, args: list[Any], label: str) -> int:
    i = _data(args)
    shape = b.shape(i)
    axis = int(n.attr("axis", 1)) % max(len(shape), 1)
    return b.reshape(i, [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))], label)


def reshape(b: Builder, n: Node, args: list[Any], label: str) -> int:
    i = args[0]
    target = [int(v) for v in _const(b, args, 1, label).reshape(-1)]
    return b.reshape(i, [b.shape(i)[k] if v == 0 else v for k, v in enumerate(target)], label)


def reduce(b: Builder, n: Node, args: list[Any], label: str) -> int:
    i = _data(args)
    axes = n.attr("axes")
    if axes is None and len(args) > 1 and args[1] is not None:
        axes = [int(v) for v in _const(b, args, 1, label).reshape(-1)]
    if not axes and n.attr("noop_with_empty_axes", 0):
        return i
    axes = list(axes) if axes else list(range(len(b.shape(i))))
    keep = bool(n.attr("keepdims", 1))
    return b.sum(i, axes, keep, label) if n.op_type == "ReduceSum" else b.mean(i, axes, keep, label)


def conv(b: Builder, n: Node, args: list[Any], label: str) -> int:
    _explicit_pads(b, n, label)
    return b.conv(args[0], _const(b, args, 1, label), _optional(b, args, 2, label), tuple(n.attr("strides", [1, 1])),
                  _pads(n), tuple(n.attr("dilations", [1, 1])), int(n.attr("group", 1)), label)


def conv_transpose(b: Builder, n: Node, args: list[Any], label: str) -> int:
    if n.attr("auto_pad", "NOTSET") != "NOTSET" or n.attr("output_shape") is not None:
        raise b.fail(label, "uses auto_pad or output_shape, which are not supported; export with explicit pads")
    return b.convt(args[0], _const(b, args, 1, label), _optional(b, args, 2, label),
                   tuple(n.attr("strides", [1, 1])), _pads(n), tuple(n.attr("dilations", [1, 1])),
                   int(n.attr("group", 1)), tuple(n.attr("output_padding", [0, 0])), label)


def batch_norm(b: Builder, n: Node, args: list[Any], label: str) -> int:
    s = _const(b, args, 1, label) / np.sqrt(_const(b, args, 4, label) + float(n.attr("epsilon", 1e-5)))
    shift = _const(b, args, 2, label) - _const(b, args, 3, label) * s
    tail = (1,) * (len(b.shape(args[0])) - 2)
    return b.scale(args[0], s.reshape(-1, *tail), shift.reshape(-1, *tail), label)


def average_pool(b: Builder, n: Node, args: list[Any], label: str) -> int:
    top, left, bottom, right = tuple(n.attr("pads", [0, 0, 0, 0]))
    if n.attr("ceil_mode", 0) or top != bottom or left != right:
        raise b.fail(label, "uses ceil_mode or asymmetric pads, which are not supported")
    return b.avgpool(args[0], tuple(n.attr("kernel_shape")), tuple(n.attr("strides", [1, 1])), (top, left),
                     bool(n.attr("count_include_pad", 0)), label)


def global_average_pool(b: Builder, n: Node, args: list[Any], label: str) -> int:
    shape = b.shape(args[0])
    return b.avgpool(args[0], shape[-2:], shape[-2:], (0, 0), True, label)


def max_pool(b: Builder, n: Node, args: list[Any], label: str) -> int:
    _explicit_pads(b, n, label)
    if any(d != 1 for d in n.attr("dilations", [1, 1])) or n.attr("ceil_mode", 0) or n.n_outputs > 1:
        raise b.fail(label, "uses dilations, ceil_mode or the Indices output, which are not supported")
    kernel = tuple(n.attr("kernel_shape"))
    return b.maxpool(args[0], kernel, tuple(n.attr("strides", [1, 1])), _pads(n), label)


def concat(b: Builder, n: Node, args: list[Any], label: str) -> int:
    if any(not isinstance(x, int) for x in args):
        raise b.fail(label, "concatenates a constant with the input's values, which is not supported")
    return b.concat(list(args), int(n.attr("axis")), label)


def move(b: Builder, n: Node, args: list[Any], label: str) -> Any:
    """An op that only moves elements, read by running it on its input's flat element indices: a ``gather``
    node per output. ``Shape`` of a value is its constant shape."""
    i = args[0]
    if not isinstance(i, int) or any(isinstance(x, int) for x in args[1:]):
        raise b.fail(label, "reads an input-dependent tensor other than its data, which is not supported")
    if n.op_type in ("Resize", "Upsample") and n.attr("mode", "nearest") != "nearest":
        raise b.fail(label, f"resizes in mode {n.attr('mode')!r}; exact methods support mode 'nearest'")
    shape = b.shape(i)
    probe = torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape(shape)
    try:
        with torch.no_grad():
            outs = n.run_op([probe, *args[1:]])
    except Exception as exc:  # whatever the op raises on these arguments
        raise b.fail(label, f"cannot be read: {exc}") from exc
    if n.op_type == "Shape":
        return outs
    ids = tuple(b.gather(i, out.numpy(), label) for out in (outs if isinstance(outs, tuple) else (outs,)))
    return ids if len(ids) > 1 else ids[0]
