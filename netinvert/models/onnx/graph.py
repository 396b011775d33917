"""ONNX graph -> differentiable ``nn.Module``, written on torch ops so gradients flow end to end.

Every ONNX node that depends on the model input becomes a named submodule (its sanitized node
name), so forward hooks and layer listings work as on any PyTorch model. Initializers, ``Constant``
nodes and subgraphs of constants are folded once at import time into buffers (they follow
``.double()`` / ``.to(device)``). Shape subgraphs that read the input's shape (Shape -> Gather ->
Concat -> Reshape, as torch and tf2onnx export them) run eagerly on every forward. The op table
is :mod:`netinvert.models.onnx.ops`; ``OnnxModule.ops`` lists the nodes with their constants, which is
what the exact solvers read (the only parse of the file).

Graphs with a fixed batch of 1 (or no batch dimension at all) still take any batch. A fixed-batch-1
graph is first tried on the whole batch: most exporters write batch 1 without any op depending on it,
and then the batched run gives the per-item outputs exactly (checked once, on the first batch larger
than one) and is several times faster (3x on a ResNet-8, ``benchmarks/onnx_speed.py``). Where it does
not (a Reshape to a constant ``[1, ...]``, an op over the batch axis), each node runs once per item
and its outputs are stacked, so hooks still see the whole batch.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from netinvert.ground.errors import NetinvertError, choices
from netinvert.models.onnx.ops import OPS, Node, Outputs, Tensor, as_tuple, supported_ops


@dataclass
class _Items:
    """Per-item execution for graphs that take one item at a time.

    A value is ``cat`` (the items' outputs have a leading size-1 dim and sit concatenated along it),
    ``stack`` (stacked along a new leading dim) or ``None`` (the same for every item).
    """

    batch: int
    modes: list[str | None]
    out_modes: list[str | None] = field(default_factory=list)

    def run(self, node: Node, inputs: list[Tensor | None]) -> Outputs:
        if not any(self.modes):
            self.out_modes = [None] * node.n_outputs
            return node.run_op(inputs)
        if node.op_type in ("Shape", "Size"):
            self.out_modes = [None]
            return node.run_op([self._item(inputs[0], self.modes[0], 0)])
        per_item = [as_tuple(node.run_op([self._item(x, m, i) for x, m in zip(inputs, self.modes)]))
                    for i in range(self.batch)]
        outs, self.out_modes = [], []
        for k in range(len(per_item[0])):
            parts = [p[k] for p in per_item]
            if all(p.dim() >= 1 and p.shape[0] == 1 for p in parts):
                outs.append(torch.cat(parts, 0))
                self.out_modes.append("cat")
            else:
                outs.append(torch.stack(parts, 0))
                self.out_modes.append("stack")
        return outs[0] if len(outs) == 1 else tuple(outs)

    @staticmethod
    def _item(x: Tensor | None, mode: str | None, i: int) -> Tensor | None:
        if x is None or mode is None:
            return x
        return x[i:i + 1] if mode == "cat" else x[i]


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # a node of these with a constant matrix has weights


class OnnxModule(nn.Module):
    """A converted ONNX graph. ``item_shape`` is one input without batch dim (``None`` where unknown).

    ``batch_mode`` is ``dynamic`` (the graph batches itself), ``one`` (fixed batch 1: a larger batch
    runs whole when that gives the per-item outputs, ``batches`` says whether it does, else item by
    item) or ``none`` (the graph input has no batch dimension).
    ``proto`` is the parsed graph itself, so the onnxruntime re-check never reads the file again;
    ``input_dims`` is the graph input's declared shape (unknown sizes as 1).
    """

    def __init__(self, model: onnx.ModelProto, *, source: str = "model.onnx",
                 input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        graph = model.graph
        self.proto = model
        self.source = source
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        consts: dict[str, Tensor] = {}
        for init in graph.initializer:
            consts[init.name] = _tensor(init, source)
        real_inputs = [i for i in graph.input if i.name not in consts]
        if len(real_inputs) != 1:
            names = ", ".join(i.name for i in real_inputs) or "none"
            raise NetinvertError(f"{source} has {len(real_inputs)} graph inputs ({names}): netinvert inverts "
                                 "single-input models; export the model with one input tensor")
        self.input_name = real_inputs[0].name
        self.input_dims = tuple(d.dim_value if d.dim_value > 0 else 1
                                for d in real_inputs[0].type.tensor_type.shape.dim) or (1,)
        self.output_name = graph.output[0].name
        self.batch_mode, self.item_shape = _batch_layout(real_inputs[0], input_shape, source)
        nodes = _toposort(graph, set(consts) | {self.input_name}, source)
        _check_supported(nodes, source)
        self._plan: list[tuple[str, list[str], list[str]]] = []
        used: set[str] = set()
        for node in nodes:
            module = Node(node.op_type, node.name, _attrs(node, source), self.opset, len(node.output))
            if all(not i or i in consts for i in node.input):
                _fold(module, node, consts, source)
                continue
            name = self._unique_name(node.name or f"{node.op_type}_{len(self._plan)}", used)
            module.weighted = node.op_type in WEIGHTED_OPS and any(consts[i].dim() >= 2 for i in node.input
                                                                   if i in consts)
            self.add_module(name, module)
            self._plan.append((name, list(node.input), list(node.output)))
        needed = {i for _, ins, _ in self._plan for i in ins} | {self.output_name}
        self._consts: dict[str, str] = {}
        for k, value_name in enumerate(n for n in consts if n in needed):
            self.register_buffer(f"_c{k}", consts[value_name])
            self._consts[value_name] = f"_c{k}"
        self._last_use = {v: k for k, (_, ins, _) in enumerate(self._plan) for v in ins}
        self.batches: bool | None = None if self.batch_mode == "one" else self.batch_mode == "dynamic"

    def flow(self) -> list[tuple[str, list[str], list[str]]]:
        """Each node that runs, in order: its submodule name, the values it reads and the values it writes."""
        return [(name, list(ins), list(outs)) for name, ins, outs in self._plan]

    def ops(self) -> tuple[list[tuple[Node, list[str], list[str]]], dict[str, Tensor]]:
        """The nodes that depend on the input, in order, with the values each reads and writes, and the
        constants they read (initializers and constant subgraphs, folded)."""
        nodes = [(self._modules[name], list(ins), list(outs)) for name, ins, outs in self._plan]
        return nodes, {value: getattr(self, buf) for value, buf in self._consts.items()}  # type: ignore[misc]

    def _unique_name(self, raw: str, used: set[str]) -> str:
        base = re.sub(r"\W+", "_", raw).strip("_") or "node"
        name, k = base, 2
        while name in used or hasattr(self, name):
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    def forward(self, x: Tensor) -> Tensor:
        if self.batch_mode == "none" or x.shape[0] == 1:
            return self._run(x, loop=self.batch_mode == "none")
        if self.batches is None:
            self.batches = self._batched_run_agrees(x)
        return self._run(x, loop=not self.batches)

    def _batched_run_agrees(self, x: Tensor) -> bool:
        """Whether this fixed-batch-1 graph, run on the whole batch ``x``, gives what it gives item by item.

        Both runs bypass forward hooks, so the check is invisible to whatever watches the layers.
        """
        with torch.no_grad():
            items = self._run(x, loop=True, hooks=False)
            try:
                whole = self._run(x, loop=False, hooks=False)
            except Exception:  # an op that needs batch 1 (a Reshape to [1, ...], ...): run item by item
                return False
        if whole.shape != items.shape or whole.dtype != items.dtype:
            return False
        if not whole.is_floating_point():
            return bool(torch.equal(whole, items))
        scale = float(items.abs().max()) if items.numel() else 0.0
        return bool(torch.allclose(whole, items, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))

    def _run(self, x: Tensor, loop: bool, hooks: bool = True) -> Tensor:
        dtype = x.dtype if x.is_floating_point() else torch.float32
        env: dict[str, Tensor | None] = {name: getattr(self, buf) for name, buf in self._consts.items()}
        env[self.input_name] = x
        modes: dict[str, str | None] = {self.input_name: "stack" if self.batch_mode == "none" else "cat"}
        for k, (name, ins, outs) in enumerate(self._plan):
            args = [env[i] if i else None for i in ins]
            items = _Items(x.shape[0], [modes.get(i) for i in ins]) if loop else None
            node = self._modules[name]
            call = node if hooks else node.forward  # type: ignore[union-attr]
            result = as_tuple(call(*args, dtype=dtype, items=items))
            for j, (out_name, value) in enumerate(zip(outs, result)):
                env[out_name] = value
                if items is not None:
                    modes[out_name] = items.out_modes[j]
            for i in ins:
                if self._last_use.get(i) == k and i != self.output_name and i not in self._consts:
                    env.pop(i, None)
        if self.output_name not in env:
            raise NetinvertError(f"{self.source}: the graph output {self.output_name!r} was never computed")
        out = env[self.output_name]
        if loop and modes.get(self.output_name) is None:
            out = out.unsqueeze(0).expand(x.shape[0], *out.shape)
        return out


def load_onnx(path: str | Path, *, input_shape: tuple[int, ...] | None = None) -> OnnxModule:
    """Read an ONNX file (``.onnx``, or gzipped ``.onnx.gz`` as VNN-COMP ships them) and convert it;
    unreadable files and unsupported ops raise NetinvertError."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as f:
                model = onnx.load(f)
        else:
            model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, truncated external data, ...
        raise NetinvertError(f"cannot read {path} as an ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'}); "
                             "re-export it or check the download") from None
    if not model.graph.node or not model.graph.output or not model.graph.input:
        raise NetinvertError(f"{path} is not an ONNX model (no graph nodes, inputs or outputs); "
                             "re-export it with torch.onnx.export or tf2onnx")
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    return OnnxModule(model, source=str(path), input_shape=input_shape)


# --------------------------------------------------------------------------- graph handling
def _tensor(proto: onnx.TensorProto, source: str) -> Tensor:
    try:
        array = numpy_helper.to_array(proto)
    except Exception as exc:
        raise NetinvertError(f"{source}: tensor {proto.name!r} cannot be read ({exc})") from None
    if array.dtype.kind in "OSU":
        raise NetinvertError(f"{source}: tensor {proto.name!r} holds strings, which netinvert cannot use")
    if array.dtype in (np.uint16, np.uint32, np.uint64):
        array = array.astype(np.int64)
    elif (array.dtype.kind == "f" and array.dtype.itemsize < 4) or str(array.dtype) == "bfloat16":
        array = array.astype(np.float32)  # half-precision weights compute in float32 (casts follow the input)
    return torch.from_numpy(np.array(array, copy=True))


def _attrs(node: onnx.NodeProto, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            value = _tensor(value, source)
        elif isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[a.name] = value
    return out


def _batch_layout(value: onnx.ValueInfoProto, input_shape: tuple[int, ...] | None,
                  source: str) -> tuple[str, tuple[int, ...] | None]:
    """How the graph's input is batched, and one item's shape."""
    dims: list[int | None] = []
    if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in value.type.tensor_type.shape.dim]
    if input_shape is not None:
        input_shape = tuple(int(s) for s in input_shape)
        if not dims or len(input_shape) == len(dims) - 1:
            mode = "dynamic" if not dims or dims[0] is None else ("one" if dims[0] == 1 else "")
            graph_item = dims[1:]
        elif len(input_shape) == len(dims):
            mode, graph_item = "none", dims
        else:
            mode, graph_item = "", dims
        if not mode or any(g is not None and g != s for g, s in zip(graph_item, input_shape)):
            raise NetinvertError(f"--input-shape {','.join(map(str, input_shape))} does not fit {source}, whose "
                                 f"input {value.name!r} has shape {_dims_text(dims)}; give the shape without "
                                 "the batch dimension")
        return mode, input_shape
    if not dims:
        return "dynamic", None
    if dims[0] is None:
        mode, item = "dynamic", dims[1:]
    elif dims[0] == 1 and len(dims) >= 2:
        mode, item = "one", dims[1:]
    else:
        mode, item = "none", dims
    return mode, (tuple(item) if all(d is not None for d in item) else None)  # type: ignore[arg-type]


def _dims_text(dims: list[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")" if dims else "(unknown)"


def _toposort(graph: onnx.GraphProto, available: set[str], source: str) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is computed first (ONNX requires it; some files break it): the
    file's order where it allows."""
    ready, pending, order = set(available) | {""}, list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            node = rest[0]
            missing = [i for i in node.input if i not in ready]
            raise NetinvertError(f"{source}: node {node.name!r} ({node.op_type}) reads {', '.join(missing)}, "
                                 "which no node, initializer or input produces; the file is malformed")
        pending = rest
    return order


def _check_supported(nodes: list[onnx.NodeProto], source: str) -> None:
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            raise NetinvertError(f"{source}: ONNX op {op} (node {node.name!r}) is not supported; "
                                 f"supported ops: {choices(supported_ops(), limit=1000)}")



def _fold(module: Node, node: onnx.NodeProto, consts: dict[str, Tensor], source: str) -> None:
    try:
        with torch.no_grad():
            result = as_tuple(module(*[consts[i] if i else None for i in node.input]))
    except NetinvertError:
        raise
    except Exception as exc:
        raise NetinvertError(f"{source}: node {node.name!r} ({node.op_type}) fails on its constant inputs: "
                             f"{exc}") from None
    for name, value in zip(node.output, result):
        if name:
            consts[name] = value
