"""The one network form of the exact solvers: a computation graph (residual adds, concatenations,
average pooling, reshapes anywhere, convolutions kept as convolutions), and its dense chain.

``GraphNet`` is a list of ``GNode`` in topological order (node 0 is the input). Every node's
value has a per-item ``shape`` (ONNX graphs keep their leading batch-1 dimension in it, PyTorch
modules do not); batched tensors carry an extra leading batch dimension. Linear nodes know their
transpose (``transpose``): bound propagation runs backward through a convolution with
``conv_transpose2d`` and never builds a dense matrix, so a CIFAR ResNet fits in memory. A
transposed convolution (``convt``) runs backward through ``conv2d``; ``gather`` (every output
element is one input element: slices, splits, transposes, nearest-neighbour upsampling) through a
scatter-add; ``sum`` (a reduction over axes) through a broadcast.

A feed-forward chain (every activation reads a linear function of the activation before it) is
the graph's fast special case: ``composed`` writes each stretch of linear nodes between
activations as one dense ``linear`` node, and ``dense`` reads such a graph as its ``DenseForm``
(weight matrices and activations), which the dense bounds, ReLU branch-and-bound, sign
refinement, the MILP and neuron splitting take. The readers are ``onnx.py`` and ``fx.py``
(builder ``build.py``), the choice of form ``read.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

OPS = ("input", "linear", "conv", "convt", "act", "add", "concat", "avgpool", "reshape", "scale", "append", "gather",
       "sum")
LINEAR_OPS = ("linear", "conv", "convt", "add", "concat", "avgpool", "reshape", "scale", "append", "gather", "sum")
DENSE_ACTIVATIONS = ("relu", "sigmoid", "tanh", "softplus")  # the activations of the dense chain


def act(activation: str, z: torch.Tensor) -> torch.Tensor:
    """``activation`` on a tensor (relu, sigmoid, tanh, softplus, sin, cos, pow<p>)."""
    if activation == "relu":
        return torch.relu(z)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    if activation == "tanh":
        return torch.tanh(z)
    if activation == "sin":
        return torch.sin(z)
    if activation == "cos":
        return torch.cos(z)
    if activation.startswith("pow"):
        return z ** power(activation)
    return F.softplus(z, beta=1.0, threshold=1e9)


def power(activation: str) -> int:
    """The integer exponent of a ``pow<p>`` activation (``pow2``: x ** 2)."""
    return int(activation[3:])


@dataclass
class DenseForm:
    """A chain ``x -> W_1 x + b_1 -> f_1 -> ... -> W_L z + b_L`` (float64): ``activations[i]`` is the activation
    after layer ``i`` (``DENSE_ACTIVATIONS``); only all-ReLU chains are piecewise-linear (MILP, ReLU
    branch-and-bound)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activations: list[str]

    @property
    def piecewise(self) -> bool:
        return all(k == "relu" for k in self.activations)

    def layers(self, dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (weight, bias) pairs as tensors of ``dtype``."""
        return [(torch.as_tensor(w, dtype=dtype), torch.as_tensor(b, dtype=dtype))
                for w, b in zip(self.weights, self.biases)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs (N, n_out) for flat inputs (N, n_in), in float64."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(-1, self.weights[0].shape[1])
        return forward_layers(self.layers(), xt, self.activations).numpy()


def forward_layers(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                   activations: list[str] | None = None) -> torch.Tensor:
    """A dense chain given as (weight, bias) pairs, ReLU (or ``activations[i]``) between them, on a batch of inputs."""
    z = x
    for i, (w, b) in enumerate(layers):
        z = z @ w.T + b
        if i < len(layers) - 1:
            z = torch.relu(z) if activations is None else act(activations[i], z)
    return z


@dataclass
class GNode:
    """One operation: ``op`` (``OPS``) on the values of the nodes ``inputs``; ``p`` holds its
    parameters (tensors follow the network's device) and ``label`` names it in messages."""

    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    p: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def _spatial(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A batched value (B, *shape) as (B * prod(shape[:-3]), C, H, W) for conv/pool ops."""
    return x.reshape(-1, *shape[-3:])


@dataclass
class GraphNet:
    """A network as a DAG of ``GNode``; the last node is the output."""

    nodes: list[GNode]
    name: str = "network"
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ sizes and activations
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def num_inputs(self) -> int:
        return self.nodes[0].size

    @property
    def num_outputs(self) -> int:
        return self.nodes[-1].size

    @property
    def acts(self) -> list[int]:
        """Indices of the activation nodes."""
        return [i for i, n in enumerate(self.nodes) if n.op == "act"]

    @property
    def activations(self) -> list[str]:
        return [self.nodes[i].p["activation"] for i in self.acts]

    @property
    def piecewise(self) -> bool:
        return all(k == "relu" for k in self.activations)

    @property
    def hidden_sizes(self) -> list[int]:
        return [self.nodes[i].size for i in self.acts]

    @property
    def device(self) -> torch.device:
        for n in self.nodes:
            for v in n.p.values():
                if isinstance(v, torch.Tensor):
                    return v.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for n in self.nodes:
            for v in n.p.values():
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    return v.dtype
        return torch.float64

    def to(self, device: str | torch.device) -> GraphNet:
        """The same network with its parameters on ``device``."""
        nodes = [GNode(n.op, n.inputs, n.shape, {k: v.to(device) if isinstance(v, torch.Tensor) else v
                                                  for k, v in n.p.items()}, n.label) for n in self.nodes]
        return GraphNet(nodes, self.name, dict(self.info))

    def consumers(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            for j in n.inputs:
                out[j].append(i)
        return out

    # ------------------------------------------------------------------ evaluation
    def run(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor | None]:
        """Every node's value for flat inputs ``x`` (B, num_inputs), up to node ``upto``; values no
        later node reads are dropped (None) to keep memory low, except the last one."""
        last = len(self.nodes) - 1 if upto is None else upto
        uses = {j: i for i, n in enumerate(self.nodes[: last + 1]) for j in n.inputs}
        vals: list[torch.Tensor | None] = [None] * (last + 1)
        vals[0] = x.reshape(x.shape[0], *self.input_shape)
        for i in range(1, last + 1):
            node = self.nodes[i]
            vals[i] = apply(node, [vals[j] for j in node.inputs], self.nodes)
            for j in node.inputs:
                if uses.get(j) == i and j != last:
                    vals[j] = None
        return vals

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flat outputs (B, num_outputs) for flat inputs, in the inputs' dtype (differentiable)."""
        net = self if x.dtype == self.dtype else self.cast(x.dtype)
        out = net.run(x)[-1]
        assert out is not None
        return out.reshape(x.shape[0], -1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs (N, num_outputs) for flat inputs (N, num_inputs), in float64 (numpy)."""
        if self.dense is not None:
            return self.dense.forward(x)
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device).reshape(-1, self.num_inputs)
        with torch.no_grad():
            return self.torch_forward(xt).cpu().numpy()

    def cast(self, dtype: torch.dtype) -> GraphNet:
        """The network with floating parameters in ``dtype`` (cached per dtype)."""
        cache = self.info.setdefault("_casts", {})
        if dtype not in cache:
            nodes = [GNode(n.op, n.inputs, n.shape, {k: v.to(dtype) if isinstance(v, torch.Tensor)
                                                     and v.is_floating_point() else v for k, v in n.p.items()},
                           n.label) for n in self.nodes]
            cache[dtype] = GraphNet(nodes, self.name, {})
        return cache[dtype]

    def with_input_affine(self, scale: np.ndarray, shift: np.ndarray) -> GraphNet:
        """The network applied to ``x * scale + shift`` (flat, element-wise): input normalization."""
        shape = self.input_shape
        dev = self.device
        norm = GNode("scale", (0,), shape, {"s": torch.as_tensor(scale, dtype=torch.float64, device=dev).reshape(shape),
                                            "t": torch.as_tensor(shift, dtype=torch.float64, device=dev).reshape(shape)},
                     "input normalization")
        nodes = [self.nodes[0], norm]
        for n in self.nodes[1:]:
            nodes.append(GNode(n.op, tuple(j + 1 if j > 0 else 1 for j in n.inputs), n.shape, n.p, n.label))
        return GraphNet(nodes, self.name, {k: v for k, v in self.info.items() if not k.startswith("_")})

    def with_inputs(self) -> GraphNet:
        """The network whose flat outputs are followed by its flat input (``num_outputs + num_inputs`` of
        them): constraints that mix inputs and outputs become output constraints of this network."""
        last, n = len(self.nodes) - 1, len(self.nodes)
        nodes = [*self.nodes,
                 GNode("reshape", (last,), (self.num_outputs,), {}, "outputs, flat"),
                 GNode("reshape", (0,), (self.num_inputs,), {}, "input, flat"),
                 GNode("concat", (n, n + 1), (self.num_outputs + self.num_inputs,), {"axis": 0}, "outputs and input")]
        return GraphNet(nodes, self.name, {k: v for k, v in self.info.items() if not k.startswith("_")})

    def is_chain(self) -> bool:
        """Whether every activation reads a linear function of the activation before it (or of the input)
        and the output one of the last: then each stretch between activations is one affine map. Average
        pooling keeps a network a graph (its pooling is cheaper than the dense matrix it would become)."""
        layer, last = [0] * len(self.nodes), 0
        for j, n in enumerate(self.nodes[1:], 1):
            sources = {layer[i] for i in n.inputs}
            if len(sources) != 1 or (n.op == "act" and sources != {last}) or n.op == "avgpool":
                return False
            if n.op == "act":
                layer[j] = last = j
            else:
                layer[j] = sources.pop()
        return layer[-1] == last

    def dense_cost(self) -> float:
        """Matrix entries the composed chain would need: per stretch between activations, its output size
        times its input size, summed."""
        total, seg_in = 0.0, float(self.num_inputs)
        for n in self.nodes[1:]:
            if n.op == "act":
                total += seg_in * n.size
                seg_in = float(n.size)
        return total + seg_in * self.num_outputs

    def composed(self) -> GraphNet:
        """The graph of a chain (``is_chain``) with each stretch of linear nodes between activations written
        as one dense ``linear`` node (the columns of its matrix pushed through the stretch), on flat values."""
        net = self.to("cpu")
        nodes = [GNode("input", (), self.input_shape, {}, "input")]
        if len(self.input_shape) > 1:
            nodes.append(GNode("reshape", (0,), (self.num_inputs,), {}, "flatten"))

        def basis(n: int, shape: tuple[int, ...]) -> torch.Tensor:  # the unit vectors and zero, as a batch
            return torch.cat([torch.eye(n, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64)]).reshape(
                n + 1, *shape)

        def close(value: torch.Tensor, label: str) -> None:  # the stretch so far as one linear node
            n = value.shape[0] - 1
            flat = value.reshape(n + 1, -1)
            w, b = (flat[:n] - flat[n]).T.contiguous(), flat[n].clone()
            nodes.append(GNode("linear", (len(nodes) - 1,), (w.shape[0],), {"w": w, "b": b}, label))

        values = {0: basis(self.num_inputs, self.input_shape)}
        with torch.no_grad():
            for j, node in enumerate(net.nodes[1:], 1):
                if node.op != "act":
                    values[j] = apply(node, [values[i] for i in node.inputs], net.nodes)
                    continue
                close(values[node.inputs[0]], net.nodes[node.inputs[0]].label)
                nodes.append(GNode("act", (len(nodes) - 1,), (node.size,), {"activation": node.p["activation"]},
                                   node.label))
                values = {j: basis(node.size, node.shape)}
            close(values[len(net.nodes) - 1], net.nodes[-1].label)
        return GraphNet(nodes, self.name, {k: v for k, v in self.info.items() if not k.startswith("_")})

    @cached_property
    def dense(self) -> DenseForm | None:
        """The dense chain of a composed graph (flat input, then linear and activation nodes in turn, each
        reading the one before, ending with a linear node; activations of ``DENSE_ACTIVATIONS``), else None."""
        body = self.nodes[1:]
        if body and body[0].op == "reshape" and len(body[0].shape) == 1:
            body = body[1:]
        ops = [n.op for n in body]
        if (len(ops) % 2 == 0 or ops[0::2] != ["linear"] * len(ops[0::2]) or ops[1::2] != ["act"] * len(ops[1::2])
                or any(n.inputs != (i,) for i, n in enumerate(self.nodes[1:]))
                or any(len(n.shape) != 1 for n in body)
                or any(n.p["activation"] not in DENSE_ACTIVATIONS for n in body[1::2])):
            return None
        linears = [(n.p["w"].detach().double().cpu().numpy(), n.p.get("b")) for n in body[0::2]]
        return DenseForm([w for w, _ in linears],
                         [np.zeros(w.shape[0]) if b is None else b.detach().double().cpu().numpy() for w, b in linears],
                         [n.p["activation"] for n in body[1::2]])


def apply(node: GNode, xs: list[Any], nodes: list[GNode]) -> torch.Tensor:
    """The node's batched output from its inputs' batched values."""
    p, op = node.p, node.op
    x = xs[0]
    bsz = x.shape[0]
    if op == "act":
        return act(p["activation"], x)
    if op == "linear":
        y = x @ p["w"].T
        return y + p["b"] if p.get("b") is not None else y
    if op == "conv":
        src = _spatial(x, nodes[node.inputs[0]].shape)
        src = F.pad(src, p["pads"]) if any(p["pads"]) else src
        y = F.conv2d(src, p["w"], p.get("b"), stride=p["stride"], dilation=p["dilation"], groups=p["groups"])
        return y.reshape(bsz, *node.shape)
    if op == "convt":
        src = _spatial(x, nodes[node.inputs[0]].shape)
        y = F.conv_transpose2d(src, p["w"], None, stride=p["stride"], dilation=p["dilation"], groups=p["groups"])
        left, right, top, bottom = p["pads"]
        oph, opw = p["output_padding"]
        y = F.pad(y, (0, opw, 0, oph))[..., top: y.shape[-2] + oph - bottom, left: y.shape[-1] + opw - right]
        y = y + p["b"][:, None, None] if p.get("b") is not None else y
        return y.reshape(bsz, *node.shape)
    if op == "gather":
        return x.reshape(bsz, -1)[:, p["index"]].reshape(bsz, *node.shape)
    if op == "sum":
        return x.sum(dim=tuple(a + 1 for a in p["axes"]), keepdim=True).reshape(bsz, *node.shape)
    if op == "add":
        return xs[0] + p.get("sign", 1.0) * xs[1]
    if op == "concat":
        return torch.cat(xs, dim=p["axis"] + 1)
    if op == "avgpool":
        y = F.avg_pool2d(_spatial(x, nodes[node.inputs[0]].shape), p["kernel"], p["stride"], p["padding"],
                         count_include_pad=p["count_include_pad"])
        return y.reshape(bsz, *node.shape)
    if op == "reshape":
        return x.reshape(bsz, *node.shape)
    if op == "scale":
        return x * p["s"] + p["t"]
    if op == "append":
        return torch.cat([x, x.new_full((*x.shape[:-1], 1), p["value"])], dim=-1)
    raise ValueError(f"unknown graph op {op}")


def transpose(node: GNode, lam: torch.Tensor, nodes: list[GNode]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Backward through a linear node: ``lam`` (K, *node.shape) are coefficients on its output; returns
    the coefficients on each input (K, *input.shape) and the constant ``lam . bias`` (K,)."""
    p, op = node.p, node.op
    k = lam.shape[0]
    zero = lam.new_zeros(k)
    if op == "linear":
        const = (lam * p["b"]).reshape(k, -1).sum(1) if p.get("b") is not None else zero
        return [lam @ p["w"]], const
    if op == "conv":
        ins = nodes[node.inputs[0]].shape
        const = zero
        if p.get("b") is not None:
            const = (lam.reshape(k, -1, *node.shape[-3:]) * p["b"][:, None, None]).reshape(k, -1).sum(1)
        pt, pb, pl, pr = p["pads"][2], p["pads"][3], p["pads"][0], p["pads"][1]
        hp, wp = ins[-2] + pt + pb, ins[-1] + pl + pr
        g = _spatial(lam, node.shape)
        kh, kw = p["w"].shape[-2:]
        (sh, sw), (dh, dw) = p["stride"], p["dilation"]
        oph = hp - ((g.shape[-2] - 1) * sh + dh * (kh - 1) + 1)
        opw = wp - ((g.shape[-1] - 1) * sw + dw * (kw - 1) + 1)
        back = F.conv_transpose2d(g, p["w"], stride=p["stride"], dilation=p["dilation"], groups=p["groups"],
                                  output_padding=(oph, opw))
        back = back[..., pt: pt + ins[-2], pl: pl + ins[-1]]
        return [back.reshape(k, *ins)], const
    if op == "convt":
        const = zero
        if p.get("b") is not None:
            const = (lam.reshape(k, -1, *node.shape[-3:]) * p["b"][:, None, None]).reshape(k, -1).sum(1)
        left, right, top, bottom = p["pads"]
        oph, opw = p["output_padding"]
        g = F.pad(_spatial(lam, node.shape), (left, right, top, bottom))
        g = g[..., : g.shape[-2] - oph, : g.shape[-1] - opw]
        back = F.conv2d(g, p["w"], stride=p["stride"], dilation=p["dilation"], groups=p["groups"])
        return [back.reshape(k, *nodes[node.inputs[0]].shape)], const
    if op == "gather":
        ins = nodes[node.inputs[0]]
        back = lam.new_zeros(k, ins.size).index_add_(1, p["index"], lam.reshape(k, -1))
        return [back.reshape(k, *ins.shape)], zero
    if op == "sum":
        ins = nodes[node.inputs[0]].shape
        kept = tuple(1 if d in p["axes"] else n for d, n in enumerate(ins))
        return [lam.reshape(k, *kept).expand(k, *ins)], zero
    if op == "add":
        return [lam, p.get("sign", 1.0) * lam], zero
    if op == "concat":
        sizes = [nodes[j].shape[p["axis"]] for j in node.inputs]
        return list(torch.split(lam, sizes, dim=p["axis"] + 1)), zero
    if op == "avgpool":  # a depthwise convolution with weights 1 / (cells counted): transposed as one
        ins = nodes[node.inputs[0]].shape
        (kh, kw), (sh, sw), (ph, pw) = p["kernel"], p["stride"], p["padding"]
        ones = lam.new_ones(1, 1, ins[-2], ins[-1])
        count = F.avg_pool2d(ones, (kh, kw), (sh, sw), (ph, pw), count_include_pad=True) * (kh * kw)
        if p["count_include_pad"]:
            count = torch.full_like(count, kh * kw)
        g = _spatial(lam, node.shape) / count
        c = g.shape[1]
        oph = ins[-2] + 2 * ph - ((g.shape[-2] - 1) * sh + kh)
        opw = ins[-1] + 2 * pw - ((g.shape[-1] - 1) * sw + kw)
        back = F.conv_transpose2d(g, lam.new_ones(c, 1, kh, kw), stride=(sh, sw), padding=(ph, pw), groups=c,
                                  output_padding=(oph, opw))
        return [back.reshape(k, *ins)], zero
    if op == "reshape":
        return [lam.reshape(k, *nodes[node.inputs[0]].shape)], zero
    if op == "scale":
        return [(lam * p["s"]).reshape(k, *nodes[node.inputs[0]].shape)], (lam * p["t"]).reshape(k, -1).sum(1)
    if op == "append":
        return [lam[..., :-1]], lam[..., -1].reshape(k, -1).sum(1) * p["value"]
    raise ValueError(f"{op} is not linear")
