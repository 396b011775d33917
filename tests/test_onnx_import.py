"""The ONNX converter against onnxruntime: graphs built with onnx.helper, one op (and its attribute
variants) at a time, plus the layouts tf2onnx and old exporters produce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from known_instances import export_onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.models.load import load
from netinvert.models.onnx import load_onnx, supported_ops

RNG = np.random.default_rng(0)
F32 = TensorProto.FLOAT


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def save(path: Path, nodes: list, x_shape: list, consts: dict[str, np.ndarray], opset: int,
         outputs: list[tuple[str, int]] | None = None, x_name: str = "x") -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(x_name, F32, x_shape)],
        [helper.make_tensor_value_info(name, elem, None) for name, elem in (outputs or [("y", F32)])],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    path.write_bytes(model.SerializeToString())
    return path


def run_both(path: Path, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    session = ort.InferenceSession(str(path))
    expected = session.run(None, {session.get_inputs()[0].name: x})
    module = load_onnx(path)
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    return expected, [got.numpy()]


# (op, x shape, attributes, constant inputs (None: omitted optional input), opset, output type)
CASES = [
    ("Conv", [2, 3, 9, 9], dict(auto_pad="SAME_UPPER", strides=[2, 2]), [rand(4, 3, 4, 4), rand(4)], 17),
    ("Conv", [2, 3, 9, 9], dict(auto_pad="SAME_LOWER", strides=[2, 2]), [rand(4, 3, 4, 4), rand(4)], 17),
    ("Conv", [2, 3, 9, 9], dict(auto_pad="VALID", dilations=[2, 2]), [rand(4, 3, 3, 3)], 11),
    ("Conv", [2, 3, 9, 9], dict(pads=[0, 1, 2, 1], group=3), [rand(6, 1, 3, 3), rand(6)], 13),
    ("Conv", [2, 3, 10], dict(auto_pad="SAME_UPPER", strides=[2]), [rand(4, 3, 3)], 13),
    ("ConvTranspose", [2, 4, 5, 5], dict(strides=[2, 2], pads=[1, 1, 0, 0], output_padding=[1, 1]),
     [rand(4, 3, 3, 3), rand(3)], 13),
    ("ConvTranspose", [2, 4, 5, 5], dict(auto_pad="SAME_UPPER", strides=[2, 2]), [rand(4, 2, 4, 4)], 13),
    ("ConvTranspose", [2, 4, 5, 5], dict(strides=[2, 2], output_shape=[10, 11], group=2), [rand(4, 1, 3, 3)], 13),
    ("MaxPool", [2, 3, 10, 10], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), [], 13),
    ("MaxPool", [2, 3, 10, 10], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), [], 13),
    ("MaxPool", [2, 3, 10, 10], dict(kernel_shape=[2, 2], dilations=[2, 2]), [], 13),
    ("AveragePool", [2, 3, 10, 10], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [], 13),
    ("AveragePool", [2, 3, 10, 10], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2],
                                         count_include_pad=1), [], 13),
    ("AveragePool", [2, 3, 10, 10], dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER"), [], 13),
    ("AveragePool", [2, 3, 10, 10], dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), [], 13),
    ("GlobalAveragePool", [2, 3, 5, 6], {}, [], 13),
    ("GlobalMaxPool", [2, 3, 5, 6], {}, [], 13),
    ("Gemm", [4, 5], dict(transB=1, alpha=0.5, beta=2.0), [rand(6, 5), rand(6)], 13),
    ("Gemm", [5, 4], dict(transA=1), [rand(5, 6)], 13),
    ("MatMul", [2, 3, 4, 5], {}, [rand(3, 5, 6)], 13),
    ("BatchNormalization", [2, 3, 5, 5], dict(epsilon=1e-3),
     [rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.5], 15),
    ("BatchNormalization", [2, 3], {}, [rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.5], 9),
    ("InstanceNormalization", [2, 3, 5, 5], {}, [rand(3), rand(3)], 13),
    ("LayerNormalization", [2, 3, 5, 5], dict(axis=-2), [rand(5, 5), rand(5, 5)], 17),
    ("GroupNormalization", [2, 6, 3, 3], dict(num_groups=2, epsilon=1e-3), [rand(2), rand(2)], 18),
    ("GroupNormalization", [2, 6, 3, 3], dict(num_groups=2), [rand(6), rand(6)], 21),
    ("LRN", [2, 5, 4, 4], dict(size=3, alpha=0.2, beta=0.75, bias=1.5), [], 13),
    ("LRN", [2, 5, 4, 4], dict(size=5), [], 13),
    ("Softmax", [2, 3, 4], dict(axis=1), [], 11),
    ("Softmax", [2, 3, 4], dict(axis=1), [], 13),
    ("LogSoftmax", [2, 3, 4], {}, [], 11),
    ("Hardmax", [2, 3, 4], dict(axis=1), [], 13),
    ("LeakyRelu", [2, 7], dict(alpha=0.2), [], 13),
    ("PRelu", [2, 3, 4, 4], {}, [rand(3, 1, 1)], 13),
    ("Elu", [2, 7], dict(alpha=0.7), [], 13),
    ("Selu", [2, 7], {}, [], 13),
    ("Celu", [2, 7], dict(alpha=0.5), [], 13),
    ("HardSigmoid", [2, 7], dict(alpha=0.3, beta=0.4), [], 13),
    ("HardSwish", [2, 7], {}, [], 14),
    ("Gelu", [2, 7], dict(approximate="tanh"), [], 20),
    ("Gelu", [2, 7], {}, [], 20),
    ("Erf", [2, 7], {}, [], 13),
    ("Softplus", [2, 7], {}, [], 13),
    ("Mish", [2, 7], {}, [], 18),
    ("ThresholdedRelu", [2, 7], dict(alpha=0.3), [], 13),
    ("Shrink", [2, 7], dict(lambd=0.4, bias=0.1), [], 13),
    ("Clip", [2, 7], {}, [np.array(-0.5, np.float32), np.array(0.7, np.float32)], 13),
    ("Clip", [2, 7], dict(min=-0.2, max=0.3), [], 6),
    ("Clip", [2, 7], {}, [None, np.array(0.1, np.float32)], 13),
    ("Reshape", [2, 3, 4], {}, [i64(0, -1)], 13),
    ("Reshape", [2, 3, 4], {}, [i64(0, 2, 2, 3)], 14),
    ("Flatten", [2, 3, 4, 5], dict(axis=2), [], 13),
    ("Flatten", [2, 3, 4, 5], dict(axis=-1), [], 13),
    ("Transpose", [2, 3, 4, 5], dict(perm=[0, 2, 3, 1]), [], 13),
    ("Squeeze", [2, 1, 4, 1], dict(axes=[1]), [], 11),
    ("Squeeze", [2, 1, 4, 1], {}, [i64(-1, 1)], 13),
    ("Unsqueeze", [2, 4], dict(axes=[0, 3]), [], 11),
    ("Unsqueeze", [2, 4], {}, [i64(-1, 1)], 13),
    ("Concat", [2, 3], dict(axis=1), [rand(2, 4)], 13),
    ("Split", [2, 7], dict(axis=1), [i64(3, 4)], 13),
    ("Split", [2, 7], dict(axis=1, num_outputs=3), [], 18),
    ("Slice", [2, 5, 6], {}, [i64(1, -1), i64(100, 0), i64(1, 2), i64(2, -1)], 13),
    ("Slice", [2, 5, 6], dict(starts=[1, 2], ends=[-1, 1000], axes=[1, 2]), [], 9),
    ("Gather", [2, 5, 3], dict(axis=1), [np.array([[0, 2], [-1, 1]], np.int64)], 13),
    ("GatherElements", [2, 5], dict(axis=1), [np.array([[0, 4, 2], [-1, 1, 1]], np.int64)], 13),
    ("Pad", [2, 3, 4, 4], {}, [i64(0, 0, 1, 2, 0, 0, 2, 1), np.array(0.5, np.float32)], 13),
    ("Pad", [2, 3, 4, 4], dict(mode="reflect"), [i64(0, 0, 2, 1, 0, 0, 1, 3)], 13),
    ("Pad", [2, 3, 4, 4], dict(mode="edge"), [i64(0, 0, 2, 1, 0, 0, 1, 3)], 13),
    ("Pad", [2, 3, 4, 4], dict(mode="wrap"), [i64(0, 0, 2, 1, 0, 0, 1, 3)], 19),
    ("Pad", [2, 3, 4, 4], {}, [i64(1, 2, 0, -1), None, i64(2, 3)], 18),
    ("Pad", [2, 3, 4, 4], dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], value=2.0), [], 2),
    ("ReduceMean", [2, 3, 4], dict(axes=[1], keepdims=0), [], 13),
    ("ReduceMean", [2, 3, 4], {}, [i64(-1)], 18),
    ("ReduceSum", [2, 3, 4], dict(keepdims=0), [i64(0, 2)], 13),
    ("ReduceMax", [2, 3, 4], {}, [i64(1)], 18),
    ("ReduceL2", [2, 3, 4], dict(axes=[2]), [], 13),
    ("ReduceLogSumExp", [2, 3, 4], dict(axes=[1, 2]), [], 13),
    ("Expand", [2, 3, 1], {}, [i64(1, 3, 4)], 13),
    ("Tile", [2, 3], {}, [i64(1, 2)], 13),
    ("Min", [2, 3], {}, [rand(3)], 13),
    ("Max", [2, 3], {}, [rand(2, 3)], 13),
    ("Sum", [2, 3], {}, [rand(3), rand(1)], 13),
    ("Mean", [2, 3], {}, [rand(3), rand(1)], 13),
    ("Div", [2, 3], {}, [rand(3)], 13),
    ("Pow", [2, 3], {}, [np.array(2.0, np.float32)], 13),
    ("Mod", [2, 3], dict(fmod=1), [np.array([0.7, -0.3, 1.1], np.float32)], 13),
    ("DepthToSpace", [2, 8, 3, 3], dict(blocksize=2), [], 13),
    ("DepthToSpace", [2, 8, 3, 3], dict(blocksize=2, mode="CRD"), [], 13),
    ("SpaceToDepth", [2, 2, 4, 6], dict(blocksize=2), [], 13),
    ("CumSum", [2, 5], dict(exclusive=1, reverse=1), [i64(1)], 14),
    ("Einsum", [2, 3, 4], dict(equation="bij,jk->bik"), [rand(4, 5)], 13),
    ("LpNormalization", [2, 5], dict(axis=1, p=2), [], 13),
    ("Trilu", [2, 4, 4], {}, [np.array(1, np.int64)], 14),
    ("Resize", [2, 2, 4, 5], dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
     [None, np.array([1, 1, 2, 2], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="nearest"), [None, np.array([1, 1, 1.7, 2.3], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn",
                                  nearest_mode="round_prefer_ceil"), [None, np.array([1, 1, 2, 1.5], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="linear"), [None, np.array([1, 1, 1.5, 2.5], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="linear", coordinate_transformation_mode="asymmetric"),
     [None, np.array([1, 1, 0.6, 0.8], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
     [None, np.array([1, 1, 3, 2], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="linear", coordinate_transformation_mode="align_corners", axes=[2, 3]),
     [None, None, i64(7, 9)], 18),
    ("Resize", [2, 2, 4, 5], dict(mode="nearest", axes=[3, 2], keep_aspect_ratio_policy="not_larger"),
     [None, None, i64(12, 7)], 18),
    ("Resize", [2, 2, 4, 5], dict(mode="cubic"), [None, np.array([1, 1, 2, 2], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1),
     [None, np.array([1, 1, 1.5, 0.8], np.float32)], 13),
    ("Resize", [2, 2, 4, 5], dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
                                  extrapolation_value=-1.0),
     [np.array([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], np.float32), np.array([1, 1, 2, 2], np.float32)], 13),
    ("Upsample", [2, 2, 4, 5], dict(mode="nearest"), [np.array([1, 1, 2, 3], np.float32)], 9),
    ("Upsample", [2, 2, 4, 5], dict(mode="linear"), [np.array([1, 1, 2, 1.5], np.float32)], 9),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{k}" for k, c in enumerate(CASES)])
def test_op_matches_onnxruntime(case: tuple, tmp_path: Path) -> None:
    op, shape, attrs, consts, opset = case
    names = {f"c{k}": v for k, v in enumerate(consts) if v is not None}
    inputs = ["x"] + ["" if v is None else f"c{k}" for k, v in enumerate(consts)]
    n_out = 2 if op == "Split" and "num_outputs" not in attrs else (3 if op == "Split" else 1)
    outputs = ["y"] + [f"y{k}" for k in range(1, n_out)]
    node = helper.make_node(op, inputs, outputs, name=f"the {op}", **attrs)
    path = save(tmp_path / "op.onnx", [node], ["N", *shape[1:]], names, opset,
                outputs=[(o, F32) for o in outputs])
    x = rand(*shape)
    session = ort.InferenceSession(str(path))
    expected = session.run(None, {"x": x})
    module = load_onnx(path)
    layer = dict(module.named_modules())[f"the_{op}"]
    with torch.no_grad():
        got = layer(torch.from_numpy(x), *[None if v is None else torch.from_numpy(v) for v in consts])
        y = module(torch.from_numpy(x))
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), expected[0], rtol=1e-5, atol=1e-5)


def test_tf2onnx_nhwc_graph_keeps_its_layout(tmp_path: Path) -> None:
    """Transpose-in, SAME convolution, and a Shape -> Gather -> Concat -> Reshape flatten, as tf2onnx writes."""
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], name="model/conv2d/Conv2D__6", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], name="model/conv2d/Conv2D", auto_pad="SAME_UPPER",
                         strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["relu"], name="model/conv2d/Relu"),
        helper.make_node("Transpose", ["relu"], ["nhwc"], name="model/conv2d/Relu__9", perm=[0, 2, 3, 1]),
        helper.make_node("Shape", ["nhwc"], ["shape"], name="model/flatten/Shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="model/flatten/strided_slice", axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="model/flatten/Unsqueeze"),
        helper.make_node("Concat", ["batch1", "minus_one"], ["new_shape"], name="model/flatten/Reshape/shape",
                         axis=0),
        helper.make_node("Reshape", ["nhwc", "new_shape"], ["flat"], name="model/flatten/Reshape"),
        helper.make_node("MatMul", ["flat", "dense_w"], ["mm"], name="model/dense/MatMul"),
        helper.make_node("Add", ["mm", "dense_b"], ["logits"], name="model/dense/BiasAdd"),
        helper.make_node("Softmax", ["logits"], ["y"], name="model/dense/Softmax", axis=-1),
    ]
    consts = {"w": rand(4, 3, 3, 3), "b": rand(4), "zero": np.array(0, np.int64), "axes0": i64(0),
              "minus_one": i64(-1), "dense_w": rand(4 * 4 * 4, 5), "dense_b": rand(5)}
    path = save(tmp_path / "nhwc.onnx", nodes, ["unk__1", 8, 8, 3], consts, 13, x_name="input_1")
    x = rand(3, 8, 8, 3)
    expected, got = run_both(path, x)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    model = load(path)
    assert model.input_spec.shape == (8, 8, 3)
    assert "model_conv2d_Conv2D" in model.layer_names()
    _, acts = model.capture(torch.from_numpy(x), ["model_conv2d_Conv2D", "model_dense_BiasAdd"])
    assert acts["model_conv2d_Conv2D"].shape == (3, 4, 4, 4)
    assert acts["model_dense_BiasAdd"].shape == (3, 5)


def _batch_one_graph(tmp_path: Path) -> Path:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    consts = {"w": rand(2, 1, 3, 3), "shape": i64(1, -1), "fc_w": rand(4, 2 * 5 * 5), "fc_b": rand(4)}
    return save(tmp_path / "batch1.onnx", nodes, [1, 1, 5, 5], consts, 13)


def test_fixed_batch_one_graphs_take_any_batch(tmp_path: Path) -> None:
    path = _batch_one_graph(tmp_path)
    session = ort.InferenceSession(str(path))
    x = rand(4, 1, 5, 5)
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(4)])
    model = load(path)
    assert model.module.batch_mode == "one" and model.input_spec.shape == (1, 5, 5)
    out, acts = model.capture(torch.from_numpy(x), ["conv", "flatten"])
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-5)
    assert acts["conv"].shape == (4, 2, 5, 5) and acts["flatten"].shape == (4, 50)
    x_one = torch.from_numpy(x[:1])
    assert torch.allclose(model(x_one), out[:1], atol=1e-6)
    assert model.module.batches is False  # the Reshape to [1, -1] needs one item at a time


def test_fixed_batch_one_graphs_run_whole_batches_when_that_gives_the_same_outputs(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    consts = {"w": rand(2, 1, 3, 3), "fc_w": rand(4, 2 * 5 * 5), "fc_b": rand(4)}
    path = save(tmp_path / "batch1_flatten.onnx", nodes, [1, 1, 5, 5], consts, 13)
    session = ort.InferenceSession(str(path))
    x = rand(6, 1, 5, 5)
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(6)])
    model = load(path)
    calls: list[tuple[int, ...]] = []
    model.get_layer("conv").register_forward_hook(lambda _m, _i, out: calls.append(tuple(out.shape)))
    out = model(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-5)
    assert model.module.batches is True
    assert calls == [(6, 2, 5, 5)]  # one batched call: the check runs unseen by hooks


def test_graphs_without_batch_dimension_are_batched_around(tmp_path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    path = save(tmp_path / "nobatch.onnx", nodes, [3], {"w": rand(3, 2)}, 14)
    session = ort.InferenceSession(str(path))
    x = rand(5, 3)
    expected = np.stack([session.run(None, {"x": x[i]})[0] for i in range(5)])
    model = load(path)
    assert model.module.batch_mode == "none" and model.input_spec.shape == (3,)
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-6)


def test_vnncomp_style_mnist_network_matches_onnxruntime(tmp_path: Path) -> None:
    """The layout of VNN-COMP's mnist_fc networks: a fixed (1, 784, 1) input, Flatten, then Gemm and Relu."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 10))
    path = export_onnx(net, (1, 784, 1), tmp_path / "mnist-net_256x2.onnx")
    assert [n.op_type for n in onnx.load(str(path)).graph.node][:2] == ["Flatten", "Gemm"]
    model = load(path)
    assert model.input_spec.shape == (784, 1)
    x = RNG.random((3, 784, 1), dtype=np.float32)
    session = ort.InferenceSession(str(path))
    expected = np.concatenate([session.run(None, {"X": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-4)


def test_gradients_match_finite_differences(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"),
        helper.make_node("Conv", ["p", "w"], ["c"], name="conv", auto_pad="SAME_LOWER", strides=[2, 2]),
        helper.make_node("Resize", ["c", "", "scales"], ["r"], name="up", mode="linear"),
        helper.make_node("LayerNormalization", ["r", "g", "bt"], ["n"], name="norm", axis=1),
        helper.make_node("Tanh", ["n"], ["t"], name="tanh"),
        helper.make_node("Flatten", ["t"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc"),
    ]
    consts = {"pads": i64(0, 0, 1, 1, 0, 0, 1, 1), "w": rand(2, 1, 2, 2), "scales": np.array([1, 1, 2, 2], np.float32),
              "g": rand(2, 8, 8), "bt": rand(2, 8, 8), "fc": rand(128, 3)}
    path = save(tmp_path / "grad.onnx", nodes, ["N", 1, 5, 5], consts, 17)
    module = load_onnx(path).double()
    x = torch.from_numpy(rand(2, 1, 5, 5)).double().requires_grad_(True)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: module(v) @ weights, (x,), eps=1e-6, atol=1e-5)
    (grad,) = torch.autograd.grad((module(x) @ weights).sum(), x)
    assert grad.abs().max() > 1e-3


def test_unsupported_op_names_op_node_and_supported_list(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok"),
             helper.make_node("MaxRoiPool", ["r", "rois"], ["y"], name="roi_pool_7", pooled_shape=[2, 2])]
    path = save(tmp_path / "unsupported.onnx", nodes, ["N", 1, 4, 4], {"rois": rand(1, 5)}, 13)
    with pytest.raises(NetinvertError, match=r"ONNX op MaxRoiPool \(node 'roi_pool_7'\) is not supported; "
                                             r"supported ops: .*Conv.*Resize"):
        load(path)
    nodes = [helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [1])],
                              [helper.make_tensor_value_info("y", F32, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, tmp_path / "ms.onnx")
    with pytest.raises(NetinvertError, match=r"op com.microsoft.FusedConv \(node 'fused'\)"):
        load_onnx(tmp_path / "ms.onnx")
    assert {"Conv", "ConvTranspose", "Resize", "Gemm", "BatchNormalization"} <= set(supported_ops())


def test_corrupt_files_raise_one_clear_error(tmp_path: Path) -> None:
    good = _batch_one_graph(tmp_path).read_bytes()
    cases = {"truncated.onnx": good[: len(good) // 2], "garbage.onnx": bytes(RNG.integers(0, 256, 300, np.uint8)),
             "empty.onnx": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(NetinvertError, match="cannot read .* as an ONNX model|is not an ONNX model") as err:
            load(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_constants_fold_into_buffers_and_names_stay_unique(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Constant", [], ["k"], name="const", value=numpy_helper.from_array(rand(3), "k")),
        helper.make_node("Mul", ["k", "two"], ["k2"], name="scale_const"),
        helper.make_node("Add", ["x", "k2"], ["a"], name="/block/Add"),
        helper.make_node("Add", ["a", "k"], ["b"], name="block.Add"),
        helper.make_node("Relu", ["b"], ["y"], name="forward"),
    ]
    path = save(tmp_path / "names.onnx", nodes, ["N", 3], {"two": np.array(2.0, np.float32)}, 13)
    module = load_onnx(path)
    assert [n for n, _ in module.named_modules() if n] == ["block_Add", "block_Add_2", "forward_2"]
    x = rand(4, 3)
    expected, got = run_both(path, x)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    assert module.double()(torch.from_numpy(x).double()).dtype == torch.float64


def test_half_precision_graphs_compute_in_the_input_dtype(tmp_path: Path) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["h"], name="to_half", to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["h", "w"], ["c"], name="conv", auto_pad="SAME_UPPER"),
             helper.make_node("Cast", ["c"], ["y"], name="to_float", to=TensorProto.FLOAT)]
    path = save(tmp_path / "half.onnx", nodes, ["N", 2, 6, 6], {"w": rand(3, 2, 3, 3).astype(np.float16)}, 13)
    x = rand(2, 2, 6, 6)
    expected, got = run_both(path, x)
    np.testing.assert_allclose(got[0], expected[0], atol=2e-2)
    assert got[0].dtype == np.float32


def test_models_with_several_inputs_are_refused(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info("a", F32, [1]), helper.make_tensor_value_info("b", F32, [1])],
                              [helper.make_tensor_value_info("y", F32, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "two.onnx")
    with pytest.raises(NetinvertError, match=r"has 2 graph inputs \(a, b\)"):
        load_onnx(tmp_path / "two.onnx")
