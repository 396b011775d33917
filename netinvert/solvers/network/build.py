"""The builder the ``GraphNet`` readers share (``onnx.py``, through the op table's verification
functions in ``models/onnx/verify.py``, and ``fx.py`` for ``torch.fx``): one method per kind of node,
with its shape checks, and the final clean-up. Max-pooling is written with ReLUs.

BatchNorm and other per-channel affine maps become ``scale`` nodes and are folded into the
convolution or linear layer before them when nothing else reads it; nodes the output does not
depend on are dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from netinvert.ground.errors import NetinvertError
from netinvert.solvers.network.graph import GNode, GraphNet

DT = torch.float64


class Build:
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
    def act(self, i: int, activation: str, label: str) -> int:
        return self.add("act", (i,), self.shape(i), label, activation=activation)

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

    def gather(self, i: int, index: Any, label: str) -> int:
        """The node whose element ``k`` is element ``index.flat[k]`` of node ``i`` (``index`` has the
        output's shape and holds flat indices, as floats from a probe); a reshape when nothing moves."""
        n = self.nodes[i].size
        values = np.asarray(index, dtype=np.float64)
        flat = values.reshape(-1).astype(np.int64)
        if values.ndim == 0 or np.any(flat != values.reshape(-1)) or np.any(flat < 0) or np.any(flat >= n):
            raise self.fail(label, "does not only move the elements of its input, which exact methods need here")
        if flat.size == n and np.array_equal(flat, np.arange(n)):
            return self.reshape(i, list(values.shape), label)
        return self.add("gather", (i,), values.shape, label, index=torch.as_tensor(flat),
                        injective=bool(np.unique(flat).size == flat.size))

    def sum(self, i: int, axes: list[int], keepdims: bool, label: str) -> int:
        shape = self.shape(i)
        axes = sorted({a % len(shape) for a in axes})
        kept = tuple(1 if d in axes else n for d, n in enumerate(shape))
        out = kept if keepdims else tuple(n for d, n in enumerate(shape) if d not in axes)
        return self.add("sum", (i,), out, label, axes=tuple(axes))

    def mean(self, i: int, axes: list[int], keepdims: bool, label: str) -> int:
        count = int(np.prod([self.shape(i)[a] for a in axes]))
        return self.scale(self.sum(i, axes, keepdims, label), 1.0 / count, 0.0, label)

    def leaky(self, i: int, slope: Any, label: str) -> int:
        """``leaky(z) = (1 - slope) relu(z) + slope z``: a ReLU and an affine skip, so the ReLU machinery
        (MILP, branch-and-bound, alpha-CROWN) takes it and CROWN's relaxation is leaky ReLU's own."""
        slope = np.asarray(slope, dtype=np.float64)
        relu = self.act(i, "relu", label)
        if slope.size == 1:
            return self.add2(self.scale(relu, 1.0 - slope.reshape(()), 0.0, label), i, float(slope.reshape(())),
                             label)
        return self.add2(self.scale(relu, 1.0 - slope, 0.0, label), self.scale(i, slope, 0.0, label), 1.0, label)

    def power(self, i: int, exponent: Any, label: str) -> int:
        e = np.unique(np.asarray(exponent, dtype=np.float64))
        if e.size != 1 or e[0] != round(e[0]) or e[0] < 1:
            raise self.fail(label, f"raises to the power {', '.join(f'{v:g}' for v in e)}; exact methods "
                                   "support constant integer exponents >= 1")
        p = int(e[0])
        return i if p == 1 else self.act(i, f"pow{p}", label)

    def convt(self, i: int, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
              pads: tuple[int, int, int, int], dilation: tuple[int, int], groups: int,
              output_padding: tuple[int, int], label: str) -> int:
        """A 2-D transposed convolution; ``pads`` (left, right, top, bottom) crop its full output."""
        shape = self.shape(i)
        if len(shape) < 3 or w.ndim != 4 or min(pads) < 0:
            raise self.fail(label, f"is a 2-D transposed convolution on a tensor of shape {shape}: only 2-D "
                                   "with pads >= 0 is supported")
        left, right, top, bottom = pads
        h = (shape[-2] - 1) * stride[0] + dilation[0] * (w.shape[-2] - 1) + 1 + output_padding[0] - top - bottom
        wd = (shape[-1] - 1) * stride[1] + dilation[1] * (w.shape[-1] - 1) + 1 + output_padding[1] - left - right
        return self.add("convt", (i,), (*shape[:-3], w.shape[1] * groups, h, wd), label, w=self.t(w),
                        b=None if b is None else self.t(b), stride=stride, pads=pads, dilation=dilation,
                        groups=groups, output_padding=output_padding)

    def maxpool(self, i: int, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
                label: str) -> int:
        """Exact 2-D max-pooling (``pads``: left, right, top, bottom; padded cells never win) by a tournament
        of pairs, each round one ReLU layer: ``max(a, b) = relu(a - b) + relu(b) - relu(-b)``. Every value
        passes through the round's ReLUs, so a chain stays a chain (its dense form keeps it exact); a
        group with an odd count pairs its last cell with itself."""
        shape = self.shape(i)
        if len(shape) < 3:
            raise self.fail(label, f"pools a tensor of shape {shape}: it needs (C, H, W)")
        *lead, h, w = shape
        left, right, top, bottom = pads
        oh, ow = (h + top + bottom - kernel[0]) // stride[0] + 1, (w + left + right - kernel[1]) // stride[1] + 1
        groups = [[(ch * h + y) * w + x for y in range(r * stride[0] - top, r * stride[0] - top + kernel[0])
                   for x in range(c * stride[1] - left, c * stride[1] - left + kernel[1]) if 0 <= y < h and 0 <= x < w]
                  for ch in range(int(np.prod(lead))) for r in range(oh) for c in range(ow)]
        cur = i  # the node whose flat elements ``groups`` index
        while any(len(g) > 1 for g in groups):
            pairs = [[(g[k], g[min(k + 1, len(g) - 1)]) for k in range(0, len(g), 2)] for g in groups]
            firsts = [a for p in pairs for a, _ in p]
            first = self.gather(cur, np.array(firsts, dtype=np.float64), label)
            second = self.gather(cur, np.array([b for p in pairs for _, b in p], dtype=np.float64), label)
            diff = self.add2(first, second, -1.0, label)
            pre = self.concat([diff, second, self.add2(diff, first, -1.0, label)], 0, label)  # a - b, b, -b
            relu, n = self.act(pre, "relu", label), len(firsts)
            part = [self.gather(relu, np.arange(k * n, (k + 1) * n, dtype=np.float64), label) for k in range(3)]
            cur = self.add2(self.add2(part[0], part[1], 1.0, label), part[2], -1.0, label)
            offsets = np.cumsum([0] + [len(p) for p in pairs])
            groups = [list(range(s, e)) for s, e in zip(offsets[:-1], offsets[1:])]
        return self.gather(cur, np.array([g[0] for g in groups], dtype=np.float64).reshape(*lead, oh, ow), label)

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
