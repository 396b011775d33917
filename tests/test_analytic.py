"""Method ``analytic``: layer-wise pseudoinverse of fully connected nets, with real numbers."""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Result
from netinvert.ground.spec import InputSpec
from netinvert.methods import analytic
from netinvert.methods.analytic import sample_solutions, solve_layerwise
from netinvert.models.architectures import AppendBias
from netinvert.models.wrapper import Model
from netinvert.targets.activations import Activations
from netinvert.targets.units import Class

torch.set_num_threads(1)


def _sigmoid_mlp(hidden: tuple[int, int] = (100, 25), scale: float = 3.0, seed: int = 0) -> Model:
    """A random sigmoid MLP shaped like roman-mlp (400 + bias -> 100 -> 25 -> 6), weights large enough to matter."""
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), bias=AppendBias(), fc1=nn.Linear(401, hidden[0], bias=False), act1=nn.Sigmoid(),
        fc2=nn.Linear(hidden[0], hidden[1]), act2=nn.Sigmoid(), fc3=nn.Linear(hidden[1], 6),
    ))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return Model(net, InputSpec((1, 20, 20)), name="random-sigmoid", output_activation="sigmoid")


def _float64_acts(model: Model, x: torch.Tensor, layer: str) -> torch.Tensor:
    m64 = copy.deepcopy(model).double()
    _, acts = m64.capture(x.double(), [layer])
    return acts[layer]


@pytest.fixture(scope="module")
def sigmoid_mlp() -> Model:
    return _sigmoid_mlp()


def test_reachable_hidden_target_is_reached_to_numerical_precision(sigmoid_mlp: Model) -> None:
    x0 = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    want = _float64_acts(sigmoid_mlp, x0, "act2")[0]
    sol = solve_layerwise(sigmoid_mlp, "act2", want)
    assert sol.reachable and sol.residual < 1e-7
    got = _float64_acts(sigmoid_mlp, sol.x[None].double(), "act2")[0]
    assert float((got - want).abs().max()) < 1e-6
    assert float(sol.x.min()) >= 0.0 and float(sol.x.max()) <= 1.0


def test_reachable_output_target_is_reached(sigmoid_mlp: Model) -> None:
    x0 = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(2))
    want = _float64_acts(sigmoid_mlp, x0, "fc3")[0]
    result = analytic.run(sigmoid_mlp, Activations("fc3", want))
    item = result.items[0]
    assert item.status == "found", item.reason
    assert item.metrics["activation_error"] < 1e-6


@pytest.mark.slow
def test_unreachable_target_returns_closest_with_residual() -> None:
    """A 10-unit bottleneck cannot produce an arbitrary 25-unit pattern: least squares, honest residual."""
    model = _sigmoid_mlp(hidden=(10, 25), seed=3)
    want = torch.rand(25, generator=torch.Generator().manual_seed(4)) * 0.8 + 0.1
    sol = solve_layerwise(model, "act2", want)
    assert not sol.reachable and sol.layer_residuals["fc2"] > 1e-2
    result = analytic.run(model, Activations("act2", want))
    item = result.items[0]
    assert item.status == "not-reached" and item.metrics["residual"] > 1e-2
    # the returned point misses by less (in the layer's pre-activation units) than random inputs do
    z_want = torch.logit(want.double())
    fc2 = lambda x: _float64_acts(model, x, "fc2")  # noqa: E731
    miss = float((fc2(result.inputs.double())[0] - z_want).norm())
    randoms = torch.rand(200, 1, 20, 20, generator=torch.Generator().manual_seed(5)).double()
    assert miss < float((fc2(randoms) - z_want).norm(dim=1).min())


def test_sampled_solutions_all_reach_the_target_and_differ(sigmoid_mlp: Model) -> None:
    x0 = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(6))
    want = _float64_acts(sigmoid_mlp, x0, "act2")[0]
    sol = solve_layerwise(sigmoid_mlp, "act2", want)
    xs = sample_solutions(sol, 5, seed=0)
    assert xs.shape == (5, 1, 20, 20) and float(xs.min()) >= 0.0 and float(xs.max()) <= 1.0
    got = _float64_acts(sigmoid_mlp, xs.double(), "act2")
    assert float((got - want).abs().max()) < 1e-5
    dists = torch.cdist(xs.reshape(5, -1), xs.reshape(5, -1))
    assert float(dists[~torch.eye(5, dtype=torch.bool)].min()) > 0.5
    # the solution set: min-norm point plus null-space directions keep the first layer's activity
    null = sol.null_space.double()
    assert null.shape == (400, 300)
    w = sigmoid_mlp.module.fc1.weight.double()[:, :400]
    assert float((w @ null).abs().max()) < 1e-6  # float32 basis
    assert float((w @ (sol.min_norm.double().reshape(-1) - sol.x.double().reshape(-1))).abs().max()) < 1e-5


@pytest.mark.slow
def test_status_is_honest_on_unreachable_class_targets(sigmoid_mlp: Model) -> None:
    """A random net cannot output p=0.9 for every class: items say not-reached and carry the miss."""
    result = analytic.run(sigmoid_mlp, [Class(k) for k in range(3)], goal=0.9)
    for item in result.items:
        assert (item.status == "found") == (item.metrics["residual"] < 1e-6)
        assert item.status == "found" or item.metrics["model_prob"] < 0.9


@pytest.fixture(scope="module")
def roman_runs() -> tuple[Model, Result, Result]:
    """roman-mlp, every class at p=0.99: pseudoinverse (default metric: the data prior) and the transpose baseline."""
    from netinvert.models.zoo import load_zoo

    model = load_zoo("roman-mlp")
    targets = [Class(k) for k in range(6)]
    return model, analytic.run(model, targets, goal=0.99), analytic.run(model, targets, mode="transpose")


@pytest.mark.slow
def test_roman_mlp_x_with_probability_099(roman_runs: tuple[Model, Result, Result]) -> None:
    model, pinv, _ = roman_runs
    assert pinv.info["metric"] == "data"
    x = model.class_index("X")
    with torch.no_grad():
        probs = model.probabilities(model(pinv.inputs[x : x + 1]))[0]
    assert int(probs.argmax()) == x and float(probs[x]) == pytest.approx(0.99, abs=1e-4)
    assert pinv.items[x].status == "found" and pinv.items[x].metrics["residual"] < 1e-5
    assert pinv.items[x].metrics["verifier_agrees"]  # the independent CNN also sees an X
    # every class: the model classifies the image as that class, at (about) the asked probability
    names = [model.class_label(k) for k in range(6)]
    assert pinv.metric("predicted") == names
    assert all(abs(p - 0.99) < 0.005 for p in pinv.metric("model_prob"))
    assert sum(s == "found" for s in pinv.statuses) >= 4


@pytest.mark.slow
def test_transpose_baseline_is_worse_than_pseudoinverse_on_the_verifier(
    roman_runs: tuple[Model, Result, Result],
) -> None:
    """Measured: verifier agrees 2/6 (mean p 0.35) with the pseudoinverse, 1/6 (mean p 0.17) with the transpose."""
    _, pinv, naive = roman_runs
    assert "transpose baseline" in naive.items[0].reason
    assert all(s == "not-reached" for s in naive.statuses)
    assert sum(pinv.metric("verifier_agrees")) > sum(naive.metric("verifier_agrees"))
    assert np.mean(pinv.metric("verifier_prob")) > np.mean(naive.metric("verifier_prob")) + 0.1
    assert np.mean(pinv.metric("residual")) < 0.1 * np.mean(naive.metric("residual"))


@pytest.mark.slow
def test_roman_mlp_samples_come_from_the_prior_and_reach_the_target() -> None:
    from netinvert.domains.data_prior import prior_for
    from netinvert.models.zoo import load_zoo

    model = load_zoo("roman-mlp")
    want = _float64_acts(model, torch.from_numpy(model.training_inputs()[:1]).float(), "fc2")[0]
    euclid = solve_layerwise(model, "fc2", want, metric="euclidean")
    sol = solve_layerwise(model, "fc2", want)
    assert sol.metric == "data" and euclid.metric == "euclidean" and sol.reachable and euclid.reachable
    prior = prior_for(model)
    assert prior is not None
    # the data metric picks the solution closest to the data; the Euclidean one the minimum norm
    assert float(prior.penalty(sol.x[None])) < float(prior.penalty(euclid.x[None]))
    xs = sample_solutions(sol, 4, seed=1)
    assert float(xs.min()) >= 0.0 and float(xs.max()) <= 1.0
    assert float((_float64_acts(model, xs.double(), "fc2") - want).abs().max()) < 1e-4
    dists = torch.cdist(xs.reshape(4, -1), xs.reshape(4, -1))
    assert float(dists[~torch.eye(4, dtype=torch.bool)].min()) > 0.05  # measured 0.11-0.21 (the box keeps the
    # background near 0, where the prior puts most of it)
    # drawn from the prior on the solution set: far more data-like than the Euclidean method's samples
    noise = sample_solutions(euclid, 4, seed=1)
    assert float(prior.penalty(xs).max()) < float(prior.penalty(noise).min())


def test_relu_softmax_mlp_with_normalization() -> None:
    torch.manual_seed(7)
    net = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(64, 32), act1=nn.ReLU(),
                                    fc2=nn.Linear(32, 16), act2=nn.ReLU(), fc3=nn.Linear(16, 4)))
    model = Model(net, InputSpec((1, 8, 8), mean=(0.3,), std=(0.2,)), name="relu")
    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    want = _float64_acts(model, x0, "act2")[0]
    sol = solve_layerwise(model, "act2", want)
    assert sol.reachable
    assert float((_float64_acts(model, sol.x[None].double(), "act2")[0] - want).abs().max()) < 1e-6
    result = analytic.run(model, [Class(k) for k in range(4)], goal=0.6)
    for k, item in enumerate(result.items):
        if item.status == "found":
            assert item.metrics["model_prob"] >= 0.6 - 1e-4 and item.metrics["predicted"] == str(k)


def test_conv_layer_is_refused_with_its_name() -> None:
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 3, 5), relu=nn.ReLU(), flatten=nn.Flatten(),
                                    fc=nn.Linear(3 * 24 * 24, 10)))
    model = Model(net, InputSpec((1, 28, 28)), name="cnn")
    with pytest.raises(NetinvertError, match="'conv'.*Conv2d"):
        analytic.run(model, Class(0))


def test_softmax_inside_and_bad_arguments_are_refused(sigmoid_mlp: Model) -> None:
    net = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(400, 6), soft=nn.Softmax(dim=1)))
    with pytest.raises(NetinvertError, match="'soft'.*Softmax"):
        analytic.run(Model(net, InputSpec((1, 20, 20))), Class(0))
    with pytest.raises(NetinvertError, match="mode"):
        analytic.run(sigmoid_mlp, Class(0), mode="inverse")
    with pytest.raises(NetinvertError, match="unknown layer"):
        solve_layerwise(sigmoid_mlp, "fc9", torch.zeros(6))
    with pytest.raises(NetinvertError, match="has 5 values"):
        solve_layerwise(sigmoid_mlp, "fc3", torch.zeros(5))


def test_unit_patterns_and_activity_pattern(sigmoid_mlp: Model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netinvert.ground.images import save_grid
    from netinvert.tasks.patterns import activity_pattern, for_display, unit_patterns

    w1 = sigmoid_mlp.module.fc1.weight.detach()[:, :400]
    first = unit_patterns(sigmoid_mlp, "act1")
    assert first.shape == (100, 1, 20, 20) and torch.allclose(first.reshape(100, -1), w1)
    deep = unit_patterns(sigmoid_mlp, "fc2")
    w2 = sigmoid_mlp.module.fc2.weight.detach()
    assert torch.allclose(deep.reshape(25, -1), w2 @ w1, atol=1e-5)
    a = torch.rand(25, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(activity_pattern(sigmoid_mlp, "fc2", a).reshape(-1), a @ (w2 @ w1), atol=1e-4)
    torch.manual_seed(10)
    small = Model(nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(64, 12), act1=nn.Sigmoid(),
                                            fc2=nn.Linear(12, 3))), InputSpec((1, 8, 8)), name="small")
    with torch.no_grad():
        small.module.fc1.weight.mul_(4.0)
    back = unit_patterns(small, "act1", "backprojected")
    assert back.shape == (12, 1, 8, 8) and float(back.min()) >= 0 and float(back.max()) <= 1
    _, rest = small.capture(torch.zeros(1, 1, 8, 8), ["act1"])
    _, acts = small.capture(back, ["act1"])
    raised = acts["act1"].diagonal()
    assert bool((raised > rest["act1"][0] + 0.05).all())  # each unit's pattern really drives that unit up
    assert int((raised - 0.9).abs().lt(1e-4).sum()) >= 6  # most reach the asked level exactly
    shown = for_display(deep)
    assert float(shown.min()) >= 0 and float(shown.max()) <= 1
    save_grid(shown, [f"fc2:{j}" for j in range(25)], tmp_path / "sheet.png", (0.0, 1.0))
    assert (tmp_path / "sheet.png").stat().st_size > 1000
