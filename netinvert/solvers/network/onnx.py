"""The ONNX reader of ``GraphNet``: the nodes ``models/onnx`` parsed (the one parse of the file), each
built by its op's verification function in the op table (``models/onnx/ops.py``, ``verify.py``).

Nodes whose arguments are all constant (after ``Shape`` of a value, which is constant) are evaluated
with the op's torch function. An op the exact methods do not read is refused with one error naming
the op, the node and the supported list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netinvert.models.onnx import OnnxModule
from netinvert.models.onnx.ops import OPS, VERIFIED, as_tuple
from netinvert.solvers.network.build import Build
from netinvert.solvers.network.graph import GraphNet


def graph_from_onnx(model: Any, source: str | Path | None = None) -> GraphNet:
    """The ``GraphNet`` of an ``OnnxModule`` (or of a parsed ``onnx.ModelProto`` read from ``source``)."""
    module = model if isinstance(model, OnnxModule) else OnnxModule(model, source=str(source))
    path = Path(module.source)
    b = Build(path.name, module.input_dims)
    nodes, consts = module.ops()
    env: dict[str, Any] = {**consts, module.input_name: 0}  # values: node ids (int) or constant tensors
    for node, ins, outs in nodes:
        label = f"{node.op_type} node {node.onnx_name or outs[0]!r}"
        missing = [n for n in ins if n and n not in env]
        if missing:
            raise b.fail(label, f"reads {missing[0]!r}, which no earlier node produces")
        args = [env[n] if n else None for n in ins]
        if all(not isinstance(x, int) for x in args):
            try:
                out = node.run_op(args)
            except Exception as exc:
                raise b.fail(label, f"cannot be evaluated as a constant: {exc}") from exc
        elif OPS[node.op_type].verify is None:
            raise b.fail(label, f"uses op {node.op_type}, which is not supported; exact methods on graphs support "
                                f"{', '.join(VERIFIED)}")
        else:
            out = OPS[node.op_type].verify(b, node, args, label)
        env.update(zip(outs, as_tuple(out)))
    return b.finish(env[module.output_name], path.stem, {"source": str(path), "format": "onnx"})
