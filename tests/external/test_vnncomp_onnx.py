"""The ONNX converter on a VNN-COMP network itself (mnist_fc 256x2) against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from netinvert.models.load import load

RNG = np.random.default_rng(0)


def test_vnncomp_mnist_network_matches_onnxruntime(vnncomp: Path) -> None:
    path = vnncomp / "mnist_fc" / "onnx" / "mnist-net_256x2.onnx"
    model = load(path)
    assert model.input_spec.shape == (784, 1)
    x = RNG.random((3, 784, 1), dtype=np.float32)
    session = ort.InferenceSession(str(path))
    expected = np.concatenate([session.run(None, {"0": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-4)
