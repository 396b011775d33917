"""The ``bounds`` method on a tiny 2-D ReLU classifier trained here on make_moons, and its
soundness on random 2-D and 3-D sigmoid, tanh, ReLU and residual networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import make_moons
from torch import nn

from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.spec import InputSpec
from netinvert.methods import bounds
from netinvert.models.wrapper import Model
from netinvert.targets.output_set import OutputSet
from netinvert.targets.units import Class


@pytest.fixture(scope="module")
def moons() -> Model:
    torch.manual_seed(0)
    x, y = make_moons(600, noise=0.15, random_state=0)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    assert (net(xt).argmax(1) == yt).float().mean() > 0.95
    return Model(net, InputSpec((2,), low=-2.0, high=3.0), name="moons")


def _grid(lo: np.ndarray, hi: np.ndarray, n: int = 200) -> np.ndarray:
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    return np.stack([g0.ravel(), g1.ravel()], axis=1)


def _in_boxes(pts: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    if not len(boxes):
        return np.zeros(len(pts), dtype=bool)
    inside = (pts[:, None, :] >= boxes[None, :, 0] - 1e-12) & (pts[:, None, :] <= boxes[None, :, 1] + 1e-12)
    return inside.all(axis=2).any(axis=1)


@pytest.mark.slow
def test_preimage_is_sound_and_tight(moons: Model, tmp_path) -> None:
    res = bounds.run(moons, [Class(0, margin=0.5)], Box(), max_boxes=3000, plot=tmp_path / "moons.png")
    pre = res.info["preimage"][0]
    pts = _grid(*pre["domain"])
    with torch.no_grad():
        logits = moons(torch.as_tensor(pts, dtype=torch.float32)).double().numpy()
    reach = logits[:, 0] - logits[:, 1] >= 0.5
    over = _in_boxes(pts, np.concatenate([pre["inside"], pre["uncertain"]]))
    under = _in_boxes(pts, pre["inside"])
    assert reach.any() and (~reach).any()
    assert not np.any(reach & ~over), "a grid point reaching the set lies outside the over-approximation"
    assert not np.any(under & ~reach), "a grid point in a certified-inside box misses the set"
    item = res.items[0]
    assert item.status == "found"
    frac = reach.mean()
    assert item.metrics["fraction_under"] <= frac + 0.01 <= item.metrics["fraction_over"] + 0.02
    assert item.metrics["fraction_over"] - item.metrics["fraction_under"] < 0.25  # splitting really tightens
    x = res.inputs[0].double()
    assert float(moons(x[None].float())[0, 0] - moons(x[None].float())[0, 1]) >= 0.5
    img = Image.open(tmp_path / "moons.png")
    assert img.size == (600, 600)


def test_unreachable_set_is_proved_empty(moons: Model) -> None:
    impossible = OutputSet.linear([[1.0, 0.0]], [-1e4], label="y0 <= -1e4")
    res = bounds.run(moons, impossible, Box(), max_boxes=200)
    assert res.statuses == ["none-exists"]
    assert res.items[0].metrics["volume_over"] == 0.0
    assert torch.isnan(res.inputs).all()


def test_high_dimensional_input_is_refused() -> None:
    model = Model(nn.Sequential(nn.Linear(20, 2)), InputSpec((20,)), name="wide")
    with pytest.raises(NetinvertError, match="scales to about"):
        bounds.run(model, Class(0), Box())


class _Residual(nn.Module):
    def __init__(self, n_in: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(n_in, 10), nn.Linear(10, 10), nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.out(h + torch.relu(self.fc2(h)))


def _random_net(kind: str, n_in: int) -> nn.Module:
    if kind == "residual":
        return _Residual(n_in)
    act = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[kind]
    return nn.Sequential(nn.Linear(n_in, 10), act(), nn.Linear(10, 10), act(), nn.Linear(10, 3))


@pytest.mark.parametrize("n_in", [2, 3])
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "relu", "residual"])
def test_preimage_boxes_are_sound_on_random_nets(kind: str, n_in: int) -> None:
    """5,000 sampled points: every point reaching the set (a union of two disjuncts) lies in the
    inside + uncertain boxes, and every point of an inside box reaches it (float64 network)."""
    torch.manual_seed(3 + n_in)
    module = _random_net(kind, n_in).eval()
    model = Model(module, InputSpec((n_in,), low=-1.0, high=1.0), name=f"{kind}-{n_in}")
    pts = np.random.default_rng(n_in).uniform(-1.0, 1.0, (5000, n_in))
    with torch.no_grad():
        ys = module.double()(torch.as_tensor(pts)).numpy()
    module.float()
    q = lambda v, p: float(np.quantile(v, p))  # noqa: E731
    first = OutputSet.linear([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]], [q(ys[:, 0] - ys[:, 1], 0.4), q(ys[:, 2], 0.6)])
    second = OutputSet.linear([[0.0, -1.0, 1.0]], [q(ys[:, 2] - ys[:, 1], 0.2)])
    target = OutputSet.any_of([first, second])
    res = bounds.run(model, target, Box(), max_boxes=400)
    pre, item = res.info["preimage"][0], res.items[0]
    viol = target.violations(ys)
    over = _in_boxes(pts, np.concatenate([pre["inside"], pre["uncertain"]]))
    under = _in_boxes(pts, pre["inside"])
    assert (viol < 0).any() and (viol > 0).any()
    assert not np.any((viol < -1e-9) & ~over), "a sampled point reaching the set lies outside the over-approximation"
    assert not np.any(under & (viol > 1e-9)), "a sampled point of an inside box misses the set"
    assert under.any() and not over.all()  # both approximations say something
    assert item.status == "found" and item.metrics["batches"] >= 1 and item.metrics["max_depth"] >= 1
    assert item.metrics["fraction_under"] <= item.metrics["fraction_over"] < 1.0
