"""Loading users' models: a BatchNorm CNN with a residual block, trained on the digits, saved as a
state dict, safetensors, TorchScript, ONNX and a pickle; every route must give the same network."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from netinvert.cli.options import parse_floats, parse_json_object, parse_shape
from netinvert.ground.errors import NetinvertError
from netinvert.models.load import build_arch, load, read_labels

ARCH_SOURCE = '''
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class DigitsNet(nn.Module):
    def __init__(self, width=8, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.block = Residual(width)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width * 16, classes)

    def forward(self, x):
        x = self.pool(self.block(torch.relu(self.bn(self.conv(x)))))
        return self.fc(x.flatten(1))
'''


class Trained:
    """The trained network, its test data and the files it was saved to."""

    def __init__(self, folder: Path) -> None:
        torch.manual_seed(0)
        self.arch_file = folder / "digits_net.py"
        self.arch_file.write_text(ARCH_SOURCE)
        self.arch = f"{self.arch_file}:DigitsNet"
        self.net = build_arch(self.arch, {"width": 8})
        digits = load_digits()
        x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
        y = torch.tensor(digits.target)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        train, test = perm[:1400], perm[1400:]
        opt = torch.optim.Adam(self.net.parameters(), lr=3e-3)
        self.net.train()
        for _ in range(12):
            for idx in train[torch.randperm(len(train))].split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(self.net(x[idx]), y[idx]).backward()
                opt.step()
        self.net.eval()
        self.x_test, self.y_test = x[test], y[test]
        with torch.no_grad():
            self.accuracy = (self.net(self.x_test).argmax(1) == self.y_test).float().mean().item()
        self.state = folder / "net.pt"
        torch.save(self.net.state_dict(), self.state)
        self.safetensors = folder / "net.safetensors"
        save_file(self.net.state_dict(), str(self.safetensors))
        self.script = folder / "net_script.pt"
        self.onnx = folder / "net.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(self.net, self.x_test[:2]), str(self.script))
            torch.onnx.export(self.net, (self.x_test[:2],), str(self.onnx), input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, dynamo=False)
        self.pickled = folder / "net_whole.pt"
        torch.save(self.net, self.pickled)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    torch.set_num_threads(1)
    return Trained(tmp_path_factory.mktemp("trained"))


def _reference(trained: Trained) -> torch.Tensor:
    with torch.no_grad():
        return trained.net(trained.x_test)


@pytest.mark.slow
def test_the_trained_network_really_classifies_digits(trained: Trained) -> None:
    assert trained.accuracy > 0.9


@pytest.mark.parametrize("route", ["state", "safetensors", "script", "onnx"])
def test_every_format_loads_the_same_network(trained: Trained, route: str) -> None:
    path = getattr(trained, route)
    arch = trained.arch if route in ("state", "safetensors") else None
    shape = None if route == "onnx" else (1, 8, 8)  # only the ONNX file states its input shape
    model = load(path, arch=arch, arch_kwargs={"width": 8} if arch else None, input_shape=shape)
    assert model.input_spec.shape == (1, 8, 8)
    with torch.no_grad():
        out = model(trained.x_test)
    assert torch.allclose(out, _reference(trained), atol=1e-4)
    assert (out.argmax(1) == trained.y_test).float().mean().item() == pytest.approx(trained.accuracy)
    assert len(model.layer_names()) >= 5
    assert model.num_outputs == 10


def test_state_dict_layers_are_the_original_module_paths(trained: Trained) -> None:
    model = load(trained.state, arch=trained.arch, arch_kwargs={"width": 8}, input_shape=(1, 8, 8))
    assert {"conv", "bn", "block.conv1", "block.bn2", "fc"} <= set(model.layer_names())
    _, acts = model.capture(trained.x_test[:3], ["block.conv2"])
    assert acts["block.conv2"].shape == (3, 8, 8, 8)


def test_torchscript_lists_its_named_modules(trained: Trained) -> None:
    model = load(trained.script, input_shape=(1, 8, 8))
    assert {"conv", "block", "block.conv1", "fc"} <= set(model.layer_names())
    assert model.info["format"] == "torchscript"
    from netinvert import Class, Neuron, invert

    with pytest.raises(NetinvertError, match="TorchScript models take output targets only"):
        invert(model, Neuron("block.conv1", 0), steps=2)
    assert invert(model, Class(3), steps=2).items[0].target == "class 3"


def test_onnx_agrees_with_onnxruntime_and_hooks_see_the_batch(trained: Trained) -> None:
    model = load(trained.onnx)
    session = ort.InferenceSession(str(trained.onnx))
    expected = session.run(None, {"image": trained.x_test.numpy()})[0]
    with torch.no_grad():
        out = model(trained.x_test)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    conv = next(name for name in model.layer_names() if "Conv" in name)
    _, acts = model.capture(trained.x_test[:5], [conv])
    assert acts[conv].shape == (5, 8, 8, 8)


@pytest.mark.slow
def test_the_dynamo_exporter_output_loads_too(trained: Trained, tmp_path: Path) -> None:
    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(trained.net, (trained.x_test[:2],), str(path), dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    model = load(path)
    assert model.input_spec.shape == (1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(trained.x_test), _reference(trained), atol=1e-4)


def test_gradients_through_onnx_match_the_original(trained: Trained) -> None:
    model = load(trained.onnx)
    x = trained.x_test[:4].clone().requires_grad_(True)
    (grad_onnx,) = torch.autograd.grad(model(x)[:, 3].sum(), x)
    x2 = trained.x_test[:4].clone().requires_grad_(True)
    (grad_torch,) = torch.autograd.grad(trained.net(x2)[:, 3].sum(), x2)
    assert grad_torch.abs().max() > 0
    assert torch.allclose(grad_onnx, grad_torch, atol=1e-4)


def test_wrapped_and_prefixed_state_dicts_load(trained: Trained, tmp_path: Path) -> None:
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.net.state_dict().items()}, "epoch": 3}, wrapped)
    model = load(wrapped, arch=trained.arch, input_shape=(1, 8, 8))
    with torch.no_grad():
        assert torch.allclose(model(trained.x_test), _reference(trained), atol=1e-5)


def test_a_pickled_module_is_refused_unless_trusted(trained: Trained) -> None:
    with pytest.raises(NetinvertError, match="arbitrary code.*`trust_pickle`"):
        load(trained.pickled)
    model = load(trained.pickled, trust_pickle=True, input_shape=(1, 8, 8))
    with torch.no_grad():
        assert torch.allclose(model(trained.x_test), _reference(trained), atol=1e-5)


def test_a_state_dict_without_arch_asks_for_it(trained: Trained) -> None:
    with pytest.raises(NetinvertError, match="`arch` package.module:Class"):
        load(trained.state)


def test_mismatched_weights_name_the_keys(trained: Trained, tmp_path: Path) -> None:
    other = tmp_path / "other.py"
    other.write_text("from torch import nn\n\nclass Tiny(nn.Module):\n    def __init__(self):\n"
                     "        super().__init__()\n        self.conv = nn.Conv2d(1, 8, 3, padding=1)\n"
                     "        self.head = nn.Linear(8, 10)\n")
    with pytest.raises(NetinvertError) as err:
        load(trained.state, arch=f"{other}:Tiny")
    message = str(err.value)
    assert "missing keys (2): head.weight, head.bias" in message
    assert "unexpected keys (19): bn.weight, bn.bias, bn.running_mean, bn.running_var, ... (19 in all)" in message
    assert "Pass the `arch`" in message
    with pytest.raises(NetinvertError, match=r"shape mismatches \(\d+\): conv.weight \(8, 1, 3, 3\) in file"):
        load(trained.state, arch=trained.arch, arch_kwargs={"width": 4})


def test_arch_errors_are_clear(trained: Trained) -> None:
    with pytest.raises(NetinvertError, match="must look like package.module:ClassName"):
        build_arch("DigitsNet")
    with pytest.raises(NetinvertError, match="no class or function 'Nope'.*DigitsNet, Residual"):
        build_arch(f"{trained.arch_file}:Nope")
    with pytest.raises(NetinvertError, match="--arch-kwargs '{width: 8}' is not valid JSON"):
        parse_json_object("{width: 8}", "--arch-kwargs")
    with pytest.raises(NetinvertError, match="cannot import module 'no_such_pkg.models'"):
        build_arch("no_such_pkg.models:Net")
    with pytest.raises(NetinvertError, match="check `arch_kwargs`"):
        build_arch(trained.arch, {"depth": 3})
    net = build_arch("netinvert.models.architectures:digits_mlp")
    assert sum(p.numel() for p in net.parameters()) == 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10


def test_unreadable_files_give_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(NetinvertError, match="cannot read .*broken.pt as a PyTorch"):
        load(bad, arch="netinvert.models.architectures:digits_mlp")
    with pytest.raises(NetinvertError, match="does not exist"):
        load(tmp_path / "missing.onnx")
    with pytest.raises(NetinvertError, match="is a folder"):
        load(tmp_path)


def test_input_description_is_checked_against_the_network(trained: Trained) -> None:
    with pytest.raises(NetinvertError, match="first layer is a Conv2d on 1 channels; pass `input_shape` 1,H,W"):
        load(trained.script)
    with pytest.raises(NetinvertError, match="does not run on inputs of shape 3,8,8 .*`input_shape`"):
        load(trained.state, arch=trained.arch, input_shape=(3, 8, 8))
    with pytest.raises(NetinvertError, match="does not fit .*net.onnx"):
        load(trained.onnx, input_shape=(1, 28, 28))


def test_fully_connected_state_dicts_infer_their_input_shape(tmp_path: Path) -> None:
    path = tmp_path / "mlp.safetensors"
    save_file(build_arch("netinvert.models.architectures:digits_mlp").state_dict(), str(path))
    model = load(path, arch="netinvert.models.architectures:digits_mlp")
    assert model.input_spec.shape == (784,)


def test_range_and_normalization_are_part_of_the_model(trained: Trained) -> None:
    model = load(trained.onnx, input_range=(0, 255), mean=(0.5,), std=(0.25,))
    spec = model.input_spec
    assert (spec.low, spec.high, spec.mean, spec.std) == (0.0, 255.0, (0.5,), (0.25,))
    raw = trained.x_test[:6] * 255
    with torch.no_grad():
        assert torch.allclose(model(raw), trained.net((raw - 0.5) / 0.25), atol=1e-3)
    assert model.example_input(1).mean().item() == pytest.approx(127.5)
    with pytest.raises(NetinvertError, match="`mean` has 3 values but the input has 1 channels"):
        load(trained.onnx, mean=(0.1, 0.2, 0.3))


def test_labels_name_the_classes(trained: Trained, tmp_path: Path) -> None:
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    good = tmp_path / "labels.txt"
    good.write_text("\n".join(names) + "\n\n")
    model = load(trained.onnx, labels=good)
    assert model.class_names == names
    assert model.class_index("seven") == 7
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    with pytest.raises(NetinvertError, match="has 2 names but the model has 10 outputs"):
        load(trained.onnx, labels=short)
    with pytest.raises(NetinvertError, match="cannot read labels file"):
        read_labels(tmp_path / "none.txt")


def test_parse_helpers_for_the_cli() -> None:
    assert parse_shape("1,28,28") == (1, 28, 28)
    assert parse_shape("3x224x224") == (3, 224, 224)
    assert parse_floats("0.485, 0.456,0.406", "--mean") == (0.485, 0.456, 0.406)
    with pytest.raises(NetinvertError, match="--input-shape '1,a,28' is not"):
        parse_shape("1,a,28")
    with pytest.raises(NetinvertError, match="positive sizes"):
        parse_shape("0,28")
    with pytest.raises(NetinvertError, match="--std 'x' is not a comma-separated"):
        parse_floats("x", "--std")
    with pytest.raises(NetinvertError, match="finite"):
        parse_floats("nan", "--mean")


def test_zoo_names_and_file_options_do_not_mix() -> None:
    with pytest.raises(NetinvertError, match="`input_shape` only applies to model files"):
        load("digits-cnn", input_shape=(1, 28, 28))
    with pytest.raises(NetinvertError, match="unknown model 'no-such-model'"):
        load("no-such-model")
