"""More ops for the exact methods (issue 24 item 2): LeakyReLU/PReLU, Sin, Cos, integer powers,
slices, splits, reductions, transposed convolutions and nearest upsampling, read from ONNX and
torch.fx, and a closed-loop pendulum step (a controller MLP, then ``x + dt * f(x, u)``).

Soundness first: every relaxation holds at sampled points of sampled intervals (wide ones too);
CROWN bounds over each graph never exclude a sampled output; ``none-exists`` is never contradicted
by sampling and every ``found`` point reaches the set on the module; the ONNX exports of the test
networks read like the modules, for the solver and for the forward pass."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.methods import invert
from netinvert.models.load import load
from netinvert.solvers.bounds import graph as gbm
from netinvert.solvers.bounds import smooth
from netinvert.solvers.network.fx import graph_from_torch
from netinvert.solvers.network.graph import GNode, GraphNet, apply, transpose
from netinvert.solvers.network.onnx import graph_from_onnx
from netinvert.solvers.problem import network_of
from netinvert.targets.output_set import OutputSet

torch.set_num_threads(1)
CURVED = ["sin", "cos", "pow2", "pow3", "pow4", "pow5"]


class Leaky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f1, self.f2, self.f3 = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act, self.pre = nn.LeakyReLU(0.1), nn.PReLU(8, init=0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f3(self.pre(self.f2(self.act(self.f1(x)))))


class SinCos(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f1, self.f2, self.f3 = nn.Linear(3, 8), nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f3(torch.cos(3 * self.f2(torch.sin(4 * self.f1(x)))))


class Powers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f1, self.f2, self.f3 = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.f2(self.f1(x) ** 2 * 0.5)
        return self.f3(torch.cat([g ** 3, g * g], 1))


class Moves(nn.Module):
    """Slices, split, negation, subtraction, sum and mean, stack and permute around a ReLU layer."""

    def __init__(self) -> None:
        super().__init__()
        self.f1, self.f2 = nn.Linear(4, 8), nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.f1(x))
        a, b = torch.split(h, [5, 3], dim=1)
        s = a.sum(dim=1, keepdim=True) - b.mean(dim=1, keepdim=True)
        t = torch.stack([-a[:, 1:3], b[:, :2]], dim=2).permute(0, 2, 1).reshape(x.size(0), 4)
        return self.f2(torch.cat([s, t, x[:, 1:3]], dim=1))


class Decoder(nn.Module):
    """A dense layer to a small image, a transposed convolution, nearest upsampling, a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2 * 3 * 3)
        self.up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
        self.us = nn.Upsample(scale_factor=2, mode="nearest")
        self.c = nn.Conv2d(3, 2, 3, stride=2)
        self.out = nn.Linear(2 * 5 * 5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x)).reshape(-1, 2, 3, 3)
        h = torch.sigmoid(self.up(h))
        return self.out(torch.relu(self.c(self.us(h))).flatten(1))


class Pendulum(nn.Module):
    """One step of a closed-loop pendulum: a controller MLP ``u(x)``, then
    ``x + dt * [theta_dot, g / l * sin(theta) - b * theta_dot + u]``."""

    def __init__(self, dt: float = 0.05, g: float = 9.81, length: float = 1.0, b: float = 0.1) -> None:
        super().__init__()
        self.ctrl = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
        self.dt, self.gl, self.b = dt, g / length, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.ctrl(x)
        theta, omega = x[:, 0:1], x[:, 1:2]
        return x + self.dt * torch.cat([omega, self.gl * torch.sin(theta) - self.b * omega + u], dim=1)


NETS = {"leaky": (Leaky, 3, {"LeakyRelu", "PRelu"}), "sincos": (SinCos, 3, {"Sin", "Cos"}),
        "powers": (Powers, 3, {"Pow", "Mul"}),
        "moves": (Moves, 4, {"Slice", "Split", "Neg", "Sub", "ReduceSum", "ReduceMean", "Transpose", "Unsqueeze"}),
        "decoder": (Decoder, 3, {"ConvTranspose", "Resize"}), "pendulum": (Pendulum, 2, {"Sin", "Slice", "Sub"})}


def _module(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NETS[kind][0]().eval()


def _outputs(module: nn.Module, xs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return copy.deepcopy(module).double()(torch.as_tensor(xs, dtype=torch.float64)).numpy()


def _export(module: nn.Module, n_in: int, path: Path) -> Path:
    torch.onnx.export(module, torch.zeros(1, n_in), str(path), dynamo=False)
    return path


@pytest.mark.parametrize("kind", CURVED)
def test_curved_relaxations_hold_on_any_interval(kind: str) -> None:
    """Lines and images of sin, cos and powers hold at sampled points of sampled intervals, from
    1e-9 wide to several periods of sin wide, and they are the tangents and secants where those apply."""
    gen = torch.Generator().manual_seed(CURVED.index(kind))
    n = 3000
    reach = 40.0 if kind in ("sin", "cos") else 3.0
    l = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * reach
    width = torch.rand(n, generator=gen, dtype=torch.float64) ** 4 * reach
    width[:100] = 10.0 ** -torch.randint(3, 10, (100,), generator=gen).double()
    u = l + width
    al, cl, au, cu = smooth.relax(kind, l, u)
    low, high = smooth.image(kind, l, u)
    z = l[:, None] + torch.rand(n, 200, generator=gen, dtype=torch.float64) * (u - l)[:, None]
    z = torch.cat([z, l[:, None], u[:, None]], dim=1)
    f = smooth.act(kind, z)
    assert float((al[:, None] * z + cl[:, None] - f).max()) <= 0.0
    assert float((f - au[:, None] * z - cu[:, None]).max()) <= 0.0
    assert bool((low[:, None] <= f).all() and (f <= high[:, None]).all())
    mid = (l + u) / 2
    gap = (au - al) * mid + cu - cl  # the lines' distance at the midpoint: not vacuous
    assert bool((gap <= high - low + 1e-6).all())
    if kind in ("sin", "cos"):
        wide = u - l >= 2 * math.pi
        assert wide.sum() > 100 and bool((au * mid + cu <= 1 + 1e-3)[wide].all())
        assert bool((al * mid + cl >= -1 - 1e-3)[wide].all())
    t = torch.tensor([0.3, 1.0], dtype=torch.float64)  # sin: concave; powers: convex
    al, cl, au, cu = smooth.relax(kind, t[:1], t[1:] + (1.8 if kind == "sin" else 0))
    if kind == "sin":  # on [0.3, 2.8]: the midpoint tangent above, the secant below
        torch.testing.assert_close(au * 1.55 + cu, torch.sin(torch.tensor([1.55], dtype=torch.float64)), atol=1e-6,
                                   rtol=0)
        torch.testing.assert_close(al * 2.8 + cl, torch.sin(torch.tensor([2.8], dtype=torch.float64)), atol=1e-6,
                                   rtol=0)
    elif kind.startswith("pow"):  # the secant above, the midpoint tangent below
        p = smooth.power(kind)
        torch.testing.assert_close(au * 1.0 + cu, torch.tensor([1.0], dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(al * 0.65 + cl, torch.tensor([0.65 ** p], dtype=torch.float64), atol=1e-6, rtol=0)


def test_new_linear_nodes_transpose_as_their_autograd_adjoints() -> None:
    """Transposed convolutions (stride, dilation, groups, asymmetric pads, output padding), gathers
    with repeated elements and sums run backward as autograd's vector-Jacobian products."""
    torch.manual_seed(0)
    src = GNode("input", (), (4, 5, 5))
    cases = [
        GNode("convt", (0,), (6, 11, 14), {"w": torch.randn(4, 3, 3, 2, dtype=torch.float64),
                                           "b": torch.randn(6, dtype=torch.float64), "stride": (2, 3),
                                           "pads": (1, 2, 0, 1), "dilation": (1, 2), "groups": 2,
                                           "output_padding": (1, 2)}),
        GNode("gather", (0,), (7, 3), {"index": torch.randint(0, 100, (21,)), "injective": False}),
        GNode("sum", (0,), (4, 1, 5), {"axes": (1,)}),
    ]
    full = F.conv_transpose2d(torch.ones(1, 4, 5, 5), torch.ones(4, 3, 3, 2), stride=(2, 3), groups=2, dilation=(1, 2))
    assert tuple(full.shape[1:]) == (6, 11, 15)  # the node's (11, 14): plus output padding (1, 2), minus pads
    for node in cases:
        x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
        y = apply(node, [x], [src, node])
        assert tuple(y.shape[1:]) == node.shape
        lam = torch.randn_like(y)
        (grad,) = torch.autograd.grad(y, x, lam)
        back, const = transpose(node, lam, [src, node])
        torch.testing.assert_close(back[0], grad)
        zero = apply(node, [torch.zeros_like(x)], [src, node])
        torch.testing.assert_close(const, (lam * zero).reshape(3, -1).sum(1))


@pytest.mark.parametrize("kind", list(NETS))
def test_graphs_read_like_the_module_from_fx_and_onnx(kind: str, tmp_path: Path) -> None:
    """The fx trace and the ONNX export (with the ops named in ``NETS``) compute what the module does,
    and the ONNX model loaded for the forward pass does too."""
    cls, n_in, ops = NETS[kind]
    module = _module(kind)
    path = _export(module, n_in, tmp_path / f"{kind}.onnx")
    assert ops <= {node.op_type for node in onnx.load(path).graph.node}
    xs = np.random.default_rng(0).uniform(-1, 1, (64, n_in))
    ys = _outputs(module, xs)
    np.testing.assert_allclose(graph_from_torch(module, (n_in,)).forward(xs), ys, atol=1e-12)
    np.testing.assert_allclose(graph_from_onnx(onnx.load(path), path).forward(xs), ys, atol=1e-6)
    model = load(path, input_shape=(n_in,))
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.as_tensor(xs, dtype=torch.float32)).double().numpy(), ys, atol=1e-5)
    net = network_of(model)
    np.testing.assert_allclose(net.forward(xs), ys, atol=1e-5)
    assert net.dense is None or kind == "decoder"  # a small chain of dense kinds: the dense form
    assert net.piecewise == (kind in ("leaky", "moves"))


@pytest.mark.parametrize("kind", list(NETS))
def test_bounds_never_exclude_a_sampled_output(kind: str, tmp_path: Path) -> None:
    cls, n_in, _ = NETS[kind]
    module = _module(kind, 1)
    path = _export(module, n_in, tmp_path / f"{kind}.onnx")
    rng = np.random.default_rng(2)
    for graph in (graph_from_torch(module, (n_in,)), graph_from_onnx(onnx.load(path), path)):
        for radius in (0.02, 0.3, 1.5):
            x0 = rng.uniform(-1, 1, n_in)
            lo, hi = x0 - radius, x0 + radius
            xs = np.vstack([rng.uniform(lo, hi, size=(4000, n_in)), lo, hi])
            ys = _outputs(module, xs)
            lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
            eye = torch.eye(ys.shape[1], dtype=torch.float64)
            zero = torch.zeros(ys.shape[1], dtype=torch.float64)
            low = gbm.crown(graph, lo_t, hi_t, eye, zero)[1][0].numpy()
            up = -gbm.crown(graph, lo_t, hi_t, -eye, zero)[1][0].numpy()
            slack = 1e-6 * (1 + np.abs(ys).max())  # the ONNX graph's constants are float32
            assert np.all(ys >= low - slack) and np.all(ys <= up + slack), (kind, radius)
            spread = ys.max(0) - ys.min(0)
            if radius == 0.02:  # near-exact on a small box
                assert np.all(up - low <= 3 * spread + 1e-6), (kind, up - low, spread)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(NETS))
def test_exact_answers_from_onnx_are_never_contradicted_by_sampling(kind: str, tmp_path: Path) -> None:
    """``invert(..., method="exact")`` on the ONNX model: output sets placed around the sampled range;
    some found, some refuted, none answered wrongly; the leaky ReLU net is decided by the MILP."""
    cls, n_in, _ = NETS[kind]
    module = _module(kind, 3)
    model = load(_export(module, n_in, tmp_path / f"{kind}.onnx"), input_shape=(n_in,))
    rng = np.random.default_rng(5)
    seen = {"found": 0, "none-exists": 0, "unknown": 0}
    for trial, frac in enumerate([-0.5, -0.05, 0.05, 0.3]):
        x0 = rng.uniform(-0.5, 0.5, n_in)
        lo, hi = x0 - 0.3, x0 + 0.3
        xs = np.vstack([rng.uniform(lo, hi, size=(20000, n_in)), np.array(np.meshgrid(*zip(lo, hi))).reshape(n_in, -1).T])
        ys = _outputs(module, xs)
        a = rng.normal(size=(1, ys.shape[1]))
        v = (ys @ a.T)[:, 0]
        target = OutputSet.linear(a, np.array([v.min() + frac * (v.max() - v.min())]))
        res = invert(model, target, Box(torch.as_tensor(lo), torch.as_tensor(hi)), method="exact", timeout=8,
                     seed=trial)
        status = res.statuses[0]
        seen[status] += 1
        if status == "none-exists":
            assert not target.contains(ys).any(), f"{kind} trial {trial}: refuted a sampled point"
        elif status == "found":
            x = res.inputs[0].double().numpy().reshape(1, -1)
            assert np.all(x >= lo) and np.all(x <= hi)
            assert target.contains(_outputs(module, x), 1e-7)[0]
        if kind == "leaky":
            assert res.info["certificates"][0].get("search", "milp") == "milp"
        elif kind in ("sincos", "powers", "pendulum") and status != "found":
            assert res.info["certificates"][0].get("search", "input-split") == "input-split"
    assert seen["found"] >= 1 and seen["none-exists"] >= 1, seen


def _vnnlib(lo: np.ndarray, hi: np.ndarray, n_out: int, outputs: str) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lo))] + [f"(declare-const Y_{j} Real)"
                                                                       for j in range(n_out)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
    return "\n".join(lines + [outputs]) + "\n"


def test_pendulum_step_solved_from_the_command_line(tmp_path: Path) -> None:
    """``netinvert solve`` on a closed-loop pendulum step (ONNX: Slice, Sin, Mul/Sub/Add by constants, a
    skip connection): a next angle above the sampled maximum is refuted, one just below it is found
    (and the counterexample is right); a spec over an output the net does not have names it."""
    import typer
    from typer.testing import CliRunner

    from netinvert.cli.solve import solve

    app = typer.Typer()
    app.command("solve")(solve)
    app.command("other")(lambda: None)

    module = _module("pendulum", 4)
    path = _export(module, 2, tmp_path / "pendulum.onnx")
    lo, hi = np.array([-0.4, -0.5]), np.array([0.4, 0.5])
    g = np.linspace(0, 1, 301)
    xs = lo + (hi - lo) * np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    top = float(_outputs(module, xs)[:, 1].max())  # the largest next angular velocity on a fine grid
    runner = CliRunner()
    answers = {}
    for name, bound in (("beyond", top + 0.02), ("within", top - 0.002)):
        spec = tmp_path / f"{name}.vnnlib"
        spec.write_text(_vnnlib(lo, hi, 2, f"(assert (>= Y_1 {bound!r}))"))
        r = runner.invoke(app, ["solve", str(path), str(spec), "--timeout", "30", "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        answers[name] = json.loads((tmp_path / name / "result.json").read_text())["items"][0]["status"]
    assert answers == {"beyond": "none-exists", "within": "found"}
    text = (tmp_path / "within" / "counterexample.txt").read_text()
    x = np.array([float(line.split()[1].rstrip(")")) for line in text.splitlines() if "(X_" in line])
    assert np.all(x >= lo) and np.all(x <= hi) and _outputs(module, x[None])[0, 1] >= top - 0.002
    bad = tmp_path / "bad.vnnlib"
    bad.write_text(_vnnlib(lo, hi, 13, "(assert (>= Y_12 0.0))"))
    r = runner.invoke(app, ["solve", str(path), str(bad), "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "constrains Y_12 but pendulum.onnx has 2 outputs (Y_0..Y_1)" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    few = tmp_path / "few.vnnlib"
    few.write_text(_vnnlib(lo, hi, 1, "(assert (>= Y_0 0.0))"))
    r = runner.invoke(app, ["solve", str(path), str(few), "--out", str(tmp_path / "few")])
    assert r.exit_code == 2 and "declares no Y_1 but pendulum.onnx has 2 outputs" in r.output, r.output


def test_unsupported_ops_name_the_op_and_the_node(tmp_path: Path) -> None:
    class Root(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) ** 0.5

    class Product(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sin(x)

    class Smooth(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=2, mode="bilinear")

    for module, shape, pattern in (
        (Root(), (3,), r"Pow node .* raises to the power 0\.5; exact methods support constant integer exponents"),
        (Product(), (3,), r"Mul node .* multiplies or divides by an input-dependent tensor"),
        (Smooth(), (1, 2, 2), r"Resize node .* resizes in mode .*linear.*support mode 'nearest'"),
    ):
        path = tmp_path / f"{type(module).__name__}.onnx"
        torch.onnx.export(module, torch.zeros(1, *shape), str(path), dynamo=False)
        with pytest.raises(NetinvertError, match=pattern):
            graph_from_onnx(onnx.load(path), path)
        with pytest.raises(NetinvertError, match=r"not supported|support"):
            graph_from_torch(module, shape)
