"""The ``exact`` method: no wrong answer on instances with known answers, on random small ReLU
networks (checked against dense sampling and exhaustive activation-pattern enumeration), and
clear errors for what it cannot read."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import typer
from known_instances import FAMILY, check_found, check_solve_command, export_onnx, ort_outputs, vnnlib_text
from onnx import TensorProto, helper
from scipy.optimize import linprog
from torch import nn
from typer.testing import CliRunner

from netinvert.cli.solve import solve
from netinvert.domains.sets import Ball
from netinvert.ground.errors import NetinvertError
from netinvert.ground.spec import InputSpec
from netinvert.methods import exact, invert
from netinvert.models.wrapper import Model
from netinvert.solvers.bounds import dense as lb
from netinvert.solvers.milp.dense import lp_tighten
from netinvert.solvers.network.read import from_onnx, from_torch
from netinvert.solvers.problem import STRICT, torch_checker
from netinvert.solvers.search.bab import Tuning, bab
from netinvert.targets.output_set import OutputSet
from netinvert.targets.units import Class
from netinvert.targets.vnnlib import read_vnnlib
from netinvert.tasks.solve import solve_instance

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ known answers
@pytest.mark.slow
def test_known_family_statuses(known_family: Path) -> None:
    """Every answer of the generated family is right, and dense sampling agrees with every none-exists."""
    rng = np.random.default_rng(0)
    for onnx_name, spec_name, want in FAMILY:
        onnx_path, spec_path = known_family / onnx_name, known_family / spec_name
        res = solve_instance(onnx_path, spec_path, timeout=30)
        assert res.items[0].status == want, (onnx_name, res.items[0].reason)
        if want == "found":
            check_found(onnx_path, spec_path, res.inputs[0].numpy().astype(np.float64))
            continue
        c = read_vnnlib(spec_path).cases[0]
        if len(c.lo) == 1:
            xs = np.linspace(c.lo[0], c.hi[0], 4001)[:, None]
        else:
            xs = np.vstack([rng.uniform(c.lo, c.hi, size=(20000, len(c.lo))), c.lo, c.hi])
        assert not c.output.contains(ort_outputs(onnx_path, xs)).any(), onnx_name


# ------------------------------------------------------------------------------------------ random networks
def _deep_net(rng: np.random.Generator, sizes: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(rng.normal(size=lin.weight.shape) / np.sqrt(sizes[i])))
            lin.bias.copy_(torch.as_tensor(rng.normal(size=lin.bias.shape) * 0.3))
        mods += [lin, nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def _deep_case(rng: np.random.Generator, sizes: list[int]) -> tuple:
    """A random ``_deep_net`` read as a dense chain over [-1, 1]^n: the net, its layers, the box and its CROWN bounds."""
    net = from_torch(_deep_net(rng, sizes), (sizes[0],))
    layers = lb.layers_of(net)
    lo, hi = -np.ones(sizes[0]), np.ones(sizes[0])
    return net, layers, lo, hi, lb.crown(layers, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])


def _random_net(rng: np.random.Generator) -> tuple[nn.Sequential, int]:
    n_in = int(rng.integers(2, 4))
    hidden = [int(rng.integers(2, 5))] if rng.random() < 0.4 else [int(rng.integers(2, 5)), int(rng.integers(2, 5))]
    sizes = [n_in, *hidden, int(rng.integers(2, 4))]
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(rng.normal(size=lin.weight.shape)))
            lin.bias.copy_(torch.as_tensor(rng.normal(size=lin.bias.shape) * 0.5))
        mods += [lin, nn.ReLU()]
    return nn.Sequential(*mods[:-1]).float(), n_in


def _pattern_minimum(module: nn.Sequential, lo: np.ndarray, hi: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """min over x in the box of max(a f(x) - b), by one LP per ReLU activation pattern."""
    lins = [m for m in module if isinstance(m, nn.Linear)]
    ws = [m.weight.detach().double().numpy() for m in lins]
    bs = [m.bias.detach().double().numpy() for m in lins]
    n_hidden = sum(w.shape[0] for w in ws[:-1])
    best = np.inf
    for pattern in itertools.product((0.0, 1.0), repeat=n_hidden):
        m_x, m_c = np.eye(lo.size), np.zeros(lo.size)  # current activation = m_x @ x + m_c
        rows, rhs, k = [], [], 0
        for w, bias in zip(ws[:-1], bs[:-1]):
            z_x, z_c = w @ m_x, w @ m_c + bias
            s = np.array(pattern[k : k + w.shape[0]])
            k += w.shape[0]
            sign = np.where(s > 0, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
            rows.append(sign[:, None] * z_x)
            rhs.append(-sign * z_c)
            m_x, m_c = s[:, None] * z_x, s * z_c
        y_x, y_c = ws[-1] @ m_x, ws[-1] @ m_c + bs[-1]
        n = lo.size
        a_ub = np.vstack(
            [np.hstack([r, np.zeros((r.shape[0], 1))]) for r in rows]
            + [np.hstack([a @ y_x, -np.ones((a.shape[0], 1))])]
        )
        b_ub = np.concatenate(rhs + [b - a @ y_c])
        res = linprog(
            np.r_[np.zeros(n), 1.0], A_ub=a_ub, b_ub=b_ub, bounds=[*zip(lo, hi), (-1e6, None)], method="highs"
        )
        if res.status == 0:
            best = min(best, float(res.fun))
    return best


@pytest.mark.slow
def test_random_relu_networks_never_contradict_sampling_or_enumeration() -> None:
    rng = np.random.default_rng(7)
    seen = {"found": 0, "none-exists": 0}
    seen_bab = {"found": 0, "none": 0, "unknown": 0}
    for trial in range(30):
        module, n_in = _random_net(rng)
        lo, hi = -np.ones(n_in), np.ones(n_in)
        samples = rng.uniform(lo, hi, size=(20000, n_in))
        with torch.no_grad():
            ys = module(torch.as_tensor(samples).float()).double().numpy()
        n_out = ys.shape[1]
        a = rng.normal(size=(int(rng.integers(1, 3)), n_out))
        vals = (ys @ a.T).max(axis=1)
        b = np.full(a.shape[0], np.min(vals) + rng.uniform(-0.1, 0.1) * (np.max(vals) - np.min(vals)))
        target = OutputSet.linear(a, b)
        net = from_torch(module, (n_in,))
        out = exact.solve_case(net, lo, hi, target, torch_checker(module, (n_in,)), timeout=20, seed=trial)
        assert out.status in seen, (trial, out.reason)
        seen[out.status] += 1
        enum_min = _pattern_minimum(module, lo, hi, a, b)
        layers = lb.layers_of(net)
        root = lb.crown(layers, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])
        tree = bab(
            layers,
            lo,
            hi,
            root,
            a,
            b,
            np.zeros(len(b), dtype=int),
            lambda xs, t=target, f=net.forward: t.violations(f(xs)) <= -STRICT,
            time_limit=10,
        )
        seen_bab[tree.status] += 1
        if tree.status == "none":
            assert enum_min > -1e-7, f"trial {trial}: branch-and-bound refuted a reachable set"
        if enum_min > 1e-6:  # on tiny nets an unreachable set is always refuted
            assert tree.status == "none", (trial, tree.reason)
        if tree.status == "found":
            assert target.contains(net.forward(tree.x[None]), STRICT)[0] and enum_min < 0
        if out.status == "none-exists":
            assert not target.contains(ys).any(), f"trial {trial}: sampling found a point after none-exists"
            assert enum_min > -1e-7, f"trial {trial}: an activation pattern reaches the set (min {enum_min})"
        else:
            x = out.x.astype(np.float64)
            assert np.all(x >= lo) and np.all(x <= hi)
            with torch.no_grad():
                y = module.double()(torch.as_tensor(x)[None]).numpy()
                module.float()
            assert target.contains(y, STRICT)[0]
            assert enum_min <= -STRICT + 1e-9
    assert seen["found"] >= 5 and seen["none-exists"] >= 5, seen  # both answers were exercised
    assert seen_bab["none"] >= 5 and seen_bab["found"] >= 3, seen_bab


# ------------------------------------------------------------------------------------------ public API
def test_invert_exact_with_class_target_and_normalization() -> None:
    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
    model = Model(module, InputSpec((3,), low=0.0, high=1.0, mean=(0.5,), std=(0.25,)), name="tiny")
    x0 = torch.full((3,), 0.5)
    k = int(model(x0[None]).argmax())
    res = invert(
        model, [Class(k, margin=0.0), Class((k + 1) % 3, margin=0.0)], Ball(x0, 0.001), method="exact", timeout=30
    )
    assert res.statuses[0] == "found"  # the centre itself is class k
    assert res.statuses[1] == "none-exists"  # a tiny ball keeps the prediction
    assert torch.isnan(res.inputs[1]).all()
    assert torch.all((res.inputs[0] - x0).abs() <= 0.001 + 1e-7)
    with pytest.raises(NetinvertError, match="p=2"):
        invert(model, Class(0), Ball(x0, 0.1, p=2), method="exact")


class _Envelope(nn.Module):
    """y = x_0 + 0.5 tanh(3 x_1): a residual add around a tanh unit (read as a graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.pick, self.steep = nn.Linear(2, 1), nn.Linear(2, 1)
        with torch.no_grad():
            self.pick.weight.copy_(torch.tensor([[1.0, 0.0]]))
            self.steep.weight.copy_(torch.tensor([[0.0, 3.0]]))
            self.pick.bias.zero_()
            self.steep.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pick(x) + 0.5 * torch.tanh(self.steep(x))


@pytest.mark.parametrize(("net", "top"), [
    (nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), 0.5),
    (_Envelope(), 0.5 * float(np.tanh(3.0))),
])
def test_affine_envelopes_read_inputs_on_chains_and_graphs(net: nn.Module, top: float, tmp_path: Path) -> None:
    """Specs whose output rows read the inputs (``Y_0 >= X_0 + e``) on a ReLU chain (y = x_0 + relu(x_1) / 2)
    and a tanh graph (y = x_0 + 0.5 tanh(3 x_1)) over [-1, 1]^2, where ``y - x_0`` peaks at ``top``: found
    just below it (the counterexample lists the network's one output), none-exists just above, and the lower
    envelope ``Y_0 <= X_0 - 0.01`` is out of reach for the chain (``y - x_0 >= 0``)."""
    if isinstance(net, nn.Sequential):  # y = relu(x_0) - relu(-x_0) + relu(x_1) / 2
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
            net[2].weight.copy_(torch.tensor([[1.0, -1.0, 0.5]]))
            net[0].bias.zero_()
            net[2].bias.zero_()
    onnx_path = export_onnx(net, (1, 2), tmp_path / "net.onnx")
    lo, hi = -np.ones(2), np.ones(2)
    cases = [(f"(assert (>= Y_0 (+ X_0 {top - 0.01!r})))", "found"),
             (f"(assert (>= Y_0 (+ X_0 {top + 0.01!r})))", "none-exists")]
    if isinstance(net, nn.Sequential):
        cases += [("(assert (<= Y_0 (- X_0 0.01)))", "none-exists"), ("(assert (<= Y_0 (+ X_0 0.01)))", "found")]
    for i, (output, want) in enumerate(cases):
        spec_path = tmp_path / f"spec{i}.vnnlib"
        spec_path.write_text(vnnlib_text(lo, hi, 1, output))
        res = solve_instance(onnx_path, spec_path, timeout=30)
        assert res.items[0].status == want, (output, res.items[0].reason)
        if want == "found":
            x = res.inputs[0].numpy().astype(np.float64)
            y = ort_outputs(onnx_path, x)
            assert y.shape == (1,) and res.outputs.shape == (1, 1)
            assert read_vnnlib(spec_path).cases[0].output.contains(y[None], x=x[None])[0]


def test_conv_batchnorm_maxpool_onnx_and_torch_readers_agree() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 4),
    )
    with torch.no_grad():
        module[1].running_mean.uniform_(-0.5, 0.5)
        module[1].running_var.uniform_(0.5, 2.0)
    module.eval()
    x = torch.rand(5, 1, 6, 6)
    net = from_torch(module, (1, 6, 6))
    np.testing.assert_allclose(net.forward(x.reshape(5, -1).numpy()), module(x).detach().numpy(), atol=1e-5)

    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
        helper.make_tensor("mean", TensorProto.FLOAT, [1], [0.5]),
        helper.make_tensor("std", TensorProto.FLOAT, [1], [0.2]),
    ]
    for name, vals in (("s", [1.5, 0.5]), ("bb", [0.1, -0.2]), ("m", [0.0, 0.3]), ("v", [1.0, 2.0])):
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, [2], vals))
    fc = rng.normal(size=(18, 3)).astype(np.float32)
    inits.append(helper.make_tensor("fc", TensorProto.FLOAT, fc.shape, fc.ravel()))
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["x1"]),
        helper.make_node("Div", ["x1", "std"], ["x2"]),
        helper.make_node("Conv", ["x2", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = Path(__file__).parent / ".tmp_conv.onnx"
    try:
        onnx.save(model, str(path))
        net = from_onnx(path)
        xs = rng.uniform(size=(4, 36))
        ref = ort_outputs(path, xs)
        np.testing.assert_allclose(net.forward(xs), ref, atol=1e-4)
    finally:
        path.unlink(missing_ok=True)


def test_unsupported_ops_and_modules_are_named(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="fc1"),
        helper.make_node("Elu", ["h"], ["y"], name="act1"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1, 0, 0, 1])],
    )
    path = tmp_path / "elu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(NetinvertError, match="Elu node 'act1' uses op Elu.*support.*Relu.*Sigmoid, Tanh"):
        from_onnx(path)
    with pytest.raises(NetinvertError, match=r"module 1 \(GELU\) is not supported.*ReLU, Sigmoid, Tanh"):
        from_torch(nn.Sequential(nn.Linear(2, 2), nn.GELU()), (2,))


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_solve_writes_result_and_counterexample(known_family: Path, tmp_path: Path) -> None:
    check_solve_command(known_family, tmp_path, {"sat": "sat.onnx", "prop": "prop.vnnlib", "nano": "nano.onnx"},
                        [want for _, _, want in FAMILY])


@pytest.mark.slow
def test_branch_and_bound_stage_with_several_disjuncts() -> None:
    rng = np.random.default_rng(11)
    stages = set()
    for trial in range(8):
        module, n_in = _random_net(rng)
        lo, hi = -np.ones(n_in), np.ones(n_in)
        samples = rng.uniform(lo, hi, size=(5000, n_in))
        with torch.no_grad():
            ys = module(torch.as_tensor(samples).float()).double().numpy()
        parts, mins = [], []
        for _ in range(2):
            a = rng.normal(size=(1, ys.shape[1]))
            vals = ys @ a[0]
            b = np.array([vals.min() + rng.uniform(-0.1, 0.05) * (vals.max() - vals.min())])
            parts.append(OutputSet.linear(a, b))
            mins.append(_pattern_minimum(module, lo, hi, a, b))
        target = OutputSet.any_of(parts)
        net = from_torch(module, (n_in,))
        check = torch_checker(module, (n_in,))
        out = exact.solve_case(net, lo, hi, target, check, timeout=20, alpha_steps=5, bab_threshold=0, seed=trial)
        stages.add(out.stage)
        if out.status == "none-exists":
            assert min(mins) > -1e-7, f"trial {trial}: refuted a reachable set"
        elif out.status == "unknown":  # allowed only at a near-tie, where no point clears the strict margin
            assert abs(min(mins)) < 1e-4 and "tie" in out.reason, (trial, min(mins), out.reason)
        else:
            with torch.no_grad():
                y = module.double()(torch.as_tensor(out.x.astype(np.float64))[None]).numpy()
                module.float()
            assert target.contains(y, STRICT)[0]
    assert "bab" in stages, stages


@pytest.mark.slow
def test_branch_and_bound_agrees_with_milp_on_wider_nets() -> None:
    """Nets too wide for pattern enumeration: every branch-and-bound verdict (many batched splits,
    several branching candidates, warm-started float32 optimization, float64 decision) must match the MILP."""
    from netinvert.solvers.milp.dense import solve_disjunct

    rng = np.random.default_rng(5)
    verdicts = {"none": 0, "found": 0, "unknown": 0}
    split = 0
    for trial in range(6):
        sizes = [4, 10, 10, 8, 3]
        module = _deep_net(rng, sizes)
        lo, hi = -np.ones(sizes[0]), np.ones(sizes[0])
        net = from_torch(module, (sizes[0],))
        layers = lb.layers_of(net)
        ys = net.forward(rng.uniform(lo, hi, size=(20000, sizes[0])))
        a = rng.normal(size=(1, sizes[-1]))
        vals = ys @ a[0]
        b = np.array([vals.min() - rng.uniform(-0.02, 0.15) * (vals.max() - vals.min())])
        target = OutputSet.linear(a, b)
        root = lb.crown(layers, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])
        tree = bab(
            layers,
            lo,
            hi,
            root,
            a,
            b,
            np.zeros(1, dtype=int),
            lambda xs, t=target, f=net.forward: t.violations(f(xs)) <= -STRICT,
            time_limit=15,  # three trials take under 1 s, one 5 s (found), two 18 s or more: room for a loaded CI
            tuning=Tuning(batch=8),
        )
        milp = solve_disjunct(layers, lo, hi, root, a, b, t_lower=-1e3, time_limit=30)
        verdicts[tree.status] += 1
        split += tree.stats["domains"]
        if tree.status == "none":
            assert milp.status == "none", f"trial {trial}: branch-and-bound refuted a set the MILP reaches"
        if tree.status == "found":
            assert target.contains(net.forward(tree.x[None]), STRICT)[0]
            assert milp.status == "found", f"trial {trial}"
    assert verdicts["none"] >= 2 and verdicts["found"] >= 1, verdicts
    assert split > 100  # the refutations needed real splitting


# ------------------------------------------------------------------------------------------ intermediate bounds
def _pre_activation_ranges(layers: list, xs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    z, out = torch.as_tensor(xs), []
    for i, (w, b) in enumerate(layers[:-1]):
        z = z @ w.T + b
        out.append((z.min(dim=0).values.numpy(), z.max(dim=0).values.numpy()))
        z = torch.relu(z)
    return out


@pytest.mark.slow
def test_sign_refinement_is_sound_and_fixes_neurons_the_relaxation_cannot() -> None:
    from netinvert.solvers.search.refine import refine

    rng = np.random.default_rng(3)
    fixed = 0
    for trial in range(4):
        sizes = [5, 16, 16, 16, 16, 2]
        _, layers, lo, hi, root = _deep_case(rng, sizes)
        tight, stats = refine(layers, lo, hi, root, time_limit=20, seed=trial)
        xs = np.vstack([rng.uniform(lo, hi, size=(40000, sizes[0])), lo + (hi - lo) * rng.integers(0, 2, (4000, 5))])
        for k, (zmin, zmax) in enumerate(_pre_activation_ranges(layers, xs)):
            l, u = tight.lower[k][0].numpy(), tight.upper[k][0].numpy()
            assert np.all(l <= zmin + 1e-9) and np.all(u >= zmax - 1e-9), (
                f"trial {trial}: layer {k} bound cut off inputs"
            )
            assert np.all(l >= root.lower[k][0].numpy() - 1e-12) and np.all(u <= root.upper[k][0].numpy() + 1e-12)
        fixed += sum(root.unstable()) - sum(tight.unstable())
        assert sum(stats["proved"]) <= sum(stats["tried"])
    assert fixed > 0, "refinement never fixed a neuron that CROWN left unstable"


def test_sign_proofs_cut_short_still_narrow_bounds_soundly() -> None:
    from netinvert.solvers.search.refine import refine

    rng = np.random.default_rng(5)
    sizes = [6, 24, 24, 24, 24, 2]
    _, layers, lo, hi, root = _deep_case(rng, sizes)
    tight, stats = refine(layers, lo, hi, root, time_limit=20, per_neuron=0.02, rounds=1)
    assert sum(stats["narrowed"]) > 0, "no sign proof was cut short: the test no longer exercises narrowing"
    xs = np.vstack([rng.uniform(lo, hi, size=(40000, sizes[0])), lo + (hi - lo) * rng.integers(0, 2, (4000, 6))])
    still_unstable_but_narrower = 0
    for k, (zmin, zmax) in enumerate(_pre_activation_ranges(layers, xs)):
        l, u = tight.lower[k][0].numpy(), tight.upper[k][0].numpy()
        assert np.all(l <= zmin + 1e-9) and np.all(u >= zmax - 1e-9), f"layer {k}: a narrowed bound cut off inputs"
        l0, u0 = root.lower[k][0].numpy(), root.upper[k][0].numpy()
        unstable = (l < 0) & (u > 0)
        still_unstable_but_narrower += int(np.sum(unstable & ((u < u0 - 1e-6) | (l > l0 + 1e-6))))
    assert still_unstable_but_narrower > 0, "no unproved neuron got a tighter bound"


def test_lp_tightening_only_tightens_and_stays_sound() -> None:
    rng = np.random.default_rng(8)
    sizes = [4, 12, 12, 12, 2]
    _, layers, lo, hi, root = _deep_case(rng, sizes)
    tight = lp_tighten(layers, lo, hi, root, upto=len(layers) - 1)
    gain = 0.0
    for k, (zmin, zmax) in enumerate(_pre_activation_ranges(layers, rng.uniform(lo, hi, size=(40000, sizes[0])))):
        l, u = tight.lower[k][0].numpy(), tight.upper[k][0].numpy()
        assert np.all(l <= zmin + 1e-6) and np.all(u >= zmax - 1e-6)
        gain += float(np.sum(u - l) - np.sum(root.upper[k][0].numpy() - root.lower[k][0].numpy()))
    assert gain < -1e-3, "the LP relaxation tightened nothing"


def test_resumed_branch_and_bound_reaches_the_same_verdict_as_one_long_run() -> None:
    rng = np.random.default_rng(21)
    sizes = [4, 14, 14, 10, 3]
    module = _deep_net(rng, sizes)
    net = from_torch(module, (sizes[0],))
    layers = lb.layers_of(net)
    lo, hi = -np.ones(sizes[0]), np.ones(sizes[0])
    root = lb.crown(layers, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])
    ys = net.forward(rng.uniform(lo, hi, size=(20000, sizes[0])))
    a = np.array([[1.0, -1.0, 0.0]])
    b = np.array([(ys @ a[0]).min() - 0.02 * np.ptp(ys @ a[0])])  # just out of reach of the samples
    target = OutputSet.linear(a, b)

    def is_point(xs: np.ndarray) -> np.ndarray:
        return target.violations(net.forward(xs)) <= -STRICT

    args = (layers, lo, hi, root, a, b, np.zeros(1, dtype=int), is_point)
    whole = bab(*args, time_limit=30, tuning=Tuning(batch=4))
    assert whole.status in ("none", "found") and whole.stats["domains"] > 8
    part, rounds = bab(*args, time_limit=0.0, tuning=Tuning(batch=4)), 1
    while part.status == "unknown" and part.search is not None and rounds < 2000:
        part, rounds = bab(*args, time_limit=0.01, tuning=Tuning(batch=4), resume=part), rounds + 1
    assert rounds > 1 and part.status == whole.status
    if whole.status == "none":
        assert part.stats["domains"] == whole.stats["domains"]  # the same tree, explored in pieces


@pytest.mark.slow
def test_batched_searches_match_separate_ones_across_budgeted_rounds() -> None:
    """``bab_many``: problems that share batches, stop at their budgets and resume must reach the
    verdicts of separate long runs; a problem whose search was dropped is never reported refuted."""
    from netinvert.solvers.search.bab import bab_many

    rng = np.random.default_rng(14)
    sizes = [4, 12, 12, 10, 3]
    net, layers, lo, hi, root = _deep_case(rng, sizes)
    ys = net.forward(rng.uniform(lo, hi, size=(20000, sizes[0])))
    a = rng.normal(size=(8, 1, sizes[-1]))
    vals = np.einsum("pj,nj->pn", a[:, 0], ys)
    b = (vals.min(axis=1) - rng.uniform(-0.02, 0.1, size=8) * np.ptp(vals, axis=1))[:, None]
    owner = np.zeros(1, dtype=int)

    def reaches(xs: np.ndarray, problems: np.ndarray) -> np.ndarray:
        y = net.forward(xs)
        return np.einsum("nj,nj->n", y, a[problems, 0]) - b[problems, 0] <= -STRICT

    separate = [
        bab(layers, lo, hi, root, a[p], b[p], owner, lambda xs, p=p: reaches(xs, np.full(len(xs), p)), time_limit=20)
        for p in range(8)
    ]
    assert {s.status for s in separate} == {"none", "found"}, [s.status for s in separate]
    proofs, rounds = None, 0
    while rounds < 300 and (proofs is None or any(proofs.status(p) == "open" for p in range(8))):
        proofs = bab_many(
            layers, lo, hi, root, a, b, owner, reaches, budget=np.full(8, 100.0), time_limit=20, resume=proofs
        )
        rounds += 1
    assert rounds > 2, "the budgets never cut a search short"
    for p in range(8):
        assert proofs.status(p) == separate[p].status, f"problem {p}"
        if separate[p].status == "found":
            assert reaches(proofs.found[p][None], np.array([p]))[0]
    opened = [p for p in range(8) if separate[p].status == "none" and separate[p].stats["domains"] > 2]
    cut = bab_many(layers, lo, hi, root, a, b, owner, reaches, budget=np.full(8, 2.0), time_limit=20)
    cut.drop(opened)
    assert opened and all(cut.status(p) == "open" and cut.lowest_bound(p) == -np.inf for p in opened)


@pytest.mark.slow
def test_highs_prints_nothing() -> None:
    """HiGHS's banner and log stay out of the output (issue 19 item 18): a fresh process builds and solves
    both HiGHS models netinvert uses (the MILP encoding and the convex LP) and prints nothing."""
    import subprocess
    import sys

    code = (
        "import numpy as np, torch\n"
        "from netinvert.solvers.bounds import dense as lb\n"
        "from netinvert.solvers.milp.convex import solve_lp\n"
        "from netinvert.solvers.milp.dense import solve_disjunct\n"
        "from netinvert.solvers.network.read import from_torch\n"
        "torch.manual_seed(0)\n"
        "m = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))\n"
        "layers = lb.layers_of(from_torch(m, (2,)))\n"
        "lo, hi = np.zeros(2), np.ones(2)\n"
        "b = lb.crown(layers, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])\n"
        "solve_disjunct(layers, lo, hi, b, np.array([[1.0, -1.0]]), np.array([0.0]), t_lower=-1e3, time_limit=5)\n"
        "solve_lp(np.ones((1, 2)), np.ones(1), np.zeros((0, 2)), np.zeros(0), lo, hi, np.ones(2))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "", run.stdout


@pytest.mark.slow
def test_cli_solve_family_records_bad_rows_and_resumes_by_resolved_path(tmp_path: Path, known_family: Path) -> None:
    """Issue 19 item 17: a bad row is recorded as ``error`` with its message and the family goes on;
    a rerun that spells the same files differently resumes instead of solving them again."""
    import shutil

    for name in ("tiny.onnx", "tiny.vnnlib", "prop.vnnlib"):
        shutil.copy(known_family / name, tmp_path / name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "instances.csv").write_text(
        "missing.onnx,prop.vnnlib,20\ntiny.onnx,tiny.vnnlib,20\njust-one-column\n"
    )
    app = typer.Typer()
    app.command("solve")(solve)
    app.command("other")(lambda: None)
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["solve", "--instances", str(tmp_path / "instances.csv"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["status"] for row in rows] == ["error", "none-exists", "error"]
    assert "missing.onnx does not exist" in rows[0]["reason"]
    assert "expected onnx,vnnlib[,timeout]" in rows[2]["reason"]
    assert not (out / "000_missing_prop").exists()

    (tmp_path / "respelled.csv").write_text("./tiny.onnx,sub/../tiny.vnnlib,20\n")
    r = runner.invoke(app, ["solve", "--instances", str(tmp_path / "respelled.csv"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "[1/1]" not in r.output  # already answered: nothing solved again
    assert "none-exists" in r.output


def test_box_centre_is_tried_first_and_alpha_crown_stops_at_its_deadline() -> None:
    """Issue 19 item 5: a box whose centre already reaches the set ends at stage ``points`` (one
    forward pass, before any bound); alpha-CROWN takes no step once its deadline has passed."""
    import time

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    net = from_torch(module, (3,))
    lo, hi = -np.ones(3), np.ones(3)
    k = int(np.argmax(net.forward(np.zeros((1, 3)))[0]))
    target = OutputSet.from_class(k, 2)
    out = exact.solve_case(net, lo, hi, target, torch_checker(module, (3,)), timeout=10)
    assert out.status == "found" and out.stage == "points"
    np.testing.assert_array_equal(out.x, np.zeros(3, dtype=np.float32))

    layers = lb.layers_of(net)
    lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
    a = torch.as_tensor(target.disjuncts[0][0], dtype=lb.DT)
    b = torch.as_tensor(target.disjuncts[0][1], dtype=lb.DT)
    _, plain, _ = lb.alpha_crown(layers, lo_t, hi_t, a, b, steps=0)
    _, late, _ = lb.alpha_crown(layers, lo_t, hi_t, a, b, steps=50, deadline=time.perf_counter())
    assert torch.equal(late, plain)


def test_constant_nodes_fold_with_the_graph_opsets(tmp_path: Path) -> None:
    """A constant Identity (torch inserts one when a weight is reused) folds instead of being refused."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["w"], ["w2"]),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    path = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    xs = rng.uniform(-1, 1, size=(5, 3))
    np.testing.assert_allclose(from_onnx(path).forward(xs), ort_outputs(path, xs), atol=1e-5)
