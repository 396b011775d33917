"""Input ranges end to end (issue 25): data is scaled into the model's declared range, a verifier reads the
model's inputs in its own description, and realism works with an ONNX verifier.

Two small networks trained here on the MNIST copy in tests/data/mnist, exported to ONNX, expect different
inputs: ``norm`` a CNN on [0, 1] pixels normalized by mean/std inside the model, ``bytes`` another CNN on raw
0..255 pixels. Each serves as the verifier of the other (32 penultimate features keep realism quick).
"""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from netinvert.cli.main import app
from netinvert.cli.options import ModelOptions
from netinvert.data.mnist import load_mnist
from netinvert.data.sources import DataSplit, load_source
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.ground.spec import InputSpec
from netinvert.models.load import load
from netinvert.models.wrapper import Model
from netinvert.report.realism import realism
from netinvert.targets.scoring import score
from netinvert.targets.units import Class

MNIST = Path(__file__).parent / "data" / "mnist"
MEAN, STD = 0.1307, 0.3081
NORM = {"input_range": (0.0, 1.0), "mean": (MEAN,), "std": (STD,)}
BYTES = {"input_range": (0.0, 255.0)}
HELD = 400  # held-out digits scored in the tests


class Nets:
    """The two trained networks, their ONNX files and the held-out digits (in [0, 1]) with their labels."""

    def __init__(self, folder: Path) -> None:
        torch.manual_seed(0)
        x, y, x_held, y_held = (torch.from_numpy(a) for a in load_mnist(MNIST))
        self.x_held, self.y_held = x_held[:HELD], y_held[:HELD]
        self.norm = self._fit(nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                            nn.Linear(6 * 13 * 13, 32), nn.ReLU(), nn.Linear(32, 10)),
                              (x - MEAN) / STD, y)
        self.bytes = self._fit(nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Flatten(),
                                             nn.Linear(8 * 12 * 12, 32), nn.ReLU(), nn.Linear(32, 10)), x * 255, y)
        with torch.no_grad():
            self.norm_accuracy = self._accuracy(self.norm((self.x_held - MEAN) / STD))
            self.bytes_accuracy = self._accuracy(self.bytes(self.x_held * 255))
        self.norm_file, self.bytes_file = folder / "norm.onnx", folder / "bytes.onnx"
        for net, path in ((self.norm, self.norm_file), (self.bytes, self.bytes_file)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (x[:2],), str(path), input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "batch"}}, dynamo=False)

    @staticmethod
    def _fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        for _ in range(2):
            for idx in torch.randperm(len(x)).split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
                opt.step()
        return net.eval()

    def _accuracy(self, logits: torch.Tensor) -> float:
        return float((logits.argmax(1) == self.y_held).float().mean())


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Nets:
    torch.set_num_threads(1)
    return Nets(tmp_path_factory.mktemp("ranges"))


def _agreement(model: Model, x_unit: torch.Tensor, labels: torch.Tensor) -> float:
    """The verifier's agreement on real digits (given in [0, 1], put into the model's range) as class items."""
    spec = model.input_spec
    _, items = score(model, [Class(int(k)) for k in labels], spec.low + (spec.high - spec.low) * x_unit)
    return float(np.mean([item.metrics["verifier_agrees"] for item in items]))


# ------------------------------------------------------------------------------------------- data scaling
@pytest.mark.slow
def test_mnist_data_is_scaled_into_a_0_255_models_range(nets: Nets) -> None:
    """Issue 25.1: `--data mnist:DIR` stayed in [0, 1] for a model whose range is 0..255."""
    model = load(str(nets.bytes_file), data=f"mnist:{MNIST}", **BYTES)
    split = model.data_split()
    assert split.x_train.min() == 0.0 and split.x_train.max() == 255.0 and split.x_held.max() == 255.0
    assert split.scaling == ("values in [0, 1] (MNIST bytes / 255) scaled to the model's input range [0, 255]")
    with torch.no_grad():
        held = model(torch.from_numpy(split.x_held[:HELD])).argmax(1)
    assert float((held == torch.from_numpy(split.y_held[:HELD])).float().mean()) >= 0.9
    unit = load(str(nets.norm_file), data=f"mnist:{MNIST}", **NORM).data_split()
    assert unit.x_train.max() == 1.0 and unit.scaling.startswith("none:") and unit.key != split.key


def test_every_source_lands_in_the_models_range_or_is_one_clear_error(tmp_path: Path) -> None:
    """npz arrays, image folders and a DataSplit given in the Python API end in the declared range and shape."""
    bytes_spec, norm_spec = InputSpec((1, 28, 28), 0.0, 255.0), InputSpec((1, 28, 28), 0.0, 1.0, (MEAN,), (STD,))
    x = np.random.default_rng(0).random((10, 28, 28), dtype=np.float32)
    for values, spec, expected, said in (
        (x, bytes_spec, 255 * x, "[0, 1] pixel convention"),            # float [0, 1] data for a 0..255 model
        (255 * x.reshape(10, 784), norm_spec, x, "[0, 255] pixel convention"),  # flat 0..255 rows
        ((x - MEAN) / STD, norm_spec, x, "normalized with the model's mean/std"),
        (2 * x - 1, InputSpec((1, 28, 28)), x, "[-1, 1] pixel convention"),
    ):
        np.savez(tmp_path / "d.npz", x=values, y=np.arange(10))
        split = load_source(str(tmp_path / "d.npz"), spec)
        assert said in split.scaling
        got = np.concatenate([split.x_train, split.x_held])
        assert got.shape == (10, 1, 28, 28)
        assert np.allclose(np.sort(got.ravel()), np.sort(expected.ravel()), atol=1e-4 * spec.high)
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray((255 * x[i]).astype(np.uint8)).save(folder / f"{i}.png")
    images = load_source(str(folder), bytes_spec)
    assert images.x_train.max() > 250 and "[0, 255]" in images.scaling
    model = Model(nn.Flatten(), bytes_spec, data=DataSplit("given", x[:8, None], x[8:, None]))
    assert model.data_split().x_train.max() == pytest.approx(255 * x[:8].max(), rel=1e-5)
    assert "scaled to the model's input range [0, 255]" in model.data_split().scaling
    beyond = np.linspace(-5, 295, 10 * 784).reshape(10, 28, 28)
    for bad, message in ((beyond, r"values in \[-5, 295\], which fit neither the model's input range \[0, 255\] nor"
                                  r".*--input-range"),
                         (x[:, :20], r"shape \(20, 28\); the model's input is \(1, 28, 28\)"),
                         (np.where(x > 0.5, np.nan, x), "NaN or infinite")):
        np.savez(tmp_path / "bad.npz", x=bad)
        with pytest.raises(NetinvertError, match=message):
            load_source(str(tmp_path / "bad.npz"), bytes_spec)


def test_the_cli_scales_the_data_says_so_and_refuses_what_it_cannot_map(nets: Nets, tmp_path: Path) -> None:
    """`invert --index` reconstructs a real digit at 0..255 (it was black: 60 dB for nothing); result.json records
    the scaling; data that fits no convention is one line and exit code 2."""
    layer = load(str(nets.bytes_file), **BYTES).layer_names()[0]
    out = tmp_path / "inv"
    common = ["-m", str(nets.bytes_file), "--input-range", "0,255"]
    run = CliRunner().invoke(app, ["invert", *common, "--data", f"mnist:{MNIST}", "-l", layer, "--index", "0",
                                   "--method", "gradient", "--steps", "20", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert "scaled to the model's input range [0, 255]" in run.output
    assert np.load(out / "original.npy").max() == 255.0
    assert "[0, 255]" in json.loads((out / "result.json").read_text())["data"]["scaling"]
    assert "scaled to the model's input range [0, 255]" in html.unescape((out / "report.html").read_text())
    np.savez(tmp_path / "bad.npz", x=np.linspace(-40, 400, 4 * 784).reshape(4, 1, 28, 28))
    run = CliRunner().invoke(app, ["imagine", *common, "--data", str(tmp_path / "bad.npz"), "-t", "3",
                                   "-o", str(tmp_path / "bad")])
    assert run.exit_code == 2 and run.output.count("\n") == 1 and "values in [-40, 400]" in run.output
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------- verifiers
@pytest.mark.parametrize(("model_is", "verifier_is"), [("norm", "bytes"), ("bytes", "norm")])
def test_a_verifier_reads_the_models_inputs_in_its_own_description(nets: Nets, model_is: str,
                                                                   verifier_is: str) -> None:
    """Issue 25.3: the verifier got the model's range. With its own description its verdicts on real digits are
    exactly its own accuracy; read in the model's description they are wrong."""
    own = {"norm": NORM, "bytes": BYTES}
    files = {"norm": nets.norm_file, "bytes": nets.bytes_file}
    accuracy = {"norm": nets.norm_accuracy, "bytes": nets.bytes_accuracy}[verifier_is]
    right = load(str(files[model_is]), verifier=str(files[verifier_is]), **own[model_is],
                 **{f"verifier_{k}": v for k, v in own[verifier_is].items()})
    wrong = load(str(files[model_is]), verifier=str(files[verifier_is]), **own[model_is])
    assert right.verifier.input_spec != right.input_spec
    assert accuracy >= 0.9
    assert _agreement(right, nets.x_held, nets.y_held) == pytest.approx(accuracy, abs=1e-6)
    assert _agreement(wrong, nets.x_held, nets.y_held) < accuracy - 0.05


def test_the_verifier_description_on_the_command_line(nets: Nets) -> None:
    options = ModelOptions(str(nets.bytes_file), input_range="0,255", verifier=str(nets.norm_file),
                           verifier_input_range="0,1", verifier_mean=str(MEAN), verifier_std=str(STD))
    model = options.load()
    assert model.verifier.input_spec == InputSpec((1, 28, 28), 0.0, 1.0, (MEAN,), (STD,))
    assert _agreement(model, nets.x_held, nets.y_held) == pytest.approx(nets.norm_accuracy, abs=1e-6)
    with pytest.raises(NetinvertError, match=r"verifier norm.onnx: .*--verifier-input-shape 1,14,56 does not fit"):
        ModelOptions(str(nets.bytes_file), verifier=str(nets.norm_file), verifier_input_shape="1,14,56").load()
    with pytest.raises(NetinvertError, match=r"describe the inputs of a `verifier` file: give one, or drop them"):
        ModelOptions(str(nets.bytes_file), verifier_std="0.3").load()
    with pytest.raises(NetinvertError, match=r"--verifier-input-range '0' needs 2 numbers"):
        ModelOptions(str(nets.bytes_file), verifier=str(nets.norm_file), verifier_input_range="0").load()
    flat = Model(nn.Flatten(), InputSpec((784,)))
    with pytest.raises(NetinvertError, match=r"takes inputs of shape \(784,\) \(784 values\) but the model's are "
                                             r"\(1, 20, 20\).*`verifier_input_shape`"):
        Model(nn.Flatten(), InputSpec((1, 20, 20)), verifier=flat)


# ------------------------------------------------------------------------------------------- realism
def _held_result(model: Model, x_unit: torch.Tensor, labels: torch.Tensor) -> Result:
    spec = model.input_spec
    x = spec.low + (spec.high - spec.low) * x_unit
    outputs, items = score(model, [Class(int(k)) for k in labels], x)
    return Result("test", model.name, x, outputs, items)


@pytest.mark.parametrize("model_is", ["norm", "bytes"])
def test_an_onnx_verifier_measures_realism(nets: Nets, tmp_path: Path, model_is: str) -> None:
    """Issue 25.2: `max() arg is an empty sequence`: an ONNX graph's weights are buffers, so no layer looked weighted.
    The verifier (``norm``) reads its features in its own description, also under a model described otherwise; a
    TorchScript verifier says what it could not measure."""
    own = {} if model_is == "norm" else {f"verifier_{k}": v for k, v in NORM.items()}
    model = load(str(nets.norm_file if model_is == "norm" else nets.bytes_file), data=f"mnist:{MNIST}",
                 verifier=str(nets.norm_file), **(NORM if model_is == "norm" else BYTES), **own)
    rows = torch.arange(40)
    real = realism(model, _held_result(model, nets.x_held[rows], nets.y_held[rows]))
    noise = realism(model, _held_result(model, torch.rand((40, 1, 28, 28), generator=torch.Generator().manual_seed(0)),
                                        nets.y_held[rows]))
    assert real is not None and noise is not None
    assert real["features"].startswith("input of ") and real["frechet_floor"] < 0.2 * real["frechet_ceiling"]
    assert real["gap_closed"] > 0.9 and abs(noise["gap_closed"]) < 0.2
    script = tmp_path / "norm_script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(nets.norm, nets.x_held[:2]), str(script))
    model.verifier = load(str(script), input_shape=(1, 28, 28), **NORM)
    blind = realism(model, _held_result(model, nets.x_held[rows], nets.y_held[rows]))
    assert blind is not None and blind["verifier_agreement"] >= 0.9 and blind["frechet"] is None
    assert "TorchScript hides its layers" in blind["not_measured"]


@pytest.mark.slow
def test_imagine_with_an_onnx_verifier_and_data_saves_and_reports_realism(nets: Nets, tmp_path: Path) -> None:
    out = tmp_path / "imagine"
    run = CliRunner().invoke(app, ["imagine", "-m", str(nets.bytes_file), "--input-range", "0,255",
                                   "--data", f"mnist:{MNIST}", "--verifier", str(nets.norm_file),
                                   "--verifier-input-range", "0,1", "--verifier-mean", str(MEAN),
                                   "--verifier-std", str(STD), "-t", "3", "-t", "7", "--param", "pixel",
                                   "--steps", "16", "--threads", "1", "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert "realism (verifier norm, 2 items)" in run.output
    saved = Result.load(out)
    assert saved.info["realism"]["frechet_ceiling"] > saved.info["realism"]["frechet_floor"] > 0
