"""The command line as a user meets it: real runs, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from netinvert.cli.main import app

runner = CliRunner()


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert (tmp_path / "p" / "grid.png").exists()
    saved = json.loads((tmp_path / "p" / "result.json").read_text())
    assert saved["method"] == "patterns" and len(saved["items"]) == 25 and saved["items"][3]["target"] == "fc2:3"
    bad = runner.invoke(app, ["patterns", "-m", "digits-cnn", "-l", "conv", "-o", str(tmp_path / "q")])
    assert bad.exit_code == 2 and "patterns need a fully connected network" in " ".join(bad.output.split())
    assert "layer 'conv' (Conv2d)" in " ".join(bad.output.split())
    assert not (tmp_path / "q").exists()


MODEL_COMMANDS = ["imagine", "layers", "atlas", "invert", "leakage", "sample", "patterns", "preimage", "draw", "design",
                  "warp"]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_takes_the_same_model_options(command):
    from netinvert.cli.options import MODEL_FLAGS

    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--device" in MODEL_FLAGS
    expected = [flag for flag in MODEL_FLAGS if not (command == "layers" and flag == "--model")]
    assert [flag for flag in expected if flag not in result.output] == []
    assert "<bool>" not in result.output


@pytest.mark.slow
def test_version_and_module_entry_point():
    import netinvert

    proc = subprocess.run([sys.executable, "-m", "netinvert", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"netinvert {netinvert.__version__}"


@pytest.mark.slow
def test_a_saved_result_reopens_and_a_rerun_replaces_the_folder(tmp_path, zoo):
    from netinvert import Result

    zoo("digits-cnn")
    out = tmp_path / "run"
    first = runner.invoke(app, ["imagine", "-m", "digits-cnn", "-t", "3", "-t", "7", "--steps", "20", "-o", str(out)])
    assert first.exit_code == 0, first.output
    again = Result.load(out)
    assert [item.target for item in again.items] == ["class 3", "class 7"]
    assert again.inputs.shape == (2, 1, 28, 28) and again.outputs.shape == (2, 10)
    assert repr(again).startswith("Result(gradient on digits-cnn: 2 items")
    second = runner.invoke(app, ["imagine", "-m", "digits-cnn", "-t", "1", "--steps", "20", "-o", str(out)])
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in out.glob("item_*.png")) == ["item_000_class_1.png"]
    assert Result.load(out).items[0].target == "class 1"


def test_a_folder_holding_other_files_is_never_replaced(tmp_path, zoo):
    zoo("digits-cnn")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    result = runner.invoke(app, ["imagine", "-m", "digits-cnn", "-t", "1", "--steps", "5", "-o", str(mine)])
    assert result.exit_code == 2
    assert "holds no netinvert result" in result.output
    assert (mine / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "digits-cnn", "-t", "1", "-o", "/proc/netinvert-out"], "cannot write to /proc/netinvert-out"),
        (["-m", "digits-cnn", "-t", "1", "--goal", "2"], "Invalid value for '--goal'"),
        (["-m", "digits-cnn", "-t", "1", "--steps", "0"], "Invalid value for '--steps'"),
        (["-m", "digits-cnn", "-t", "1", "--threads", "0"], "Invalid value for '--threads'"),
        (["-m", "digits-cnn", "-t", "1", "--arch", "x:Y"], "--arch only applies to model files"),
    ],
)
def test_bad_options_are_refused_up_front(tmp_path, zoo, args, message):
    zoo("digits-cnn")
    full = args if "-o" in args else [*args, "-o", str(tmp_path / "never")]
    result = runner.invoke(app, ["imagine", *full])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "never").exists()


def test_a_text_file_given_as_model_is_named_as_text(tmp_path):
    fake = tmp_path / "model.pt"
    fake.write_text("hello world\n")
    result = runner.invoke(app, ["layers", str(fake)])
    assert result.exit_code == 2
    assert "it is text, not a torch.save archive" in " ".join(result.output.split())


def test_flat_inputs_get_an_input_shape_hint_instead_of_a_pictures_claim(tmp_path, zoo):
    zoo("digits-mlp")
    import torch

    from netinvert.models.zoo import load_zoo

    path = tmp_path / "flat.pt"
    torch.save(load_zoo("digits-mlp").module.state_dict(), path)
    out = tmp_path / "flat"
    result = runner.invoke(app, ["imagine", "-m", str(path), "--arch", "netinvert.models.architectures:digits_mlp",
                                 "-t", "3", "--steps", "10", "-o", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "pictures" not in result.output.split("note:")[0]
    assert "pass --input-shape 1,28,28" in result.output
    assert not list(out.glob("*.png"))


def test_invert_takes_the_layer_as_dash_l(tmp_path, zoo):
    zoo("digits-cnn")
    out = tmp_path / "inv"
    result = runner.invoke(app, ["invert", "-m", "digits-cnn", "-l", "pool", "--index", "3", "--method", "gradient",
                                 "--steps", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "comparison.png").exists()


def test_preimage_command_runs_the_bounds_method(tmp_path, zoo):
    zoo("moons-relu")
    out = tmp_path / "pre"
    result = runner.invoke(app, ["preimage", "-m", "moons-relu", "-t", "all", "--max-boxes", "200", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert data["method"] == "bounds" and len(data["items"]) == 2
    inside = [item["fraction_under"] for item in data["items"]]
    over = [item["fraction_over"] for item in data["items"]]
    assert all(0 < u <= o for u, o in zip(inside, over)) and sum(inside) <= 1.0 + 1e-9 <= sum(over) + 1e-9
    assert (out / "preimage_00.png").exists() and (out / "preimage_01.png").exists()


READ_ONLY_RUNS = """
import json, sys, traceback
from typer.testing import CliRunner
from netinvert.cli.main import app

def run(args):
    result = CliRunner().invoke(app, args)
    crash = result.exception is not None and not isinstance(result.exception, SystemExit)
    return result.output + ("".join(traceback.format_exception(*result.exc_info)) if crash else "")

print(json.dumps([run(args) for args in json.loads(sys.argv[1])]))
"""


@pytest.mark.slow
def test_every_command_refuses_a_read_only_out_folder_in_one_line(tmp_path, zoo, known_family):
    """Issue 25 item 5: an out folder that exists but cannot be written (and `report -o` into one) gave tracebacks
    after the work was done; every command now stops in one line, exit code 2, before it starts."""
    import os
    import shutil
    import stat

    assert os.geteuid() != 0 or shutil.which("setpriv"), "root ignores folder permissions: install setpriv " \
        "(util-linux) so the test can run the commands as another user"
    for name in ("digits-mlp", "digits-cnn", "dbn-digits", "roman-mlp", "moons-relu", "arm"):
        zoo(name)
    done = tmp_path / "done"
    assert runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3", "--steps", "2", "-o", str(done)]).exit_code == 0
    shutil.copytree(done, tmp_path / "done-ro")
    (tmp_path / "targets.txt").write_text("1.2,0.5\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    for folder in (ro, tmp_path / "done-ro"):
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    design = ["--samples", "2", "--restarts", "8", "--steps", "2", "--prove", "0"]
    runs = [
        ["imagine", "-m", "digits-mlp", "-t", "3", "--steps", "2"],
        ["sample", "-m", "dbn-digits", "-t", "2", "--samples", "2"],
        ["patterns", "-m", "roman-mlp", "-l", "fc2"],
        ["atlas", "-m", "digits-mlp", "-l", "fc3", "--steps", "2"],
        ["atlas", "-m", "digits-mlp", "--layers", "fc3", "--steps", "2"],
        ["invert", "-m", "digits-cnn", "-l", "conv", "--index", "3", "--method", "gradient", "--steps", "2"],
        ["leakage", "-m", "digits-cnn", "--layers", "conv", "--methods", "gradient", "--count", "2", "--steps", "2"],
        ["solve", str(known_family / "nano.onnx"), str(known_family / "nano.vnnlib")],
        ["solve", "--instances", str(known_family / "instances.csv")],
        ["preimage", "-m", "moons-relu", "-t", "all", "--max-boxes", "20"],
        ["design", "-m", "arm", "--y", "1.2,0.5", *design],
        ["design", "-m", "arm", "--targets", str(tmp_path / "targets.txt"), *design],
        ["draw", "-m", "moons-relu"],
        ["warp", "-m", "moons-relu"],
    ]
    runs = [[*args, "-o", str(ro)] for args in runs]
    runs += [["report", str(done), "-o", str(ro / "index.html")], ["report", str(tmp_path / "done-ro")]]
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    proc = subprocess.run([*drop, sys.executable, "-c", READ_ONLY_RUNS, json.dumps(runs)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for args, output in zip(runs, json.loads(proc.stdout.splitlines()[-1]), strict=True):
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: cannot write"), (args, output)
        assert "Permission denied" in lines[0], (args, output)
    assert not any(ro.iterdir())


@pytest.mark.slow
def test_report_into_a_folder_under_a_file_is_one_line(tmp_path, zoo):
    zoo("digits-mlp")
    done = tmp_path / "done"
    assert runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3", "--steps", "2", "-o", str(done)]).exit_code == 0
    (tmp_path / "file").write_text("not a folder")
    for args in (["report", str(done), "-o", str(tmp_path / "file" / "sub" / "index.html")],
                 ["report", str(done), str(done), "-o", str(tmp_path / "file" / "index.html")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: cannot write") and "file is a file" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_solve_refuses_a_time_limit_that_is_not_positive(tmp_path, known_family):
    for args in ([str(known_family / "nano.onnx"), str(known_family / "nano.vnnlib")],
                 ["--instances", str(known_family / "instances.csv")]):
        for limit in ("-5", "0"):
            result = runner.invoke(app, ["solve", *args, "--timeout", limit, "-o", str(tmp_path / "out")])
            assert result.exit_code == 2, result.output
            assert f"--timeout {float(limit):g} must be more than 0 seconds" in " ".join(result.output.split())
            assert "Traceback" not in result.output and not (tmp_path / "out").exists()
