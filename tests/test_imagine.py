"""The gradient method on the zoo: every class reached, verifier agreement, determinism, hooks, results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from netinvert import Channel, Class, Domain, InputSpec, Layer, Model, NetinvertError, Neuron, invert
from netinvert.domains.param import Fourier, Pixel

MNIST = Path(__file__).parent / "data" / "mnist"  # the MNIST test set, see its README.md


def sigmoid_ceiling(model: Model) -> torch.Tensor:
    """Upper bound of each class probability of the sigmoid roman-mlp: hidden sigmoids lie in (0, 1)."""
    fc3 = model.get_layer("fc3")
    return torch.sigmoid(fc3.bias + fc3.weight.clamp(min=0).sum(1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["roman-mlp", "digits-cnn", "digits-mlp"])
def test_every_class_is_reached_and_verified(zoo, name):
    model = zoo(name)
    result = invert(model, [Class(k) for k in range(model.num_outputs)], Domain())
    bar = 0.99
    if model.output_activation == "sigmoid":
        ceiling = sigmoid_ceiling(model)
        bar = min(bar, float(ceiling.min()) - 1e-6)
    probs = np.array(result.metric("model_prob"))
    assert (probs >= bar).all(), probs
    assert result.statuses == ["found"] * model.num_outputs
    agrees = np.array(result.metric("verifier_agrees"), dtype=bool)
    assert agrees.mean() >= 0.9, result.metric("verifier_prob")
    replay = model.probabilities(model(result.inputs))
    assert torch.allclose(replay.gather(1, torch.arange(model.num_outputs)[:, None])[:, 0],
                          torch.tensor(probs, dtype=replay.dtype), atol=1e-5)


def test_target_algebra_weights_and_values(zoo):
    model = zoo("digits-mlp")
    a, b, c = Class(1), Class(2), Class(3)
    combo = a + 3 * b - 5 * c
    assert combo.weights == [1.0, 3.0, -5.0]
    assert combo.description == "class 1 + 3 * class 2 - 5 * class 3"
    bigger = combo + Neuron("fc1", 0)
    assert combo.weights == [1.0, 3.0, -5.0] and bigger.weights == [1.0, 3.0, -5.0, 1.0]
    x = torch.rand(4, 1, 28, 28)
    out, acts = model.capture(x, ("fc1",))
    expected = out[:, 1] + 3 * out[:, 2] - 5 * out[:, 3] + acts["fc1"][:, 0]
    assert torch.allclose(bigger.objective(out, acts), expected)
    prod = Class(1) * Class(2)
    assert torch.allclose(prod.objective(out, acts), out[:, 1] * out[:, 2])
    assert torch.allclose((-(a / 2)).objective(out, acts), -0.5 * out[:, 1])


def _hook_count(model: Model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.module.modules())


def test_hooks_never_accumulate_even_on_error(zoo):
    model = zoo("digits-cnn")
    before = _hook_count(model)
    for _ in range(3):
        invert(model, [Channel("conv", 0), Neuron("fc", 2), Layer("pool")], steps=3, early_stop=False)
    assert _hook_count(model) == before
    from netinvert.targets.units import Direction

    with pytest.raises(NetinvertError, match="direction has 5 values"):
        invert(model, [Direction("pool", torch.ones(5))], steps=2)
    assert _hook_count(model) == before


def test_results_are_deterministic_for_a_seed(zoo):
    model = zoo("digits-cnn")
    targets = [Class(k) for k in range(3)]
    r1 = invert(model, targets, steps=20, seed=3, early_stop=False)
    r2 = invert(model, targets, steps=20, seed=3, early_stop=False)
    r3 = invert(model, targets, steps=20, seed=4, early_stop=False)
    assert torch.equal(r1.inputs, r2.inputs)
    assert not torch.equal(r1.inputs, r3.inputs)


def test_batches_keep_target_order_and_early_stop(zoo):
    model = zoo("digits-mlp")
    targets = [Class(k) for k in (7, 2, 9, 0)]
    result = invert(model, targets, batch_size=3, steps=400)
    assert [item.metrics["class_index"] for item in result.items] == [7, 2, 9, 0]
    assert result.timing["steps"] < 2 * 400, "early stop should end both chunks before the step budget"
    assert result.statuses == ["found"] * 4


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_user_value_range_and_saved_folder(zoo, tmp_path):
    base = zoo("digits-cnn")
    module = nn.Sequential(_Scale(1 / 255), base.module)
    model = Model(module, InputSpec((1, 28, 28), low=0, high=255), name="digits-0-255")
    result = invert(model, [Class(4), Class(8)])
    assert result.inputs.min() >= 0 and result.inputs.max() <= 255 and result.inputs.max() > 1.5
    assert result.statuses == ["found", "found"]
    out = result.save(tmp_path / "run")
    saved = np.load(out / "inputs.npy")
    assert saved.shape == (2, 1, 28, 28) and np.allclose(saved, result.inputs.numpy())
    data = json.loads((out / "result.json").read_text())
    assert data["method"] == "gradient" and data["model"] == "digits-0-255" and "timing" in data
    assert [i["target"] for i in data["items"]] == ["class 4", "class 8"]
    assert data["items"][0]["verifier_prob"] is None and "verifier" in data["items"][0]["verifier_note"]
    assert (out / "grid.png").exists() and len(list(out.glob("item_*.png"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"


@pytest.mark.parametrize("shape", [(1, 20, 20), (1, 28, 28), (3, 224, 224), (3, 32, 48), (2, 9, 13)])
def test_parameterizations_fit_any_shape(shape):
    gen = torch.Generator().manual_seed(0)
    low, high = torch.full(shape, -1.0), torch.full(shape, 2.0)
    for param in (Pixel(3, shape, low, high, gen), Fourier(3, shape, low, high, gen, decorrelate=shape[0] == 3)):
        x = param()
        assert x.shape == (3, *shape)
        assert x.min() >= -1.0 and x.max() <= 2.0


def test_defaults_work_on_rgb_224():
    """A 'greenness' classifier on 224x224 RGB: the imagined input must turn green under default settings."""
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        net[2].weight.copy_(10 * torch.eye(3) - 5)
        net[2].bias.zero_()
    model = Model(net, InputSpec((3, 224, 224)), name="greenness")
    result = invert(model, [Class(1)], steps=100, early_stop=False)
    assert result.info["options"]["param"] == "fourier"
    channel_means = result.inputs[0].mean(dim=(1, 2))
    assert channel_means[1] > 0.5 and channel_means[0] < 0.15 and channel_means[2] < 0.15, channel_means
    assert result.items[0].metrics["model_prob"] > 0.95


def test_langevin_samples_reach_the_class_and_differ(zoo):
    model = zoo("digits-cnn")
    result = invert(model, [Class(2), Class(5)], method="langevin", samples=4, steps=300)
    probs = np.array(result.metric("model_prob"))
    assert (probs >= 0.99).all(), probs
    assert [i.metrics["class_index"] for i in result.items] == [2] * 4 + [5] * 4
    flat = result.inputs.reshape(8, -1)
    distances = torch.cdist(flat[:4], flat[:4])[~torch.eye(4, dtype=torch.bool)]
    assert distances.min() > 1.0, "samples of one class must differ"
    assert result.items[0].metrics["diversity"] > 0.02
    assert np.mean(result.metric("verifier_agrees")) >= 0.75


@pytest.mark.slow
def test_zoo_trains_on_real_mnist(tmp_path, monkeypatch):
    """The mnist:DIR path for real: digits-mlp trained on 8k real MNIST test images, scored on 2k held out."""
    from netinvert.models.zoo import load_zoo

    monkeypatch.setenv("NETINVERT_HOME", str(tmp_path))
    model = load_zoo("digits-mlp", data=f"mnist:{MNIST}", verifier=False)
    assert model.info["data"].startswith("mnist-")
    assert model.info["test_accuracy"] > 0.9
    assert model.training_inputs().shape == (8000, 1, 28, 28)
