"""Smooth activations (sigmoid, tanh, softplus) and input-space branch-and-bound: the relaxations
and CROWN bounds never exclude a sampled value, ``none-exists`` is never contradicted by dense
sampling, every ``found`` point satisfies the set on the module, and known answers come out."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.methods import exact
from netinvert.solvers.bounds import dense as lb
from netinvert.solvers.bounds import smooth
from netinvert.solvers.network.read import from_torch
from netinvert.solvers.problem import STRICT, torch_checker
from netinvert.solvers.search.input_split import split_search
from netinvert.targets.output_set import OutputSet

torch.set_num_threads(1)
ACTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}


def _net(rng: np.random.Generator, activation: str, n_in: int, out_act: bool = False) -> nn.Sequential:
    sizes = [n_in, int(rng.integers(3, 9)), int(rng.integers(3, 9)), int(rng.integers(2, 4))]
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(rng.normal(size=lin.weight.shape) * 1.5))
            lin.bias.copy_(torch.as_tensor(rng.normal(size=lin.bias.shape)))
        mods += [lin, ACTS[activation]()]
    return nn.Sequential(*(mods if out_act else mods[:-1]))


def _outputs(module: nn.Module, xs: np.ndarray) -> np.ndarray:
    """float64 outputs of a copy of ``module`` (the module itself keeps its dtype)."""
    with torch.no_grad():
        return copy.deepcopy(module).double()(torch.as_tensor(xs, dtype=torch.float64)).numpy()


def _samples(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, n: int = 20000) -> np.ndarray:
    corners = np.array(np.meshgrid(*zip(lo, hi))).reshape(lo.size, -1).T
    return np.vstack([rng.uniform(lo, hi, size=(n, lo.size)), corners])


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus", "relu"])
def test_relaxation_lines_bound_the_activation(activation: str) -> None:
    gen = torch.Generator().manual_seed(0)
    l = torch.randn(4000, generator=gen, dtype=torch.float64) * 5
    u = l + torch.rand(4000, generator=gen, dtype=torch.float64) ** 3 * 12
    al, cl, au, cu = smooth.relax(activation, l, u)
    z = l[:, None] + torch.rand(4000, 300, generator=gen, dtype=torch.float64) * (u - l)[:, None]
    z = torch.cat([z, l[:, None], u[:, None]], dim=1)
    f = smooth.act(activation, z)
    assert float((al[:, None] * z + cl[:, None] - f).max()) <= 0.0
    assert float((f - au[:, None] * z - cu[:, None]).max()) <= 1e-14
    assert float((au - al).abs().max()) < 10  # lines, not vacuous bounds


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus", "relu"])
def test_crown_bounds_never_exclude_sampled_values(activation: str) -> None:
    rng = np.random.default_rng({"sigmoid": 1, "tanh": 2, "softplus": 3, "relu": 4}[activation])
    for trial in range(6):
        n_in = int(rng.integers(2, 6))
        module = _net(rng, activation, n_in, out_act=trial % 2 == 1)
        net = from_torch(module, (n_in,))
        centre = rng.normal(size=n_in)
        lo, hi = centre - rng.uniform(0.05, 1.5, n_in), centre + rng.uniform(0.05, 1.5, n_in)
        xs = _samples(rng, lo, hi)
        ys = _outputs(module, xs)
        a = rng.normal(size=(4, ys.shape[1]))
        layers, activations = smooth.layers_and_activations(net)
        lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
        pre, val, *_ = smooth.crown(layers, activations, lo_t, hi_t, torch.as_tensor(a),
                                    torch.zeros(4, dtype=torch.float64))
        assert np.all((ys @ a.T).min(axis=0) >= val[0].numpy() - 1e-9), (activation, trial)
        z = torch.as_tensor(xs)
        for (w, b), (l, u), k in zip(layers[:-1], pre, activations):
            z = z @ w.T + b
            assert bool((z >= l - 1e-9).all() and (z <= u + 1e-9).all()), (activation, trial)
            z = smooth.act(k, z)
        near = torch.as_tensor(centre)[None]  # and not vacuous: near-exact on a small box
        _, tight, *_ = smooth.crown(layers, activations, near - 1e-3, near + 1e-3, torch.as_tensor(a), torch.zeros(4))
        y0 = _outputs(module, centre[None]) @ a.T
        assert np.all(y0[0] - tight[0].numpy() <= 0.05 * (1 + np.abs(y0[0]))), (activation, trial)


def test_crown_is_at_least_as_tight_as_the_relu_solver() -> None:
    rng = np.random.default_rng(8)
    module = _net(rng, "relu", 4)
    net = from_torch(module, (4,))
    lo, hi = -np.ones(4), np.ones(4)
    a = rng.normal(size=(3, net.num_outputs))
    layers = lb.layers_of(net)
    lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
    ref = lb.spec_lower(layers, lb.crown(layers, lo_t, hi_t), torch.as_tensor(a), torch.zeros(3), lo_t, hi_t)
    _, val, *_ = smooth.crown(*smooth.layers_and_activations(net), lo_t, hi_t, torch.as_tensor(a), torch.zeros(3))
    assert np.all(val.numpy() >= ref.numpy() - 1e-9)  # the same CROWN, and intervals where they are better


def test_relu_machinery_refuses_smooth_networks() -> None:
    net = from_torch(_net(np.random.default_rng(0), "tanh", 3), (3,))
    with pytest.raises(NetinvertError, match="tanh activations: this needs an all-ReLU network"):
        lb.layers_of(net)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_input_split_never_contradicts_sampling(activation: str) -> None:
    """Output sets placed around the sampled range, so some are reachable, some not, some near ties;
    a few may stay undecided at the time limit, none may be answered wrongly."""
    rng = np.random.default_rng({"sigmoid": 11, "tanh": 12, "relu": 13}[activation])
    seen = {"found": 0, "none-exists": 0, "unknown": 0}
    for trial in range(10):
        n_in = int(rng.integers(2, 6))
        module = _net(rng, activation, n_in, out_act=trial % 3 == 2)
        lo, hi = -np.ones(n_in), np.ones(n_in)
        xs = _samples(rng, lo, hi, 40000)
        ys = _outputs(module, xs)
        a = rng.normal(size=(int(rng.integers(1, 3)), ys.shape[1]))
        worst = (ys @ a.T).max(axis=1)
        b = np.full(a.shape[0], worst.min() + rng.uniform(-0.1, 0.15) * (worst.max() - worst.min()))
        target = OutputSet.linear(a, b)
        net = from_torch(module.float(), (n_in,))
        check = torch_checker(module.float(), (n_in,))
        out = exact.solve_case(net, lo, hi, target, check, timeout=10, input_split=True, seed=trial)
        seen[out.status] += 1
        assert out.stats["search"] == "input-split"
        if out.status == "none-exists":
            assert not target.contains(ys).any(), f"{activation} trial {trial}: refuted a sampled point"
        elif out.status == "found":
            assert np.all(out.x >= lo) and np.all(out.x <= hi)
            assert target.contains(_outputs(module, out.x.astype(np.float64)[None]), STRICT)[0]
        else:  # undecided in time: allowed, not wrong (steep nets need very small boxes)
            assert out.reason == "time limit", out.reason
    assert seen["found"] >= 2 and seen["none-exists"] >= 2 and seen["unknown"] <= 2, seen


def test_sigmoid_net_known_reachable_and_unreachable_sets() -> None:
    rng = np.random.default_rng(21)
    module = _net(rng, "sigmoid", 3, out_act=True)  # every output is a probability in (0, 1)
    net = from_torch(module, (3,))
    lo, hi = -np.ones(3), np.ones(3)
    check = torch_checker(module.float(), (3,))
    ys = _outputs(module, _samples(rng, lo, hi))
    top = float(ys[:, 0].max())
    never = OutputSet.linear(np.array([[-1.0, *[0.0] * (net.num_outputs - 1)]]), np.array([-1.0]))  # y0 >= 1
    out = exact.solve_case(net, lo, hi, never, check, timeout=20)
    assert out.status == "none-exists" and out.stats["search"] == "input-split"
    reach = OutputSet.linear(np.array([[-1.0, *[0.0] * (net.num_outputs - 1)]]), np.array([-(top - 0.01)]))
    out = exact.solve_case(net, lo, hi, reach, check, timeout=20)
    assert out.status == "found" and _outputs(module, out.x.astype(np.float64)[None])[0, 0] >= top - 0.01
    # just above the sampled maximum: only splitting the box decides it
    beyond = OutputSet.linear(np.array([[-1.0, *[0.0] * (net.num_outputs - 1)]]), np.array([-(top + 0.002)]))
    res = split_search(
        net, lo, hi, *beyond.disjuncts[0], lambda x: beyond.contains(net.forward(x), STRICT), time_limit=30
    )
    assert res.status in ("none", "found") and res.stats["boxes"] > 1, res.stats
    if res.status == "found":  # the sampled maximum missed a higher point
        assert _outputs(module, res.x[None])[0, 0] >= top + 0.002


def test_roman_mlp_reachable_and_unreachable_goals() -> None:
    """The seed's question on the seed's sigmoid net (401 inputs): found for a goal the attack
    reaches, none-exists from the bounds for goals beyond what any input can reach."""
    from netinvert.domains.sets import Box
    from netinvert.methods import invert
    from netinvert.models.zoo import load_zoo
    from netinvert.targets.units import Class

    m = load_zoo("roman-mlp")
    res = invert(m, Class("X", margin=10.0), Box(), method="exact", timeout=60)
    assert res.statuses == ["found"]
    logits = _outputs(m.module, res.inputs.double())[0]
    assert logits[5] - np.delete(logits, 5).max() >= 10.0
    assert res.info["certificates"][0]["search"] == "neuron-split"  # 401 inputs: neurons are split, not the box
    assert invert(m, Class("X", margin=25.0), Box(), method="exact", timeout=60).statuses == ["none-exists"]
    p999 = OutputSet.linear(-np.eye(6)[[5]], np.array([-np.log(999.0)]))  # p(X) >= 0.999
    out = invert(m, p999, Box(), method="exact", timeout=60)
    assert out.statuses == ["none-exists"] and out.items[0].metrics["stage"] == "bounds"


def test_onnx_sigmoid_tanh_softplus_read_like_onnxruntime(tmp_path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from netinvert.solvers.network.read import from_onnx

    rng = np.random.default_rng(4)
    shapes = {"w1": (3, 6), "b1": (6,), "w2": (6, 5), "w3": (5, 4), "w4": (4, 2)}
    inits = [
        helper.make_tensor(k, TensorProto.FLOAT, s, rng.normal(size=s).astype(np.float32).ravel())
        for k, s in shapes.items()
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Sigmoid", ["h2"], ["a1"]),
        helper.make_node("MatMul", ["a1", "w2"], ["h3"]),
        helper.make_node("Tanh", ["h3"], ["a2"]),
        helper.make_node("MatMul", ["a2", "w3"], ["h4"]),
        helper.make_node("Softplus", ["h4"], ["a3"]),
        helper.make_node("MatMul", ["a3", "w4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "smooth",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        inits,
    )
    path = tmp_path / "smooth.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    net = from_onnx(path)
    assert net.activations == ["sigmoid", "tanh", "softplus"] and not net.piecewise
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = rng.uniform(-2, 2, size=(50, 3))
    ref = np.stack([sess.run(None, {"x": x[None].astype(np.float32)})[0][0] for x in xs])
    assert np.abs(net.forward(xs) - ref).max() < 1e-4
