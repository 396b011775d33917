"""The ONNX op table (``OPS``): per ONNX op type, its torch function (loading) and how it becomes nodes of
the exact solvers' graph (verification, :mod:`.verify`), so a new op is added in one place; and the
module that runs one node.

Each torch function takes the node (its attributes, opset and the float dtype of the current
forward) and the list of its input tensors (``None`` for omitted optional inputs) and returns a
tensor or a tuple. :mod:`netinvert.models.onnx.graph` reads the graph and wires the nodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.models.onnx import verify as v

Tensor = torch.Tensor
Outputs = Tensor | tuple[Tensor, ...]

_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.BOOL: torch.bool,
    onnx.TensorProto.UINT16: torch.int32, onnx.TensorProto.UINT32: torch.int64, onnx.TensorProto.UINT64: torch.int64,
}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


class ItemRunner(Protocol):
    """Runs a node once per batch item (for graphs that take one item at a time)."""

    def run(self, node: Node, inputs: list[Tensor | None]) -> Outputs: ...


class Node(nn.Module):
    """One ONNX node; ``forward`` runs its op on torch tensors (per item for fixed-batch graphs)."""

    def __init__(self, op_type: str, onnx_name: str, attrs: dict[str, Any], opset: int, n_outputs: int) -> None:
        super().__init__()
        self.op_type = op_type
        self.onnx_name = onnx_name
        self.attrs = attrs
        self.opset = opset
        self.n_outputs = n_outputs
        self.float_dtype = torch.float32
        self.weighted = False  # reads a constant weight matrix (the graph's buffers; it has no parameters)

    def extra_repr(self) -> str:
        return f"{self.op_type}, onnx name {self.onnx_name!r}"

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def run_op(self, inputs: list[Tensor | None]) -> Outputs:
        """The op on these inputs, as they are (no per-item loop)."""
        return OPS[self.op_type].run(self, inputs)

    def forward(self, *inputs: Tensor | None, dtype: torch.dtype = torch.float32,
                items: ItemRunner | None = None) -> Outputs:
        if dtype is not self.float_dtype:  # nn.Module.__setattr__ is slow enough to show in a step's time
            self.float_dtype = dtype
        if items is None:
            return self.run_op(list(inputs))
        return items.run(self, list(inputs))



def as_tuple(out: Outputs) -> tuple[Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def supported_ops() -> list[str]:
    """ONNX op types (default domain) the converter handles."""
    return sorted(OPS)


# --------------------------------------------------------------------------- op helpers
def _ints(t: Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _bad_attr(n: Node, name: str, value: Any) -> NetinvertError:
    return NetinvertError(f"ONNX node {n.onnx_name!r} ({n.op_type}): attribute {name}={value!r} is not supported")


def _auto_pads(n: Node, spatial: list[int], kernel: list[int], strides: list[int],
               dilations: list[int]) -> tuple[list[int], list[int]]:
    """Begin/end pads per spatial dim from ``auto_pad`` or ``pads``."""
    mode = n.attr("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begin.append(small if mode == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin, end
    if mode == "VALID":
        return [0] * len(spatial), [0] * len(spatial)
    if mode != "NOTSET":
        raise _bad_attr(n, "auto_pad", mode)
    pads = list(n.attr("pads", [0] * (2 * len(spatial))))
    return pads[:len(spatial)], pads[len(spatial):]


def _torch_pad(begin: list[int], end: list[int]) -> list[int]:
    """F.pad's argument (last dim first) from per-dim begin/end lists."""
    out: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial_params(n: Node, x: Tensor, kernel: list[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    dims = x.dim() - 2
    if dims not in _CONV:
        raise NetinvertError(f"ONNX node {n.onnx_name!r} ({n.op_type}): {dims}-D inputs are not supported (1-3)")
    strides = list(n.attr("strides", [1] * dims))
    dilations = list(n.attr("dilations", [1] * dims))
    begin, end = _auto_pads(n, list(x.shape[2:]), kernel, strides, dilations)
    return strides, dilations, begin, end


def _conv(n: Node, xs: list) -> Tensor:
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    kernel = list(w.shape[2:])
    strides, dilations, begin, end = _spatial_params(n, x, kernel)
    padding: list[int] | str = begin
    if begin != end:
        x, padding = F.pad(x, _torch_pad(begin, end)), [0] * len(begin)
    return _CONV[len(kernel)](x, w, b, strides, padding, dilations, int(n.attr("group", 1)))


def _conv_transpose(n: Node, xs: list) -> Tensor:
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    dims = x.dim() - 2
    if dims not in _CONV_T:
        raise NetinvertError(f"ONNX node {n.onnx_name!r} (ConvTranspose): {dims}-D inputs are not supported (1-3)")
    kernel = list(w.shape[2:])
    strides = list(n.attr("strides", [1] * dims))
    dilations = list(n.attr("dilations", [1] * dims))
    extra = list(n.attr("output_padding", [0] * dims))
    spatial = list(x.shape[2:])
    full = [s * (i - 1) + d * (k - 1) + 1 for s, i, d, k in zip(strides, spatial, dilations, kernel)]
    mode = n.attr("auto_pad", "NOTSET")
    target = n.attr("output_shape")
    if target is None and mode in ("SAME_UPPER", "SAME_LOWER"):
        target = [i * s for i, s in zip(spatial, strides)]
    if target is not None:
        target = list(target)[-dims:]
        total = [f + e - t for f, e, t in zip(full, extra, target)]
        if mode == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [t - bg for t, bg in zip(total, begin)]
    elif mode in ("NOTSET", "VALID"):
        pads = list(n.attr("pads", [0] * (2 * dims))) if mode == "NOTSET" else [0] * (2 * dims)
        begin, end = pads[:dims], pads[dims:]
    else:
        raise _bad_attr(n, "auto_pad", mode)
    y = _CONV_T[dims](x, w, None, strides, 0, 0, int(n.attr("group", 1)), dilations)
    y = F.pad(y, _torch_pad([-v for v in begin], [e - v for e, v in zip(extra, end)]))
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * dims))
    return y


def _max_pool(n: Node, xs: list) -> Outputs:
    x = xs[0]
    kernel = list(n.attr("kernel_shape"))
    strides, dilations, begin, end = _spatial_params(n, x, kernel)
    if n.attr("storage_order", 0) != 0:
        raise _bad_attr(n, "storage_order", n.attr("storage_order"))
    if any(begin) or any(end):
        x = F.pad(x, _torch_pad(begin, end), value=-math.inf)
    ceil = bool(n.attr("ceil_mode", 0))
    if n.n_outputs > 1:
        raise NetinvertError(f"ONNX node {n.onnx_name!r} (MaxPool): the Indices output is not supported")
    return _MAXPOOL[len(kernel)](x, kernel, strides, 0, dilations, ceil)


def _avg_pool(n: Node, xs: list) -> Tensor:
    x = xs[0]
    kernel = list(n.attr("kernel_shape"))
    strides, dilations, begin, end = _spatial_params(n, x, kernel)
    if any(d != 1 for d in dilations):
        raise _bad_attr(n, "dilations", dilations)
    ceil = bool(n.attr("ceil_mode", 0))
    pool = _AVGPOOL[len(kernel)]
    if not (any(begin) or any(end)):
        return pool(x, kernel, strides, 0, ceil, True)
    padded = F.pad(x, _torch_pad(begin, end))
    total = pool(padded, kernel, strides, 0, ceil, True)
    if n.attr("count_include_pad", 0):
        return total
    mask = F.pad(torch.ones_like(x[:1, :1]), _torch_pad(begin, end))
    return total / pool(mask, kernel, strides, 0, ceil, True)


def _batch_norm(n: Node, xs: list) -> Tensor:
    x, scale, bias, mean, var = xs[:5]
    eps = float(n.attr("epsilon", 1e-5))
    if scale.dim() == 1:
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)
    shape = (1, *scale.shape)
    return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)


def _layer_norm(n: Node, xs: list) -> Outputs:
    x, scale = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    dims = tuple(range(_axis(int(n.attr("axis", -1)), x.dim()), x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    inv = torch.rsqrt(var + float(n.attr("epsilon", 1e-5)))
    y = (x - mean) * inv * scale
    if bias is not None:
        y = y + bias
    return (y, mean, inv) if n.n_outputs > 1 else y


def _group_norm(n: Node, xs: list) -> Tensor:
    x, scale, bias = xs
    groups, channels = int(n.attr("num_groups")), x.shape[1]
    g = x.reshape(x.shape[0], groups, -1)
    mean = g.mean(-1, keepdim=True)
    var = ((g - mean) ** 2).mean(-1, keepdim=True)
    y = ((g - mean) * torch.rsqrt(var + float(n.attr("epsilon", 1e-5)))).reshape(x.shape)
    if scale.numel() == groups and groups != channels:
        scale, bias = scale.repeat_interleave(channels // groups), bias.repeat_interleave(channels // groups)
    shape = (1, channels, *([1] * (x.dim() - 2)))
    return y * scale.reshape(shape) + bias.reshape(shape)


def _lrn(n: Node, xs: list) -> Tensor:
    x = xs[0]
    size = int(n.attr("size"))
    sq = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)
    sq = F.pad(sq, [0, 0, (size - 1) // 2, size - 1 - (size - 1) // 2])
    mean = F.avg_pool2d(sq, (size, 1), 1).reshape(x.shape)
    return x / (float(n.attr("bias", 1.0)) + float(n.attr("alpha", 1e-4)) * mean) ** float(n.attr("beta", 0.75))


def _softmax_like(fn: Callable[[Tensor, int], Tensor]) -> Callable[[Node, list], Tensor]:
    def op(n: Node, xs: list) -> Tensor:
        x = xs[0]
        if n.opset >= 13:
            return fn(x, _axis(int(n.attr("axis", -1)), x.dim()))
        axis = _axis(int(n.attr("axis", 1)), x.dim())
        flat = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
        return fn(flat, 1).reshape(x.shape)

    return op


def _hardmax(x: Tensor, dim: int) -> Tensor:
    return F.one_hot(x.argmax(dim), x.shape[dim]).movedim(-1, dim).to(x.dtype)


def _gemm(n: Node, xs: list) -> Tensor:
    a, b = xs[0], xs[1]
    a = a.t() if n.attr("transA", 0) else a
    b = b.t() if n.attr("transB", 0) else b
    y = a @ b
    alpha = float(n.attr("alpha", 1.0))
    if alpha != 1.0:
        y = alpha * y
    if len(xs) > 2 and xs[2] is not None:
        beta = float(n.attr("beta", 1.0))
        y = y + (xs[2] if beta == 1.0 else beta * xs[2])
    return y


def _clip(n: Node, xs: list) -> Tensor:
    x = xs[0]
    if n.opset < 11:
        low, high = n.attr("min"), n.attr("max")
    else:
        low = xs[1].item() if len(xs) > 1 and xs[1] is not None else None
        high = xs[2].item() if len(xs) > 2 and xs[2] is not None else None
    return torch.clamp(x, low, high) if low is not None or high is not None else x


def _reshape(n: Node, xs: list) -> Tensor:
    x = xs[0]
    shape = list(n.attr("shape")) if n.opset < 5 else _ints(xs[1])
    if not n.attr("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(n: Node, xs: list) -> Tensor:
    x = xs[0]
    axis = _axis(int(n.attr("axis", 1)), x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _axes_arg(n: Node, xs: list, since: int) -> list[int] | None:
    """Axes from the ``axes`` attribute (older opsets) or the second input (``since`` onwards)."""
    if n.opset >= since:
        return _ints(xs[1]) if len(xs) > 1 else None
    axes = n.attr("axes")
    return list(axes) if axes is not None else None


def _squeeze(n: Node, xs: list) -> Tensor:
    x = xs[0]
    axes = _axes_arg(n, xs, 13)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in axes)) if axes else x


def _unsqueeze(n: Node, xs: list) -> Tensor:
    x = xs[0]
    axes = _axes_arg(n, xs, 13) or []
    rank = x.dim() + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


def _split(n: Node, xs: list) -> tuple[Tensor, ...]:
    x = xs[0]
    axis = _axis(int(n.attr("axis", 0)), x.dim())
    sizes = _ints(xs[1]) if n.opset >= 13 and len(xs) > 1 and xs[1] is not None else n.attr("split")
    if not sizes:
        parts = int(n.attr("num_outputs", n.n_outputs))
        sizes = math.ceil(x.shape[axis] / parts)
    return tuple(torch.split(x, sizes if isinstance(sizes, int) else list(sizes), dim=axis))


def _slice(n: Node, xs: list) -> Tensor:
    x = xs[0]
    if n.opset < 10:
        starts, ends, axes, steps = list(n.attr("starts")), list(n.attr("ends")), n.attr("axes"), None
    else:
        starts, ends = _ints(xs[1]), _ints(xs[2])
        axes = _ints(xs[3]) if len(xs) > 3 and xs[3] is not None else None
        steps = _ints(xs[4]) if len(xs) > 4 and xs[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.dim())
        size = x.shape[axis]
        start = start + size if start < 0 else start
        end = end + size if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
            x = x.narrow(axis, start, max(end - start, 0))[(slice(None),) * axis + (slice(None, None, step),)]
        else:
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
            index = torch.arange(start, end, step, device=x.device)
            x = x.index_select(axis, index)
    return x


def _gather(n: Node, xs: list) -> Tensor:
    x, idx = xs[0], xs[1].long()
    axis = _axis(int(n.attr("axis", 0)), x.dim())
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


def _gather_elements(n: Node, xs: list) -> Tensor:
    x, idx = xs[0], xs[1].long()
    axis = _axis(int(n.attr("axis", 0)), x.dim())
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))


def _shape(n: Node, xs: list) -> Tensor:
    shape = list(xs[0].shape)
    start, end = int(n.attr("start", 0)), n.attr("end")
    return torch.tensor(shape[start:end], dtype=torch.int64, device=xs[0].device)


def _cast_dtype(n: Node, onnx_type: int) -> torch.dtype:
    if onnx_type in _FLOAT_TYPES:
        return n.float_dtype
    if onnx_type not in _DTYPES:
        raise _bad_attr(n, "to", onnx.TensorProto.DataType.Name(onnx_type))
    return _DTYPES[onnx_type]


def _constant(n: Node, xs: list) -> Tensor:
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in n.attrs:
            return torch.tensor(n.attrs[key], dtype=dtype)
    if "value" not in n.attrs:
        raise _bad_attr(n, "value", f"one of {sorted(n.attrs)}")
    return n.attrs["value"].clone()


def _constant_of_shape(n: Node, xs: list) -> Tensor:
    value = n.attr("value")
    shape = _ints(xs[0]) or []
    if value is None:
        return torch.zeros(shape, dtype=n.float_dtype, device=xs[0].device)
    dtype = n.float_dtype if value.is_floating_point() else value.dtype
    return torch.full(shape, value.reshape(-1)[0].item(), dtype=dtype, device=xs[0].device)


def _pad(n: Node, xs: list) -> Tensor:
    x = xs[0]
    if n.opset < 11:
        pads, value, axes = list(n.attr("pads")), float(n.attr("value", 0.0)), None
    else:
        pads = _ints(xs[1])
        value = xs[2].item() if len(xs) > 2 and xs[2] is not None and xs[2].numel() else 0.0
        axes = _ints(xs[3]) if len(xs) > 3 and xs[3] is not None else None
    axes = [_axis(a, x.dim()) for a in axes] if axes is not None else list(range(x.dim()))
    begin, end = [0] * x.dim(), [0] * x.dim()
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    mode = n.attr("mode", "constant")
    if mode == "constant":
        return F.pad(x, _torch_pad(begin, end), value=value)
    for a in range(x.dim()):
        if begin[a] or end[a]:
            size = x.shape[a]
            idx = torch.arange(-begin[a], size + end[a], device=x.device)
            if mode == "edge":
                idx = idx.clamp(0, size - 1)
            elif mode == "wrap":
                idx = idx % size
            elif mode == "reflect":
                period = 2 * (size - 1) if size > 1 else 1
                idx = idx.abs() % period
                idx = torch.where(idx >= size, period - idx, idx)
            else:
                raise _bad_attr(n, "mode", mode)
            x = x.index_select(a, idx)
    return x


def _reduce(fn: Callable[[Tensor, tuple[int, ...], bool], Tensor], since: int) -> Callable[[Node, list], Tensor]:
    def op(n: Node, xs: list) -> Tensor:
        x = xs[0]
        axes = _axes_arg(n, xs, since)
        keep = bool(n.attr("keepdims", 1))
        if not axes:
            if n.attr("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, tuple(_axis(a, x.dim()) for a in axes), keep)

    return op


def _arg_reduce(largest: bool) -> Callable[[Node, list], Tensor]:
    def op(n: Node, xs: list) -> Tensor:
        x = xs[0]
        axis = _axis(int(n.attr("axis", 0)), x.dim())
        keep = bool(n.attr("keepdims", 1))
        if n.attr("select_last_index", 0):
            flipped = x.flip(axis)
            idx = flipped.argmax(axis, keep) if largest else flipped.argmin(axis, keep)
            return x.shape[axis] - 1 - idx
        return x.argmax(axis, keep) if largest else x.argmin(axis, keep)

    return op


def _resize_coords(mode: str, out: int, size: int, scale: float, roi: tuple[float, float],
                   device: torch.device) -> Tensor:
    """Source coordinate of every output index along one axis (the ONNX Resize formulas)."""
    x = torch.arange(out, dtype=torch.float64, device=device)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        return size / 2 * (1 - adjustment) + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out > 1 else torch.zeros_like(x)
    if mode == "align_corners":
        return x * (size - 1) / (out - 1) if out > 1 else torch.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out > 1:
            return start * (size - 1) + x * (end - start) * (size - 1) / (out - 1)
        return torch.full_like(x, 0.5 * (start + end) * (size - 1))
    raise ValueError(mode)


def _resize_axis(n: Node, x: Tensor, axis: int, out: int, scale: float, roi: tuple[float, float], *,
                 mode: str, coord_mode: str, nearest: str) -> Tensor:
    size = x.shape[axis]
    src = _resize_coords(coord_mode, out, size, scale, roi, x.device)
    if mode == "nearest":
        rule = n.attr("nearest_mode", nearest)
        rounders = {"round_prefer_floor": lambda v: torch.ceil(v - 0.5), "round_prefer_ceil": lambda v: torch.floor(v + 0.5),
                    "floor": torch.floor, "ceil": torch.ceil}
        if rule not in rounders:
            raise _bad_attr(n, "nearest_mode", rule)
        idx = rounders[rule](src).long().clamp(0, size - 1)
        y = x.index_select(axis, idx)
        taps_valid = None
    elif mode == "linear":
        if coord_mode != "tf_crop_and_resize":
            src = src.clamp(0, size - 1)
        low = torch.floor(src)
        w = (src - low).to(x.dtype)
        i0 = low.long().clamp(0, size - 1)
        i1 = (low.long() + 1).clamp(0, size - 1)
        shape = [1] * x.dim()
        shape[axis] = out
        w = w.reshape(shape)
        y = x.index_select(axis, i0) * (1 - w) + x.index_select(axis, i1) * w
        taps_valid = None
    elif mode == "cubic":
        a = float(n.attr("cubic_coeff_a", -0.75))
        low = torch.floor(src)
        t = src - low
        dist = [t + 1, t, 1 - t, 2 - t]
        weights = [((a * d - 5 * a) * d + 8 * a) * d - 4 * a if k in (0, 3) else ((a + 2) * d - (a + 3)) * d * d + 1
                   for k, d in enumerate(dist)]
        idx = [low.long() + k for k in (-1, 0, 1, 2)]
        if n.attr("exclude_outside", 0):
            weights = [w * ((i >= 0) & (i < size)) for w, i in zip(weights, idx)]
            total = sum(weights)
            weights = [w / total for w in weights]
        shape = [1] * x.dim()
        shape[axis] = out
        y = sum(x.index_select(axis, i.clamp(0, size - 1)) * w.to(x.dtype).reshape(shape)
                for i, w in zip(idx, weights))
        taps_valid = None
    else:
        raise _bad_attr(n, "mode", mode)
    if coord_mode == "tf_crop_and_resize":
        taps_valid = (src >= 0) & (src <= size - 1)
        shape = [1] * x.dim()
        shape[axis] = out
        y = torch.where(taps_valid.reshape(shape), y, torch.full_like(y, float(n.attr("extrapolation_value", 0.0))))
    return y


def _resize(n: Node, xs: list) -> Tensor:
    x = xs[0]
    if n.op_type == "Upsample":
        scales = list(n.attr("scales")) if n.opset < 9 else [float(v) for v in xs[1].tolist()]
        mode = n.attr("mode", "nearest")
        mode = "linear" if mode in ("linear", "bilinear") else mode
        coord_mode, roi_t, sizes, axes = "asymmetric", None, None, None
    elif n.opset < 11:
        scales = [float(v) for v in xs[1].tolist()]
        mode, coord_mode, roi_t, sizes, axes = n.attr("mode", "nearest"), "asymmetric", None, None, None
    else:
        mode = n.attr("mode", "nearest")
        coord_mode = n.attr("coordinate_transformation_mode", "half_pixel")
        roi_t = xs[1] if len(xs) > 1 and xs[1] is not None and xs[1].numel() else None
        scales_t = xs[2] if len(xs) > 2 and xs[2] is not None and xs[2].numel() else None
        sizes = _ints(xs[3]) if len(xs) > 3 and xs[3] is not None and xs[3].numel() else None
        scales = [float(v) for v in scales_t.tolist()] if scales_t is not None else None
        axes = n.attr("axes")
    if n.attr("antialias", 0):
        raise _bad_attr(n, "antialias", 1)
    axes = [_axis(a, x.dim()) for a in axes] if axes is not None else list(range(x.dim()))
    in_sizes = [x.shape[a] for a in axes]
    if sizes is not None:
        policy = n.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            ratios = [s / i for s, i in zip(sizes, in_sizes)]
            r = min(ratios) if policy == "not_larger" else max(ratios)
            sizes = [int(math.floor(r * i + 0.5)) for i in in_sizes]
            scales = [r] * len(axes)
        else:
            scales = [s / i for s, i in zip(sizes, in_sizes)]
    elif scales is not None:
        sizes = [int(math.floor(i * s)) for i, s in zip(in_sizes, scales)]
    else:
        raise NetinvertError(f"ONNX node {n.onnx_name!r} (Resize) has neither scales nor sizes")
    rois = roi_t.tolist() if roi_t is not None else [0.0] * len(axes) + [1.0] * len(axes)
    for k, (a, out, scale) in enumerate(zip(axes, sizes, scales)):
        if out == x.shape[a] and scale == 1.0 and coord_mode != "tf_crop_and_resize":
            continue
        x = _resize_axis(n, x, a, out, scale, (rois[k], rois[k + len(axes)]), mode=mode, coord_mode=coord_mode,
                         nearest="round_prefer_floor" if n.op_type == "Resize" and n.opset >= 11 else "floor")
    return x


def _depth_to_space(n: Node, xs: list) -> Tensor:
    x, bs = xs[0], int(n.attr("blocksize"))
    b, c, h, w = x.shape
    if n.attr("mode", "DCR") == "DCR":
        y = x.reshape(b, bs, bs, c // bs ** 2, h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(b, c // bs ** 2, bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c // bs ** 2, h * bs, w * bs)


def _space_to_depth(n: Node, xs: list) -> Tensor:
    x, bs = xs[0], int(n.attr("blocksize"))
    b, c, h, w = x.shape
    y = x.reshape(b, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(b, c * bs * bs, h // bs, w // bs)


def _topk(n: Node, xs: list) -> tuple[Tensor, Tensor]:
    x = xs[0]
    k = int(n.attr("k")) if n.opset < 10 else int(xs[1].reshape(-1)[0])
    values, indices = torch.topk(x, k, _axis(int(n.attr("axis", -1)), x.dim()), bool(n.attr("largest", 1)),
                                 bool(n.attr("sorted", 1)))
    return values, indices


def _cumsum(n: Node, xs: list) -> Tensor:
    x, axis = xs[0], _axis(int(xs[1].reshape(-1)[0]), xs[0].dim())
    if n.attr("reverse", 0):
        x = x.flip(axis)
    y = x.cumsum(axis)
    if n.attr("exclusive", 0):
        y = y - x
    return y.flip(axis) if n.attr("reverse", 0) else y


def _div(n: Node, xs: list) -> Tensor:
    a, b = xs
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _pow(n: Node, xs: list) -> Tensor:
    y = torch.pow(xs[0], xs[1])
    return y if y.dtype == xs[0].dtype else y.to(xs[0].dtype)


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list], Tensor]:
    def op(n: Node, xs: list) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return op


def _unary(fn: Callable[[Tensor], Tensor]) -> Callable[[Node, list], Tensor]:
    return lambda n, xs: fn(xs[0])


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list], Tensor]:
    return lambda n, xs: fn(xs[0], xs[1])


def _hard_sigmoid(n: Node, xs: list) -> Tensor:
    return torch.clamp(float(n.attr("alpha", 0.2)) * xs[0] + float(n.attr("beta", 0.5)), 0, 1)


def _gelu(n: Node, xs: list) -> Tensor:
    return F.gelu(xs[0], approximate=n.attr("approximate", "none"))


def _selu(n: Node, xs: list) -> Tensor:
    alpha = float(n.attr("alpha", 1.67326319217681884765625))
    gamma = float(n.attr("gamma", 1.05070102214813232421875))
    x = xs[0]
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def _shrink(n: Node, xs: list) -> Tensor:
    x, lambd, bias = xs[0], float(n.attr("lambd", 0.5)), float(n.attr("bias", 0.0))
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


def _dropout(n: Node, xs: list) -> Outputs:
    return (xs[0], torch.ones_like(xs[0], dtype=torch.bool)) if n.n_outputs > 1 else xs[0]


def _mod(n: Node, xs: list) -> Tensor:
    return torch.fmod(xs[0], xs[1]) if n.attr("fmod", 0) else torch.remainder(xs[0], xs[1])


def _trilu(n: Node, xs: list) -> Tensor:
    k = int(xs[1].reshape(-1)[0]) if len(xs) > 1 and xs[1] is not None else 0
    return torch.triu(xs[0], k) if n.attr("upper", 1) else torch.tril(xs[0], k)


def _range(n: Node, xs: list) -> Tensor:
    start, limit, delta = (v.reshape(-1)[0].item() for v in xs)
    return torch.arange(start, limit, delta, dtype=xs[0].dtype, device=xs[0].device)


def _expand(n: Node, xs: list) -> Tensor:
    x = xs[0]
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(xs[1]) or [])))


def _lp_norm(n: Node, xs: list) -> Tensor:
    x = xs[0]
    return F.normalize(x, p=float(n.attr("p", 2)), dim=_axis(int(n.attr("axis", -1)), x.dim()), eps=0.0)


class Op(NamedTuple):
    """One ONNX op: how it runs on torch tensors (loading) and how it becomes nodes of the exact solvers'
    graph (verification, :mod:`.verify`; ``None`` where the exact methods refuse it)."""

    run: Callable[[Node, list], Outputs]
    verify: Callable[..., Any] | None = None


# The op table: the ops the exact methods read come first (their order is the one error messages list).
OPS: dict[str, Op] = {
    "Gemm": Op(_gemm, v.gemm), "MatMul": Op(_binary(torch.matmul), v.matmul), "Conv": Op(_conv, v.conv),
    "ConvTranspose": Op(_conv_transpose, v.conv_transpose),
    "Relu": Op(_unary(F.relu), v.activation("relu")), "Sigmoid": Op(_unary(torch.sigmoid), v.activation("sigmoid")),
    "Tanh": Op(_unary(torch.tanh), v.activation("tanh")), "Softplus": Op(_unary(F.softplus), v.activation("softplus")),
    "Sin": Op(_unary(torch.sin), v.activation("sin")), "Cos": Op(_unary(torch.cos), v.activation("cos")),
    "LeakyRelu": Op(lambda n, xs: F.leaky_relu(xs[0], float(n.attr("alpha", 0.01))), v.leaky_relu),
    "PRelu": Op(lambda n, xs: torch.where(xs[0] < 0, xs[0] * xs[1], xs[0]), v.prelu),
    "Pow": Op(_pow, v.power), "Add": Op(_binary(torch.add), v.add_sub), "Sub": Op(_binary(torch.sub), v.add_sub),
    "Mul": Op(_binary(torch.mul), v.mul_div), "Div": Op(_div, v.mul_div), "Neg": Op(_unary(torch.neg), v.neg),
    "Concat": Op(lambda n, xs: torch.cat([x for x in xs if x is not None], _axis(int(n.attr("axis")), xs[0].dim())),
                 v.concat),
    "MaxPool": Op(_max_pool, v.max_pool), "AveragePool": Op(_avg_pool, v.average_pool),
    "GlobalAveragePool": Op(lambda n, xs: xs[0].mean(tuple(range(2, xs[0].dim())), keepdim=True),
                            v.global_average_pool),
    "ReduceSum": Op(_reduce(lambda x, d, k: x.sum(d, keepdim=k), 13), v.reduce),
    "ReduceMean": Op(_reduce(lambda x, d, k: x.mean(d, keepdim=k), 18), v.reduce),
    "Flatten": Op(_flatten, v.flatten), "Reshape": Op(_reshape, v.reshape),
    "Squeeze": Op(_squeeze, v.move), "Unsqueeze": Op(_unsqueeze, v.move),
    "Transpose": Op(lambda n, xs: xs[0].permute(*(n.attr("perm") or range(xs[0].dim() - 1, -1, -1))), v.move),
    "Slice": Op(_slice, v.move), "Split": Op(_split, v.move), "Gather": Op(_gather, v.move),
    "Expand": Op(_expand, v.move), "Tile": Op(lambda n, xs: xs[0].repeat(*(_ints(xs[1]) or [])), v.move),
    "Resize": Op(_resize, v.move), "Upsample": Op(_resize, v.move), "DepthToSpace": Op(_depth_to_space, v.move),
    "SpaceToDepth": Op(_space_to_depth, v.move), "Shape": Op(_shape, v.move),
    "BatchNormalization": Op(_batch_norm, v.batch_norm), "Identity": Op(_unary(lambda x: x), v.identity),
    "Dropout": Op(_dropout, v.identity),
    # loading only
    "Mod": Op(_mod), "Sqrt": Op(_unary(torch.sqrt)), "Exp": Op(_unary(torch.exp)), "Log": Op(_unary(torch.log)),
    "Abs": Op(_unary(torch.abs)), "Reciprocal": Op(_unary(torch.reciprocal)),
    "Floor": Op(_unary(torch.floor)), "Ceil": Op(_unary(torch.ceil)), "Round": Op(_unary(torch.round)),
    "Sign": Op(_unary(torch.sign)), "Tan": Op(_unary(torch.tan)),
    "Asin": Op(_unary(torch.asin)), "Acos": Op(_unary(torch.acos)), "Atan": Op(_unary(torch.atan)),
    "Sinh": Op(_unary(torch.sinh)), "Cosh": Op(_unary(torch.cosh)), "Erf": Op(_unary(torch.erf)),
    "Softsign": Op(_unary(F.softsign)), "Mish": Op(_unary(F.mish)),
    "Elu": Op(lambda n, xs: F.elu(xs[0], float(n.attr("alpha", 1.0)))),
    "Celu": Op(lambda n, xs: F.celu(xs[0], float(n.attr("alpha", 1.0)))),
    "ThresholdedRelu": Op(lambda n, xs: torch.where(xs[0] > float(n.attr("alpha", 1.0)), xs[0],
                                                    torch.zeros_like(xs[0]))),
    "Selu": Op(_selu), "HardSigmoid": Op(_hard_sigmoid),
    "HardSwish": Op(lambda n, xs: xs[0] * torch.clamp(xs[0] / 6 + 0.5, 0, 1)),
    "Gelu": Op(_gelu), "Shrink": Op(_shrink), "Clip": Op(_clip),
    "Softmax": Op(_softmax_like(torch.softmax)), "LogSoftmax": Op(_softmax_like(torch.log_softmax)),
    "Hardmax": Op(_softmax_like(_hardmax)),
    "GlobalMaxPool": Op(lambda n, xs: xs[0].amax(tuple(range(2, xs[0].dim())), keepdim=True)),
    "InstanceNormalization": Op(lambda n, xs: F.instance_norm(xs[0], weight=xs[1], bias=xs[2],
                                                              eps=float(n.attr("epsilon", 1e-5)))),
    "LayerNormalization": Op(_layer_norm), "GroupNormalization": Op(_group_norm), "LRN": Op(_lrn),
    "LpNormalization": Op(_lp_norm), "GatherElements": Op(_gather_elements),
    "Size": Op(lambda n, xs: torch.tensor(xs[0].numel(), dtype=torch.int64, device=xs[0].device)),
    "Constant": Op(_constant), "ConstantOfShape": Op(_constant_of_shape),
    "Cast": Op(lambda n, xs: xs[0].to(_cast_dtype(n, int(n.attr("to"))))),
    "CastLike": Op(lambda n, xs: xs[0].to(xs[1].dtype)),
    "Pad": Op(_pad),
    "ReduceMax": Op(_reduce(lambda x, d, k: x.amax(d, keepdim=k), 18)),
    "ReduceMin": Op(_reduce(lambda x, d, k: x.amin(d, keepdim=k), 18)),
    "ReduceProd": Op(_reduce(lambda x, d, k: _prod(x, d, k), 18)),
    "ReduceL1": Op(_reduce(lambda x, d, k: x.abs().sum(d, keepdim=k), 18)),
    "ReduceL2": Op(_reduce(lambda x, d, k: (x * x).sum(d, keepdim=k).sqrt(), 18)),
    "ReduceSumSquare": Op(_reduce(lambda x, d, k: (x * x).sum(d, keepdim=k), 18)),
    "ReduceLogSumExp": Op(_reduce(lambda x, d, k: torch.logsumexp(x, d, keepdim=k), 18)),
    "ReduceLogSum": Op(_reduce(lambda x, d, k: x.sum(d, keepdim=k).log(), 18)),
    "ArgMax": Op(_arg_reduce(True)), "ArgMin": Op(_arg_reduce(False)),
    "Where": Op(lambda n, xs: torch.where(xs[0].bool(), xs[1], xs[2])),
    "Equal": Op(_binary(torch.eq)), "Less": Op(_binary(torch.lt)), "LessOrEqual": Op(_binary(torch.le)),
    "Greater": Op(_binary(torch.gt)), "GreaterOrEqual": Op(_binary(torch.ge)),
    "And": Op(_binary(torch.logical_and)), "Or": Op(_binary(torch.logical_or)),
    "Xor": Op(_binary(torch.logical_xor)), "Not": Op(_unary(torch.logical_not)), "IsNaN": Op(_unary(torch.isnan)),
    "Min": Op(_variadic(torch.minimum)), "Max": Op(_variadic(torch.maximum)), "Sum": Op(_variadic(torch.add)),
    "Mean": Op(lambda n, xs: _variadic(torch.add)(n, xs) / len(xs)),
    "Einsum": Op(lambda n, xs: torch.einsum(n.attr("equation"), *xs)),
    "TopK": Op(_topk), "CumSum": Op(_cumsum), "Trilu": Op(_trilu), "Range": Op(_range),
    "NonZero": Op(lambda n, xs: torch.nonzero(xs[0]).t()),
}
VERIFIED = tuple(name for name, op in OPS.items() if op.verify is not None)  # the ops exact methods read


def _prod(x: Tensor, dims: tuple[int, ...], keep: bool) -> Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(d, keepdim=keep)
    return x
