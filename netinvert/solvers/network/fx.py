"""The ``torch.fx`` reader of ``GraphNet``: any traceable module, not only ``nn.Sequential``.

Module calls and traced functions become graph nodes; element-moving calls (indexing, split,
permute, nearest upsampling) are read by running them on a batch of two items holding their
element indices. Anything else is refused with one error naming the call and the supported list.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.models.architectures import AppendBias
from netinvert.solvers.network.build import DT, Build
from netinvert.solvers.network.graph import GraphNet

GRAPH_TORCH = ("Linear, Conv2d, ReLU, Sigmoid, Tanh, Softplus (beta=1), ConvTranspose2d, LeakyReLU, PReLU, "
               "BatchNorm1d/2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (dividing), Upsample (nearest), Flatten, Identity, "
               "Dropout, AppendBias; +, -, * and / by constants, x * x, ** by an integer, torch.cat/stack, "
               "flatten/reshape/view, indexing and slicing, split/chunk, permute/transpose/squeeze/unsqueeze, "
               "sum/mean over dims, relu/leaky_relu/sigmoid/tanh/sin/cos, avg_pool2d and interpolate (nearest)")


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, AppendBias) or super().is_leaf_module(m, qualname)


class _Ref(int):
    """A node id among a traced call's arguments (plain ints there are constants: ``x ** 2``, ``dim=1``)."""


def graph_from_torch(module: nn.Module, input_shape: tuple[int, ...], *, name: str = "model") -> GraphNet:
    """The ``GraphNet`` of a module, traced with ``torch.fx`` (per-item ``input_shape``)."""
    try:
        traced = _Tracer().trace(module)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise NetinvertError(f"{name}: torch.fx cannot trace the module ({type(exc).__name__}: {exc}); "
                             f"exact methods need a traceable module of {GRAPH_TORCH}") from exc
    b = Build(name, tuple(input_shape))
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
                env[n.name] = _torch_call(b, n.target, args, kwargs, label)
    return b.finish(out, name, {"format": "torch"})


def _val(env: dict[str, Any], a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        return _refs(env[a.name])
    if isinstance(a, (list, tuple)):
        return type(a)(_val(env, x) for x in a)
    return a


def _refs(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return _Ref(v)
    return tuple(_refs(x) for x in v) if isinstance(v, tuple) else v


def _has_ref(v: Any) -> bool:
    if isinstance(v, dict):
        v = list(v.values())
    if isinstance(v, slice):
        v = [v.start, v.stop, v.step]
    return isinstance(v, _Ref) or (isinstance(v, (list, tuple)) and any(_has_ref(x) for x in v))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _probe(b: Build, i: int, fn: Callable[[torch.Tensor], Any], label: str) -> Any:
    """An element-moving call (slicing, split, permute, nearest upsampling, ...) read by running it on a
    batch of two items holding their element indices: every output must keep the batch dimension and
    act on each item alone; each becomes a ``gather`` node (a tuple of them for split/chunk)."""
    shape = b.shape(i)
    n = int(np.prod(shape))
    try:
        with torch.no_grad():
            out = fn(torch.arange(2 * n, dtype=DT).reshape(2, *shape))
    except Exception as exc:  # whatever the call raises on these arguments
        raise b.fail(label, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, torch.Tensor) or o.dim() == 0 or o.shape[0] != 2 or not torch.equal(o[1], o[0] + n):
            raise b.fail(label, "does not act on each item of the batch alone (keep the batch dimension first)")
    ids = tuple(b.gather(i, o[0].numpy(), label) for o in outs)
    return ids if isinstance(out, (tuple, list)) else ids[0]


def _torch_module(b: Build, mod: nn.Module, i: Any, label: str) -> int:
    if not isinstance(i, _Ref):
        raise b.fail(label, "reads no input-dependent tensor")
    num = lambda t: t.detach().double().cpu().numpy()
    if isinstance(mod, (nn.Identity, nn.Dropout)):
        return i
    if isinstance(mod, nn.ReLU):
        return b.act(i, "relu", label)
    if isinstance(mod, (nn.Sigmoid, nn.Tanh)) or (isinstance(mod, nn.Softplus) and mod.beta == 1):
        return b.act(i, type(mod).__name__.lower(), label)
    if isinstance(mod, nn.LeakyReLU):
        return b.leaky(i, mod.negative_slope, label)
    if isinstance(mod, nn.PReLU):
        slope = num(mod.weight)
        tail = (1,) * (len(b.shape(i)) - 1)
        return b.leaky(i, slope if slope.size == 1 else slope.reshape(-1, *tail), label)
    if isinstance(mod, nn.Linear):
        return b.linear(i, num(mod.weight), None if mod.bias is None else num(mod.bias), label)
    if isinstance(mod, nn.Conv2d):
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            raise b.fail(label, f"uses padding={mod.padding!r}/{mod.padding_mode}; use numeric zero padding")
        ph, pw = mod.padding
        return b.conv(i, num(mod.weight), None if mod.bias is None else num(mod.bias), _pair(mod.stride),
                      (pw, pw, ph, ph), _pair(mod.dilation), mod.groups, label)
    if isinstance(mod, nn.ConvTranspose2d):
        if mod.padding_mode != "zeros":
            raise b.fail(label, f"uses padding_mode={mod.padding_mode}; use zero padding")
        ph, pw = _pair(mod.padding)
        return b.convt(i, num(mod.weight), None if mod.bias is None else num(mod.bias), _pair(mod.stride),
                       (pw, pw, ph, ph), _pair(mod.dilation), mod.groups, _pair(mod.output_padding), label)
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        var, mean = num(mod.running_var), num(mod.running_mean)
        s = (num(mod.weight) if mod.weight is not None else 1.0) / np.sqrt(var + mod.eps)
        shift = (num(mod.bias) if mod.bias is not None else 0.0) - mean * s
        tail = (1,) * (len(b.shape(i)) - 1)
        return b.scale(i, np.broadcast_to(s, var.shape).reshape(-1, *tail), shift.reshape(-1, *tail), label)
    if isinstance(mod, nn.MaxPool2d):
        if _pair(mod.dilation) != (1, 1) or mod.ceil_mode or mod.return_indices:
            raise b.fail(label, "uses dilation, ceil_mode or return_indices, which are not supported")
        k, (ph, pw) = _pair(mod.kernel_size), _pair(mod.padding)
        return b.maxpool(i, k, _pair(mod.stride or k), (pw, pw, ph, ph), label)
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
    if isinstance(mod, nn.Upsample):
        if mod.mode != "nearest":
            raise b.fail(label, f"upsamples in mode {mod.mode!r}; exact methods support mode 'nearest'")
        return _probe(b, i, mod, label)
    if isinstance(mod, nn.Flatten):
        return _flatten(b, i, mod.start_dim, mod.end_dim, label)
    if isinstance(mod, AppendBias):
        shape = b.shape(i)
        return b.add("append", (i,), (*shape[:-1], shape[-1] + 1), label, value=float(mod.appends_constant))
    raise b.fail(label, f"is not supported by exact methods; they support {GRAPH_TORCH}")


def _as_tuple(v: Any) -> tuple[Any, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _flatten(b: Build, i: int, start: int, end: int, label: str) -> int:
    full = (1, *b.shape(i))  # with the batch dimension
    s, e = start % len(full), end % len(full)
    if s == 0:
        raise b.fail(label, "flattens the batch dimension, which is not supported")
    shape = full[:s] + (int(np.prod(full[s:e + 1])),) + full[e + 1:]
    return b.reshape(i, list(shape[1:]), label)


_ADD = (operator.add, torch.add, operator.iadd, "add")
_SUB = (operator.sub, torch.sub, operator.isub, "sub")
_MUL = (operator.mul, torch.mul, operator.truediv, torch.div, "mul", "div")
_POW = (operator.pow, torch.pow, "pow")
_NEG = (operator.neg, torch.neg, "neg")
_ACT_FN = {torch.relu: "relu", F.relu: "relu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
           torch.tanh: "tanh", F.tanh: "tanh", torch.sin: "sin", torch.cos: "cos", "relu": "relu",
           "sigmoid": "sigmoid", "tanh": "tanh", "sin": "sin", "cos": "cos"}
_SUMS = {torch.sum: "sum", "sum": "sum", torch.mean: "mean", "mean": "mean"}
# calls that only move elements, read by ``_probe`` (functions, and the same names as tensor methods)
_MOVE_FNS = (operator.getitem, torch.split, torch.chunk, torch.unbind, torch.permute, torch.transpose,
             torch.swapaxes, torch.movedim, torch.unsqueeze, torch.squeeze, torch.flip, torch.narrow)
_MOVE_METHODS = ("split", "chunk", "unbind", "permute", "transpose", "swapaxes", "movedim", "unsqueeze", "squeeze",
                 "flip", "narrow", "repeat", "expand")


def _torch_call(b: Build, fn: Any, args: list[Any], kw: dict[str, Any], label: str) -> Any:
    node = lambda v: isinstance(v, _Ref)
    if fn == "size" and args[1:] == [0]:
        return "batch"
    if fn is getattr and args[1] == "shape":
        return "shape"
    if fn is operator.getitem and args[0] == "shape" and args[1] == 0:
        return "batch"
    if fn is operator.getitem and isinstance(args[0], tuple):  # one part of a split
        return args[0][args[1]]
    if fn == "contiguous":
        return args[0]
    if fn in _ACT_FN and node(args[0]):
        return b.act(args[0], _ACT_FN[fn], label)
    if fn in (F.leaky_relu, "leaky_relu") and node(args[0]):
        return b.leaky(args[0], args[1] if len(args) > 1 else kw.get("negative_slope", 0.01), label)
    if fn in _NEG and node(args[0]):
        return b.scale(args[0], -1.0, 0.0, label)
    if fn in _POW and node(args[0]) and not node(args[1]):
        return b.power(args[0], args[1], label)
    if fn in (torch.square, "square") and node(args[0]):
        return b.power(args[0], 2, label)
    if fn in _ADD + _SUB and len(args) == 2:
        sign = 1.0 if fn in _ADD else -1.0
        x, y = args
        if node(x) and node(y):
            return b.add2(x, y, sign, label)
        if node(x):
            return b.scale(x, 1.0, sign * np.asarray(y, dtype=np.float64), label)
        if node(y):
            return b.scale(y, sign, np.asarray(x, dtype=np.float64), label)
    if fn in _MUL and len(args) == 2 and node(args[0]) and node(args[1]) and args[0] == args[1] \
            and fn in (operator.mul, torch.mul, "mul"):
        return b.power(args[0], 2, label)  # x * x
    if fn in _MUL and len(args) == 2 and sum(node(a) for a in args) == 1:
        i = args[0] if node(args[0]) else args[1]
        c = np.asarray(args[1] if i is args[0] else args[0], dtype=np.float64)
        if fn in (operator.truediv, torch.div, "div"):
            if i is not args[0]:
                raise b.fail(label, "divides by an input-dependent tensor, which is not supported")
            c = 1.0 / c
        return b.scale(i, c, 0.0, label)
    if fn in _SUMS and node(args[0]):
        dims = args[1] if len(args) > 1 else kw.get("dim")
        if dims is None or 0 in _as_tuple(dims):
            raise b.fail(label, "sums over the batch dimension: give dim (the item's dimensions, from 1)")
        axes = [d - 1 if d > 0 else d for d in _as_tuple(dims)]
        keep = bool(args[2] if len(args) > 2 else kw.get("keepdim", False))
        return b.sum(args[0], axes, keep, label) if _SUMS[fn] == "sum" else b.mean(args[0], axes, keep, label)
    if fn in (torch.cat, "cat", torch.stack, "stack"):
        ins, dim = args[0], (args[1] if len(args) > 1 else kw.get("dim", 0))
        if dim == 0 or any(not node(x) for x in ins):
            raise b.fail(label, "concatenates along the batch or with constants, which is not supported")
        if fn in (torch.stack, "stack"):
            ins = [_probe(b, x, lambda t, d=dim: t.unsqueeze(d), label) for x in ins]
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
    if fn in (F.avg_pool2d,) and node(args[0]):
        k = _pair(args[1] if len(args) > 1 else kw["kernel_size"])
        st = _pair(args[2] if len(args) > 2 and args[2] is not None else kw.get("stride") or k)
        return b.avgpool(args[0], k, st, _pair(kw.get("padding", 0)), kw.get("count_include_pad", True), label)
    if fn is F.interpolate and node(args[0]):
        if kw.get("mode", "nearest") != "nearest":
            raise b.fail(label, f"interpolates in mode {kw['mode']!r}; exact methods support mode 'nearest'")
        return _probe(b, args[0], lambda t: F.interpolate(t, *args[1:], **kw), label)
    if (fn in _MOVE_FNS or fn in _MOVE_METHODS) and node(args[0]):
        if _has_ref([args[1:], kw]):
            raise b.fail(label, "indexes with an input-dependent tensor, which is not supported")
        rest = [2 if isinstance(a, str) and a == "batch" else a for a in args[1:]]
        call = (lambda t: getattr(t, fn)(*rest, **kw)) if isinstance(fn, str) else (lambda t: fn(t, *rest, **kw))
        return _probe(b, args[0], call, label)
    name = getattr(fn, "__name__", str(fn))
    raise b.fail(label, f"calls {name}, which is not supported by exact methods; they support {GRAPH_TORCH}")
