"""Optimized relaxations and branch-and-bound on neuron splits (``solvers/neuron_split.py``): every line any
parameter gives bounds the activation; alpha-CROWN and sub-domain bounds (with split multipliers) never
exclude a sampled value; verdicts are never contradicted by sampling, and the search proves what CROWN alone
cannot."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from netinvert.methods import exact
from netinvert.solvers.bounds import smooth
from netinvert.solvers.network.read import from_torch
from netinvert.solvers.problem import torch_checker
from netinvert.solvers.search import neuron_split as ns
from netinvert.solvers.search.attack import pgd
from netinvert.targets.output_set import OutputSet

torch.set_num_threads(1)
ACTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}


def _intervals(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    l = torch.randn(n, generator=gen, dtype=torch.float64) * 5
    u = l + torch.rand(n, generator=gen, dtype=torch.float64) ** 3 * 14
    u[: n // 20] = l[: n // 20] + 1e-9  # narrow
    l[n // 20: n // 10], u[n // 20: n // 10] = -u[n // 20: n // 10].abs() - 0.01, 0.0  # ending at the inflection
    return l, u


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus", "relu"])
def test_every_parameter_gives_lines_that_bound_the_activation(activation: str) -> None:
    gen = torch.Generator().manual_seed(1)
    l, u = _intervals(gen, 3000)
    rel = ns.relaxation(activation, l[None], u[None])
    z = l[:, None] + torch.rand(3000, 200, generator=gen, dtype=torch.float64) * (u - l)[:, None]
    z = torch.cat([z, l[:, None], u[:, None]], dim=1)
    f = smooth.act(activation, z)
    tol = 1e-12 if activation == "relu" else 0.0  # ReLU's lines carry no slack: only the rounding of this check
    for t in (torch.zeros(1, 1, 3000), torch.ones(1, 1, 3000), torch.rand(1, 1, 3000, generator=gen)):
        t = t.to(torch.float64)
        al, cl, au, cu = (x[0, 0] if x.dim() == 3 else x[0] for x in rel.lines(t, t))
        assert float((al[:, None] * z + cl[:, None] - f).max()) <= tol, activation
        assert float((f - au[:, None] * z - cu[:, None]).max()) <= tol, activation
    assert bool(rel.free_lo.any()) and (activation == "relu" or activation == "softplus" or bool(rel.free_up.any()))


def _chain(rng: np.random.Generator, activations: list[str], n_in: int, width: int = 12, n_out: int = 3,
           gain: float = 4.0) -> nn.Sequential:
    sizes = [n_in, *[width] * len(activations), n_out]
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(rng.normal(size=lin.weight.shape) * gain / np.sqrt(sizes[i])))
            lin.bias.copy_(torch.as_tensor(rng.normal(size=lin.bias.shape)))
        mods.append(lin)
        if i < len(activations):
            mods.append(ACTS[activations[i]]())
    return nn.Sequential(*mods).double()


def _samples(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, n: int = 20000) -> np.ndarray:
    xs = rng.uniform(lo, hi, size=(n, lo.size))
    corners = np.where(rng.random((n // 4, lo.size)) < 0.5, lo, hi)  # extreme points matter most
    return np.vstack([xs, corners])


def _pre_activations(module: nn.Sequential, xs: np.ndarray) -> list[np.ndarray]:
    out, z = [], torch.as_tensor(xs)
    with torch.no_grad():
        for m in module:
            z = m(z)
            if isinstance(m, nn.Linear):
                out.append(z.numpy().copy())
    return out


MIXES = [["sigmoid"] * 3, ["tanh"] * 3, ["softplus", "sigmoid"], ["relu", "tanh", "sigmoid"]]


@pytest.mark.slow
@pytest.mark.parametrize("mix", MIXES, ids=["-".join(m) for m in MIXES])
def test_alpha_bounds_contain_sampled_values_and_beat_crown(mix: list[str]) -> None:
    rng = np.random.default_rng(len(mix) * 7 + len(mix[0]))
    gained = 0
    for _ in range(4):
        n_in = 20
        module = _chain(rng, mix, n_in)
        layers, activations = smooth.layers_and_activations(from_torch(module, (n_in,)))
        x0 = rng.normal(size=n_in)
        lo, hi = x0 - 0.3, x0 + 0.3
        xs = _samples(rng, lo, hi)
        zs = _pre_activations(module, xs)
        a = torch.as_tensor(rng.normal(size=(4, 3)))
        lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
        pre, spec = ns.alpha_bounds(layers, activations, lo_t, hi_t, a, torch.zeros(4, dtype=torch.float64), steps=25)
        for (l, u), z in zip(pre, zs):
            assert np.all(z >= l[0].numpy() - 1e-9) and np.all(z <= u[0].numpy() + 1e-9)
        assert np.all((zs[-1] @ a.numpy().T).min(axis=0) >= spec[0].numpy() - 1e-9)
        _, crown, *_ = smooth.crown(layers, activations, lo_t, hi_t, a, torch.zeros(4, dtype=torch.float64))
        assert np.all(spec[0].numpy() >= crown[0].numpy() - 1e-9)
        gained += int(np.sum(spec[0].numpy() > crown[0].numpy() + 1e-3))
    assert gained >= 4, gained  # optimized lines are tighter than CROWN's, not merely as tight


@pytest.mark.slow
def test_sub_domain_bounds_hold_on_the_inputs_that_meet_their_splits() -> None:
    """After some rounds of splitting, every sampled input whose pre-activations lie in a sub-domain's
    intervals has its row value at or above that sub-domain's bound (the split multipliers included)."""
    rng = np.random.default_rng(3)
    checked = 0
    for activations_ in (["sigmoid"] * 3, ["tanh", "softplus", "tanh"]):
        module = _chain(rng, activations_, 20)
        layers, activations = smooth.layers_and_activations(from_torch(module, (20,)))
        x0 = rng.normal(size=20)
        lo, hi = x0 - 0.4, x0 + 0.4
        xs = _samples(rng, lo, hi, 40000)
        zs = _pre_activations(module, xs)
        a = rng.normal(size=(2, 3))
        vals = zs[-1] @ a.T
        b = np.quantile(vals, 0.02, axis=0)  # reachable: the search keeps splitting (no candidate counts here)
        lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
        pre, _ = ns.intermediate(layers, activations, lo_t, hi_t)
        search = ns.NeuronSplitSearch(layers, activations, lo, hi, pre, a, b, lambda x: np.zeros(len(x), dtype=bool),
                                      batch=16, steps=6)
        search.run(3.0)
        pool = search.pool
        assert pool is not None and len(pool) > 4
        w = torch.softmax(pool.w, dim=-1).numpy()
        for d in range(len(pool)):
            inside = np.ones(len(xs), dtype=bool)
            for j, z in enumerate(zs[:-1]):
                inside &= np.all((z >= pool.lower[j][d].numpy() - 1e-12) & (z <= pool.upper[j][d].numpy() + 1e-12), 1)
            if inside.any():
                row = (vals[inside] - b) @ w[d]
                assert row.min() >= float(pool.val[d]) - 1e-9
                checked += 1
    assert checked >= 10, checked


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_exact_on_many_inputs_splits_neurons_and_is_never_contradicted(activation: str) -> None:
    """Thresholds between alpha-CROWN's bound and the best value an attack reaches (so the bounds alone cannot
    decide), and just above the attack's value (reachable): verdicts never contradict sampling or the network,
    and the split search proves some that the bounds alone leave open."""
    rng = np.random.default_rng({"sigmoid": 11, "tanh": 12}[activation])
    eps, gain = {"sigmoid": (0.12, 4.0), "tanh": (0.08, 2.0)}[activation]
    a = np.array([[1.0, -1.0]])
    verdicts = {"found": 0, "none-exists": 0, "unknown": 0}
    by_splits = 0
    for trial in range(6):
        module = _chain(rng, [activation] * 3, 24, width=10, n_out=2, gain=gain)
        net = from_torch(module, (24,))
        layers, activations = smooth.layers_and_activations(net)
        check = torch_checker(copy.deepcopy(module).float(), (24,))
        x0 = rng.normal(size=24)
        lo, hi = x0 - eps, x0 + eps
        far = 1e6  # a threshold no input reaches: the bound and the attack run their full course
        _, bound = ns.alpha_bounds(layers, activations, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None],
                                   torch.as_tensor(a), torch.full((1,), far, dtype=torch.float64), steps=30)
        low = float(bound[0, 0]) + far
        _, best = pgd(net, lo, hi, OutputSet.linear(a, np.full(1, -far)), time_limit=1.0, seed=trial)
        best -= far
        b = np.array([best + 0.02 * abs(best) + 0.01 if trial % 3 == 0 else low + 0.3 * (best - low)])
        target = OutputSet.linear(a, b)
        out = exact.solve_case(net, lo, hi, target, check, timeout=10)
        assert out.stats["search"] == "neuron-split"
        verdicts[out.status] += 1
        ys = module(torch.as_tensor(_samples(rng, lo, hi))).detach().numpy()
        if out.status == "none-exists":
            assert not np.any(target.violations(ys) <= 0), f"trial {trial}: none-exists but a sample reaches the set"
            by_splits += out.stage == "neuron-split"
        if out.status == "found":
            assert target.violations(net.forward(out.x[None]))[0] < 0
    assert verdicts["found"] >= 1, verdicts
    assert by_splits >= 2, verdicts  # the split search proved what the bounds alone could not
