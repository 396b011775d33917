"""Classifiers exported with their softmax: targets must optimize the logits before it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from netinvert import Class, Domain, invert, load

ARCH = '''from torch import nn

from netinvert.models.architectures import digits_mlp


def with_softmax():
    return nn.Sequential(digits_mlp(), nn.Softmax(dim=1))
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory, zoo):
    base = zoo("digits-mlp")
    folder = tmp_path_factory.mktemp("softmax")
    (folder / "arch.py").write_text(ARCH)
    net = nn.Sequential(base.module, nn.Softmax(dim=1)).eval()
    torch.save(net.state_dict(), folder / "net.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 1, 28, 28),), str(folder / "net.onnx"), input_names=["x"],
                          output_names=["p"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return base, folder


@pytest.mark.parametrize("route", ["state_dict", "onnx"])
def test_a_final_softmax_is_skipped_and_the_class_is_reached(exported, route):
    base, folder = exported
    if route == "onnx":
        model = load(folder / "net.onnx")
    else:
        model = load(folder / "net.pt", arch=f"{folder / 'arch.py'}:with_softmax", input_shape=(1, 28, 28))
    assert model.logits_layer is not None
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=1e-4, rtol=1e-4)
    result = invert(model, [Class(3), Class(8)], Domain(), steps=300, seed=0)
    probs = result.metric("model_prob")
    assert all(p >= 0.99 for p in probs), probs
    with torch.no_grad():
        true = torch.softmax(base(result.inputs), dim=1)
    assert probs == pytest.approx([true[0, 3].item(), true[1, 8].item()], abs=1e-4)


def test_keep_softmax_keeps_the_probabilities(exported):
    _, folder = exported
    model = load(folder / "net.onnx", keep_softmax=True)
    assert model.logits_layer is None
    with torch.no_grad():
        out = model(torch.rand(3, 1, 28, 28))
    torch.testing.assert_close(out.sum(1), torch.ones(3))
