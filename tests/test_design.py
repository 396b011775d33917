"""Inverse design: simulators, zoo surrogates, the Regression target, the adjoint method, ``netinvert design``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from netinvert.cli.main import app
from netinvert.data.simulators import (
    DRAG,
    GRAVITY,
    MASS,
    SIMULATORS,
    arm,
    arm_joints,
    ballistics,
    ballistics_impact,
    sine,
)
from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.methods import invert
from netinvert.models.zoo import load_dataset
from netinvert.targets.regression import Regression

runner = CliRunner()
FAST = {"restarts": 256, "steps": 200, "threads": 1}


# ------------------------------------------------------------------ simulators
def test_sine_matches_its_closed_form():
    x = np.array([[0.5, 0.0], [1 / 6, 1 / 3], [0.0, 0.0], [-1 / 6, 1.0]])
    assert np.allclose(sine(x)[:, 0], [0.0, 0.0, 1.0, -2.0], atol=1e-12)


def test_arm_matches_hand_computed_poses():
    x = np.array([[0.1, 0.0, 0.0, 0.0], [0.0, math.pi / 2, 0.0, 0.0], [0.2, 0.0, math.pi / 2, -math.pi / 2]])
    # straight out: reach 2 at the rail height; straight up: (0, 2); second joint bent up then back: (1.5, 0.7)
    assert np.allclose(arm(x), [[2.0, 0.1], [0.0, 2.0], [1.5, 0.7]], atol=1e-12)
    joints = arm_joints(x[2:])
    assert np.allclose(joints[0], [[0.0, 0.2], [0.5, 0.2], [0.5, 0.7], [1.5, 0.7]], atol=1e-12)


def test_ballistics_lands_where_the_closed_form_says():
    tau = MASS / DRAG
    # straight up comes down where it started; dropped with no speed lands below its start
    assert np.allclose(ballistics(np.array([[1.0, 2.0, math.pi / 2, 5.0], [-0.5, 1.0, 0.3, 0.0]]))[:, 0], [1.0, -0.5])
    x0, y0, angle, speed = 0.2, 1.5, 0.6, 12.0
    impact = ballistics(np.array([[x0, y0, angle, speed]]))[0, 0]
    vx, vy = speed * math.cos(angle), speed * math.sin(angle)
    t = -tau * math.log(1.0 - (impact - x0) / (tau * vx))  # the time at which x(t) = impact
    height = y0 + tau * (vy + GRAVITY * tau) * (1.0 - math.exp(-t / tau)) - GRAVITY * tau * t
    assert abs(height) < 1e-9
    assert 5.0 < impact < 0.8 * speed  # drag keeps it short of the drag-free range and of tau * vx


def test_ballistics_flags_a_ball_that_never_lands():
    impact, landed = ballistics_impact(np.array([[0.0, -1.0, 0.5, 10.0], [0.0, 1.5, 0.5, 10.0]]))
    assert math.isnan(impact[0]) and not landed[0]
    assert math.isfinite(impact[1]) and landed[1]


# ------------------------------------------------------------------ surrogates
@pytest.mark.parametrize("name, bar", [("arm", 1e-4), ("sine", 1e-3), ("ballistics", 2e-3)])
def test_zoo_surrogates_reach_their_recorded_test_error(zoo, name, bar):
    model = zoo(name)
    _, _, x_test, y_test = load_dataset(name)
    with torch.no_grad():
        mse = float(((model(torch.from_numpy(x_test)) - torch.from_numpy(y_test)) ** 2).mean())
    assert mse == pytest.approx(model.info["test_mse"], rel=1e-2)
    assert mse < bar


# ------------------------------------------------------------------ target
def test_regression_target_checks_its_values():
    with pytest.raises(NetinvertError, match="non-finite"):
        Regression([1.0, float("nan")])
    with pytest.raises(NetinvertError, match="2 values for 1 outputs"):
        Regression([1.0, 2.0], outputs=[0])
    with pytest.raises(NetinvertError, match="the model has 2 outputs"):
        Regression([1.0, 2.0, 3.0]).indices(2)
    box = Regression([1.2, 0.5], tolerance=0.1).output_set(2)
    assert box.contains(np.array([[1.25, 0.45], [1.35, 0.5]])).tolist() == [True, False]
    assert Regression([1.0, 2.0]).objective(torch.tensor([[1.0, 1.0]]), {}).item() == -1.0


# ------------------------------------------------------------------ method
def _held_out(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    return SIMULATORS[name].sample(n, seed=4242)


def test_top_solution_resimulates_within_the_bar(zoo):
    model = zoo("arm")
    _, y = _held_out("arm", 4)
    res = invert(model, [Regression(v) for v in y], method="adjoint", samples=5, simulator=arm, prove=0, **FAST)
    top = np.array(res.metric("resim_mse")[::5])
    assert np.all(top < 2e-3), top  # measured: mean r_1 about 1e-4 over 200 targets
    assert res.statuses[::5] == ["found"] * 4
    assert len(res.info["r_curve"]) == 5 and res.info["r_curve"][-1] <= res.info["r_curve"][0]


def test_solutions_differ_from_each_other(zoo):
    model = zoo("sine")
    res = invert(model, Regression([0.5]), method="adjoint", samples=20, simulator=sine, prove=0, **FAST)
    x = res.inputs.reshape(20, -1)
    d = torch.cdist(x, x) + torch.eye(20)
    assert float(d.min()) > 2e-3
    assert np.all(np.array(res.metric("resim_mse")) < 1e-2)


@pytest.mark.slow
def test_target_beyond_the_arms_reach_is_unreachable(zoo):
    model = zoo("arm")
    box = Box(torch.tensor([-0.5, -1.0, -1.0, -1.0]), torch.tensor([0.5, 1.0, 1.0, 1.0]))  # a box keeps it quick
    res = invert(model, Regression([2.5, 0.5], tolerance=0.05), box, method="adjoint", samples=3, simulator=arm,
                 prove=60, **FAST)
    assert res.statuses == ["none-exists"] * 3
    assert res.info["targets"][0]["residual"] > 0.4
    assert res.items[0].metrics["reached_output"][0] <= 2.0


# ------------------------------------------------------------------ command line
def test_design_command_writes_solutions_and_pictures(tmp_path, zoo):
    zoo("arm")
    out = tmp_path / "arm"
    result = runner.invoke(app, ["design", "-m", "arm", "--y", "1.2,0.5", "--samples", "8", "--restarts", "256",
                                 "--steps", "150", "--threads", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert len(data["items"]) == 8 and len(data["r_curve"]) == 8
    assert data["items"][0]["status"] == "found" and data["items"][0]["resim_mse"] < 2e-3
    assert (out / "arm_poses.png").stat().st_size > 1000
    assert "r_1 =" in result.output
    page = (out / "report.html").read_text()
    assert "r_T: best re-simulated MSE among the first T solutions" in page and 'alt="r_T curve"' in page
    assert 'alt="arm_poses"' in page or "arm_poses" in page


def raising_simulator(x):
    raise RuntimeError("solver diverged")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--y", "1.2,0.5,3"], "regression target gives 3 values but the model has 2 outputs"),
        (["--y", "nan,0.5"], "holds a non-finite value"),
        (["--y", "1.2,abc"], "is not a list of numbers"),
        (["--y", "1.2,0.5", "--simulator", "test_design:raising_simulator"],
         "the simulator failed: RuntimeError: solver diverged"),
        (["--y", "1.2,0.5", "--simulator", "nowhere:fn"], "cannot load simulator 'nowhere:fn'"),
    ],
)
def test_design_bad_input_gives_one_clear_line(tmp_path, zoo, monkeypatch, args, message):
    zoo("arm")
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    out = tmp_path / "never"
    result = runner.invoke(app, ["design", "-m", "arm", *args, "--samples", "2", "--restarts", "8", "--steps", "3",
                                 "--prove", "0", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists()


def test_exact_answers_a_regression_target_with_a_tolerance(zoo):
    model = zoo("arm")
    box = Box(torch.tensor([-0.5, -1.0, -1.0, -1.0]), torch.tensor([0.5, 1.0, 1.0, 1.0]))
    res = invert(model, Regression([1.2, 0.5], tolerance=0.1), box, method="exact", timeout=30)
    assert res.statuses == ["found"]
    with torch.no_grad():
        y = model(res.inputs).double()[0]
    assert torch.all((y - torch.tensor([1.2, 0.5], dtype=torch.float64)).abs() <= 0.1)
    assert float(np.abs(arm(res.inputs.double().numpy())[0] - [1.2, 0.5]).max()) < 0.15
