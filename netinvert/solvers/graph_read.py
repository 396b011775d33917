"""Readers of ``GraphNet``: ONNX graphs (the parsed proto a model carries) and PyTorch modules
through ``torch.fx`` symbolic tracing (any module, not only ``nn.Sequential``).

BatchNorm and other per-channel affine maps become ``scale`` nodes and are folded into the
convolution or linear layer before them when nothing else reads it; Identity and Dropout are
dropped. Anything else is refused with one error naming the layer and the supported list.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.models.architectures import AppendBias
from netinvert.solvers.graph import GNode, GraphNet

DT = torch.float64
GRAPH_ONNX_OPS = ("Gemm", "MatMul", "Conv", "Relu", "Sigmoid", "Tanh", "Softplus", "Add", "Sub", "Mul", "Div",
                  "Concat", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "BatchNormalization",
                  "Identity", "Dropout", "Constant")
GRAPH_TORCH = ("Linear, Conv2d, ReLU, Sigmoid, Tanh, Softplus (beta=1), BatchNorm1d/2d, AvgPool2d, "
               "AdaptiveAvgPool2d (dividing), Flatten, Identity, Dropout, AppendBias; +, -, torch.cat, "
               "flatten/reshape/view, relu/sigmoid/tanh, avg_pool2d and multiplication by constants")
_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus"}


class _Build:
    """Collects nodes while a reader walks a network; ``where`` names the network in messages."""

    def __init__(self, where: str, shape: tuple[int, ...]) -> None:
        self.where = where
        self.nodes = [GNode("input", (), tuple(shape), {}, "input")]

    def add(self, op: str, inputs: tuple[int, ...], shape: tuple[int, ...], label: str, **p: Any) -> int:
        self.nodes.append(GNode(op, inputs, tuple(int(d) for d in shape), p, label))
        return len(self.nodes) - 1

    def shape(self, i: int) -> tuple[int, ...]:
        return self.nodes[i].shape

    def t(self, v: Any) -> torch.Tensor:
        return torch.tensor(np.array(v, dtype=np.float64), dtype=DT)

    def fail(self, label: str, what: str) -> NetinvertError:
        return NetinvertError(f"{self.where}: {label} {what}")

    # -------------------------------------------------------------- shared op builders
    def linear(self, i: int, w: np.ndarray, b: np.ndarray | None, label: str) -> int:
        shape = self.shape(i)
        if shape[-1] != w.shape[1]:
            raise self.fail(label, f"multiplies a tensor of shape {shape} by a ({w.shape[1]}, {w.shape[0]}) matrix")
        return self.add("linear", (i,), (*shape[:-1], w.shape[0]), label, w=self.t(w),
                        b=None if b is None else self.t(np.broadcast_to(b, (w.shape[0],))))

    def conv(self, i: int, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
             pads: tuple[int, int, int, int], dilation: tuple[int, int], groups: int, label: str) -> int:
        shape = self.shape(i)
        if len(shape) < 3 or w.ndim != 4:
            raise self.fail(label, f"is a 2-D convolution on a tensor of shape {shape}: only 2-D is supported")
        probe = torch.zeros(1, *shape, dtype=DT)
        node = GNode("conv", (i,), (), {"w": self.t(w), "b": None if b is None else self.t(b), "stride": stride,
                                        "pads": pads, "dilation": dilation, "groups": groups}, label)
        c, h, wd = F.conv2d(F.pad(probe.reshape(-1, *shape[-3:]), pads), node.p["w"], None, stride,
                            0, dilation, groups).shape[1:]
        return self.add("conv", (i,), (*shape[:-3], c, h, wd), label, **node.p)

    def avgpool(self, i: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                include_pad: bool, label: str) -> int:
        shape = self.shape(i)
        if len(shape) < 3:
            raise self.fail(label, f"pools a tensor of shape {shape}: it needs (C, H, W)")
        p = {"kernel": kernel, "stride": stride, "padding": padding, "count_include_pad": include_pad}
        c, h, w = F.avg_pool2d(torch.zeros(1, *shape[-3:], dtype=DT), kernel, stride, padding).shape[1:]
        return self.add("avgpool", (i,), (*shape[:-3], c, h, w), label, **p)

    def scale(self, i: int, s: Any, t: Any, label: str) -> int:
        shape = self.shape(i)
        s_t, t_t = self.t(s), self.t(t)
        if tuple(np.broadcast_shapes(shape, tuple(s_t.shape), tuple(t_t.shape))) != shape:
            raise self.fail(label, f"broadcasts a tensor of shape {shape} to a larger shape")
        return self.add("scale", (i,), shape, label, s=s_t, t=t_t)

    def add2(self, i: int, j: int, sign: float, label: str) -> int:
        if self.shape(i) != self.shape(j):
            raise self.fail(label, f"adds tensors of shapes {self.shape(i)} and {self.shape(j)}")
        return self.add("add", (i, j), self.shape(i), label, sign=sign)

    def concat(self, ins: list[int], axis: int, label: str) -> int:
        shapes = [self.shape(i) for i in ins]
        axis %= len(shapes[0])
        if any(len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
               for s in shapes):
            raise self.fail(label, f"concatenates tensors of shapes {shapes} along axis {axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return self.add("concat", tuple(ins), tuple(out), label, axis=axis)

    def reshape(self, i: int, target: list[int], label: str) -> int:
        shape = self.shape(i)
        if -1 in target:
            known = int(np.prod([v for v in target if v != -1]))
            target[target.index(-1)] = int(np.prod(shape)) // max(known, 1)
        if int(np.prod(target)) != int(np.prod(shape)):
            raise self.fail(label, f"reshapes {shape} to {tuple(target)}, which has another size")
        return i if tuple(target) == shape else self.add("reshape", (i,), tuple(target), label)

    def finish(self, out: Any, name: str, info: dict[str, Any]) -> GraphNet:
        if not isinstance(out, int) or out == 0 and len(self.nodes) == 1:
            raise NetinvertError(f"{self.where}: the network output does not depend on its input")
        keep = _ancestors(self.nodes, out)
        index = {old: new for new, old in enumerate(keep)}
        nodes = [GNode(n.op, tuple(index[j] for j in n.inputs), n.shape, n.p, n.label)
                 for n in (self.nodes[k] for k in keep)]
        return GraphNet(_fold_scales(nodes), name, info)


def _ancestors(nodes: list[GNode], out: int) -> list[int]:
    need = {out}
    for i in range(out, -1, -1):
        if i in need:
            need.update(nodes[i].inputs)
    return sorted(need | {0})


def _fold_scales(nodes: list[GNode]) -> list[GNode]:
    """Fold per-channel ``scale`` nodes into the conv/linear node before them when only they read it."""
    readers = [0] * len(nodes)
    for n in nodes:
        for j in n.inputs:
            readers[j] += 1
    drop: dict[int, int] = {}
    for i, n in enumerate(nodes):
        if n.op != "scale" or readers[n.inputs[0]] != 1 or nodes[n.inputs[0]].op not in ("conv", "linear"):
            continue
        prev = nodes[n.inputs[0]]
        cols = prev.shape[-3] if prev.op == "conv" else prev.shape[-1]
        s, t = (v.expand(n.shape) for v in (n.p["s"], n.p["t"]))
        s_c = s.reshape(-1, cols, *((prev.shape[-2] * prev.shape[-1],) if prev.op == "conv" else ()))
        t_c = t.reshape(s_c.shape)
        per = s_c.reshape(s_c.shape[0], cols, -1)
        if not (torch.equal(per, per[:1, :, :1].expand_as(per))
                and torch.equal(t_c.reshape(per.shape), t_c.reshape(per.shape)[:1, :, :1].expand_as(per))):
            continue
        sv, tv = per[0, :, 0], t_c.reshape(per.shape)[0, :, 0]
        w = prev.p["w"] * sv.reshape(-1, *([1] * (prev.p["w"].dim() - 1)))
        b = (prev.p["b"] * sv if prev.p.get("b") is not None else 0) + tv
        nodes[n.inputs[0]] = GNode(prev.op, prev.inputs, prev.shape, {**prev.p, "w": w, "b": b}, prev.label)
        drop[i] = n.inputs[0]
    if not drop:
        return nodes
    keep = [i for i in range(len(nodes)) if i not in drop]
    index = {old: new for new, old in enumerate(keep)}
    resolve = lambda j: index[drop.get(j, j)]
    return [GNode(nodes[i].op, tuple(resolve(j) for j in nodes[i].inputs), nodes[i].shape, nodes[i].p,
                  nodes[i].label) for i in keep]


# ---------------------------------------------------------------------------------------------- ONNX
def graph_from_onnx(model: Any, source: str | Path) -> GraphNet:
    """The ``GraphNet`` of a parsed ``onnx.ModelProto`` read from ``source`` (named in messages)."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

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
    b = _Build(p.name, dims)
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
            vi = lambda n: onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
            try:
                outs = ReferenceEvaluator(onnx.helper.make_graph(
                    [node], "fold", [vi(n) for n in node.input if n], [vi(n) for n in node.output]),
                    opsets=opsets).run(None, {n: v for n, v in zip(node.input, args) if n})
            except Exception as exc:
                raise b.fail(label, f"cannot be evaluated as a constant: {exc}") from exc
            env.update({n: np.asarray(v) for n, v in zip(node.output, outs)})
            continue
        if node.op_type not in GRAPH_ONNX_OPS:
            raise b.fail(label, f"uses op {node.op_type}, which is not supported; exact methods on graphs support "
                                f"{', '.join(GRAPH_ONNX_OPS)}")
        env[node.output[0]] = _onnx_node(b, node.op_type, label, args, attrs)
    return b.finish(env[g.output[0].name], p.stem, {"source": str(p), "format": "onnx"})


def _onnx_node(b: _Build, op: str, label: str, args: list[Any], attrs: dict[str, Any]) -> int:
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


# ---------------------------------------------------------------------------------------------- torch
class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, AppendBias) or super().is_leaf_module(m, qualname)


def graph_from_torch(module: nn.Module, input_shape: tuple[int, ...], *, name: str = "model") -> GraphNet:
    """The ``GraphNet`` of a module, traced with ``torch.fx`` (per-item ``input_shape``)."""
    try:
        traced = _Tracer().trace(module)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise NetinvertError(f"{name}: torch.fx cannot trace the module ({type(exc).__name__}: {exc}); "
                             f"exact methods need a traceable module of {GRAPH_TORCH}") from exc
    b = _Build(name, tuple(input_shape))
    env: dict[str, Any] = {}
    mods = dict(module.named_modules())
    out: Any = None
    for n in traced.nodes:
        label = f"{n.op} {n.target if n.op != 'call_module' else repr(n.target)}"
        if n.op == "placeholder":
            if env:
                raise b.fail(label, "is a second input: exact methods take single-input models")
            env[n.name] = 0
        elif n.op == "get_attr":
            obj: Any = module
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            env[n.name] = obj.detach().double().numpy() if isinstance(obj, torch.Tensor) else obj
        elif n.op == "output":
            out = env[n.args[0].name] if isinstance(n.args[0], torch.fx.Node) else None
        else:
            args = [_val(env, a) for a in n.args]
            kwargs = {k: _val(env, v) for k, v in n.kwargs.items()}
            if n.op == "call_module":
                mod = mods[str(n.target)]
                label = f"module {n.target} ({type(mod).__name__})"
                env[n.name] = _torch_module(b, mod, args[0], label)
            else:
                env[n.name] = _torch_call(b, n.op, n.target, args, kwargs, label)
    return b.finish(out, name, {"format": "torch"})


def _val(env: dict[str, Any], a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        return env[a.name]
    if isinstance(a, (list, tuple)):
        return type(a)(_val(env, x) for x in a)
    return a


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _torch_module(b: _Build, mod: nn.Module, i: Any, label: str) -> int:
    if not isinstance(i, int):
        raise b.fail(label, "reads no input-dependent tensor")
    num = lambda t: t.detach().double().cpu().numpy()
    if isinstance(mod, (nn.Identity, nn.Dropout)):
        return i
    if isinstance(mod, nn.ReLU):
        return b.add("act", (i,), b.shape(i), label, kind="relu")
    if isinstance(mod, (nn.Sigmoid, nn.Tanh)) or (isinstance(mod, nn.Softplus) and mod.beta == 1):
        return b.add("act", (i,), b.shape(i), label, kind=type(mod).__name__.lower())
    if isinstance(mod, nn.Linear):
        return b.linear(i, num(mod.weight), None if mod.bias is None else num(mod.bias), label)
    if isinstance(mod, nn.Conv2d):
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            raise b.fail(label, f"uses padding={mod.padding!r}/{mod.padding_mode}; use numeric zero padding")
        ph, pw = mod.padding
        return b.conv(i, num(mod.weight), None if mod.bias is None else num(mod.bias), _pair(mod.stride),
                      (pw, pw, ph, ph), _pair(mod.dilation), mod.groups, label)
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        var, mean = num(mod.running_var), num(mod.running_mean)
        s = (num(mod.weight) if mod.weight is not None else 1.0) / np.sqrt(var + mod.eps)
        shift = (num(mod.bias) if mod.bias is not None else 0.0) - mean * s
        tail = (1,) * (len(b.shape(i)) - 1)
        return b.scale(i, np.broadcast_to(s, var.shape).reshape(-1, *tail), shift.reshape(-1, *tail), label)
    if isinstance(mod, nn.AvgPool2d):
        if mod.ceil_mode or mod.divisor_override:
            raise b.fail(label, "uses ceil_mode or divisor_override, which are not supported")
        k = _pair(mod.kernel_size)
        return b.avgpool(i, k, _pair(mod.stride or k), _pair(mod.padding), mod.count_include_pad, label)
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        h, w = b.shape(i)[-2:]
        oh, ow = _pair(mod.output_size if None not in _as_tuple(mod.output_size) else (h, w))
        if h % oh or w % ow:
            raise b.fail(label, f"pools {h}x{w} to {oh}x{ow}, which does not divide evenly")
        return b.avgpool(i, (h // oh, w // ow), (h // oh, w // ow), (0, 0), True, label)
    if isinstance(mod, nn.Flatten):
        return _flatten(b, i, mod.start_dim, mod.end_dim, label)
    if isinstance(mod, AppendBias):
        shape = b.shape(i)
        return b.add("append", (i,), (*shape[:-1], shape[-1] + 1), label, value=float(mod.appends_constant))
    raise b.fail(label, f"is not supported by exact methods; they support {GRAPH_TORCH}")


def _as_tuple(v: Any) -> tuple[Any, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _flatten(b: _Build, i: int, start: int, end: int, label: str) -> int:
    full = (1, *b.shape(i))  # with the batch dimension
    s, e = start % len(full), end % len(full)
    if s == 0:
        raise b.fail(label, "flattens the batch dimension, which is not supported")
    shape = full[:s] + (int(np.prod(full[s:e + 1])),) + full[e + 1:]
    return b.reshape(i, list(shape[1:]), label)


_ADD = (operator.add, torch.add, operator.iadd)
_SUB = (operator.sub, torch.sub, operator.isub)
_MUL = (operator.mul, torch.mul, operator.truediv, torch.div)
_ACT_FN = {torch.relu: "relu", F.relu: "relu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
           torch.tanh: "tanh", F.tanh: "tanh", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}


def _torch_call(b: _Build, kind: str, fn: Any, args: list[Any], kw: dict[str, Any], label: str) -> Any:
    if fn == "size" and args[1:] == [0]:
        return "batch"
    if fn is getattr and args[1] == "shape":
        return "shape"
    if fn is operator.getitem and args[0] == "shape" and args[1] == 0:
        return "batch"
    if fn == "contiguous":
        return args[0]
    if fn in _ACT_FN and isinstance(args[0], int):
        return b.add("act", (args[0],), b.shape(args[0]), label, kind=_ACT_FN[fn])
    if fn in _ADD + _SUB and len(args) == 2:
        sign = 1.0 if fn in _ADD else -1.0
        x, y = args
        if isinstance(x, int) and isinstance(y, int):
            return b.add2(x, y, sign, label)
        if isinstance(x, int):
            return b.scale(x, 1.0, sign * np.asarray(y, dtype=np.float64), label)
        if isinstance(y, int):
            return b.scale(y, sign, np.asarray(x, dtype=np.float64), label)
    if fn in _MUL and len(args) == 2 and sum(isinstance(a, int) for a in args) == 1:
        i = args[0] if isinstance(args[0], int) else args[1]
        c = np.asarray(args[1] if i is args[0] else args[0], dtype=np.float64)
        if fn in (operator.truediv, torch.div):
            if i is not args[0]:
                raise b.fail(label, "divides by an input-dependent tensor, which is not supported")
            c = 1.0 / c
        return b.scale(i, c, 0.0, label)
    if fn is torch.cat or fn == "cat":
        ins, dim = args[0], (args[1] if len(args) > 1 else kw.get("dim", 0))
        if dim == 0 or any(not isinstance(x, int) for x in ins):
            raise b.fail(label, "concatenates along the batch or with constants, which is not supported")
        return b.concat(list(ins), dim - 1 if dim > 0 else dim, label)
    if fn in (torch.flatten, "flatten"):
        start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
        return _flatten(b, args[0], start, end, label)
    if fn in ("view", "reshape", torch.reshape):
        dims = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        if not dims or dims[0] not in ("batch", -1):
            raise b.fail(label, "reshapes without keeping the batch dimension first (use x.size(0) or -1)")
        return b.reshape(args[0], [int(d) for d in dims[1:]], label)
    if fn in (F.avg_pool2d,) and isinstance(args[0], int):
        k = _pair(args[1] if len(args) > 1 else kw["kernel_size"])
        st = _pair(args[2] if len(args) > 2 and args[2] is not None else kw.get("stride") or k)
        return b.avgpool(args[0], k, st, _pair(kw.get("padding", 0)), kw.get("count_include_pad", True), label)
    name = getattr(fn, "__name__", str(fn))
    raise b.fail(label, f"calls {name}, which is not supported by exact methods; they support {GRAPH_TORCH}")
