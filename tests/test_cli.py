"""The command line as a user meets it: real runs, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from netinvert.cli.main import app

runner = CliRunner()


def test_imagine_writes_the_result_folder(tmp_path, zoo):
    zoo("digits-cnn")
    out = tmp_path / "run"
    result = runner.invoke(app, ["imagine", "-m", "digits-cnn", "-t", "3", "-t", "7", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "class 3" in result.output and "verifier p" in result.output
    data = json.loads((out / "result.json").read_text())
    assert [i["target"] for i in data["items"]] == ["class 3", "class 7"]
    assert all(i["model_prob"] >= 0.99 and i["verifier_agrees"] is not None for i in data["items"])
    assert (out / "grid.png").exists() and (out / "inputs.npy").exists()


def test_imagine_named_class_of_roman(tmp_path, zoo):
    zoo("roman-mlp")
    result = runner.invoke(app, ["imagine", "-m", "roman-mlp", "-t", "X", "-o", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "x" / "result.json").read_text())["items"][0]["target"] == "class X"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "no-such-model", "-t", "1"], "unknown model 'no-such-model'"),
        (["-m", "roman-mlp", "-t", "Y"], "unknown class 'Y' for roman-mlp: choose one of I, II, III, IV, V, X"),
        (["-m", "digits-cnn", "-t", "neuron:fc9:1"], "unknown layer 'fc9' in digits-cnn: choose one of conv"),
        (["-m", "digits-cnn", "-t", "channel:conv:7"], "channel index 7 is out of range for layer 'conv'"),
        (["-m", "digits-cnn", "-t", "neuron:fc"], "is malformed: use neuron:LAYER:INDEX"),
        (["-m", "digits-cnn", "-t", "pixel:3"], "is not understood"),
        (["-m", "digits-cnn", "-t", "12"], "class index 12 is out of range"),
        (["-m", "digits-cnn", "-t", "1", "--method", "magic"], "unknown method 'magic'"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, zoo, args, message):
    zoo("roman-mlp")
    zoo("digits-cnn")
    out = tmp_path / "never"
    result = runner.invoke(app, ["imagine", *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists()


def test_unwritable_output_folder(tmp_path, zoo):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["imagine", "-m", "digits-cnn", "-t", "1", "-o", str(blocker / "out")])
    assert result.exit_code == 2
    assert "not a writable folder" in result.output


def test_layers_and_zoo_list(zoo):
    zoo("digits-cnn")
    result = runner.invoke(app, ["layers", "digits-cnn"])
    assert result.exit_code == 0
    assert "(3, 12, 12)" in result.output and "(432,)" in result.output
    listing = runner.invoke(app, ["zoo", "list"])
    assert listing.exit_code == 0 and "roman-mlp" in listing.output and "yes" in listing.output


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "netinvert.cli.main", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "imagine" in proc.stdout


def test_sample_and_patterns_commands(tmp_path, zoo):
    zoo("dbn-digits")
    zoo("roman-mlp")
    result = runner.invoke(app, ["sample", "-m", "dbn-digits", "-t", "2", "--samples", "6", "-o", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "s" / "result.json").read_text())
    assert data["method"] == "dbn" and len(data["items"]) == 6
    assert sum(bool(i["verifier_agrees"]) for i in data["items"]) >= 4
    result = runner.invoke(app, ["patterns", "-m", "roman-mlp", "-l", "fc2", "-o", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    import numpy as np

    assert np.load(tmp_path / "p" / "patterns.npy").shape == (25, 1, 20, 20)
    assert (tmp_path / "p" / "sheet.png").exists()
    bad = runner.invoke(app, ["patterns", "-m", "digits-cnn", "-l", "conv", "-o", str(tmp_path / "q")])
    assert bad.exit_code == 2 and "cannot invert layer 'conv' (Conv2d)" in bad.output
    assert not (tmp_path / "q").exists()
