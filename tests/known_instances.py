"""ONNX + VNNLIB instances whose answers are known by construction, made by the tests themselves (the plain
suite needs no data outside the repository), and an independent onnxruntime re-check of ``found`` inputs.

The family mirrors VNN-COMP's ``test`` category: three one-input networks with no qualifying input
(``nano``, ``tiny``, ``small``) and two five-input networks under one property "Y_0 is the smallest
output" (``sat`` has a witness built in, ``unsat`` has Y_0 - Y_1 > 0 everywhere).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from netinvert.targets.vnnlib import read_vnnlib

# (onnx, vnnlib, answer) in instances.csv order
FAMILY = [
    ("nano.onnx", "nano.vnnlib", "none-exists"),
    ("tiny.onnx", "tiny.vnnlib", "none-exists"),
    ("small.onnx", "small.vnnlib", "none-exists"),
    ("sat.onnx", "prop.vnnlib", "found"),
    ("unsat.onnx", "prop.vnnlib", "none-exists"),
]


def ort_outputs(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime outputs, one row per row of ``x`` (a single row gives a flat vector)."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    rows = np.atleast_2d(x)
    ys = np.stack([sess.run(None, {inp.name: r.astype(np.float32).reshape(shape)})[0].reshape(-1) for r in rows])
    return ys.astype(np.float64)[0] if x.ndim == 1 else ys.astype(np.float64)


def check_found(onnx_path: Path, vnnlib_path: Path, x: np.ndarray) -> None:
    """An independent re-check: x is in some input box and onnxruntime's output is in that box's set."""
    spec = read_vnnlib(vnnlib_path)
    y = ort_outputs(onnx_path, x)
    assert any(np.all(x >= c.lo) and np.all(x <= c.hi) and c.output.contains(y)[0] for c in spec.cases)


def export_onnx(net: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """``net`` as an ONNX file with a fixed input of ``shape`` (batch included), as VNN-COMP files have."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(shape),), str(path), input_names=["X"], output_names=["Y"],
                          dynamo=False)
    return path


def vnnlib_text(lo: np.ndarray, hi: np.ndarray, num_outputs: int, output: str, comment: str = "") -> str:
    """A VNNLIB spec in VNN-COMP's layout: declarations, one box of input bounds, the output assertion."""
    lines = [f"; {comment}", ""] if comment else []
    lines += [f"(declare-const X_{i} Real)" for i in range(len(lo))] + [""]
    lines += [f"(declare-const Y_{j} Real)" for j in range(num_outputs)] + ["", "; input constraints"]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (<= X_{i} {float(b)!r}))", f"(assert (>= X_{i} {float(a)!r}))"]
    return "\n".join([*lines, "", "; output constraints", output, ""])


def _chain(*layers: tuple[list[list[float]], list[float]]) -> nn.Sequential:
    """Linear layers with the given weights and biases, a ReLU between each two."""
    mods: list[nn.Module] = []
    for k, (w, b) in enumerate(layers):
        lin = nn.Linear(len(w[0]), len(w))
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(w))
            lin.bias.copy_(torch.tensor(b))
        mods += [lin] + ([nn.ReLU()] if k < len(layers) - 1 else [])
    return nn.Sequential(*mods)


def _five_input_pair(seed: int = 0) -> tuple[nn.Sequential, nn.Sequential, np.ndarray, np.ndarray, np.ndarray]:
    """Two 5-20-20-5 ReLU nets sharing their hidden layers, the box [-1, 1]^5 and the ``sat`` witness.
    ``sat``: Y_0 is made the smallest output, by 0.05, at the witness (a random point of the box).
    ``unsat``: Y_0 = Y_1 + (nonnegative weights) . relu(h) + 0.05 > Y_1 everywhere."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = np.full(5, -1.0), np.full(5, 1.0)
    hidden = nn.Sequential(nn.Linear(5, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU())
    with torch.no_grad():
        for p in hidden.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.6)
        witness = torch.rand(5, generator=gen, dtype=torch.float64).numpy() * (hi - lo) + lo
        h = hidden(torch.from_numpy(witness).float())
        w = torch.randn(5, 20, generator=gen) * 0.5
        b = torch.randn(5, generator=gen) * 0.1
        sat_head, unsat_head = nn.Linear(20, 5), nn.Linear(20, 5)
        sat_head.weight.copy_(w)
        sat_head.bias.copy_(b)
        sat_head.bias[0] = (w[1:] @ h + b[1:]).min() - w[0] @ h - 0.05
        unsat_head.weight.copy_(w)
        unsat_head.weight[0] = w[1] + torch.rand(20, generator=gen)
        unsat_head.bias.copy_(b)
        unsat_head.bias[0] = b[1] + 0.05
    return nn.Sequential(hidden, sat_head), nn.Sequential(hidden, unsat_head), lo, hi, witness


def write_family(folder: Path) -> Path:
    """Write the family's ONNX and VNNLIB files and ``instances.csv`` into ``folder``; return ``folder``."""
    export_onnx(nn.Sequential(_chain(([[0.5]], [0.0])), nn.ReLU()), (1, 1), folder / "nano.onnx")  # relu(x / 2)
    export_onnx(_chain(([[1.0]], [0.0]), ([[2.0]], [0.5])), (1, 1), folder / "tiny.onnx")  # 2 relu(x) + 0.5
    small = _chain(([[1.0], [1.0]], [1.5, 1.5]), ([[2.0, 2.0], [2.0, 2.0]], [2.5, 2.5]), ([[3.0, 3.0]], [3.5]))
    export_onnx(small, (1, 1), folder / "small.onnx")  # increasing in x: at most 78.5 on [-1, 1]
    one = (np.array([-1.0]), np.array([1.0]))
    (folder / "nano.vnnlib").write_text(vnnlib_text(*one, 1, "(assert (<= Y_0 -1))"))
    reach_100 = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (or\n"
    reach_100 += "    (and (>= X_0 -1) (<= X_0 1) (>= Y_0 100))\n))"  # the input box inside the disjunct
    (folder / "tiny.vnnlib").write_text(reach_100)
    (folder / "small.vnnlib").write_text(reach_100)
    sat, unsat, lo, hi, witness = _five_input_pair()
    export_onnx(sat, (1, 5), folder / "sat.onnx")
    export_onnx(unsat, (1, 5), folder / "unsat.onnx")
    smallest = "\n".join(f"(assert (<= Y_0 Y_{j}))" for j in range(1, 5))
    (folder / "prop.vnnlib").write_text(vnnlib_text(lo, hi, 5, smallest, comment="Y_0 is the smallest output"))
    check_found(folder / "sat.onnx", folder / "prop.vnnlib", witness)
    (folder / "instances.csv").write_text("".join(f"{o},{v},60\n" for o, v, _ in FAMILY))
    return folder


def check_solve_command(fam: Path, out: Path, names: dict[str, str], statuses: list[str]) -> None:
    """``netinvert solve`` on a family folder: the satisfiable instance writes a counterexample that onnxruntime
    confirms, a spec over the wrong input count is refused in one line, and the family's statuses are ``statuses``.

    ``names``: the file names of ``sat`` (network), ``prop`` (its spec) and ``nano`` (a one-input network).
    """
    import csv
    import json

    import typer
    from typer.testing import CliRunner

    from netinvert.cli.solve import solve

    app = typer.Typer()
    app.command("solve")(solve)
    app.command("other")(lambda: None)
    runner = CliRunner()
    sat, prop, nano = fam / names["sat"], fam / names["prop"], fam / names["nano"]
    r = runner.invoke(app, ["solve", str(sat), str(prop), "--timeout", "30", "--out", str(out / "sat")])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "sat" / "result.json").read_text())["items"][0]["status"] == "found"
    text = (out / "sat" / "counterexample.txt").read_text()
    xs = [float(line.split()[1].rstrip(")")) for line in text.splitlines() if "(X_" in line]
    check_found(sat, prop, np.array(xs))
    r = runner.invoke(app, ["solve", str(nano), str(prop), "--out", str(out / "bad")])
    assert r.exit_code == 2 and "declares 5 inputs" in r.output
    r = runner.invoke(app, ["solve", "--instances", str(fam / "instances.csv"), "--timeout", "20",
                            "--out", str(out / "family")])
    assert r.exit_code == 0, r.output
    assert [row["status"] for row in csv.DictReader((out / "family" / "results.csv").open())] == statuses


def twin_network(n_in: int = 20, width: int = 32, seed: int = 0) -> nn.Sequential:
    """Two copies of one random tanh MLP side by side (block-diagonal layers), outputs ``Y_0`` and ``Y_1``.

    ``Y_0 - Y_1`` is 0 for every input (the copies compute the same numbers in the same order), so no input reaches
    ``Y_0 - Y_1 >= 0.01``: unsat by construction, yet the bounds of the two copies do not cancel, and on 20 inputs
    the input splitting of smooth networks cannot close it in seconds (an instance that runs out of time).
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = [n_in, width, width, 1]
    mods: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w, bias = torch.randn(b, a, generator=gen) / a ** 0.5 * 2, torch.randn(b, generator=gen) * 0.5
        lin = nn.Linear(a if k == 0 else 2 * a, 2 * b)
        with torch.no_grad():
            lin.weight.zero_()
            if k == 0:
                lin.weight.copy_(torch.cat([w, w]))
            else:
                lin.weight[:b, :a], lin.weight[b:, a:] = w, w
            lin.bias.copy_(torch.cat([bias, bias]))
        mods += [lin] + ([nn.Tanh()] if k < len(sizes) - 2 else [])
    return nn.Sequential(*mods)


def write_twin(folder: Path, n_in: int = 20) -> tuple[Path, Path]:
    """The twin network (:func:`twin_network`) as ``twin.onnx`` and its property ``Y_0 - Y_1 >= 0.01`` over
    ``[-1, 1]^n_in`` as ``twin.vnnlib``."""
    onnx_path = export_onnx(twin_network(n_in), (1, n_in), folder / "twin.onnx")
    spec = folder / "twin.vnnlib"
    spec.write_text(vnnlib_text(np.full(n_in, -1.0), np.ones(n_in), 2, "(assert (>= (- Y_0 Y_1) 0.01))",
                                comment="two copies of one network: Y_0 = Y_1 everywhere"))
    return onnx_path, spec
