"""A piecewise-linear network IR built from ONNX graphs and PyTorch modules.

Every supported network becomes an alternation ``x -> W_1 x + b_1 -> ReLU -> ... -> W_L z + b_L``
of dense affine maps and ReLUs: consecutive linear ops (Gemm, MatMul, Conv, BatchNorm, Add,
Mul, Flatten...) are composed into one matrix, and max-pooling is rewritten exactly with ReLUs
(``max(a, b) = relu(a - b) + relu(b) - relu(-b)``). Bounds, MILP and attack all read this one form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.models.architectures import AppendBias

ONNX_OPS = (
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Flatten",
    "Reshape",
    "Conv",
    "MaxPool",
    "BatchNormalization",
    "Identity",
    "Dropout",
    "Constant",
    "Sigmoid",
    "Tanh",
    "Softplus",
)
SMOOTH = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus"}  # ONNX op -> activation kind
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softplus")


def activate(kind: str, z: np.ndarray) -> np.ndarray:
    """The activation ``kind`` (one of ``ACTIVATIONS``) on a float64 array."""
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "sigmoid":
        return 0.5 * (np.tanh(0.5 * z) + 1.0)
    if kind == "tanh":
        return np.tanh(z)
    return np.logaddexp(0.0, z)


@dataclass
class PLNet:
    """Affine layers ``weights[i] @ z + biases[i]``; an activation follows every layer but the last.

    ``activations[i]`` names the activation after layer ``i`` (``ACTIVATIONS``); empty means ReLU
    everywhere. Only all-ReLU networks are piecewise-linear (MILP, ReLU branch-and-bound).
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    input_shape: tuple[int, ...]
    name: str = "network"
    info: dict[str, Any] = field(default_factory=dict)
    activations: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        """The activation after each hidden layer."""
        return list(self.activations) or ["relu"] * (len(self.weights) - 1)

    @property
    def piecewise(self) -> bool:
        return all(k == "relu" for k in self.kinds)

    @property
    def num_inputs(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def num_outputs(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights[:-1]]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs (N, num_outputs) for flat inputs (N, num_inputs), in float64."""
        z = np.asarray(x, dtype=np.float64).reshape(-1, self.num_inputs)
        kinds = self.kinds
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = z @ w.T + b
            if i < len(self.weights) - 1:
                z = activate(kinds[i], z)
        return z

    def with_input_affine(self, scale: np.ndarray, shift: np.ndarray) -> PLNet:
        """The network applied to ``x * scale + shift`` (flat, element-wise): folds input normalization."""
        w0 = self.weights[0] * scale[None, :]
        b0 = self.biases[0] + self.weights[0] @ shift
        return PLNet(
            [w0, *self.weights[1:]], [b0, *self.biases[1:]], self.input_shape, self.name, dict(self.info), self.activations
        )

    def torch_layers(self, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (torch.as_tensor(w, dtype=dtype), torch.as_tensor(b, dtype=dtype))
            for w, b in zip(self.weights, self.biases)
        ]


@dataclass
class _Aff:
    """A tensor that is an affine function ``W z + b`` of the current ReLU layer's output ``z``."""

    w: np.ndarray  # (size, nz)
    b: np.ndarray  # (size,)
    shape: tuple[int, ...]
    zid: int


class _Builder:
    """Collects affine+ReLU layers while a frontend walks the network."""

    def __init__(self, where: str) -> None:
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.zid = 0
        self.where = where
        self.kinds: list[str] = []

    def input(self, shape: tuple[int, ...]) -> _Aff:
        n = int(np.prod(shape))
        return _Aff(np.eye(n), np.zeros(n), tuple(shape), 0)

    def check(self, a: _Aff, node: str) -> None:
        if a.zid != self.zid:
            raise NetinvertError(
                f"{self.where}: node {node!r} reads a tensor from before the last ReLU (a skip connection); "
                "exact methods support feed-forward chains only"
            )

    def linear(self, a: _Aff, fn: Callable[[np.ndarray], np.ndarray]) -> _Aff:
        """Apply a linear map ``fn`` (acting on arrays shaped (batch, *shape)) to ``a``."""
        nz = a.w.shape[1]
        cols = fn(a.w.T.reshape(nz, *a.shape))
        bias = fn(a.b.reshape(1, *a.shape))
        shape = tuple(cols.shape[1:])
        return _Aff(np.ascontiguousarray(cols.reshape(nz, -1).T), bias.reshape(-1).copy(), shape, a.zid)

    def add_const(self, a: _Aff, c: np.ndarray) -> _Aff:
        shape = tuple(np.broadcast_shapes(a.shape, c.shape))
        if shape != a.shape:
            a = self.linear(a, lambda t: np.broadcast_to(t, (t.shape[0], *shape)).copy())
        return _Aff(a.w, a.b + np.broadcast_to(c, shape).reshape(-1), shape, a.zid)

    def relu(self, a: _Aff) -> _Aff:
        return self.act(a, "relu")

    def act(self, a: _Aff, kind: str) -> _Aff:
        """End the current affine layer with the element-wise activation ``kind``."""
        self.kinds.append(kind)
        self.weights.append(a.w)
        self.biases.append(a.b)
        self.zid += 1
        n = a.w.shape[0]
        return _Aff(np.eye(n), np.zeros(n), a.shape, self.zid)

    def maxpool(
        self, a: _Aff, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int]
    ) -> _Aff:
        """Exact max-pooling over (N=1, C, H, W) by a tournament of ReLU pairs."""
        if len(a.shape) != 4:
            raise NetinvertError(f"{self.where}: max-pooling needs a (1, C, H, W) tensor, got shape {a.shape}")
        _, c, h, w = a.shape
        oh = (h + pads[0] + pads[2] - kernel[0]) // stride[0] + 1
        ow = (w + pads[1] + pads[3] - kernel[1]) // stride[1] + 1
        groups: list[list[int]] = []
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    cells = []
                    for di in range(kernel[0]):
                        for dj in range(kernel[1]):
                            y, x = i * stride[0] - pads[0] + di, j * stride[1] - pads[1] + dj
                            if 0 <= y < h and 0 <= x < w:
                                cells.append((ch * h + y) * w + x)
                    groups.append(cells)
        cur_w, cur_b = a.w, a.b
        rows = [list(g) for g in groups]  # per output: rows of (cur_w, cur_b) still competing
        while True:
            pre: list[np.ndarray] = []
            pre_b: list[float] = []
            combos: list[list[tuple[int, float]]] = []
            for cand in rows:
                new_cands = []
                for k in range(0, len(cand), 2):
                    combo: list[tuple[int, float]] = []
                    if k + 1 < len(cand):
                        r1, r2 = cand[k], cand[k + 1]
                        pre.append(cur_w[r1] - cur_w[r2])
                        pre_b.append(cur_b[r1] - cur_b[r2])
                        combo.append((len(pre) - 1, 1.0))
                    r = cand[k + 1] if k + 1 < len(cand) else cand[k]
                    pre.extend([cur_w[r], -cur_w[r]])
                    pre_b.extend([cur_b[r], -cur_b[r]])
                    combo += [(len(pre) - 2, 1.0), (len(pre) - 1, -1.0)]
                    combos.append(combo)
                    new_cands.append(len(combos) - 1)
                rows_next = new_cands
                cand[:] = rows_next
            z = self.relu(_Aff(np.array(pre), np.array(pre_b), (len(pre),), self.zid))
            comb = np.zeros((len(combos), len(pre)))
            for i, combo in enumerate(combos):
                for j, v in combo:
                    comb[i, j] = v
            cur_w, cur_b = comb @ z.w, comb @ z.b
            if all(len(cand) == 1 for cand in rows):
                order = [cand[0] for cand in rows]
                return _Aff(cur_w[order], cur_b[order], (1, c, oh, ow), self.zid)

    def finish(self, out: _Aff, input_shape: tuple[int, ...], name: str, info: dict[str, Any]) -> PLNet:
        self.check(out, "output")
        kinds = self.kinds if any(k != "relu" for k in self.kinds) else []
        return PLNet(self.weights + [out.w], self.biases + [out.b], input_shape, name, info, kinds)


def _conv_fn(
    weight: np.ndarray,
    stride: tuple[int, ...],
    pads: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    shape: tuple[int, ...],
    where: str,
) -> Callable[[np.ndarray], np.ndarray]:
    if len(shape) != 4 or shape[0] != 1:
        raise NetinvertError(f"{where}: Conv needs a (1, C, H, W) input, got shape {shape}")
    wt = torch.as_tensor(weight, dtype=torch.float64)

    def fn(t: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(t, dtype=torch.float64).reshape(t.shape[0], *shape[1:])
        x = torch.nn.functional.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        y = torch.nn.functional.conv2d(x, wt, stride=stride, dilation=dilation, groups=groups)
        return y.numpy().reshape(t.shape[0], 1, *y.shape[1:])

    return fn


def _channel_affine(b: _Builder, a: _Aff, scale: np.ndarray, shift: np.ndarray) -> _Aff:
    shape = (1, -1) + (1,) * (len(a.shape) - 2) if len(a.shape) >= 2 else (-1,)
    s, c = scale.reshape(shape), shift.reshape(shape)
    a = b.linear(a, lambda t: t * s[None])
    return b.add_const(a, c)


# ---------------------------------------------------------------------------------------------- ONNX
def from_onnx(path: str | Path) -> PLNet:
    """Read an ONNX file of a feed-forward piecewise-linear network."""
    import onnx

    p = Path(path)
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # onnx raises several types for unreadable files
        raise NetinvertError(f"cannot read ONNX file {p}: {exc}") from exc
    return from_onnx_model(model, p)


def from_onnx_model(model: Any, source: str | Path) -> PLNet:
    """The network of an already parsed ``onnx.ModelProto`` read from ``source`` (named in messages)."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    p = Path(source)
    g = model.graph
    where = p.name
    env: dict[str, Any] = {
        t.name: numpy_helper.to_array(t).astype(np.float64)
        if numpy_helper.to_array(t).dtype.kind == "f"
        else numpy_helper.to_array(t)
        for t in g.initializer
    }
    inputs = [i for i in g.input if i.name not in env]
    if len(inputs) != 1:
        raise NetinvertError(f"{where}: the network must have exactly one input, found {[i.name for i in inputs]}")
    dims = tuple(int(d.dim_value) if d.dim_value > 0 else 1 for d in inputs[0].type.tensor_type.shape.dim) or (1,)
    b = _Builder(where)
    env[inputs[0].name] = b.input(dims)
    for node in g.node:
        label = f"{node.op_type} node {node.name or node.output[0]!r}"
        args = [env.get(n) if n else None for n in node.input]
        if any(n and n not in env for n in node.input):
            missing = next(n for n in node.input if n and n not in env)
            raise NetinvertError(f"{where}: {label} reads {missing!r}, which no earlier node produces")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if all(not isinstance(x, _Aff) for x in args):
            try:
                outs = ReferenceEvaluator(
                    onnx.helper.make_graph(
                        [node],
                        "fold",
                        [
                            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                            for n in node.input
                            if n
                        ],
                        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output],
                    ),
                    opsets={d.domain: d.version for d in model.opset_import},
                ).run(None, {n: v for n, v in zip(node.input, args) if n})
            except Exception as exc:
                raise NetinvertError(f"{where}: cannot evaluate constant {label}: {exc}") from exc
            for n, v in zip(node.output, outs):
                env[n] = np.asarray(v)
            continue
        if node.op_type not in ONNX_OPS:
            raise NetinvertError(
                f"{where}: {label} uses op {node.op_type}, which is not supported; "
                f"exact methods support {', '.join(ONNX_OPS)}"
            )
        env[node.output[0]] = _onnx_node(b, node.op_type, label, args, attrs, where)
    out = env[g.output[0].name]
    if not isinstance(out, _Aff):
        raise NetinvertError(f"{where}: the network output does not depend on its input")
    return b.finish(out, dims, p.stem, {"source": str(p), "format": "onnx"})


def _onnx_node(b: _Builder, op: str, label: str, args: list[Any], attrs: dict[str, Any], where: str) -> _Aff:
    a = next(x for x in args if isinstance(x, _Aff))
    for x in args:
        if isinstance(x, _Aff):
            b.check(x, label)
    consts = [x for x in args[1:] if x is not None]

    def const(i: int) -> np.ndarray:
        if i >= len(args) or isinstance(args[i], _Aff) or args[i] is None:
            raise NetinvertError(
                f"{where}: {label} needs a constant argument {i}: only the first argument may depend on the input"
            )
        return np.asarray(args[i], dtype=np.float64)

    if op in ("Identity", "Dropout"):
        return a
    if op == "Relu":
        return b.relu(a)
    if op in SMOOTH:
        if op == "Softplus" and attrs:
            raise NetinvertError(f"{where}: {label}: only Softplus without attributes is supported")
        return b.act(a, SMOOTH[op])
    if op == "Flatten":
        axis = int(attrs.get("axis", 1)) % max(len(a.shape), 1)
        return _Aff(a.w, a.b, (int(np.prod(a.shape[:axis])), int(np.prod(a.shape[axis:]))), a.zid)
    if op == "Reshape":
        target = [int(v) for v in np.asarray(args[1]).reshape(-1)]
        target = [a.shape[i] if v == 0 else v for i, v in enumerate(target)]
        if -1 in target:
            known = int(np.prod([v for v in target if v != -1]))
            target[target.index(-1)] = int(np.prod(a.shape)) // known
        if int(np.prod(target)) != int(np.prod(a.shape)):
            raise NetinvertError(f"{where}: {label} reshapes {a.shape} to {tuple(target)}, which has another size")
        return _Aff(a.w, a.b, tuple(target), a.zid)
    if op == "Gemm":
        if args[0] is not a or attrs.get("transA", 0):
            raise NetinvertError(f"{where}: {label}: only Gemm(input, constant weight) without transA is supported")
        w = const(1)
        w = w.T if attrs.get("transB", 0) else w
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        out = b.linear(a, lambda t: alpha * np.matmul(t, w))
        return b.add_const(out, beta * const(2)) if len(args) > 2 and args[2] is not None else out
    if op == "MatMul":
        if args[0] is a:
            w = const(1)
            return b.linear(a, lambda t: np.matmul(t, w))
        w = const(0)
        if len(a.shape) == 1:
            return b.linear(a, lambda t: t @ w.T)
        return b.linear(a, lambda t: np.matmul(w, t))
    if op in ("Add", "Sub"):
        sign = 1.0 if op == "Add" else -1.0
        x, y = args
        if isinstance(x, _Aff) and isinstance(y, _Aff):
            if x.shape != y.shape:
                raise NetinvertError(f"{where}: {label} adds tensors of shapes {x.shape} and {y.shape}")
            return _Aff(x.w + sign * y.w, x.b + sign * y.b, x.shape, x.zid)
        if isinstance(x, _Aff):
            return b.add_const(x, sign * np.asarray(y, dtype=np.float64))
        neg = b.linear(y, lambda t: sign * t)
        return b.add_const(neg, np.asarray(x, dtype=np.float64))
    if op == "Mul":
        c = np.asarray(consts[0] if args[0] is a else args[0], dtype=np.float64)
        if isinstance(c, _Aff):
            raise NetinvertError(
                f"{where}: {label} multiplies two input-dependent tensors, which is not piecewise-linear"
            )
        return b.linear(a, lambda t: t * c[None])
    if op == "Div":
        if args[0] is not a:
            raise NetinvertError(
                f"{where}: {label} divides by an input-dependent tensor, which is not piecewise-linear"
            )
        c = const(1)
        return b.linear(a, lambda t: t / c[None])
    if op == "Conv":
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise NetinvertError(f"{where}: {label}: auto_pad is not supported; export with explicit pads")
        w = const(1)
        k = len(w.shape) - 2
        if k != 2:
            raise NetinvertError(f"{where}: {label}: only 2-D convolutions are supported")
        stride = tuple(attrs.get("strides", [1, 1]))
        pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
        dil = tuple(attrs.get("dilations", [1, 1]))
        out = b.linear(a, _conv_fn(w, stride, pads, dil, int(attrs.get("group", 1)), a.shape, where))
        if len(args) > 2 and args[2] is not None:
            out = b.add_const(out, const(2).reshape(1, -1, 1, 1))
        return out
    if op == "BatchNormalization":
        scale, shift, mean, var = const(1), const(2), const(3), const(4)
        s = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        return _channel_affine(b, a, s, shift - mean * s)
    if op == "MaxPool":
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or any(
            d != 1 for d in attrs.get("dilations", [1, 1])
        ):
            raise NetinvertError(f"{where}: {label}: only MaxPool with explicit pads and no dilation is supported")
        kernel = tuple(attrs["kernel_shape"])
        return b.maxpool(a, kernel, tuple(attrs.get("strides", kernel)), tuple(attrs.get("pads", [0, 0, 0, 0])))
    raise NetinvertError(f"{where}: {label} uses op {op}, which exact methods do not support")


# ---------------------------------------------------------------------------------------------- torch
_TORCH_TYPES = (
    "Sequential, Linear, Conv2d, ReLU, Sigmoid, Tanh, Softplus (beta=1), MaxPool2d, BatchNorm1d/2d, Flatten, "
    "Identity, Dropout, AppendBias"
)


def from_torch(
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    name: str = "model",
) -> PLNet:
    """Read a Sequential-like module; ``mean``/``std`` input normalization is folded into the first layer."""
    b = _Builder(name)
    a = b.input((1, *input_shape))
    if mean or std:
        channels = input_shape[0] if len(input_shape) == 3 else 1
        m = np.broadcast_to(np.asarray(mean or (0.0,), dtype=np.float64), (channels,))
        s = np.broadcast_to(np.asarray(std or (1.0,), dtype=np.float64), (channels,))
        if len(input_shape) == 3:
            a = _channel_affine(b, a, 1.0 / s, -m / s)
        else:
            a = b.add_const(b.linear(a, lambda t: t / s[0]), np.asarray(-m[0] / s[0]))
    a = _walk(b, module, "", a)
    return b.finish(a, (1, *input_shape), name, {"format": "torch"})


def _walk(b: _Builder, mod: nn.Module, path: str, a: _Aff) -> _Aff:
    label = path or "<root>"
    if isinstance(mod, nn.Sequential):
        for child_name, child in mod.named_children():
            a = _walk(b, child, f"{path}.{child_name}" if path else child_name, a)
        return a
    if isinstance(mod, (nn.Identity, nn.Dropout)):
        return a
    if isinstance(mod, nn.ReLU):
        return b.relu(a)
    if isinstance(mod, (nn.Sigmoid, nn.Tanh)) or (isinstance(mod, nn.Softplus) and mod.beta == 1):
        return b.act(a, type(mod).__name__.lower())
    if isinstance(mod, AppendBias):
        out = b.linear(a, lambda t: np.concatenate([t, np.zeros((*t.shape[:-1], 1))], -1))
        const = np.zeros(out.shape)
        const[..., -1] = float(mod.appends_constant)
        return b.add_const(out, const)
    if isinstance(mod, nn.Flatten):
        s, e = mod.start_dim % len(a.shape), mod.end_dim % len(a.shape)
        return _Aff(a.w, a.b, a.shape[:s] + (int(np.prod(a.shape[s : e + 1])),) + a.shape[e + 1 :], a.zid)
    if isinstance(mod, nn.Linear):
        w = mod.weight.detach().double().numpy().T
        out = b.linear(a, lambda t: np.matmul(t, w))
        return b.add_const(out, mod.bias.detach().double().numpy()) if mod.bias is not None else out
    if isinstance(mod, nn.Conv2d):
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            raise NetinvertError(
                f"{b.where}: module {label} (Conv2d) uses padding={mod.padding!r}/{mod.padding_mode}; "
                "use numeric zero padding"
            )
        ph, pw = mod.padding
        fn = _conv_fn(
            mod.weight.detach().double().numpy(),
            mod.stride,
            (ph, pw, ph, pw),
            mod.dilation,
            mod.groups,
            a.shape,
            b.where,
        )
        out = b.linear(a, fn)
        return (
            b.add_const(out, mod.bias.detach().double().numpy().reshape(1, -1, 1, 1)) if mod.bias is not None else out
        )
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        var = mod.running_var.detach().double().numpy()
        mean = mod.running_mean.detach().double().numpy()
        s = (mod.weight.detach().double().numpy() if mod.weight is not None else 1.0) / np.sqrt(var + mod.eps)
        shift = mod.bias.detach().double().numpy() if mod.bias is not None else 0.0
        return _channel_affine(b, a, np.broadcast_to(s, var.shape), shift - mean * s)
    if isinstance(mod, nn.MaxPool2d):
        k = _pair(mod.kernel_size)
        st = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
        p = _pair(mod.padding)
        if _pair(mod.dilation) != (1, 1) or mod.ceil_mode:
            raise NetinvertError(
                f"{b.where}: module {label} (MaxPool2d) uses dilation or ceil_mode, which is not supported"
            )
        return b.maxpool(a, k, st, (p[0], p[1], p[0], p[1]))
    raise NetinvertError(
        f"{b.where}: module {label} ({type(mod).__name__}) is not supported by exact methods; "
        f"they need an nn.Sequential of {_TORCH_TYPES}"
    )


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
