"""General graphs for the exact methods (issue 14 part 3, issue 19 item 5): residual adds,
concatenations, average pooling, reshapes mid-graph, convolutions kept as convolutions.

Soundness first: bounds never exclude a sampled output, ``none-exists`` is never contradicted by
dense sampling, every ``found`` point satisfies the set on the module; the fx-traced module and
its ONNX export give the same graph and bounds; unsupported layers get one clear error; a conv
net ends near its time limit with a named stage."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.methods import exact, invert
from netinvert.models.load import load
from netinvert.models.wrapper import InputSpec, Model
from netinvert.solvers.bounds import graph as gbm
from netinvert.solvers.milp.graph import solve_graph_disjunct
from netinvert.solvers.network.fx import graph_from_torch
from netinvert.solvers.network.graph import GraphNet
from netinvert.solvers.network.onnx import graph_from_onnx
from netinvert.solvers.problem import STRICT, network_of, torch_checker
from netinvert.solvers.search.graph_bab import graph_bab
from netinvert.targets.output_set import OutputSet

torch.set_num_threads(1)
SHAPE = (1, 6, 6)
N_IN = 36


class Residual(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.bn, self.act = nn.BatchNorm2d(3), act()
        self.fc = nn.Linear(3 * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn(self.c1(x)))
        h = h + self.act(self.c2(h))
        return self.fc(torch.flatten(h, 1))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.avg_pool2d(torch.relu(self.a(x)), 2)
        return self.fc(torch.cat([left, F.relu(self.b(x))], dim=1).flatten(1))


class Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.pool, self.gap = nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.c(x)))
        return self.fc(self.gap(torch.relu(self.c2(h))).flatten(1))


class FlattenMid(nn.Module):
    """Flatten to a dense layer, then back to an image for a convolution, with a skip over both."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.conv, self.fc2 = nn.Linear(36, 36), nn.Conv2d(1, 2, 3), nn.Linear(2 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x.flatten(1))).view(x.size(0), 1, 6, 6) - x
        return self.fc2(torch.relu(self.conv(h)).reshape(-1, 32))


class MaxPooled(nn.Module):
    """Max-pooling over 3x3 windows with padding: groups of 4, 6 and 9 cells (odd ones pair a cell with itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.pool, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1), nn.Linear(18, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.c(x))).flatten(1))


def conv_net(act: type[nn.Module]) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), act(), nn.Conv2d(3, 4, 3, padding=1), act(),
                         nn.Flatten(), nn.Linear(36, 3))


NETS = {"residual": Residual, "concat": Concat, "avgpool": Pooled, "flatten-mid": FlattenMid, "maxpool": MaxPooled,
        "conv-relu": lambda: conv_net(nn.ReLU), "conv-sigmoid": lambda: conv_net(nn.Sigmoid),
        "residual-tanh": lambda: Residual(nn.Tanh)}


def _module(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = NETS[kind]()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _outputs(module: nn.Module, xs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return copy.deepcopy(module).double()(torch.as_tensor(xs).reshape(-1, *SHAPE)).numpy()


@pytest.mark.parametrize("kind", list(NETS))
def test_bounds_never_exclude_a_sampled_output(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    module = _module(kind, 1)
    net = graph_from_torch(module, SHAPE)
    assert isinstance(net, GraphNet) and not any(n.op == "scale" for n in net.nodes)  # BatchNorm folded
    x0 = rng.uniform(0, 1, N_IN)
    lo, hi = x0 - 0.25, x0 + 0.25
    xs = np.vstack([rng.uniform(lo, hi, size=(2000, N_IN)), lo, hi])
    ys = _outputs(module, xs)
    np.testing.assert_allclose(net.forward(xs), ys, atol=1e-9)
    lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
    eye = torch.eye(ys.shape[1], dtype=torch.float64)
    zero = torch.zeros(ys.shape[1], dtype=torch.float64)
    gb, low, coef, offset = gbm.crown(net, lo_t, hi_t, eye, zero)
    up = -gbm.crown(net, lo_t, hi_t, -eye, zero)[1]
    assert np.all(ys >= low[0].numpy() - 1e-9) and np.all(ys <= up[0].numpy() + 1e-9)
    linear = xs @ coef[0].numpy().T + offset[0].numpy()
    assert np.all(ys >= linear - 1e-9)
    assert np.all(up[0].numpy() - low[0].numpy() < 50 * (ys.max(0) - ys.min(0)) + 1)  # not vacuous
    if net.piecewise:
        tight = gbm.alpha_rows(net, gb, lo_t, hi_t, eye, zero, steps=10)
        assert np.all(tight[0].numpy() >= low[0].numpy() - 1e-12) and np.all(ys >= tight[0].numpy() - 1e-9)


@pytest.mark.parametrize("kind", ["residual", "concat", "avgpool", "flatten-mid", "conv-sigmoid"])
def test_fx_trace_and_onnx_export_give_the_same_bounds(kind: str, tmp_path: Path) -> None:
    module = _module(kind, 2)
    path = tmp_path / f"{kind}.onnx"
    torch.onnx.export(module, torch.zeros(1, *SHAPE), str(path), dynamo=False)
    import onnx

    g_fx = graph_from_torch(module, SHAPE)
    g_onnx = graph_from_onnx(onnx.load(str(path)), path)
    assert [n.op for n in g_fx.nodes] == [n.op for n in g_onnx.nodes]
    rng = np.random.default_rng(3)
    lo = rng.uniform(0, 0.5, N_IN)
    hi = lo + 0.4
    lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
    a = torch.as_tensor(rng.normal(size=(2, g_fx.num_outputs)))
    b = torch.zeros(2, dtype=torch.float64)
    fx_low = gbm.crown(g_fx, lo_t, hi_t, a, b)[1]
    onnx_low = gbm.crown(g_onnx, lo_t, hi_t, a, b)[1]
    torch.testing.assert_close(fx_low, onnx_low, rtol=1e-6, atol=1e-6)
    model = load(path, input_shape=SHAPE)
    net = network_of(model)  # the ONNX model through the solver's own reader
    assert net.dense is None or kind == "conv-sigmoid"


@pytest.mark.parametrize("kind", ["residual", "concat", "avgpool", "flatten-mid", "maxpool", "conv-relu",
                                  "conv-sigmoid"])
@pytest.mark.slow
def test_solve_is_never_contradicted_by_sampling(kind: str) -> None:
    """Output sets placed around the sampled range: some reachable, some not; none answered wrongly."""
    rng = np.random.default_rng(7 + len(kind))
    module = _module(kind, 3)
    net = graph_from_torch(module, SHAPE)
    check = torch_checker(module, SHAPE)
    seen = {"found": 0, "none-exists": 0, "unknown": 0}
    for trial in range(4):
        x0 = rng.uniform(0.2, 0.8, N_IN)
        lo, hi = x0 - 0.1, x0 + 0.1
        xs = np.vstack([rng.uniform(lo, hi, size=(20000, N_IN)), lo, hi])
        ys = _outputs(module, xs)
        a = rng.normal(size=(1, ys.shape[1]))
        v = (ys @ a.T)[:, 0]
        b = np.array([v.min() + [-2.0, -0.3, -0.1, 0.05][trial] * (v.max() - v.min())])
        target = OutputSet.linear(a, b)
        out = exact.solve_case(net, lo, hi, target, check, timeout=10, seed=trial)
        seen[out.status] += 1
        assert out.stage, out
        if out.status == "none-exists":
            assert not target.contains(ys).any(), f"{kind} trial {trial}: refuted a sampled point"
        elif out.status == "found":
            assert np.all(out.x >= lo) and np.all(out.x <= hi)
            assert target.contains(_outputs(module, out.x.astype(np.float64)[None]), STRICT)[0]
    assert seen["found"] >= 1 and seen["none-exists"] >= 1, seen
    if net.piecewise:  # small ReLU graphs are decided by the MILP
        assert seen["unknown"] == 0, seen


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["residual", "concat", "conv-relu"])
def test_graph_branch_and_bound_agrees_with_the_milp(kind: str) -> None:
    """ReLU splits on graphs (for those too large for the MILP): every verdict matches the MILP's."""
    rng = np.random.default_rng(3)
    module = _module(kind, 5)
    net = graph_from_torch(module, SHAPE)
    split = 0
    verdicts = {"none": 0, "found": 0, "open": 0}
    for frac in [-1.2, -0.8, -0.5, 0.05]:
        x0 = rng.uniform(0.2, 0.8, N_IN)
        lo, hi = x0 - 0.15, x0 + 0.15
        ys = _outputs(module, rng.uniform(lo, hi, size=(20000, N_IN)))
        a = rng.normal(size=(1, ys.shape[1]))
        v = (ys @ a.T)[:, 0]
        b = np.array([v.min() + frac * (v.max() - v.min())])
        target = OutputSet.linear(a, b)
        gb = gbm.bounds(net, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])
        tree = graph_bab(net, lo, hi, gb, a, b, lambda z, t=target: t.violations(net.forward(z)) <= -STRICT,
                         time_limit=5)
        milp = solve_graph_disjunct(net, lo, hi, gb, a, b, t_lower=-1e3, time_limit=20)
        verdicts[tree.status] += 1
        if tree.status == "none":
            split += tree.stats["domains"]
            assert milp.status == "none" and not target.contains(ys).any()
        if tree.status == "found":
            assert milp.status == "found"
            assert target.contains(_outputs(module, tree.x[None]), STRICT)[0]
    assert verdicts["none"] >= 1 and verdicts["found"] >= 1 and split >= 3, (verdicts, split)  # real splits


def test_models_route_small_chains_to_the_dense_path_and_graphs_to_the_graph() -> None:
    chain = Model(conv_net(nn.ReLU), InputSpec(SHAPE, low=0.0, high=1.0, mean=(0.5,), std=(0.25,)), name="c")
    resid = Model(_module("residual", 4), InputSpec(SHAPE, low=0.0, high=1.0, mean=(0.5,), std=(0.25,)), name="r")
    assert network_of(chain).dense is not None
    net = network_of(resid)
    assert net.dense is None
    xs = np.random.default_rng(0).uniform(0, 1, (5, N_IN))
    with torch.no_grad():
        ref = resid(torch.as_tensor(xs, dtype=torch.float32).reshape(-1, *SHAPE)).numpy()
    np.testing.assert_allclose(net.forward(xs), ref, atol=1e-5)  # normalization folded in
    res = invert(resid, OutputSet.linear(np.eye(3)[[0]], np.array([1e6])), None, method="exact", timeout=10)
    assert res.statuses == ["found"] and res.items[0].metrics["stage"] == "points"

    class Plain(nn.Module):  # a chain, but not an nn.Sequential: read as a graph, composed into the dense chain
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 5), nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    plain = Model(Plain(), InputSpec((3,), low=0.0, high=1.0), name="plain")
    dense = network_of(plain)
    assert dense.dense is not None and dense.hidden_sizes == [5]
    with torch.no_grad():
        np.testing.assert_allclose(dense.forward(xs[:, :3]), plain(torch.as_tensor(xs[:, :3]).float()).numpy(), atol=1e-5)
    for kind in ("conv-relu", "conv-sigmoid", "flatten-mid"):  # composed chains equal their graphs
        g = graph_from_torch(_module(kind, 6), SHAPE)
        if g.is_chain():
            np.testing.assert_allclose(g.composed().forward(xs), g.forward(xs), atol=1e-10)


def test_max_pooling_is_exact_in_the_graph_and_in_its_dense_chain() -> None:
    """The ReLU tournament of max-pooling is read into the graph (ONNX and fx), stays a chain, and its dense
    chain computes the module; both forms give the same answers, never contradicted by sampling."""
    rng = np.random.default_rng(4)
    module = _module("maxpool", 4)
    graph = graph_from_torch(module, SHAPE)
    dense = network_of(Model(module, InputSpec(SHAPE, low=0.0, high=1.0), name="pool"))
    assert graph.dense is None and graph.is_chain() and dense.dense is not None
    check = torch_checker(module, SHAPE)
    seen = set()
    for trial, frac in enumerate([-2.0, -0.3, 0.05]):
        x0 = rng.uniform(0.2, 0.8, N_IN)
        lo, hi = x0 - 0.1, x0 + 0.1
        xs = np.vstack([rng.uniform(lo, hi, size=(20000, N_IN)), lo, hi])
        ys = _outputs(module, xs)
        np.testing.assert_allclose(dense.forward(xs), ys, atol=1e-9)
        np.testing.assert_allclose(graph.forward(xs), ys, atol=1e-9)
        a = rng.normal(size=(1, ys.shape[1]))
        v = (ys @ a.T)[:, 0]
        target = OutputSet.linear(a, np.array([v.min() + frac * (v.max() - v.min())]))
        answers = {exact.solve_case(net, lo, hi, target, check, timeout=10, seed=trial).status for net in (graph, dense)}
        assert len(answers) == 1 and answers != {"unknown"}, (trial, answers)
        assert answers == {"found"} or not target.contains(ys).any(), trial
        seen |= answers
    assert seen == {"found", "none-exists"}, seen


def test_unsupported_layers_get_one_clear_error(tmp_path: Path) -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(4, 4), nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(x)) + x

    model = Model(Bad(), InputSpec((4,), low=0.0, high=1.0), name="bad")
    with pytest.raises(NetinvertError, match=r"module act \(GELU\) is not supported.*Linear, Conv2d, ReLU"):
        network_of(model)

    class Elu(nn.Module):  # LeakyReLU, the unsupported op here before, is read now
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.elu(x) + x

    path = tmp_path / "elu.onnx"
    torch.onnx.export(Elu(), torch.zeros(1, 4), str(path), dynamo=False)
    with pytest.raises(NetinvertError, match=r"Elu node .* uses op Elu.*support Gemm.*Concat"):
        network_of(load(path, input_shape=(4,)))


def test_conv_net_solve_ends_near_its_time_limit() -> None:
    """Issue 19 item 5: every stage checks the deadline; the stage is always named."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                           nn.ReLU(), nn.Flatten(), nn.Linear(16 * 14 * 14, 10)).eval()
    model = Model(module, InputSpec((1, 28, 28), low=0.0, high=1.0), name="cnn")
    x0 = torch.full((1, 28, 28), 0.5)
    k = int(model(x0[None]).argmax())
    target = OutputSet.from_class((k + 1) % 10, 10, margin=0.0)
    from netinvert.domains.sets import Ball

    t0 = time.perf_counter()
    res = invert(model, target, Ball(x0, 0.3), method="exact", timeout=4)
    elapsed = time.perf_counter() - t0
    assert res.items[0].metrics["stage"]
    if res.statuses[0] == "unknown":
        assert elapsed < 4 + 10, elapsed


def test_preimage_bounds_on_a_residual_net_are_sound() -> None:
    """``method="bounds"`` on a residual MLP with 2 inputs: every grid point reaching the set lies in
    the inside + uncertain boxes, and every point of an inside box reaches it."""

    class ResMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.out = nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))
            return self.out(h + torch.relu(self.fc2(h)))

    torch.manual_seed(5)
    model = Model(ResMLP().eval(), InputSpec((2,), low=-1.0, high=1.0), name="resmlp")
    assert network_of(model).dense is None
    g = np.linspace(-1, 1, 121)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    with torch.no_grad():
        ys = model(torch.as_tensor(pts, dtype=torch.float32)).double().numpy()
    med = float(np.median(ys[:, 1] - ys[:, 0]))
    target = OutputSet.linear(np.array([[1.0, -1.0]]), np.array([-med]))  # y1 - y0 >= the median
    res = invert(model, target, None, method="bounds", max_boxes=600)
    pre = res.info["preimage"][0]
    reach = ys[:, 1] - ys[:, 0] >= med

    def within(boxes: np.ndarray) -> np.ndarray:
        if not len(boxes):
            return np.zeros(len(pts), dtype=bool)
        return ((pts[:, None] >= boxes[None, :, 0] - 1e-12) & (pts[:, None] <= boxes[None, :, 1] + 1e-12)).all(-1).any(1)

    over = within(np.concatenate([pre["inside"], pre["uncertain"]]))
    strict = np.abs(ys[:, 1] - ys[:, 0] - med) > 1e-5
    assert reach.any() and (~reach).any()
    assert not np.any(reach & ~over & strict)
    assert not np.any(within(pre["inside"]) & ~reach & strict)
    assert len(pre["inside"]) > 0


def test_linear_nodes_transpose_as_their_autograd_adjoints() -> None:
    """Backward propagation passes each linear node through its adjoint: conv (groups, dilation,
    stride, asymmetric pads) via conv_transpose2d and average pooling (with and without padded cells
    counted) equal autograd's vector-Jacobian products."""
    from netinvert.solvers.network.graph import GNode, apply, transpose

    torch.manual_seed(0)
    conv = {"w": torch.randn(6, 2, 3, 3, dtype=torch.float64), "b": torch.randn(6, dtype=torch.float64),
            "stride": (2, 2), "pads": (0, 1, 2, 1), "dilation": (2, 2), "groups": 2}
    pool = {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "count_include_pad": False}
    for op, p in (("conv", conv), ("avgpool", pool)):
        src = GNode("input", (), (4, 9, 9))
        x = torch.randn(3, 4, 9, 9, dtype=torch.float64, requires_grad=True)
        node = GNode(op, (0,), (), p)
        node.shape = (6, 4, 3) if op == "conv" else (4, 5, 5)  # pads: top 2, bottom 1, left 0, right 1
        y = apply(node, [x], [src, node])
        lam = torch.randn_like(y)
        (grad,) = torch.autograd.grad(y, x, lam)
        back, _ = transpose(node, lam, [src, node])
        torch.testing.assert_close(back[0], grad)


def test_constant_first_matmul_on_a_1d_input_is_read(tmp_path: Path) -> None:
    """``MatMul(W, x)`` on a 1-D input (VNN-COMP's test_small layout) is read as a linear node; on a 2-D input
    it is refused in one line naming the op instead of comparing an array with a node id."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w0, b0, w1, b1 = (rng.normal(size=s).astype(np.float32) for s in ((3, 2), (3,), (2, 3), (2,)))
    nodes = [helper.make_node("MatMul", ["W0", "x"], ["m0"]), helper.make_node("Add", ["m0", "B0"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["r0"]), helper.make_node("MatMul", ["W1", "r0"], ["m1"]),
             helper.make_node("Add", ["m1", "B1"], ["y"])]
    graph = helper.make_graph(
        nodes, "const_first", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(a, n) for a, n in ((w0, "W0"), (b0, "B0"), (w1, "W1"), (b1, "B1"))])
    path = tmp_path / "const_first.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    graph.input[0].type.tensor_type.shape.dim.add().dim_value = 2
    with pytest.raises(NetinvertError, match="MatMul"):
        graph_from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), "wide.onnx")
    net = network_of(load(path))
    assert net.dense is not None
    session = ort.InferenceSession(str(path))
    xs = rng.uniform(-1, 1, size=(16, 2)).astype(np.float32)
    want = np.stack([session.run(None, {"x": x})[0] for x in xs])
    np.testing.assert_allclose(net.forward(xs.astype(np.float64)), want, atol=1e-5)
