"""One description per method: each method's ``Options`` dataclass is the one place its options, defaults, ranges and
help live; Python, the command line, results and sweep keys follow it."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields, is_dataclass

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from netinvert.cli.main import app
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import spec_of
from netinvert.ground.result import Result
from netinvert.ground.spec import InputSpec
from netinvert.methods import METHODS, invert, options_of
from netinvert.models.wrapper import Model
from netinvert.targets.regression import Regression
from netinvert.targets.units import Class

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny() -> Model:
    torch.manual_seed(0)
    return Model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), InputSpec((4,)), name="tiny")


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_declares_its_options_once(method):
    """``run`` names the dataclass's fields, in order, without defaults of its own; its signature shows the
    dataclass's defaults, and every field has a help line."""
    module = __import__(METHODS[method], fromlist=["run"])
    cls = options_of(method)
    assert is_dataclass(cls) and cls.__dataclass_params__.frozen
    raw = inspect.signature(module.run.__wrapped__).parameters.values()
    keywords = [p for p in raw if p.kind is p.KEYWORD_ONLY]
    assert [p.name for p in keywords] == [f.name for f in fields(cls)]
    assert all(p.default is p.empty for p in keywords)
    shown = {p.name: p.default for p in inspect.signature(module.run).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert shown == {f.name: f.default for f in fields(cls)}
    assert all(spec_of(f).help.endswith(".") for f in fields(cls))


@pytest.mark.parametrize(("method", "options", "message"), [
    ("gradient", {"stpes": 3}, "unknown option 'stpes' for method gradient: valid options are schedule, steps, lr"),
    ("gradient", {"steps": 0}, "steps=0 must be a whole number >= 1 (an option of method gradient)"),
    ("gradient", {"restarts": 1.5}, "restarts=1.5 must be a whole number (an option of method gradient)"),
    ("gradient", {"precision": "half"}, "precision='half' is unknown: use one of float32, float16, bfloat16"),
    ("gradient", {"early_stop": "no"}, "early_stop='no' must be True or False"),
    ("langevin", {"polish": 1.0}, "polish=1.0 must be in [0, 1) (an option of method langevin)"),
    ("analytic", {"goal": 0.3}, "goal=0.3 must be in [0.5, 1) (an option of method analytic)"),
    ("exact", {"timeout": 0}, "timeout=0 must be more than 0 seconds (an option of method exact)"),
    ("dbn", {"gibbs_steps": -1}, "gibbs_steps=-1 must be a whole number >= 0 (an option of method dbn)"),
    ("adjoint", {"starts": 8}, "unknown option 'starts' for method adjoint: valid options are samples, restarts"),
])
def test_invert_refuses_a_bad_option_in_one_line_before_any_work(tiny, method, options, message):
    with pytest.raises(NetinvertError) as caught:
        invert(tiny, Class(0), method=method, **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_langevin_on_the_command_line_has_the_python_defaults(tmp_path, zoo):
    """``imagine --method langevin`` once ran the gradient flags' 1024 steps and 1 sample; Python's are 400 and 8."""
    zoo("digits-mlp")
    out = tmp_path / "lv"
    run = runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3", "--method", "langevin", "-o", str(out)])
    assert run.exit_code == 0, run.output
    saved = json.loads((out / "result.json").read_text())
    defaults = {f.name: f.default for f in fields(options_of("langevin"))}
    assert (saved["options"]["steps"], saved["options"]["samples"]) == (defaults["steps"], defaults["samples"]) \
        == (400, 8)
    assert len(saved["items"]) == 8


@pytest.mark.slow
def test_design_gives_as_many_solutions_in_python_as_on_the_command_line(tmp_path, zoo):
    model = zoo("arm")
    fast = ["--restarts", "64", "--steps", "5", "--prove", "0", "--simulator", "arm"]
    run = runner.invoke(app, ["design", "-m", "arm", "--y", "1.2,0.5", *fast, "-o", str(tmp_path / "d")])
    assert run.exit_code == 0, run.output
    cli = Result.load(tmp_path / "d")
    py = invert(model, Regression([1.2, 0.5]), method="adjoint", restarts=64, steps=5, prove=0, threads=1)
    assert len(cli.items) == len(py.items) == options_of("adjoint").samples == 50


def test_a_flag_the_chosen_method_does_not_take_is_one_line(tmp_path, zoo):
    zoo("digits-cnn")
    for args, message in ((["imagine", "-t", "3", "--method", "langevin", "--restarts", "3"],
                           "error: --restarts does not apply to method langevin: it takes --samples, --steps"),
                          (["invert", "-l", "pool", "--index", "0", "--method", "decoder", "--steps", "5"],
                           "error: --steps does not apply to method decoder: it takes --epochs, --seed, --threads")):
        run = runner.invoke(app, [*args, "-m", "digits-cnn", "-o", str(tmp_path / "never")])
        assert run.exit_code == 2 and message in run.output, run.output
        assert len(run.output.strip().splitlines()) == 1 and not (tmp_path / "never").exists()


def test_method_flags_default_to_the_method_and_say_so():
    """A method flag left out is not passed (the method's default applies), and its help gives that default."""
    import typer.main

    group = typer.main.get_command(app)
    checked = 0
    for command in app.registered_commands:
        methods = getattr(command.callback, "__methods__", ())
        params = {p.name: p for p in group.commands[command.name or command.callback.__name__].params}
        for m in methods:
            for f in fields(options_of(m)):
                if spec_of(f).cli and f.name in params:
                    assert params[f.name].default is None, (command.name, f.name)
                    assert "Default: " in (params[f.name].help or ""), (command.name, f.name)
                    checked += 1
    assert checked > 30


def test_sweep_keys_hold_every_option_but_threads(zoo, tmp_path):
    """An atlas layer's task key hashes method gradient's whole options: an option the atlas never named before
    (``check_every``) changes it, the thread count does not."""
    from netinvert.sweeps.atlas import layer_tasks

    net = zoo("digits-cnn")
    domain = {"param": "auto"}

    def key(**options):
        return layer_tasks(net, "digits-cnn", {}, ["fc"], tmp_path, domain, steps=4, **options)[0].key

    assert key() == key(threads=3) != key(check_every=8)
    assert key() != key(goal=0.5)
    with pytest.raises(NetinvertError, match="unknown option 'stps' for method gradient"):
        key(stps=3)


def test_one_grammar_for_lists(tmp_path, zoo):
    """A repeated flag and a comma-separated value are the same list; a class name holding a comma stays whole."""
    from netinvert.cli.common import parse_targets

    net = zoo("digits-mlp")
    def described(texts: list[str], model: Model) -> list[str]:
        return [t.description for t in parse_targets(texts, model)]

    assert described(["3,5", "7"], net) == described(["3", "5", "7"], net) == ["class 3", "class 5", "class 7"]
    named = Model(nn.Sequential(nn.Linear(4, 2)), InputSpec((4,)), class_names=["a,b", "c"])
    assert described(["a,b"], named) == ["class a,b"] and described(["c,1"], named) == ["class c", "class 1"]
    run = runner.invoke(app, ["imagine", "-m", "digits-mlp", "-t", "3,5", "--steps", "2", "-o", str(tmp_path / "r")])
    assert run.exit_code == 0, run.output
    assert [item.target for item in Result.load(tmp_path / "r").items] == ["class 3", "class 5"]


# --- folders and files that earlier versions wrote, under names the glossary retired, still open ------------------
def test_result_load_reads_the_retired_keys(tmp_path):
    old = Result("gradient", "m", torch.zeros(1, 4), torch.zeros(1, 3), [], kind="invert",
                 info={"options": {"starts": 16, "stages": {"fc": []}}}).save(tmp_path / "old")
    data = json.loads((old / "result.json").read_text())
    data["realism"] = {"judge": "v", "judge_agreement": 0.5, "judge_prob": 0.9}
    data["atlas"] = {"kind": "channel", "units": 3}
    data["decoders"] = {"fc": {"kind": "mlp"}}
    data["items"] = [{"target": "fc", "status": "found", "reason": "", "verifier_agreement": True}]
    (old / "result.json").write_text(json.dumps(data))
    back = Result.load(old)
    assert back.info["realism"] == {"verifier": "v", "verifier_agreement": 0.5, "verifier_prob": 0.9}
    assert back.info["atlas"] == {"unit": "channel", "units": 3} and back.info["decoders"] == {"fc": {"layout": "mlp"}}
    assert back.info["options"] == {"restarts": 16, "phases": {"fc": []}}
    assert back.items[0].metrics == {"verifier_agrees": True}


def test_sweep_records_and_decoders_of_earlier_versions_still_read(tmp_path, zoo):
    from netinvert.methods import decoder as decoder_method
    from netinvert.sweeps.task import Record

    old = Record.from_json({"key": "k", "label": "x", "state": "timeout", "row": {}})
    assert old.status == "timeout" and "state" not in old.to_json() and old.to_json()["status"] == "timeout"
    cnn = zoo("digits-cnn")
    dec = decoder_method.build(cnn, "flatten", width=8)
    dec.config["kind"] = dec.config.pop("layout")  # as netinvert 0.1.0 saved it
    path = decoder_method.save(dec, tmp_path / "old.safetensors")
    assert decoder_method.load(path).config["layout"] == "mlp"
