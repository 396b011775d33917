"""The ``bounds`` method on a tiny 2-D ReLU classifier trained here on make_moons."""

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
