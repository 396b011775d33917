"""Verification families of our own, written as VNN-COMP folders (``instances.csv``, ``known_results.csv``,
``onnx/``, ``vnnlib/``) that ``benchmarks/vnncomp_family.py`` runs.

    python benchmarks/families.py sigmoid-mnist [--out DIR]    # 6 x 200 sigmoid MLP on MNIST, eps 0.012, 30 specs
    python benchmarks/families.py control [--out DIR]          # Lyapunov-style specs on small control nets
    python benchmarks/families.py envelope [--out DIR]         # affine output envelopes of regression nets
    python benchmarks/families.py threshold [--out DIR]        # threshold crossings and disjunctive specs, 2-D inputs
    python benchmarks/families.py planted [--out DIR]          # nets with counterexamples hidden in small boxes

Every network is trained here, deterministically, from data that ships with the repository or lies in
``../shared/data`` (MNIST), and exported to ONNX; the folder defaults to
``$NETINVERT_HOME/benchmarks/families/<name>``. ``known_results.csv`` has a ``consensus`` column: ``sat`` where
the answer is known to be sat (a counterexample planted, found by a long attack or by the independent check here),
``unsat`` where it is known by construction or proved by that check (the low-dimensional families: an adaptive
grid with Jacobian enclosures, a MILP on piecewise-linear nets), and ``?`` otherwise; ``vnncomp_family.py`` counts a verdict that contradicts it as wrong.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netinvert.data.simulators import SIMULATORS
from netinvert.ground.store import cache_home

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ----------------------------------------------------------------------------------------------------- writing
def _num(v: float) -> str:
    return repr(float(v))


def write_vnnlib(path: Path, lo: np.ndarray, hi: np.ndarray, n_out: int,
                 disjuncts: Sequence[Sequence[tuple[np.ndarray, float]]], comment: str = "") -> None:
    """A VNNLIB file: the input box ``[lo, hi]`` and the unsafe set, a disjunction of conjunctions of rows
    ``a @ y <= b`` (the property holds when no input of the box reaches the set); a row longer than ``n_out``
    reads the inputs with its last coefficients (``a @ [y, x] <= b``, an affine envelope)."""
    lines = [f"; {comment}"] if comment else []
    lines += [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (l, h) in enumerate(zip(lo, hi)):
        lines.append(f"(assert (>= X_{i} {_num(l)}))")
        lines.append(f"(assert (<= X_{i} {_num(h)}))")

    def row(a: np.ndarray, b: float) -> str:
        terms = [f"(* {_num(c)} {f'Y_{j}' if j < n_out else f'X_{j - n_out}'})" for j, c in enumerate(a) if c != 0]
        lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
        return f"(<= {lhs} {_num(b)})"

    conj = [rows[0] and (row(*rows[0]) if len(rows) == 1 else f"(and {' '.join(row(a, b) for a, b in rows)})")
            for rows in disjuncts]
    lines.append(f"(assert {conj[0]})" if len(conj) == 1 else f"(assert (or {' '.join(conj)}))")
    path.write_text("\n".join(lines) + "\n")


def export_onnx(module: nn.Module, n_in: int, path: Path) -> None:
    """The module as an ONNX file with a flat input (1, n_in)."""
    module.eval()
    torch.onnx.export(module, torch.zeros(1, n_in), str(path), input_names=["input"], output_names=["output"],
                      dynamo=False)


class Family:
    """Collects a family's instances and writes its CSV files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "onnx").mkdir(parents=True, exist_ok=True)
        (folder / "vnnlib").mkdir(parents=True, exist_ok=True)
        self.rows: list[tuple[str, str, float, str]] = []

    def add(self, onnx_name: str, spec_name: str, timeout: float, consensus: str) -> Path:
        self.rows.append((f"onnx/{onnx_name}", f"vnnlib/{spec_name}", timeout, consensus))
        return self.folder / "vnnlib" / spec_name

    def write(self) -> None:
        with (self.folder / "instances.csv").open("w", newline="") as f:
            csv.writer(f).writerows([(o, v, f"{t:g}") for o, v, t, _ in self.rows])
        with (self.folder / "known_results.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["onnx", "vnnlib", "consensus"])
            w.writerows([(Path(o).name, Path(v).name, c) for o, v, _, c in self.rows])
        print(f"{len(self.rows)} instances in {self.folder}")


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable[..., torch.Tensor], *, epochs: int,
           lr: float = 1e-3, batch: int = 128, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss_fn(net(x[idx]), y[idx]).backward()
            opt.step()


def attack_finds(net: nn.Module, lo: np.ndarray, hi: np.ndarray, violation: Callable[[torch.Tensor], torch.Tensor],
                 *, restarts: int = 64, steps: int = 400, seed: int = 0) -> bool:
    """Whether a long projected-gradient attack finds a point of the box with ``violation(net(x)) < 0``."""
    gen = torch.Generator().manual_seed(seed)
    lo_t, hi_t = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    x = (lo_t + (hi_t - lo_t) * torch.rand(restarts, len(lo), generator=gen)).requires_grad_(True)
    step = (hi_t - lo_t) / 20
    for k in range(steps):
        v = violation(net(x))
        if bool((v < 0).any()):
            return True
        (g,) = torch.autograd.grad(v.sum(), x)
        with torch.no_grad():
            x -= step * (0.98 ** k) * g.sign()
            x.copy_(torch.maximum(torch.minimum(x, hi_t), lo_t))
    return False


# ------------------------------------------------------------------------------------------------ the families
def sigmoid_mnist(folder: Path, *, count: int = 30, eps: float = 0.012, timeout: float = 60.0) -> None:
    """A 6 x 200 sigmoid MLP (inputs normalized inside the network) on MNIST, L-inf eps around held-out images.

    Trained on the first 8000 images of the MNIST test set that ``../shared/data/mnist`` holds; the specs take the
    first ``count`` of the last 2000 that the network classifies correctly. The unsafe set: some other logit is
    at least the true one.
    """
    from netinvert.data.mnist import load_mnist

    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = load_mnist(SHARED / "mnist", held_out=2000, seed=0)
    xt = torch.as_tensor(x_train).reshape(len(x_train), -1)
    yt = torch.as_tensor(y_train)
    mean, std = 0.1307, 0.3081
    layers: list[nn.Module] = []
    width = 784
    for _ in range(6):
        layers += [nn.Linear(width, 200), nn.Sigmoid()]
        width = 200
    body = nn.Sequential(*layers, nn.Linear(200, 10))

    class Normalized(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body((x - mean) / std)

    net = Normalized()
    _train(net, xt, yt, nn.functional.cross_entropy, epochs=100, lr=3e-3)
    net.eval()
    xs = torch.as_tensor(x_test).reshape(len(x_test), -1)
    with torch.no_grad():
        pred = net(xs).argmax(1).numpy()
    acc = float((pred == y_test).mean())
    print(f"sigmoid 6x200: held-out accuracy {acc:.4f}")
    fam = Family(folder)
    name = "mnist_sigmoid_6x200.onnx"
    export_onnx(net, 784, folder / "onnx" / name)
    picked = [i for i in range(len(y_test)) if pred[i] == y_test[i]][:count]
    for i in picked:
        x0 = x_test[i].reshape(-1).astype(np.float64)
        lo, hi = np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1)
        k = int(y_test[i])
        disjuncts = []
        for j in range(10):
            if j != k:
                a = np.zeros(10)
                a[k], a[j] = 1.0, -1.0
                disjuncts.append([(a, 0.0)])  # y_k - y_j <= 0
        found = attack_finds(net, lo, hi, lambda y, k=k: (y[:, k:k + 1] - y).masked_fill(
            torch.arange(10) == k, float("inf")).min(1).values)
        spec = fam.add(name, f"img_{i}_eps_{eps}.vnnlib", timeout, "sat" if found else "?")
        write_vnnlib(spec, lo, hi, 10, disjuncts, f"MNIST held-out image {i}, label {k}, L-inf eps {eps}")
    fam.write()

# ------------------------------------------------------------------------------------------------------ planted
_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
# (name, data, activation, hidden widths, eps of the spec boxes): two networks per input size
_PLANTED_NETS = [
    ("relu_2", "moons", "relu", (32, 32), 0.1),
    ("tanh_2", "moons", "tanh", (32, 32), 0.1),
    ("relu_5", "blobs", "relu", (32, 32), 0.15),
    ("sigmoid_5", "blobs", "sigmoid", (32, 32), 0.15),
    ("relu_784", "mnist", "relu", (64, 32), 0.01),
    ("sigmoid_784", "mnist", "sigmoid", (64, 32), 0.01),
]
# the planted box's half-width in each input, as a fraction of the spec box's width there: the attack's signed
# steps shrink from 0.25 to 0.001 of the width, so the last two are smaller than its smallest step
_PLANTED_SIZES = (0.05, 0.005, 0.0005, 0.0005)
_NEAR_MISS_SIZES = (0.05, 0.005)  # unsat: the planted box just outside the spec box (inputs up to 5 only)


def _planted_data(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float] | None]:
    """(x_train, y_train, x_test, y_test, input range or None): two moons (2-D), three Gaussian classes (5-D,
    standardized) from scikit-learn's generators, or MNIST (784, in [0, 1])."""
    if kind == "mnist":
        from netinvert.data.mnist import load_mnist

        x_train, y_train, x_test, y_test = load_mnist(SHARED / "mnist", held_out=2000, seed=0)
        flat = lambda a: a.reshape(len(a), -1).astype(np.float64)  # noqa: E731
        return flat(x_train), y_train.astype(np.int64), flat(x_test), y_test.astype(np.int64), (0.0, 1.0)
    from sklearn.datasets import make_classification, make_moons

    if kind == "moons":
        x, y = make_moons(n_samples=3000, noise=0.1, random_state=0)
    else:
        x, y = make_classification(n_samples=4000, n_features=5, n_informative=5, n_redundant=0, n_classes=3,
                                   n_clusters_per_class=1, class_sep=2.0, random_state=0)
        x = (x - x.mean(0)) / x.std(0)
    return x[:-500], y[:-500].astype(np.int64), x[-500:], y[-500:].astype(np.int64), None


def _affine(net: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
            for m in net if isinstance(m, nn.Linear)]


def _plant(base: nn.Sequential, act: str, c: np.ndarray, half: np.ndarray, j: int, height: float) -> nn.Sequential:
    """``base`` (Linear, act, Linear, act, Linear) with a bump merged into its layers (block-diagonal, so the result
    is again a plain two-hidden-layer MLP): output ``j`` rises by ``height`` near ``c`` and by (almost) nothing
    outside the box ``c +- half``.

    ReLU: the tent ``relu(1 - sum_i |x_i - c_i| / half_i)`` (``|z| = relu(z) + relu(-z)``), exactly 0 outside an
    L1 ball inside the box and exactly 1 at ``c``. Sigmoid / tanh: per input a window ``s(k (x_i - c_i + h_i)) -
    s(k (x_i - c_i - h_i))`` (k h_i = 12), about 1 inside the box and 0 outside, and a second unit that is about 1
    only when every window is (``s(16 (sum windows - n + 0.5))``).
    """
    (w1, b1), (w2, b2), (w3, b3) = _affine(base)
    n, h1, h2 = w1.shape[1], w1.shape[0], w2.shape[0]
    eye = np.eye(n)
    if act == "relu":
        u1, c1 = np.vstack([eye, -eye]), np.concatenate([-c, c])
        u2, c2 = -np.concatenate([1 / half, 1 / half])[None], np.ones(1)
        gain, shift = height, 0.0
    else:
        k = 12.0 / half
        u1, c1 = np.vstack([eye * k[:, None], eye * k[:, None]]), np.concatenate([-k * (c - half), -k * (c + half)])
        scale = 16.0 if act == "sigmoid" else 8.0  # tanh windows are differences of values in (-1, 1)
        u2, c2 = np.concatenate([np.full(n, scale), np.full(n, -scale)])[None], np.array([-16.0 * (n - 0.5)])
        gain, shift = (height, 0.0) if act == "sigmoid" else (height / 2, height / 2)  # tanh unit in (-1, 1)
    layers = [
        (np.vstack([w1, u1]), np.concatenate([b1, c1])),
        (np.block([[w2, np.zeros((h2, 2 * n))], [np.zeros((1, h1)), u2]]), np.concatenate([b2, c2])),
        (np.hstack([w3, gain * np.eye(len(b3))[:, [j]]]), b3 + shift * np.eye(len(b3))[j]),
    ]
    mods: list[nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin] + ([_ACTS[act]()] if i < 2 else [])
    return nn.Sequential(*mods)


def _ibp_margin(net: nn.Sequential, act: str, lo: np.ndarray, hi: np.ndarray, k: int, cells: int) -> float:
    """A sound lower bound (interval arithmetic in float64 on ``cells`` cells per input) of the smallest
    ``y_k - y_j`` (j != k) over the box: positive means no input of the box reaches another class."""
    idx = np.indices((cells,) * len(lo)).reshape(len(lo), -1).T if cells > 1 else np.zeros((1, len(lo)), int)
    clo, chi = lo + (hi - lo) * idx / cells, lo + (hi - lo) * (idx + 1) / cells
    chi[idx == cells - 1] = np.broadcast_to(hi, chi.shape)[idx == cells - 1]  # the box's own upper face
    from scipy.special import expit

    f = {"relu": lambda z: np.maximum(z, 0), "sigmoid": expit, "tanh": np.tanh}[act]
    layers = _affine(net)
    for w, b in layers[:-1]:
        mid, rad = (clo + chi) / 2 @ w.T + b, (chi - clo) / 2 @ np.abs(w).T
        clo, chi = f(mid - rad), f(mid + rad)  # monotone activations
    w, b = layers[-1]
    worst = np.inf
    for j in range(len(b)):
        if j != k:
            a = w[k] - w[j]
            low = (clo + chi) / 2 @ a - (chi - clo) / 2 @ np.abs(a) + b[k] - b[j]
            worst = min(worst, float(low.min()))
    return worst - 1e-9  # float64 rounding


def planted(folder: Path, *, timeout: float = 30.0) -> None:
    """Trained classifiers whose counterexamples are hidden on purpose (falsification that never lies).

    Six networks (ReLU and sigmoid/tanh, 2, 5 and 784 inputs, two hidden layers) are trained on two moons, three
    Gaussian classes or MNIST; each spec is an L-inf box of ``eps`` around a held-out point that the trained net
    classifies robustly (certified independently of netinvert's solvers by interval arithmetic on a grid of cells;
    on MNIST over the whole box). Each instance's network is the trained net with one bump merged into its layers
    (:func:`_plant`) that lifts the runner-up logit over the true one only inside a small box around a point ``c``
    of the spec box, half as wide as ``_PLANTED_SIZES`` of the box's width: so every counterexample lies in that
    box (consensus ``sat``, checked at ``c`` with onnxruntime in float32 and with the module in float64), and a
    long gradient attack finds none. Near-miss instances (inputs up to 5) put the bump just outside the spec box
    (three half-widths beyond one face); their interval-arithmetic bound over the whole network stays positive
    (consensus ``unsat``).
    """
    import onnxruntime as ort

    from netinvert.targets.vnnlib import read_vnnlib

    fam = Family(folder)
    rng = np.random.default_rng(0)
    data: dict[str, tuple] = {}
    for name, kind, act, widths, eps in _PLANTED_NETS:
        if kind not in data:
            data[kind] = _planted_data(kind)
        x_train, y_train, x_test, y_test, domain = data[kind]
        n, classes = x_train.shape[1], int(y_train.max()) + 1
        torch.manual_seed(0)
        base = nn.Sequential(nn.Linear(n, widths[0]), _ACTS[act](), nn.Linear(widths[0], widths[1]), _ACTS[act](),
                             nn.Linear(widths[1], classes))
        _train(base, torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(y_train),
               nn.functional.cross_entropy, epochs=30 if kind == "mnist" else 60, lr=3e-3)
        base.eval()
        with torch.no_grad():
            pred = base(torch.as_tensor(x_test, dtype=torch.float32)).argmax(1).numpy()
        print(f"{name}: held-out accuracy {float((pred == y_test).mean()):.4f}")
        cells = {2: 64, 5: 8}.get(n, 1)
        boxes = []
        for i in range(len(x_test)):
            if pred[i] != y_test[i]:
                continue
            lo, hi = x_test[i] - eps, x_test[i] + eps
            if domain is not None:
                lo, hi = np.clip(lo, *domain), np.clip(hi, *domain)
            lo, hi = lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)
            if _ibp_margin(base, act, lo, hi, int(y_test[i]), cells) > 0:
                boxes.append((i, lo, hi, int(y_test[i])))
            if len(boxes) == len(_PLANTED_SIZES) + (len(_NEAR_MISS_SIZES) if n <= 5 else 0):
                break
        else:
            raise SystemExit(f"{name}: only {len(boxes)} held-out boxes certified robust; lower eps")
        plans = [(size, False) for size in _PLANTED_SIZES] + [(size, True) for size in _NEAR_MISS_SIZES if n <= 5]
        for (i, lo, hi, k), (size, near_miss) in zip(boxes, plans):
            half = size * (hi - lo)
            c = lo + (hi - lo) * rng.uniform(0.15, 0.85, n)
            if near_miss:
                d = int(rng.integers(n))
                c[d] = hi[d] + 3 * half[d]
            c = c.astype(np.float32).astype(np.float64)  # exact in float32, so the bump's first layer is 0 at c
            with torch.no_grad():
                y_c = base(torch.as_tensor(c, dtype=torch.float32)[None])[0].double().numpy()
            j = int(np.argmax(np.where(np.arange(classes) == k, -np.inf, y_c)))
            height = 1.5 * float(y_c[k] - y_c[j]) + 0.5
            net = _plant(base, act, c, half, j, height).eval()
            tag = "near-miss" if near_miss else "planted"
            onnx_name = f"{name}_{tag}_{i}_{size:g}.onnx"
            export_onnx(net, n, folder / "onnx" / onnx_name)
            disjuncts = []
            for jj in range(classes):
                if jj != k:
                    a = np.zeros(classes)
                    a[k], a[jj] = 1.0, -1.0
                    disjuncts.append([(a, 0.0)])  # y_k - y_jj <= 0
            violation = lambda y, k=k: (y[:, k:k + 1] - y).masked_fill(  # noqa: E731
                torch.arange(classes) == k, float("inf")).min(1).values
            attack = attack_finds(net, lo, hi, violation)
            if near_miss:
                bound = _ibp_margin(net, act, lo, hi, k, cells)
                if bound <= 0 or attack:
                    raise SystemExit(f"{onnx_name}: near-miss not certified (bound {bound:.3g}, attack {attack})")
                consensus, note = "unsat", f"bump just outside the box; interval bound {bound:.3g} > 0"
            else:
                consensus, note = "sat", f"counterexample planted at c (half-width {size:g} of the box)"
            spec = fam.add(onnx_name, f"{name}_{tag}_{i}_{size:g}.vnnlib", timeout, consensus)
            write_vnnlib(spec, lo, hi, classes, disjuncts,
                         f"{name}: held-out point {i}, class {k}, L-inf eps {eps}; {note}; "
                         f"a long attack {'finds' if attack else 'finds no'} counterexample")
            if not near_miss:  # the planted point is a counterexample of the files as written
                case = read_vnnlib(spec).cases[0]
                sess = ort.InferenceSession(str(folder / "onnx" / onnx_name), providers=["CPUExecutionProvider"])
                y32 = sess.run(None, {sess.get_inputs()[0].name: c.astype(np.float32)[None]})[0][0]
                with torch.no_grad():
                    y64 = net.double()(torch.from_numpy(c)[None])[0].numpy()
                inside = bool(np.all(c >= case.lo) and np.all(c <= case.hi))
                if not (inside and case.output.contains(y32.astype(np.float64))[0] and case.output.contains(y64)[0]):
                    raise SystemExit(f"{onnx_name}: the planted point is not a counterexample")
            print(f"  {onnx_name}: {consensus}, bump height {height:.2f} on logit {j}, "
                  f"long attack {'finds one' if attack else 'finds none'}", flush=True)
    fam.write()


# ------------------------------------------------------------- low-dimensional families: the independent check
class Span:
    """What each unit of a network takes over a batch of input cells: an interval ``[lo, hi]`` (C, k) and an
    interval ``jc +- jr`` (C, k, d) holding the unit's partial derivatives everywhere in the cell (a Jacobian
    enclosure), so that ``|v(x) - v(c) | <= sum_i (|jc_i| + jr_i) |x_i - c_i|`` there (the mean value theorem).
    Float64; it backs the ``unsat`` consensus of the low-dimensional families (``lipschitz_verdict``) and shares
    no code with the solver."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, jc: torch.Tensor, jr: torch.Tensor) -> None:
        self.lo, self.hi, self.jc, self.jr = lo, hi, jc, jr

    @staticmethod
    def cells(lo: torch.Tensor, hi: torch.Tensor) -> Span:
        """The input itself over cells ``[lo, hi]`` (C, d)."""
        d = lo.shape[1]
        eye = torch.eye(d, dtype=lo.dtype).expand(len(lo), d, d).clone()
        return Span(lo, hi, eye, torch.zeros_like(eye))

    def linear(self, w: torch.Tensor, b: torch.Tensor | None = None) -> Span:
        w = w.to(self.lo.dtype)
        centre = (self.lo + self.hi) / 2 @ w.T + (0.0 if b is None else b.to(self.lo.dtype))
        radius = (self.hi - self.lo) / 2 @ w.abs().T
        return Span(centre - radius, centre + radius, torch.einsum("ok,ckd->cod", w, self.jc),
                    torch.einsum("ok,ckd->cod", w.abs(), self.jr))

    def __add__(self, other: Span) -> Span:
        return Span(self.lo + other.lo, self.hi + other.hi, self.jc + other.jc, self.jr + other.jr)

    def __sub__(self, other: Span) -> Span:
        return Span(self.lo - other.hi, self.hi - other.lo, self.jc - other.jc, self.jr + other.jr)

    def __mul__(self, c: float) -> Span:
        lo, hi = self.lo * c, self.hi * c
        return Span(torch.minimum(lo, hi), torch.maximum(lo, hi), self.jc * c, self.jr * abs(c))

    __rmul__ = __mul__

    def shift(self, c: float | torch.Tensor) -> Span:
        return Span(self.lo + c, self.hi + c, self.jc, self.jr)

    def col(self, i: int) -> Span:
        return Span(self.lo[:, i:i + 1], self.hi[:, i:i + 1], self.jc[:, i:i + 1], self.jr[:, i:i + 1])

    def _through(self, lo: torch.Tensor, hi: torch.Tensor, slo: torch.Tensor, shi: torch.Tensor) -> Span:
        """The unit's image ``[lo, hi]`` and, by the chain rule, its derivative interval: the slope's interval
        ``[slo, shi]`` times the derivatives' interval (the extremes of the four products)."""
        a, b = (self.jc - self.jr), (self.jc + self.jr)
        s1, s2 = slo.unsqueeze(-1), shi.unsqueeze(-1)
        prods = torch.stack([s1 * a, s1 * b, s2 * a, s2 * b])
        jlo, jhi = prods.amin(0), prods.amax(0)
        return Span(lo, hi, (jlo + jhi) / 2, (jhi - jlo) / 2)

    def relu(self) -> Span:
        one = torch.ones_like(self.lo)
        return self._through(self.lo.clamp_min(0), self.hi.clamp_min(0), one * (self.lo > 0), one * (self.hi > 0))

    def tanh(self) -> Span:
        far = torch.maximum(self.lo.abs(), self.hi.abs())
        near = torch.where((self.lo < 0) & (self.hi > 0), torch.zeros_like(far),
                           torch.minimum(self.lo.abs(), self.hi.abs()))
        return self._through(torch.tanh(self.lo), torch.tanh(self.hi), 1 - torch.tanh(far) ** 2,
                             1 - torch.tanh(near) ** 2)

    def sin(self) -> Span:
        return self._periodic(torch.sin, torch.cos)

    def cos(self) -> Span:
        return self._periodic(torch.cos, lambda z: -torch.sin(z))

    def _periodic(self, f: Callable[[torch.Tensor], torch.Tensor],
                  df: Callable[[torch.Tensor], torch.Tensor]) -> Span:
        """sin or cos: both and their derivatives are 1-Lipschitz, so each moves at most the half-width from the
        centre."""
        mid, rad = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
        v, s = f(mid), df(mid)
        return self._through((v - rad).clamp_min(-1), (v + rad).clamp_max(1), (s - rad).clamp_min(-1),
                             (s + rad).clamp_max(1))

    def square(self) -> Span:
        big = torch.maximum(self.lo.abs(), self.hi.abs())
        small = torch.where((self.lo < 0) & (self.hi > 0), torch.zeros_like(big),
                            torch.minimum(self.lo.abs(), self.hi.abs()))
        return self._through(small ** 2, big ** 2, 2 * self.lo, 2 * self.hi)

    @staticmethod
    def cat(parts: Sequence[Span]) -> Span:
        return Span(*(torch.cat([getattr(p, f) for p in parts], 1) for f in ("lo", "hi", "jc", "jr")))


class Affine:
    """Units of a piecewise-linear computation on one box as affine expressions ``coef @ v + const`` over the
    variables ``v`` of a MILP (``Milp``: the inputs, then per ReLU that may change sign a continuous output and a
    binary phase, big-M with the interval bounds ``[lo, hi]`` every unit carries). Backs the ``unsat`` consensus
    of piecewise-linear closed loops, where the Jacobian enclosure of ``Span`` is too loose (``milp_verdict``)."""

    def __init__(self, milp: Milp, coef: np.ndarray, const: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        self.milp, self.coef, self.const = milp, coef, const
        low, high = milp.range(coef, const)  # the tighter of the two enclosures
        self.lo, self.hi = np.maximum(lo, low), np.minimum(hi, high)

    def _wide(self) -> np.ndarray:
        return np.pad(self.coef, ((0, 0), (0, self.milp.size - self.coef.shape[1])))

    def linear(self, w: torch.Tensor, b: torch.Tensor | None = None) -> Affine:
        w_ = w.detach().double().numpy()
        b_ = np.zeros(len(w_)) if b is None else b.detach().double().numpy()
        mid, rad = w_ @ (self.lo + self.hi) / 2 + b_, np.abs(w_) @ (self.hi - self.lo) / 2
        return Affine(self.milp, w_ @ self._wide(), w_ @ self.const + b_, mid - rad, mid + rad)

    def __add__(self, other: Affine) -> Affine:
        return Affine(self.milp, self._wide() + other._wide(), self.const + other.const, self.lo + other.lo,
                      self.hi + other.hi)

    def __sub__(self, other: Affine) -> Affine:
        return self + other * -1.0

    def __mul__(self, c: float) -> Affine:
        return Affine(self.milp, self._wide() * c, self.const * c, np.minimum(self.lo * c, self.hi * c),
                      np.maximum(self.lo * c, self.hi * c))

    __rmul__ = __mul__

    def shift(self, c: float | torch.Tensor) -> Affine:
        c_ = np.asarray(c, dtype=np.float64).reshape(-1)
        return Affine(self.milp, self._wide(), self.const + c_, self.lo + c_, self.hi + c_)

    def col(self, i: int) -> Affine:
        return Affine(self.milp, self._wide()[i:i + 1], self.const[i:i + 1], self.lo[i:i + 1], self.hi[i:i + 1])

    def relu(self) -> Affine:
        rows: list[tuple[np.ndarray, float]] = []
        for j, (l, h) in enumerate(zip(self.lo, self.hi)):
            if l >= 0 or h <= 0:
                rows.append((self._wide()[j] * (l >= 0), self.const[j] * (l >= 0)))
                continue
            y, z = self.milp.var(0.0, h), self.milp.var(0.0, 1.0, integer=True)
            e = lambda i: np.eye(self.milp.size)[i]  # noqa: E731
            x = self._wide()[j]
            self.milp.row(e(y) - x, self.const[j], np.inf)  # y >= x
            self.milp.row(e(y) - x - l * e(z), -np.inf, self.const[j] - l)  # y <= x - l (1 - z)
            self.milp.row(e(y) - h * e(z), -np.inf, 0.0)  # y <= h z
            rows.append((e(y), 0.0))
        coef = np.stack([np.pad(r, (0, self.milp.size - len(r))) for r, _ in rows])
        const = np.array([c for _, c in rows])
        return Affine(self.milp, coef, const, np.maximum(self.lo, 0), np.maximum(self.hi, 0))

    @staticmethod
    def cat(parts: Sequence[Affine]) -> Affine:
        m = parts[0].milp
        return Affine(m, np.vstack([np.pad(p.coef, ((0, 0), (0, m.size - p.coef.shape[1]))) for p in parts]),
                      np.concatenate([p.const for p in parts]), np.concatenate([p.lo for p in parts]),
                      np.concatenate([p.hi for p in parts]))


class Milp:
    """The variables (bounds, integrality) and rows ``lb <= a @ v <= ub`` that ``Affine`` values add."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lb, self.ub = [float(v) for v in lo], [float(v) for v in hi]
        self.integer: list[int] = [0] * len(lo)
        self.rows: list[tuple[np.ndarray, float, float]] = []

    @property
    def size(self) -> int:
        return len(self.lb)

    def var(self, lb: float, ub: float, integer: bool = False) -> int:
        self.lb.append(float(lb))
        self.ub.append(float(ub))
        self.integer.append(int(integer))
        return self.size - 1

    def row(self, a: np.ndarray, lb: float, ub: float) -> None:
        self.rows.append((a, lb, ub))

    def inputs(self) -> Affine:
        d = self.size
        return Affine(self, np.eye(d), np.zeros(d), np.array(self.lb), np.array(self.ub))

    def range(self, coef: np.ndarray, const: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lb, ub = np.array(self.lb[:coef.shape[1]]), np.array(self.ub[:coef.shape[1]])
        pos, neg = np.clip(coef, 0, None), np.clip(coef, None, 0)
        return const + pos @ lb + neg @ ub, const + pos @ ub + neg @ lb


def milp_verdict(affine: Callable[[Affine], Affine], lo: np.ndarray, hi: np.ndarray,
                 disjuncts: Sequence[Sequence[tuple[np.ndarray, float]]], *, margin: float = 1e-6,
                 time_limit: float = 60.0) -> tuple[str, list[np.ndarray]]:
    """``unsat`` or ``?`` for the question of ``lipschitz_verdict`` on a piecewise-linear computation, and the
    points that may be counterexamples: per disjunct, SciPy's MILP (HiGHS) minimizes the largest row
    ``a @ [y, x] - b``; the disjunct is refuted when HiGHS's dual bound exceeds ``margin``, else its optimal
    point is a candidate (for ``lipschitz_verdict``'s float32 check)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    m = Milp(lo, hi)
    out = affine(m.inputs())
    d, n_out = len(lo), len(out.const)
    out_coef = np.pad(out.coef, ((0, 0), (0, m.size - out.coef.shape[1])))
    refuted, points = 0, []
    for conj in disjuncts:
        size = m.size + 1  # the variables and t
        rows = [(np.pad(a, (0, size - len(a))), lb, ub) for a, lb, ub in m.rows]
        for a, b in conj:
            a = np.pad(np.asarray(a, dtype=np.float64), (0, n_out + d - len(a)))
            r = a[:n_out] @ out_coef
            r[:d] += a[n_out:]
            rows.append((np.append(r, -1.0), -np.inf, b - a[:n_out] @ out.const))  # row - b <= t
        a_mat = np.stack([r for r, _, _ in rows])
        res = milp(np.eye(size)[-1], constraints=LinearConstraint(a_mat, [r[1] for r in rows], [r[2] for r in rows]),
                   integrality=np.array(m.integer + [0]), bounds=Bounds(m.lb + [-np.inf], m.ub + [np.inf]),
                   options={"time_limit": time_limit, "mip_rel_gap": 0.0})
        if res.status in (0, 1) and getattr(res, "mip_dual_bound", None) is not None and res.mip_dual_bound > margin:
            refuted += 1
        elif res.x is not None:
            points.append(res.x[:d])
    return ("unsat" if refuted == len(disjuncts) else "?"), points


Value = torch.Tensor | Span | Affine


def through(module: nn.Module, v: Value) -> Value:
    """``module`` (a Sequential of Linear, ReLU and Tanh layers) on a tensor, or its ``Span`` over cells."""
    if isinstance(v, torch.Tensor):
        return module(v)
    for layer in module.modules() if not isinstance(module, nn.Sequential) else module:
        if isinstance(layer, nn.Linear):
            v = v.linear(layer.weight.detach(), None if layer.bias is None else layer.bias.detach())
        elif isinstance(layer, nn.ReLU):
            v = v.relu()
        elif isinstance(layer, nn.Tanh):
            v = v.tanh()
        else:
            raise TypeError(f"no span for {type(layer).__name__}")
    return v


def lipschitz_verdict(model: nn.Module, span: Callable[[Span], Span], check32: Callable[[np.ndarray], np.ndarray],
                      lo: np.ndarray, hi: np.ndarray, n_out: int,
                      disjuncts: Sequence[Sequence[tuple[np.ndarray, float]]], *, budget: int = 400_000,
                      batch: int = 16384, margin: float = 1e-4, tries: np.ndarray | None = None) -> str:
    """``sat``, ``unsat`` or ``?`` for "some x in [lo, hi] has ``a @ [y, x] <= b`` for every row of some disjunct".

    An adaptive grid: every cell is judged at its centre (float64) with the ``Span`` bound on each row's
    derivatives, ``row(x) >= row(c) - sum_i lip_i w_i / 2``; a disjunct is refuted on the cell when one of its
    rows stays above 1e-9 there. Cells with a disjunct left open are halved along the dimension where the open
    rows move most, up to ``budget`` cells. ``sat`` needs a centre where every row of a disjunct is at most
    ``-margin`` in float64 and in float32 (``check32``, onnxruntime on the exported file), or such a point
    among ``tries`` (points found by other means); ``unsat`` every cell refuted.
    """
    d = len(lo)
    m64 = copy.deepcopy(model).double().eval()
    rows = [(np.pad(np.asarray(a, dtype=np.float64), (0, n_out + d - len(a))), float(b)) for conj in disjuncts
            for a, b in conj]
    a_t = torch.tensor(np.stack([a for a, _ in rows]))
    b_t = torch.tensor([b for _, b in rows], dtype=torch.float64)
    owner = torch.tensor([k for k, conj in enumerate(disjuncts) for _ in conj])
    member = torch.nn.functional.one_hot(owner).to(torch.float64)  # (R, K)
    sizes = member.sum(0)

    def witness(x: np.ndarray) -> bool:  # a float32 point of the box: every row of a disjunct <= -margin in both
        x32 = np.clip(x, lo, hi).astype(np.float32)
        x32 = np.where(x32 < lo, np.nextafter(x32, np.float32(np.inf)), x32)
        x32 = np.where(x32 > hi, np.nextafter(x32, np.float32(-np.inf)), x32).astype(np.float64)
        with torch.no_grad():
            y64 = m64(torch.tensor(x32[None]))[0].numpy()
        held = [((np.concatenate([y, x32]) @ a_t.numpy().T - b_t.numpy() <= -margin) @ member.numpy()) == sizes.numpy()
                for y in (y64, check32(x32))]
        return bool(np.any(held[0] & held[1]))

    if tries is not None and any(witness(np.asarray(x, dtype=np.float64)) for x in tries):
        return "sat"
    los, his = torch.tensor(lo, dtype=torch.float64)[None], torch.tensor(hi, dtype=torch.float64)[None]
    seen = 0
    with torch.no_grad():
        while len(los):
            if seen >= budget:
                return "?"
            l, h, los, his = los[:batch], his[:batch], los[batch:], his[batch:]
            seen += len(l)
            c = (l + h) / 2
            v = torch.cat([m64(c), c], 1) @ a_t.T - b_t  # (C, R)
            s = span(Span.cells(l, h))
            jac = torch.einsum("rk,ckd->crd", a_t[:, :n_out], s.jc) + a_t[:, n_out:]  # each row's derivatives
            lip_rows = jac.abs() + torch.einsum("rk,ckd->crd", a_t[:, :n_out].abs(), s.jr)
            low = v - (lip_rows * ((h - l) / 2)[:, None, :]).sum(-1)
            refuted = ((low > 1e-9).to(torch.float64) @ member) > 0  # (C, K)
            sure = (((v <= -margin).to(torch.float64) @ member) == sizes)  # every row of a disjunct
            if any(witness(c[i].numpy()) for i in torch.nonzero(sure.any(1)).flatten().tolist()):
                return "sat"
            open_ = ~refuted.all(1)
            if not open_.any():
                continue
            l, h = l[open_], h[open_]
            live = (~refuted[open_]).to(torch.float64) @ member.T  # (C, R): rows of the disjuncts left open
            score = ((lip_rows[open_] * live[..., None]).sum(1) + 1e-12) * (h - l)
            dim = score.argmax(1)
            idx = torch.arange(len(l))
            mid = (l[idx, dim] + h[idx, dim]) / 2
            h1, l2 = h.clone(), l.clone()
            h1[idx, dim], l2[idx, dim] = mid, mid
            los, his = torch.cat([los, l, l2]), torch.cat([his, h1, h])
    return "unsat"


def ort_check(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime's float32 outputs (flat, float64) of the ONNX file at ``path`` for one flat input."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.asarray(x, dtype=np.float32).reshape(1, -1)})[0].reshape(-1).astype(
        np.float64)


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: Sequence[int], act: type[nn.Module] = nn.ReLU, *, epochs: int = 200,
            lr: float = 3e-3, seed: int = 0, classes: int = 0) -> nn.Sequential:
    """An MLP trained on standardized ``x`` (MSE on standardized ``y``, or cross-entropy over ``classes``), the
    standardization folded into its first and last layers, so the network reads and writes raw values."""
    torch.manual_seed(seed)
    mx, sx = x.mean(0), x.std(0) + 1e-12
    sizes = [x.shape[1], *hidden, classes or y.shape[1]]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), act()]
    net = nn.Sequential(*layers[:-1])
    xt = torch.tensor((x - mx) / sx, dtype=torch.float32)
    if classes:
        _train(net, xt, torch.tensor(y, dtype=torch.long), nn.functional.cross_entropy, epochs=epochs, lr=lr, seed=seed)
        my, sy = np.zeros(classes), np.ones(classes)
    else:
        my, sy = y.mean(0), y.std(0) + 1e-12
        _train(net, xt, torch.tensor((y - my) / sy, dtype=torch.float32), nn.functional.mse_loss, epochs=epochs,
               lr=lr, seed=seed)
    first, last = net[0], net[-1]
    with torch.no_grad():
        first.bias -= first.weight @ torch.tensor(mx / sx, dtype=torch.float32)
        first.weight /= torch.tensor(sx, dtype=torch.float32)
        last.weight *= torch.tensor(sy, dtype=torch.float32)[:, None]
        last.bias.copy_(last.bias * torch.tensor(sy, dtype=torch.float32) + torch.tensor(my, dtype=torch.float32))
    return net.eval()


def _grid(lo: np.ndarray, hi: np.ndarray, per_dim: int) -> np.ndarray:
    """The points of a regular grid over the box, ``per_dim`` per dimension, corners included (N, d)."""
    axes = [np.linspace(a, b, per_dim) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))


def _outputs(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return copy.deepcopy(net).double()(torch.tensor(x, dtype=torch.float64)).numpy()


def _polished(fn: Callable[[torch.Tensor], torch.Tensor], lo: np.ndarray, hi: np.ndarray, pts: np.ndarray,
              values: np.ndarray, *, starts: int = 32, steps: int = 100) -> tuple[float, float, np.ndarray]:
    """The smallest and largest of ``fn`` (one value per input row) over the box and the points (2, d) where
    they were seen: the grid's ``values`` at ``pts``, improved by projected signed-gradient steps from the
    ``starts`` best grid points each way."""
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    ends, where = [], []
    for sign in (1.0, -1.0):  # minimize sign * fn
        x = torch.tensor(pts[np.argsort(sign * values)[:starts]], dtype=torch.float32, requires_grad=True)
        for k in range(steps):
            (g,) = torch.autograd.grad((sign * fn(x).reshape(-1)).sum(), x)
            with torch.no_grad():
                x -= (hi_t - lo_t) * 0.05 * (1 - k / steps) * g.sign()
                x.copy_(torch.maximum(torch.minimum(x, hi_t), lo_t))
        with torch.no_grad():
            moved = (sign * fn(x).reshape(-1)).double().numpy()
        i, j = int(moved.argmin()), int(np.argmin(sign * values))
        ends.append(sign * min(moved[i], sign * values[j]))
        where.append(x[i].detach().double().numpy() if moved[i] < sign * values[j] else pts[j])
    return ends[0], ends[1], np.stack(where)


class Judged(Family):
    """A family whose consensus comes from ``lipschitz_verdict`` on each spec, and ``milp_verdict`` where the grid
    stays open on a piecewise-linear net (``sat``, ``unsat`` or ``?``)."""

    def judge(self, net: nn.Module, onnx_name: str, spec_name: str, lo: np.ndarray, hi: np.ndarray, n_out: int,
              disjuncts: Sequence[Sequence[tuple[np.ndarray, float]]], comment: str, timeout: float,
              span: Callable[[Span], Span] | None = None, budget: int = 400_000, tries: np.ndarray | None = None,
              affine: Callable[[Affine], Affine] | None = None) -> str:
        """The spec's consensus: ``lipschitz_verdict``; where it stays open on a piecewise-linear ``net`` (``affine``
        given), ``milp_verdict``'s ``unsat``, or its candidate points if they pass the grid's float32 check."""
        check32 = self.checks.setdefault(onnx_name, ort_check(self.folder / "onnx" / onnx_name))
        verdict = lipschitz_verdict(net, span or (lambda s: through(net, s)), check32, lo, hi, n_out, disjuncts,
                                    budget=budget, tries=tries)
        if verdict == "?" and affine is not None:
            verdict, points = milp_verdict(affine, lo, hi, disjuncts)
            if points:
                verdict = lipschitz_verdict(net, span or (lambda s: through(net, s)), check32, lo, hi, n_out,
                                            disjuncts, budget=0, tries=np.stack(points))
        write_vnnlib(self.add(onnx_name, spec_name, timeout, verdict), lo, hi, n_out, disjuncts, comment)
        return verdict

    @property
    def checks(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        return self.__dict__.setdefault("_checks", {})

    def write(self) -> None:
        counts = {v: sum(r[3] == v for r in self.rows) for v in ("sat", "unsat", "?")}
        print(f"consensus: {counts}")
        super().write()


def threshold(folder: Path, *, timeout: float = 30.0) -> None:
    """2-D inputs: threshold crossings of regression nets and specs with several disjuncts over outputs.

    - ``sine`` (ReLU 2-32-32-1, the zoo's sine simulator on [-1, 1]^2): does the output reach ``t`` somewhere in a
      box? ``t`` is the largest value on a 101 x 101 grid of the box, plus or minus a small step.
    - ``spirals`` (tanh 2-24-24-3, three interleaved spirals): around points near the decision boundaries, does
      another class win (two disjuncts), or does one of the two other classes win by a margin (two disjuncts of
      two rows each)?
    - ``arm2`` (ReLU 2-32-32-2, a two-link arm: joint angles to the end point): does the end point leave a
      rectangle (four disjuncts), whose sides are the grid's extremes moved out or in by a small step?
    """
    fam = Judged(folder)
    rng = np.random.default_rng(0)
    # sine: threshold crossings
    x, y = SIMULATORS["sine"].sample(6000, seed=0)
    net = fit_mlp(x, y, (32, 32), epochs=150)
    name = "threshold_sine_relu.onnx"
    export_onnx(net, 2, folder / "onnx" / name)
    for k in range(16):
        w = rng.uniform(0.15, 0.4, 2)
        lo = rng.uniform(-1, 1 - w)
        hi = lo + w
        top = float(_outputs(net, _grid(lo, hi, 101)).max())
        t = top + (0.01 if k % 2 else -0.01)
        fam.judge(net, name, f"sine_{k}.vnnlib", lo, hi, 1, [[(np.array([-1.0]), -t)]],
                  f"sine: y >= {t:.4f} somewhere in the box (grid max {top:.4f})", timeout)
    # spirals: several disjuncts over the logits
    n = 3000
    t = rng.uniform(0.25, 1.0, n)
    label = rng.integers(0, 3, n)
    angle = 3.5 * t + label * 2 * np.pi / 3 + rng.normal(0, 0.08, n)
    pts = np.stack([t * np.cos(angle), t * np.sin(angle)], 1)
    net = fit_mlp(pts, label, (24, 24), nn.Tanh, epochs=300, classes=3)
    name = "threshold_spirals_tanh.onnx"
    export_onnx(net, 2, folder / "onnx" / name)
    probe = rng.uniform(-1, 1, (4000, 2))
    logits = _outputs(net, probe)
    top2 = np.sort(logits, 1)
    near = probe[np.argsort(top2[:, -1] - top2[:, -2])[:400]]  # points near a decision boundary
    for k, centre in enumerate(near[::25]):
        eps = 0.01 + 0.01 * (k % 4)
        lo, hi = centre - eps, centre + eps
        c = int(_outputs(net, centre[None])[0].argmax())
        others = [j for j in range(3) if j != c]
        if k % 2 == 0:  # another class wins: y_c - y_j <= 0
            disjuncts = [[(np.eye(3)[c] - np.eye(3)[j], 0.0)] for j in others]
            text = f"spirals: some class other than {c} wins"
        else:  # class j beats both others by 0.5
            disjuncts = [[(np.eye(3)[o] - np.eye(3)[j], -0.5) for o in range(3) if o != j] for j in others]
            text = f"spirals: class {others[0]} or {others[1]} wins by 0.5"
        fam.judge(net, name, f"spirals_{k}.vnnlib", lo, hi, 3, disjuncts, f"{text} within {eps} of a point", timeout)
    # arm2: the end point leaves a rectangle
    links = (1.0, 0.6)
    ang = rng.uniform(-np.pi / 2, np.pi / 2, (6000, 2))
    end = np.stack([links[0] * np.cos(ang[:, 0]) + links[1] * np.cos(ang.sum(1)),
                    links[0] * np.sin(ang[:, 0]) + links[1] * np.sin(ang.sum(1))], 1)
    net = fit_mlp(ang, end, (32, 32), epochs=150)
    name = "threshold_arm2_relu.onnx"
    export_onnx(net, 2, folder / "onnx" / name)
    for k in range(16):
        w = rng.uniform(0.2, 0.5, 2)
        lo = rng.uniform(-np.pi / 2, np.pi / 2 - w)
        hi = lo + w
        ys = _outputs(net, _grid(lo, hi, 101))
        step = 0.01 if k % 2 else -0.01
        low, high = ys.min(0) - step, ys.max(0) + step
        disjuncts = [[(np.eye(2)[j], float(low[j]))] for j in range(2)] + [[(-np.eye(2)[j], -float(high[j]))]
                                                                         for j in range(2)]
        fam.judge(net, name, f"arm2_{k}.vnnlib", lo, hi, 2, disjuncts,
                  f"arm2: the end point leaves [{low[0]:.3f}, {high[0]:.3f}] x [{low[1]:.3f}, {high[1]:.3f}]", timeout)
    fam.write()


def envelope(folder: Path, *, timeout: float = 30.0) -> None:
    """Affine output envelopes of regression nets with 2-6 inputs: over a box, the output stays below (or above) a
    plane in the inputs, ``c @ y <= d @ x + e``; VNNLIB rows that read X and Y together.

    Nets: ``sine`` (ReLU 2-32-32-1), ``arm`` (ReLU 4-32-32-2, the zoo's planar arm on a rail), ``ballistics``
    (tanh 4-24-24-1, impact point with drag) and ``friedman`` (ReLU 6-32-32-1, Friedman's first regression test
    function, the sixth input unused). Per box, ``d`` is the least-squares plane of the output (for the arm, of
    the end point's x or y) on a grid of the box and ``e`` the grid's largest residual plus or minus 2% of the
    residuals' range (the lower envelope likewise; every third spec is the tube: above OR below).
    """
    fam = Judged(folder)
    rng = np.random.default_rng(1)
    x6 = rng.uniform(0, 1, (8000, 6))
    friedman = (10 * np.sin(np.pi * x6[:, 0] * x6[:, 1]) + 20 * (x6[:, 2] - 0.5) ** 2 + 10 * x6[:, 3] + 5 * x6[:, 4])
    sims = {name: SIMULATORS[name].sample(8000, seed=0) for name in ("sine", "arm", "ballistics")}
    nets = [("sine", *sims["sine"], (32, 32), nn.ReLU, np.full(2, -1.0), np.full(2, 1.0), 0.3),
            ("arm", *sims["arm"], (32, 32), nn.ReLU, np.array([-0.5, -1.0, -1.0, -1.0]), np.array([0.5, 1.0, 1.0, 1.0]),
             0.15),
            ("ballistics", *sims["ballistics"], (24, 24), nn.Tanh, np.array([-0.5, 1.0, 0.3, 12.0]),
             np.array([0.5, 2.0, 1.1, 18.0]), 0.1),
            ("friedman", x6, friedman[:, None], (32, 32), nn.ReLU, np.zeros(6), np.ones(6), 0.12)]
    for name, x, y, hidden, act, low, high, frac in nets:
        net = fit_mlp(x, y, hidden, act, epochs=100)
        onnx_name = f"envelope_{name}_{act.__name__.lower()}.onnx"
        export_onnx(net, x.shape[1], folder / "onnx" / onnx_name)
        n_out, d = y.shape[1], x.shape[1]
        for k in range(15):
            w = (high - low) * frac * rng.uniform(0.5, 1.5, d)
            lo = rng.uniform(low, high - w)
            hi = lo + w
            pts = _grid(lo, hi, max(3, int(round(20000 ** (1 / d)))))
            c = np.eye(n_out)[k % n_out]
            out = _outputs(net, pts) @ c
            plane, *_ = np.linalg.lstsq(np.hstack([pts, np.ones((len(pts), 1))]), out, rcond=None)
            r = out - pts @ plane[:d]
            r_min, r_max, extremes = _polished(lambda x: net(x) @ torch.tensor(c, dtype=torch.float32)
                                     - x @ torch.tensor(plane[:d], dtype=torch.float32), lo, hi, pts, r)
            step = 0.02 * (r_max - r_min) * (1 if k % 2 else -1)
            above = (np.concatenate([-c, plane[:d]]), -(r_max + step))  # c @ y >= d @ x + e_up
            below = (np.concatenate([c, -plane[:d]]), r_min - step)  # c @ y <= d @ x + e_low
            kind = ("above", "below", "tube")[k % 3]
            disjuncts = {"above": [[above]], "below": [[below]], "tube": [[above], [below]]}[kind]
            text = (f"{name}: output {k % n_out} leaves its envelope ({kind}) d @ x + [{r_min - step:.4f}, "
                    f"{r_max + step:.4f}], d = {np.round(plane[:d], 4).tolist()}")
            fam.judge(net, onnx_name, f"{name}_{k}.vnnlib", lo, hi, n_out, disjuncts, text, timeout, tries=extremes,
                      affine=(lambda v, net=net: through(net, v)) if act is nn.ReLU else None)
    fam.write()


# ------------------------------------------------------------------------------- closed loops (the control family)
def _col(v: Value, i: int) -> Value:
    return v[:, i:i + 1] if isinstance(v, torch.Tensor) else v.col(i)


def _cat(parts: Sequence[Value]) -> Value:
    return torch.cat(parts, 1) if isinstance(parts[0], torch.Tensor) else type(parts[0]).cat(parts)  # type: ignore


def _lin(v: Value, w: np.ndarray) -> Value:
    """``v @ w.T`` for a constant matrix ``w`` (MatMul in the ONNX graph)."""
    wt = torch.tensor(np.asarray(w, dtype=np.float64))
    return v @ wt.to(v.dtype).T if isinstance(v, torch.Tensor) else v.linear(wt)


def _shift(v: Value, c: float | torch.Tensor) -> Value:
    return v + torch.as_tensor(c, dtype=v.dtype) if isinstance(v, torch.Tensor) else v.shift(c)


def _unary(name: str) -> Callable[[Value], Value]:
    fns = {"relu": torch.relu, "sin": torch.sin, "cos": torch.cos, "square": lambda z: z ** 2}
    return lambda v: fns[name](v) if isinstance(v, torch.Tensor) else getattr(v, name)()


_relu, _sin, _cos, _square = (_unary(n) for n in ("relu", "sin", "cos", "square"))


def _product(a: Value, b: Value) -> Value:
    """``a * b`` written with squares, ``((a + b)^2 - (a - b)^2) / 4``: the solver reads powers, not products."""
    return (_square(a + b) - _square(a - b)) * 0.25


@dataclass(frozen=True)
class Plant:
    """A discrete-time system ``x+ = step(x, u)`` (explicit Euler), its linearization at the origin for the
    LQR design, the region of interest (``-region <= x <= region``) and the controller's limit ``|u| <= u_max``."""

    name: str
    step: Callable[[Value, Value], Value]
    a: np.ndarray
    b: np.ndarray
    region: np.ndarray
    u_max: np.ndarray


def _pendulum(dt: float = 0.05, gl: float = 9.81 / 0.5, damp: float = 1.0, gain: float = 10.0) -> Plant:
    """theta'' = g / l sin(theta) - damp theta' + gain u (an inverted pendulum, torque-limited)."""
    def step(x: Value, u: Value) -> Value:
        th, om = _col(x, 0), _col(x, 1)
        return x + _cat([om, _sin(th) * gl - om * damp + u * gain]) * dt

    a = np.array([[1.0, dt], [dt * gl, 1.0 - dt * damp]])
    return Plant("pendulum", step, a, np.array([[0.0], [dt * gain]]), np.array([1.2, 3.0]), np.array([2.0]))


def _quadrotor(dt: float = 0.02, mass: float = 0.486, arm: float = 0.25, inertia: float = 0.00383,
               g: float = 9.81) -> Plant:
    """A planar quadrotor: position (px, py), angle theta, their velocities; the controller sets each rotor's thrust
    deviation from hover (u1, u2). px'' = -sin(theta) T / m, py'' = cos(theta) T / m - g, theta'' = arm (u1 - u2) / I
    with T = m g + u1 + u2."""
    def step(x: Value, u: Value) -> Value:
        th, dthrust = _col(x, 2), _lin(u, [[1.0, 1.0]]) * (1 / mass)
        s, c = _sin(th), _cos(th)
        ax = s * -g - _product(s, dthrust)
        ay = _shift(c, -1.0) * g + _product(c, dthrust)
        acc = _cat([_col(x, 3), _col(x, 4), _col(x, 5), ax, ay, _lin(u, [[arm / inertia, -arm / inertia]])])
        return x + acc * dt

    a = np.eye(6)
    a[:3, 3:] += dt * np.eye(3)
    a[3, 2] = -dt * g
    b = np.zeros((6, 2))
    b[4] = dt / mass
    b[5] = [dt * arm / inertia, -dt * arm / inertia]
    return Plant("quadrotor2d", step, a, b, np.array([0.5, 0.5, 0.6, 1.0, 1.0, 2.0]), np.array([2.0, 2.0]))


def _cartpole(dt: float = 0.05, mc: float = 1.0, mp: float = 0.1, length: float = 1.0, g: float = 9.81) -> Plant:
    """The cart-pole linearized at the upright pole (cart x, angle theta, their velocities): a linear plant, so the
    closed loop with a ReLU controller and the polyhedral Lyapunov function is piecewise linear."""
    a_c = np.zeros((4, 4))
    a_c[0, 2] = a_c[1, 3] = 1.0
    a_c[2, 1] = -mp * g / mc
    a_c[3, 1] = (mc + mp) * g / (mc * length)
    b_c = np.array([[0.0], [0.0], [1.0 / mc], [-1.0 / (mc * length)]])
    a, b = np.eye(4) + dt * a_c, dt * b_c
    return Plant("cartpole", lambda x, u: _lin(x, a) + _lin(u, b), a, b, np.array([1.0, 0.3, 1.0, 1.0]),
                 np.array([10.0]))


class ClosedLoop(nn.Module):
    """One step of a controlled plant and a Lyapunov function ``V``, as the lsnc benchmark of VNN-COMP 2024 puts
    them in one graph: outputs ``[(1 - kappa) V(x) - V(x+), V(x), x+]`` (the decrease condition holds where the
    first is >= 0). The controller is a ReLU MLP with ``u(0) = 0`` (its output at 0 folded into its bias),
    clipped to ``|u| <= u_max`` with two ReLUs; ``V(x) = |R x|^2`` (``quadratic``, R from the Riccati solution
    of the linearization, written with Pow) or ``|R x|_1`` (ReLU units: a polyhedral Lyapunov function)."""

    def __init__(self, plant: Plant, controller: nn.Sequential, r: np.ndarray, kappa: float, quadratic: bool) -> None:
        super().__init__()
        self.plant, self.controller, self.r, self.kappa, self.quadratic = plant, controller, r, kappa, quadratic

    def lyapunov(self, x: Value) -> Value:
        z = _lin(x, self.r)
        terms = _square(z) if self.quadratic else _relu(z) + _relu(z * -1.0)
        return _lin(terms, np.ones((1, self.r.shape[0])))

    def control(self, x: Value) -> Value:
        t = torch.tensor(self.plant.u_max)
        u = through(self.controller, x)
        return _shift(_relu(_shift(u, t)) - _relu(_shift(u, -t)), -t)  # clipped to [-u_max, u_max]

    def run(self, x: Value) -> Value:
        nxt = self.plant.step(x, self.control(x))
        v = self.lyapunov(x)
        return _cat([v * (1 - self.kappa) - self.lyapunov(nxt), v, nxt])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)  # type: ignore[return-value]


def design(plant: Plant, *, quadratic: bool, q: np.ndarray, r_u: float, poles: Sequence[float] = (),
           hidden: Sequence[int] = (16, 16), samples: int = 20000, epochs: int = 60, seed: int = 0
           ) -> tuple[nn.Sequential, np.ndarray, float]:
    """A controller and a Lyapunov function for ``plant``: the ReLU MLP imitates the clipped linear law ``-K x``
    on the region (LQR with weights ``q``, ``r_u``; or, for a polyhedral V, the gain placing the closed loop's
    poles at ``poles``), then gets ``u(0) = 0``. V's matrix R: the Cholesky factor of the Riccati solution
    (``V = x' P x``) or the inverse eigenvectors of the linear closed loop (``V = |R x|_1``, which contracts by
    the largest pole). Returns the controller, R and the largest level ``rho`` with ``{V <= rho}`` in the region."""
    from scipy.linalg import solve_discrete_are

    a, b = plant.a, plant.b
    if quadratic:
        p = solve_discrete_are(a, b, q, r_u * np.eye(b.shape[1]))
        k = np.linalg.solve(r_u * np.eye(b.shape[1]) + b.T @ p @ b, b.T @ p @ a)
        r = np.linalg.cholesky(p).T
        rho = float(np.min(plant.region ** 2 / np.diag(np.linalg.inv(p))))
    else:
        from scipy.signal import place_poles  # seconds to import: only for a polyhedral V

        k = place_poles(a, b, np.asarray(poles)).gain_matrix
        vals, vecs = np.linalg.eig(a - b @ k)
        r = np.linalg.inv(np.real(vecs))
        rho = float(np.min(plant.region[:, None] / np.abs(np.real(vecs))))
    rng = np.random.default_rng(seed)
    x = rng.uniform(-plant.region, plant.region, (samples, len(plant.region)))
    u = np.clip(-x @ k.T, -plant.u_max, plant.u_max)
    net = fit_mlp(x, u, hidden, epochs=epochs, seed=seed)
    with torch.no_grad():
        net[-1].bias -= net(torch.zeros(1, len(plant.region)))[0]
    return net, r, rho


def control(folder: Path, *, timeout: float = 30.0) -> None:
    """Lyapunov-style specs on closed loops, the shape of VNN-COMP 2024's lsnc benchmark: one graph holds the
    controller, one step of the dynamics and V (``ClosedLoop``), and each spec is a box of states inside the
    region of interest; the unsafe set is ``V(x) <= rho`` together with a failed decrease
    ``(1 - kappa) V(x) - V(x+) <= -1e-6`` or a next state outside the region (one disjunct per face): 1 + 2n
    disjuncts of two rows. Plants: an inverted pendulum (2 states, Sin, quadratic V with Pow), the linearized
    cart-pole (4 states, ReLU only, polyhedral V = |R x|_1) and a planar quadrotor (6 states, Sin, Cos,
    products written with squares, quadratic V). Boxes: random sub-boxes of the level set ``{V <= rho}``
    (centres drawn from it, widths a fraction of its extent) that avoid a small box around the equilibrium
    (the lsnc benchmark leaves out such a hole too); ``kappa`` is set so that a few percent of the level set
    fails the decrease, so some specs are violated.
    """
    fam = Judged(folder)
    rng = np.random.default_rng(2)
    # plant, design, kappa, specs, box size (fraction of the level set's extent), cells of the grid's check
    plants = [(_pendulum(), dict(quadratic=True, q=np.eye(2), r_u=0.1), 0.08, 30, 0.25, 200_000),
              (_cartpole(), dict(quadratic=False, q=None, r_u=0.0, poles=[0.8, 0.85, 0.9, 0.95]), 0.0, 25, 0.2,
               200_000),
              (_quadrotor(), dict(quadratic=True, q=np.eye(6), r_u=1.0), 0.05, 25, 0.1, 8_000_000)]
    for plant, how, kappa, count, frac, cells in plants:
        ctrl, r, rho = design(plant, **how)
        loop = ClosedLoop(plant, ctrl, r, kappa, how["quadratic"]).eval()
        n = len(plant.region)
        name = f"control_{plant.name}.onnx"
        with warnings.catch_warnings():  # the tracer notes that the constant matrices stay constants
            warnings.simplefilter("ignore")
            export_onnx(loop, n, folder / "onnx" / name)
        inv = np.linalg.inv(r)
        extent = np.sqrt(rho * np.diag(inv @ inv.T)) if how["quadratic"] else rho * np.abs(inv).max(1)
        pts = rng.uniform(-extent, extent, (200000, n))
        values = _outputs(loop, pts)
        pool = pts[values[:, 1] <= rho]
        rows = [[(np.eye(n + 2)[1], rho), (np.eye(n + 2)[0], -1e-6)]]
        for i in range(n):
            rows += [[(np.eye(n + 2)[1], rho), (np.eye(n + 2)[2 + i], -plant.region[i])],
                     [(np.eye(n + 2)[1], rho), (-np.eye(n + 2)[2 + i], -plant.region[i])]]
        made = 0
        for centre in pool:
            half = extent * frac * rng.uniform(0.5, 1.0, n)
            lo, hi = np.maximum(centre - half, -plant.region), np.minimum(centre + half, plant.region)
            if np.all((lo < 0.1 * extent) & (hi > -0.1 * extent)):
                continue  # the box meets the hole around the equilibrium
            fam.judge(loop, name, f"{plant.name}_{made}.vnnlib", lo, hi, n + 2, rows,
                      f"{plant.name}: V(x) <= {rho:.6g} and (a failed decrease with kappa {kappa} or x+ leaves the "
                      "region)", timeout, span=loop.run, budget=cells,
                      affine=None if how["quadratic"] else loop.run)
            made += 1
            if made == count:
                break
    fam.write()


FAMILIES: dict[str, Callable[[Path], None]] = {
    "sigmoid-mnist": sigmoid_mnist,
    "planted": planted,
    "control": control,
    "envelope": envelope,
    "threshold": threshold,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("family", choices=sorted(FAMILIES))
    ap.add_argument("--out", type=Path, default=None, help="default: $NETINVERT_HOME/benchmarks/families/<family>")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    folder = args.out or cache_home("benchmarks") / "families" / args.family
    FAMILIES[args.family](folder)


if __name__ == "__main__":
    main()
