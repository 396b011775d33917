"""Priors for real networks: the BatchNorm-statistics prior, diversity, and an independent verifier.

The model is a small CNN with BatchNorm and a ResNet-style block, trained here on the digits;
the verifier is a separately trained CNN of a different design, given as a user model file.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from netinvert.data.digits import load_digits_28
from netinvert.domains import bn_prior, diversity
from netinvert.domains.domain import Domain
from netinvert.ground.errors import NetinvertError
from netinvert.ground.spec import InputSpec
from netinvert.methods import gradient
from netinvert.models.wrapper import Model
from netinvert.targets.units import Channel, Class

SPEC = InputSpec((1, 28, 28))
ARCH = f"{Path(__file__).resolve()}:bn_resnet"


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (a ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def bn_resnet() -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 8, 3, padding=1, bias=False), bn=nn.BatchNorm2d(8), relu=nn.ReLU(), pool=nn.MaxPool2d(2),
        block=Residual(8), pool2=nn.AvgPool2d(2), flatten=nn.Flatten(), fc=nn.Linear(8 * 49, 10),
    ))


def verifier_net() -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 16, 5, padding=2), act1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(16, 16, 5, padding=2), act2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc1=nn.Linear(16 * 49, 64), act3=nn.ReLU(), fc2=nn.Linear(64, 10),
    ))


def train(build, epochs: int, seed: int, augment: bool) -> tuple[nn.Module, float]:
    """Adam on the digits (random 2-pixel shifts and noise when ``augment``); returns the net and test accuracy."""
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in load_digits_28())
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_train), generator=gen)
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            xb = x_train[idx]
            if augment:
                dy, dx = torch.randint(-2, 3, (2,), generator=gen).tolist()
                xb = (torch.roll(xb, (dy, dx), dims=(2, 3)) + 0.1 * torch.randn(xb.shape, generator=gen)).clamp(0, 1)
            loss = F.cross_entropy(net(xb), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
    return net, accuracy


@pytest.fixture(scope="module")
def nets() -> dict[str, object]:
    torch.set_num_threads(1)
    net, acc = train(bn_resnet, 3, seed=0, augment=False)
    ver, ver_acc = train(verifier_net, 6, seed=1, augment=True)
    assert acc > 0.93 and ver_acc > 0.9, (acc, ver_acc)
    return {"net": net, "verifier": ver, "model": Model(net, SPEC, name="bn-resnet"),
            "checked": Model(net, SPEC, name="bn-resnet", verifier=Model(ver, SPEC, name="verifier"))}


@pytest.mark.slow
def test_bn_layers_found_and_hooks_always_come_off(nets):
    model = nets["model"]
    assert bn_prior.bn_layers(model) == ["bn", "block.bn1", "block.bn2"]
    modules = [model.get_layer(name) for name in bn_prior.bn_layers(model)]
    with bn_prior.bn_penalty(model, None, [Class(3)]) as terms:
        assert len(terms) == 1 and all(len(m._forward_pre_hooks) == 1 for m in modules)
    assert all(len(m._forward_pre_hooks) == 0 for m in modules)
    with pytest.raises(RuntimeError), bn_prior.bn_penalty(model, 2.0) as terms:
        raise RuntimeError("fails inside the block")
    assert all(len(m._forward_pre_hooks) == 0 for m in modules)


def test_bn_prior_default_weight():
    model = Model(bn_resnet().eval(), SPEC)
    plain = Model(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), SPEC)
    assert bn_prior.resolve_weight(None, model, [Class(0)]) == bn_prior.DEFAULT_WEIGHT
    assert bn_prior.resolve_weight(None, model, [Channel("block.conv2", 0)]) == 0.0
    assert bn_prior.resolve_weight(0.5, model, [Channel("block.conv2", 0)]) == 0.5
    assert bn_prior.resolve_weight(None, plain, [Class(0)]) == 0.0
    with pytest.raises(NetinvertError, match="no BatchNorm"), bn_prior.bn_penalty(plain, 1.0):
        pass
    with pytest.raises(NetinvertError, match="must be >= 0"):
        bn_prior.resolve_weight(-1.0, model)


def test_torchscript_models_say_the_bn_prior_cannot_run(nets):
    scripted = Model(torch.jit.trace(nets["net"], torch.zeros(1, *SPEC.shape)), SPEC, name="scripted")
    result = gradient.run(scripted, [Class(2)], steps=2)
    assert result.info["bn_prior"]["weight"] == 0.0 and "TorchScript" in result.info["bn_prior"]["note"]
    with pytest.raises(NetinvertError, match="TorchScript"):
        gradient.run(scripted, [Class(2)], Domain(bn_prior=1.0), steps=2)


def test_bn_prior_reads_onnx_batchnorm_nodes(nets, tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from netinvert.models.onnx import load_onnx

    torch_bn = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 4, 3), bn=nn.BatchNorm2d(4), relu=nn.ReLU(),
                                         pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(4, 3)))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        torch_bn.bn.running_mean.copy_(torch.randn(4, generator=gen))
        torch_bn.bn.running_var.copy_(torch.rand(4, generator=gen) + 0.5)
    torch_bn.eval()
    p = {k: numpy_helper.from_array(v.detach().numpy(), k) for k, v in torch_bn.state_dict().items()
         if "num_batches" not in k}
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                         ["b"], epsilon=1e-5),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], list(p.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "bn.onnx")
    spec = InputSpec((1, 12, 12))
    from_onnx = Model(load_onnx(tmp_path / "bn.onnx"), spec)
    native = Model(torch_bn, spec)
    assert len(bn_prior.bn_layers(from_onnx)) == 1
    x = torch.rand(5, 1, 12, 12, generator=gen)
    assert torch.allclose(bn_prior.bn_distance(from_onnx, x), bn_prior.bn_distance(native, x), atol=1e-5)


def test_bn_distance_is_small_for_real_digits(nets):
    model = nets["model"]
    real = torch.from_numpy(load_digits_28()[2][:64])
    noise = torch.rand(64, *SPEC.shape, generator=torch.Generator().manual_seed(0))
    d_real, d_noise = bn_prior.bn_distance(model, real), bn_prior.bn_distance(model, noise)
    assert d_real.shape == (64,)
    assert d_real.mean() * 4 < d_noise.mean()


def test_bn_prior_lowers_bn_statistics_distance(nets):
    model = nets["model"]
    targets = [Class(k) for k in range(10)]
    off = gradient.run(model, targets, Domain(bn_prior=0.0), steps=192, early_stop=False)
    on = gradient.run(model, targets, Domain(), steps=192, early_stop=False)
    assert on.info["bn_prior"]["weight"] == bn_prior.DEFAULT_WEIGHT and off.info["bn_prior"]["weight"] == 0.0
    d_off, d_on = np.array(off.metric("bn_distance")), np.array(on.metric("bn_distance"))
    assert on.statuses == ["found"] * 10
    assert d_on.mean() * 3 < d_off.mean(), (d_on, d_off)
    assert (d_on < d_off).all()


@pytest.mark.slow
def test_imagine_with_user_verifier_reaches_targets_and_verifier_agrees(nets, tmp_path: Path):
    from netinvert.cli.main import app

    torch.save(nets["net"].state_dict(), tmp_path / "net.pt")
    torch.jit.trace(nets["verifier"], torch.zeros(1, *SPEC.shape)).save(str(tmp_path / "verifier.pt"))
    runner = CliRunner()
    common = ["imagine", "--model", str(tmp_path / "net.pt"), "--arch", ARCH, "--input-shape", "1,28,28",
              "--target", "all", "--steps", "256", "--no-early-stop", "--lr", "0.05"]
    checked = runner.invoke(app, [*common, "--verifier", str(tmp_path / "verifier.pt"), "--out", str(tmp_path / "v")])
    assert checked.exit_code == 0, checked.output
    items = json.loads((tmp_path / "v" / "result.json").read_text())["items"]
    assert [it["status"] for it in items] == ["found"] * 10
    agree = [it["verifier_agrees"] for it in items]
    assert sum(agree) >= 9, [it["verifier_prob"] for it in items]
    assert np.mean([it["verifier_prob"] for it in items]) > 0.8
    assert all(it["bn_distance"] < 1.5 for it in items)

    bare = runner.invoke(app, [*common, "--steps", "16", "--out", str(tmp_path / "n")])
    assert bare.exit_code == 0, bare.output
    items = json.loads((tmp_path / "n" / "result.json").read_text())["items"]
    assert all(it["verifier_prob"] is None and "no independent verifier" in it["verifier_note"] for it in items)


@pytest.mark.slow
def test_bn_prior_raises_verifier_agreement(nets):
    model = nets["checked"]
    targets = [Class(k) for k in range(10)]
    off = gradient.run(model, targets, Domain(bn_prior=0.0), steps=256, lr=0.05, early_stop=False)
    on = gradient.run(model, targets, Domain(), steps=256, lr=0.05, early_stop=False)
    assert np.mean(on.metric("verifier_prob")) > np.mean(off.metric("verifier_prob")) + 0.15
    assert sum(on.metric("verifier_agrees")) > sum(off.metric("verifier_agrees"))


def _pixel_distances(inputs: torch.Tensor, k: int) -> torch.Tensor:
    """Root-mean-square pixel difference of every pair of copies, per target: (targets, k*(k-1)/2)."""
    groups = inputs.flatten(1).reshape(-1, k, inputs[0].numel())
    d = torch.cdist(groups, groups) / inputs[0].numel() ** 0.5
    i, j = torch.triu_indices(k, k, 1)
    return d[:, i, j]


@pytest.mark.slow
def test_diversity_gives_k_distinct_images_that_all_reach_the_target(nets):
    model = nets["checked"]
    targets = [Class(3), Class(7)]
    result = gradient.run(model, targets, steps=256, lr=0.05, early_stop=False, samples=4)
    assert len(result.items) == 8 and result.inputs.shape == (8, 1, 28, 28)
    assert result.statuses == ["found"] * 8
    assert [it.metrics["class_index"] for it in result.items] == [3] * 4 + [7] * 4
    assert sum(result.metric("verifier_agrees")) >= 7
    assert result.labels == [f"class {c} #{j}" for c in (3, 7) for j in range(1, 5)]
    layer = result.info["diversity"]["layer"]
    assert layer == diversity.default_layer(model)
    # The same 4 copies per target without the diversity term: they converge to similar images.
    same = gradient.run(model, diversity.repeat(targets, 4), steps=256, lr=0.05, early_stop=False)
    baseline = diversity.score(model, same.inputs, 4, layer)
    scores = torch.tensor(result.metric("diversity"))
    assert scores.min() > 2 * baseline.max(), (scores, baseline)
    pixels, pixels_same = _pixel_distances(result.inputs, 4), _pixel_distances(same.inputs, 4)
    assert pixels.mean() > 1.5 * pixels_same.mean() and pixels.min() > 0.1, (pixels, pixels_same)


def test_diversity_score_and_options():
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = Model(bn_resnet().eval(), SPEC)
    twins = torch.cat([x[:1].repeat(3, 1, 1, 1), x[3:]])
    scores = diversity.score(model, twins, 3, "block.relu")
    assert torch.allclose(scores[:3], torch.zeros(3), atol=1e-6) and (scores[3:] > 0).all()
    assert diversity.group_chunk(5, 4) == 8 and diversity.group_chunk(8, 4) == 8
    with pytest.raises(NetinvertError, match="samples=0"):
        gradient.run(model, [Class(0)], steps=1, samples=0)


def test_imagine_cli_diversity_reports_scores(nets, tmp_path: Path):
    from netinvert.cli.main import app

    torch.save(nets["net"].state_dict(), tmp_path / "net.pt")
    run = CliRunner().invoke(app, ["imagine", "--model", str(tmp_path / "net.pt"), "--arch", ARCH,
                                   "--input-shape", "1,28,28", "--target", "5", "--samples", "4", "--steps", "128",
                                   "--no-early-stop", "--out", str(tmp_path / "d")])
    assert run.exit_code == 0, run.output
    saved = json.loads((tmp_path / "d" / "result.json").read_text())
    assert len(saved["items"]) == 4 and all(it["diversity"] > 0.1 and it["model_prob"] > 0.99 for it in saved["items"])
    assert saved["diversity"]["copies"] == 4
    assert np.load(tmp_path / "d" / "inputs.npy").shape == (4, 1, 28, 28)
