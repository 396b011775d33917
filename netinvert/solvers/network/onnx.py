"""Readers of ``GraphNet``: ONNX graphs (the parsed proto a model carries) here, PyTorch modules
through ``torch.fx`` symbolic tracing (any module, not only ``nn.Sequential``) in ``graph_fx.py``.

Identity and Dropout are dropped; element-moving ops (slices, splits, transposes, nearest
resizing) are read by running them on their input's element indices. Anything else is refused
with one error naming the op, the node and the supported list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from netinvert.ground.errors import NetinvertError
from netinvert.solvers.network.build import Build
from netinvert.solvers.network.fx import GRAPH_TORCH, graph_from_torch
from netinvert.solvers.network.graph import GraphNet

__all__ = ["GRAPH_ONNX_OPS", "GRAPH_TORCH", "graph_from_onnx", "graph_from_torch"]

GRAPH_ONNX_OPS = ("Gemm", "MatMul", "Conv", "ConvTranspose", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh",
                  "Softplus", "Sin", "Cos", "Pow", "Add", "Sub", "Mul", "Div", "Neg", "Concat", "AveragePool",
                  "GlobalAveragePool", "ReduceSum", "ReduceMean", "Flatten", "Reshape", "Squeeze", "Unsqueeze",
                  "Transpose", "Slice", "Split", "Gather", "Expand", "Tile", "Resize", "Upsample", "DepthToSpace",
                  "SpaceToDepth", "Shape", "BatchNormalization", "Identity", "Dropout", "Constant")
_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Sin": "sin", "Cos": "cos"}
# ONNX ops that only move elements (each output element is one input element): read by evaluating the
# op on the input's element indices, which gives the ``gather`` node's index
_MOVES = ("Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "Gather", "Expand", "Tile", "Resize", "Upsample",
          "DepthToSpace", "SpaceToDepth")


# ---------------------------------------------------------------------------------------------- ONNX
def graph_from_onnx(model: Any, source: str | Path) -> GraphNet:
    """The ``GraphNet`` of a parsed ``onnx.ModelProto`` read from ``source`` (named in messages)."""
    import onnx
    from onnx import numpy_helper

    p = Path(source)
    g = model.graph
    env: dict[str, Any] = {}
    for t in g.initializer:
        arr = numpy_helper.to_array(t)
        env[t.name] = arr.astype(np.float64) if arr.dtype.kind == "f" else arr
    inputs = [i for i in g.input if i.name not in env]
    if len(inputs) != 1:
        raise NetinvertError(f"{p.name}: the network must have exactly one input, found {[i.name for i in inputs]}")
    dims = tuple(int(d.dim_value) if d.dim_value > 0 else 1 for d in inputs[0].type.tensor_type.shape.dim) or (1,)
    b = Build(p.name, dims)
    env[inputs[0].name] = 0
    opsets = {d.domain: d.version for d in model.opset_import}
    for node in g.node:
        label = f"{node.op_type} node {node.name or node.output[0]!r}"
        missing = [n for n in node.input if n and n not in env]
        if missing:
            raise b.fail(label, f"reads {missing[0]!r}, which no earlier node produces")
        args = [env[n] if n else None for n in node.input]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if all(not isinstance(x, int) for x in args):
            try:
                outs = _evaluate(node, args, opsets)
            except Exception as exc:
                raise b.fail(label, f"cannot be evaluated as a constant: {exc}") from exc
            env.update({n: np.asarray(v) for n, v in zip(node.output, outs)})
            continue
        if node.op_type not in GRAPH_ONNX_OPS:
            raise b.fail(label, f"uses op {node.op_type}, which is not supported; exact methods on graphs support "
                                f"{', '.join(GRAPH_ONNX_OPS)}")
        if node.op_type in _MOVES or node.op_type == "Shape":
            out = _onnx_move(b, node, label, args, attrs, opsets)
        else:
            out = _onnx_node(b, node.op_type, label, args, attrs)
        env.update(zip(node.output, out if isinstance(out, tuple) else (out,)))
    return b.finish(env[g.output[0].name], p.stem, {"source": str(p), "format": "onnx"})


def _evaluate(node: Any, args: list[Any], opsets: dict[str, int]) -> list[Any]:
    """The outputs of one ONNX node on constant inputs (onnx's reference implementation)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    vi = lambda n: onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
    graph = onnx.helper.make_graph([node], "fold", [vi(n) for n in node.input if n], [vi(n) for n in node.output])
    return ReferenceEvaluator(graph, opsets=opsets).run(None, {n: v for n, v in zip(node.input, args) if n})


def _onnx_move(b: Build, node: Any, label: str, args: list[Any], attrs: dict[str, Any],
               opsets: dict[str, int]) -> Any:
    """An op that moves elements (``_MOVES``), read by running it on the input's flat element indices:
    a ``gather`` node per output. ``Shape`` of a node is the constant shape."""
    i = args[0]
    if not isinstance(i, int) or any(isinstance(x, int) for x in args[1:]):
        raise b.fail(label, "reads an input-dependent tensor other than its data, which is not supported")
    if node.op_type in ("Resize", "Upsample") and attrs.get("mode", b"nearest") not in (b"nearest", "nearest"):
        raise b.fail(label, f"resizes in mode {attrs['mode']!r}; exact methods support mode 'nearest'")
    shape = b.shape(i)
    probe = np.zeros(shape) if node.op_type == "Shape" else np.arange(int(np.prod(shape)), dtype=np.float64)
    try:
        outs = _evaluate(node, [probe.reshape(shape), *args[1:]], opsets)
    except Exception as exc:
        raise b.fail(label, f"cannot be read: {exc}") from exc
    if node.op_type == "Shape":
        return np.asarray(outs[0])
    ids = tuple(b.gather(i, out, label) for out in outs)
    return ids if len(ids) > 1 else ids[0]


def _onnx_node(b: Build, op: str, label: str, args: list[Any], attrs: dict[str, Any]) -> int:
    i = next(x for x in args if isinstance(x, int))
    input_first = isinstance(args[0], int) and args[0] == i  # args hold node ids (int) or constant arrays

    def const(k: int) -> np.ndarray:
        if k >= len(args) or isinstance(args[k], int) or args[k] is None:
            raise b.fail(label, f"needs a constant argument {k}: only the first argument may depend on the input")
        return np.asarray(args[k], dtype=np.float64)

    if op in ("Identity", "Dropout"):
        return i
    if op in _ACTS:
        if op == "Softplus" and attrs:
            raise b.fail(label, "has attributes: only Softplus without attributes is supported")
        return b.add("act", (i,), b.shape(i), label, kind=_ACTS[op])
    if op == "Flatten":
        shape = b.shape(i)
        axis = int(attrs.get("axis", 1)) % max(len(shape), 1)
        return b.reshape(i, [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))], label)
    if op == "Reshape":
        target = [int(v) for v in np.asarray(args[1]).reshape(-1)]
        return b.reshape(i, [b.shape(i)[k] if v == 0 else v for k, v in enumerate(target)], label)
    if op == "Gemm":
        if not input_first or attrs.get("transA", 0):
            raise b.fail(label, "is not supported: only Gemm(input, constant weight) without transA")
        w = const(1)
        w = float(attrs.get("alpha", 1.0)) * (w if attrs.get("transB", 0) else w.T)
        bias = float(attrs.get("beta", 1.0)) * const(2).reshape(-1) if len(args) > 2 and args[2] is not None else None
        return b.linear(i, w, bias, label)
    if op == "MatMul":
        if not input_first or const(1).ndim != 2:
            raise b.fail(label, "is not supported: only MatMul(input, constant matrix)")
        return b.linear(i, const(1).T, None, label)
    if op in ("Add", "Sub"):
        sign = 1.0 if op == "Add" else -1.0
        x, y = args
        if isinstance(x, int) and isinstance(y, int):
            return b.add2(x, y, sign, label)
        if isinstance(x, int):
            return b.scale(x, 1.0, sign * np.asarray(y, dtype=np.float64), label)
        return b.scale(y, sign, np.asarray(x, dtype=np.float64), label)
    if op == "LeakyRelu":
        return b.leaky(i, float(attrs.get("alpha", 0.01)), label)
    if op == "PRelu":
        return b.leaky(i, const(1), label)
    if op == "Pow":
        if not input_first:
            raise b.fail(label, "raises a constant to an input-dependent power, which is not supported")
        return b.power(i, const(1), label)
    if op == "Neg":
        return b.scale(i, -1.0, 0.0, label)
    if op in ("ReduceSum", "ReduceMean"):
        shape = b.shape(i)
        axes = attrs.get("axes")
        if axes is None and len(args) > 1 and args[1] is not None:
            axes = [int(v) for v in const(1).reshape(-1)]
        if not axes and attrs.get("noop_with_empty_axes", 0):
            return i
        axes = list(axes) if axes else list(range(len(shape)))
        keep = bool(attrs.get("keepdims", 1))
        return b.sum(i, axes, keep, label) if op == "ReduceSum" else b.mean(i, axes, keep, label)
    if op == "ConvTranspose":
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or "output_shape" in attrs:
            raise b.fail(label, "uses auto_pad or output_shape, which are not supported; export with explicit pads")
        pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
        return b.convt(i, const(1), const(2) if len(args) > 2 and args[2] is not None else None,
                       tuple(attrs.get("strides", [1, 1])), (pads[1], pads[3], pads[0], pads[2]),
                       tuple(attrs.get("dilations", [1, 1])), int(attrs.get("group", 1)),
                       tuple(attrs.get("output_padding", [0, 0])), label)
    if op == "Mul" and isinstance(args[0], int) and isinstance(args[1], int) and args[0] == args[1]:
        return b.power(i, 2, label)  # x * x
    if op in ("Mul", "Div"):
        other = args[1] if input_first else args[0]
        if isinstance(other, int) or (op == "Div" and not input_first):
            raise b.fail(label, "multiplies or divides by an input-dependent tensor, which is not supported")
        c = np.asarray(other, dtype=np.float64)
        return b.scale(i, c if op == "Mul" else 1.0 / c, 0.0, label)
    if op == "Conv":
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise b.fail(label, "uses auto_pad, which is not supported; export with explicit pads")
        w = const(1)
        pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
        return b.conv(i, w, const(2) if len(args) > 2 and args[2] is not None else None,
                      tuple(attrs.get("strides", [1, 1])), (pads[1], pads[3], pads[0], pads[2]),
                      tuple(attrs.get("dilations", [1, 1])), int(attrs.get("group", 1)), label)
    if op == "BatchNormalization":
        s = const(1) / np.sqrt(const(4) + float(attrs.get("epsilon", 1e-5)))
        shift = const(2) - const(3) * s
        tail = (1,) * (len(b.shape(i)) - 2)
        return b.scale(i, s.reshape(-1, *tail), shift.reshape(-1, *tail), label)
    if op == "AveragePool":
        pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
        if attrs.get("ceil_mode", 0) or pads[0] != pads[2] or pads[1] != pads[3]:
            raise b.fail(label, "uses ceil_mode or asymmetric pads, which are not supported")
        kernel = tuple(attrs["kernel_shape"])
        return b.avgpool(i, kernel, tuple(attrs.get("strides", [1, 1])), (pads[0], pads[1]),
                         bool(attrs.get("count_include_pad", 0)), label)
    if op == "GlobalAveragePool":
        shape = b.shape(i)
        return b.avgpool(i, shape[-2:], shape[-2:], (0, 0), True, label)
    if op == "Concat":
        if any(not isinstance(x, int) for x in args):
            raise b.fail(label, "concatenates a constant with the input's values, which is not supported")
        return b.concat(list(args), int(attrs["axis"]), label)
    raise b.fail(label, f"uses op {op}, which exact methods do not support")
