"""Unit atlas: every unit of a layer rendered, resumable after an interruption (in-process and a killed CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from netinvert.data.digits import load_digits_28
from netinvert.ground.errors import NetinvertError
from netinvert.ground.spec import InputSpec
from netinvert.models.wrapper import Model
from netinvert.sweeps.atlas import render
from netinvert.targets.units import Channel, Neuron
from netinvert.tasks import atlas

SPEC = InputSpec((1, 28, 28))
ROOT = Path(__file__).resolve().parents[1]
ARCH = f"{Path(__file__).resolve()}:small_cnn"


def small_cnn() -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 6, 5), act1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 8, 3), act2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc=nn.Linear(8 * 25, 10),
    ))


@pytest.fixture(scope="module")
def model() -> Model:
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in load_digits_28())
    torch.manual_seed(0)
    net = small_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        for i in range(0, len(y_train), 32):
            loss = F.cross_entropy(net(x_train[i : i + 32]), y_train[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        assert (net(x_test).argmax(1) == y_test).float().mean() > 0.85
    return Model(net, SPEC, name="small-cnn")


def test_units_are_channels_of_conv_layers_and_neurons_of_linear_layers(model):
    channels = atlas.units(model, "conv2")
    assert [type(t) for t in channels] == [Channel] * 8 and [t.index for t in channels] == list(range(8))
    neurons = atlas.units(model, "fc")
    assert [type(t) for t in neurons] == [Neuron] * 10
    with pytest.raises(NetinvertError, match="unknown layer 'conv9'.*conv1"):
        atlas.units(model, "conv9")


def test_atlas_renders_every_unit(model, tmp_path: Path):
    out = tmp_path / "atlas"
    result = render(model, "act2", out, batch_size=3, steps=48)
    assert sorted(p.name for p in (out / "units").iterdir()) == [f"unit_{u:05d}.png" for u in range(8)]
    assert Image.open(out / "units" / "unit_00000.png").size == (112, 112)
    sheet = Image.open(out / atlas.SHEET)
    assert sheet.width > 3 * 28 and sheet.height > 2 * 28
    saved = json.loads((out / "result.json").read_text())
    assert [it["unit"] for it in saved["items"]] == list(range(8))
    assert saved["atlas"] == {"layer": "act2", "unit": "channel", "units": 8, "resumed_units": 0}
    inputs = np.load(out / "inputs.npy")
    assert inputs.shape == (8, 1, 28, 28) and inputs.min() >= 0 and inputs.max() <= 1
    # Each image drives its own unit harder than the other units' images do (for most units).
    _, acts = model.capture(torch.from_numpy(inputs), ["act2"])
    means = acts["act2"].mean(dim=(2, 3))
    own = means.diagonal()
    assert (own >= means.max(dim=0).values - 1e-6).float().mean() >= 0.75, means
    assert torch.allclose(own, torch.tensor(result.metric("activation")), atol=1e-4)
    assert result.timing["units_per_s"] > 0


def test_interrupted_atlas_resumes_and_equals_an_uninterrupted_one(model, tmp_path: Path):
    class Stop(Exception):
        pass

    seen: list[int] = []

    def stop_after_two_batches(done: int, total: int) -> None:
        seen.append(done)
        if done >= 4:
            raise Stop

    with pytest.raises(Stop):
        render(model, "conv2", tmp_path / "a", batch_size=2, steps=32, on_batch=stop_after_two_batches)
    assert seen == [0, 2, 4]
    assert sorted(p.name for p in (tmp_path / "a" / "batches").iterdir()) == ["b000000.npz", "b000002.npz"]
    assert not (tmp_path / "a" / "result.json").exists()
    first = np.load(tmp_path / "a" / "batches" / "b000000.npz")["inputs"]

    progress: list[int] = []
    resumed = render(model, "conv2", tmp_path / "a", batch_size=2, steps=32,
                           on_batch=lambda done, total: progress.append(done))
    assert progress == [4, 6, 8]
    assert resumed.info["atlas"]["resumed_units"] == 4 and resumed.timing["units_rendered_now"] == 4
    assert np.array_equal(resumed.inputs[:2].numpy(), first)
    whole = render(model, "conv2", tmp_path / "b", batch_size=2, steps=32)
    assert torch.equal(resumed.inputs, whole.inputs)
    again = render(model, "conv2", tmp_path / "a", batch_size=2, steps=32)
    assert again.info["atlas"]["resumed_units"] == 8 and torch.equal(again.inputs, whole.inputs)


def test_atlas_refuses_other_options_and_foreign_folders(model, tmp_path: Path):
    render(model, "fc", tmp_path / "a", batch_size=5, steps=4)
    with pytest.raises(NetinvertError, match=r"steps=4 \(now 8\).*same options"):
        render(model, "fc", tmp_path / "a", batch_size=5, steps=8)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(NetinvertError, match="not empty"):
        render(model, "fc", tmp_path / "busy", steps=4)
    with pytest.raises(NetinvertError, match="batch_size=0 must be a whole number >= 1"):
        render(model, "fc", tmp_path / "c", batch_size=0)
    assert not (tmp_path / "c").exists()


def test_every_option_that_changes_the_pictures_is_in_the_resume_key(zoo, model, tmp_path: Path):
    """Issue 25 item 11: a rerun with another --data-prior (or another network under the same name) was resumed
    from batches made under the first one; the key is now every argument a batch is rendered with."""
    from netinvert.domains.domain import Domain

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done >= 5:
            raise Stop

    digits = zoo("digits-mlp")
    with pytest.raises(Stop):
        render(digits, "fc3", tmp_path / "a", batch_size=5, steps=4, on_batch=stop)
    with pytest.raises(NetinvertError, match=r"data_prior=None \(now 5\.0\).*same options"):
        render(digits, "fc3", tmp_path / "a", Domain(data_prior=5.0), batch_size=5, steps=4)
    with pytest.raises(NetinvertError, match=r"l1=0\.0 \(now 0\.5\)"):
        render(digits, "fc3", tmp_path / "a", Domain(l1=0.5), batch_size=5, steps=4)
    resumed = render(digits, "fc3", tmp_path / "a", Domain(), batch_size=5, steps=4)
    assert resumed.info["atlas"]["resumed_units"] == 5 and resumed.timing["units_rendered_now"] == 5
    assert resumed.info["options"]["data_prior"] is None

    render(model, "fc", tmp_path / "b", batch_size=5, steps=4)
    other = Model(small_cnn(), SPEC, name=model.name)  # untrained: other weights under the same name
    with pytest.raises(NetinvertError, match=r"weights="):
        render(other, "fc", tmp_path / "b", batch_size=5, steps=4)


@pytest.mark.slow
def test_killed_atlas_command_resumes(model, tmp_path: Path):
    """A real interruption: SIGINT to the CLI after its first batch, then the same command completes the atlas."""
    torch.save(model.module.state_dict(), tmp_path / "net.pt")
    out = tmp_path / "atlas"
    command = [sys.executable, "-c", "import typer; from netinvert.cli.atlas import atlas; typer.run(atlas)",
               "--model", str(tmp_path / "net.pt"), "--arch", ARCH, "--input-shape", "1,28,28",
               "--layer", "conv1", "--out", str(out), "--batch-size", "1", "--steps", "600", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A background job (as CI may be) inherits SIGINT as ignored; restore the default so Ctrl-C works in the child.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((out / "batches").glob("b*.npz")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    kept = len(list((out / "batches").glob("b*.npz")))
    assert 1 <= kept < 6 and not (out / "result.json").exists()

    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({kept} resumed)" in done.stdout
    saved = json.loads((out / "result.json").read_text())
    assert [it["unit"] for it in saved["items"]] == list(range(6))
    assert len(list((out / "units").iterdir())) == 6


def test_atlas_command_errors_are_one_line(model, tmp_path: Path):
    import typer
    from typer.testing import CliRunner

    from netinvert.cli.atlas import atlas as command

    torch.save(model.module.state_dict(), tmp_path / "net.pt")
    app = typer.Typer()
    app.command("atlas")(command)
    app.command("other")(lambda: None)
    run = CliRunner().invoke(app, ["atlas", "--model", str(tmp_path / "net.pt"), "--arch", ARCH, "--input-shape",
                                   "1,28,28", "--layer", "nope", "--out", str(tmp_path / "x")])
    assert run.exit_code == 2, run.output
    assert "unknown layer 'nope'" in run.output and "Traceback" not in run.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("layer", ["conv", "fc"])
def test_units_of_a_layer_render_as_different_pictures_each_driving_its_own_unit(zoo, layer) -> None:
    """Weak units are scaled up against the data prior (before: the three conv channels rendered as one blob,
    pairwise diversity 0.06, and two of them never exceeded their data maximum)."""
    from netinvert.methods import invert
    from netinvert.methods.langevin import pairwise_diversity
    from netinvert.tasks.atlas import units

    model = zoo("digits-cnn")
    targets = units(model, layer)[:6]
    result = invert(model, targets, steps=256, early_stop=False)
    assert all(item.status == "found" for item in result.items), [item.reason for item in result.items]
    with model.hooks((layer,)) as acts, torch.no_grad():
        model(result.inputs)
        drive = torch.stack([t.objective(None, acts) for t in targets], 1)  # drive[i, j]: unit j on picture i
    own = torch.diagonal(drive)
    assert all(own[j] > torch.cat([drive[:j, j], drive[j + 1 :, j]]).max() for j in range(len(targets)))
    assert pairwise_diversity(result.inputs, 1.0) > 0.2
