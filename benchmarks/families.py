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
the answer is known to be sat (a counterexample planted or found by a long attack here), ``unsat`` where it is
known by construction, and ``?`` otherwise; ``vnncomp_family.py`` counts a verdict that contradicts it as wrong.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netinvert.ground.store import cache_home

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ----------------------------------------------------------------------------------------------------- writing
def _num(v: float) -> str:
    return repr(float(v))


def write_vnnlib(path: Path, lo: np.ndarray, hi: np.ndarray, n_out: int,
                 disjuncts: Sequence[Sequence[tuple[np.ndarray, float]]], comment: str = "") -> None:
    """A VNNLIB file: the input box ``[lo, hi]`` and the unsafe set, a disjunction of conjunctions of rows
    ``a @ y <= b`` (the property holds when no input of the box reaches the set)."""
    lines = [f"; {comment}"] if comment else []
    lines += [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (l, h) in enumerate(zip(lo, hi)):
        lines.append(f"(assert (>= X_{i} {_num(l)}))")
        lines.append(f"(assert (<= X_{i} {_num(h)}))")

    def row(a: np.ndarray, b: float) -> str:
        terms = [f"(* {_num(c)} Y_{j})" for j, c in enumerate(a) if c != 0]
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


FAMILIES: dict[str, Callable[[Path], None]] = {
    "sigmoid-mnist": sigmoid_mnist,
    "planted": planted,
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
