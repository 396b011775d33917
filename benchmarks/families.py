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


FAMILIES: dict[str, Callable[[Path], None]] = {
    "sigmoid-mnist": sigmoid_mnist,
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
