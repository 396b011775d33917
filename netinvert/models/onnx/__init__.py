"""ONNX import: :mod:`.graph` reads a graph into a differentiable module, :mod:`.ops` holds the op table."""

from netinvert.models.onnx.graph import OnnxModule, load_onnx
from netinvert.models.onnx.ops import supported_ops

__all__ = ["OnnxModule", "load_onnx", "supported_ops"]
