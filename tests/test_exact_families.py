"""The low-dimensional families of ``benchmarks/families.py`` (issue 24 item 3), in miniature: a Lyapunov
closed loop with Sin and Pow (several outputs combined per disjunct), affine envelopes whose rows read X and Y,
and 2-D threshold specs with several disjuncts. ``netinvert solve``'s answers on the written ONNX + VNNLIB files
must agree with the family's independent consensus (``lipschitz_verdict``, and ``milp_verdict`` on a
piecewise-linear loop), a ``found`` point must reach the set on the module in float64, and a ``none-exists``
must survive dense sampling."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from netinvert.tasks.solve import solve_instance
from netinvert.targets.vnnlib import read_vnnlib

torch.set_num_threads(1)
_SPEC = importlib.util.spec_from_file_location("families", Path(__file__).parents[1] / "benchmarks" / "families.py")
fam = importlib.util.module_from_spec(_SPEC)  # type: ignore[arg-type]
sys.modules["families"] = fam
_SPEC.loader.exec_module(fam)  # type: ignore[union-attr]

OURS = {"found": "sat", "none-exists": "unsat"}


def _check(folder: Path, module: nn.Module, n_in: int) -> dict[str, int]:
    """Solve every instance the family wrote; each answer against its consensus and sampling; the answers seen."""
    rows = [line.split(",") for line in (folder / "known_results.csv").read_text().splitlines()[1:]]
    rng = np.random.default_rng(0)
    seen = {"found": 0, "none-exists": 0, "unknown": 0}
    for onnx_name, spec_name, consensus in rows:
        res = solve_instance(folder / "onnx" / onnx_name, folder / "vnnlib" / spec_name, 20.0)
        status = res.items[0].status
        seen[status] += 1
        case = read_vnnlib(folder / "vnnlib" / spec_name).cases[0]
        reads_x = case.output.num_inputs > 0  # an envelope's rows read X too
        assert consensus in ("sat", "unsat"), f"{spec_name}: the miniature's consensus is open"
        assert status == "unknown" or OURS[status] == consensus, f"{spec_name}: {status} against {consensus}"
        if status == "found":
            x = res.inputs[0].double().numpy().reshape(1, -1)
            assert np.all(x >= case.lo) and np.all(x <= case.hi)
            assert case.output.contains(fam._outputs(module, x), 1e-7, x=x if reads_x else None)[0], spec_name
        else:
            xs = rng.uniform(case.lo, case.hi, (20000, n_in))
            assert not case.output.contains(fam._outputs(module, xs), x=xs if reads_x else None).any(), spec_name
    return seen


def test_lyapunov_closed_loop_with_sin(tmp_path: Path) -> None:
    """A pendulum with a ReLU controller and a quadratic V (Pow), one graph: V(x) <= rho together with a failed
    decrease or a next state outside the region (five disjuncts of two rows); ``kappa`` large enough that part of
    the level set fails the decrease, so both answers occur."""
    plant = fam._pendulum()
    ctrl, r, rho = fam.design(plant, quadratic=True, q=np.eye(2), r_u=0.1, hidden=(8, 8), samples=2000, epochs=20)
    loop = fam.ClosedLoop(plant, ctrl, r, 0.3, True).eval()
    family = fam.Judged(tmp_path)
    fam.export_onnx(loop, 2, tmp_path / "onnx" / "loop.onnx")
    e = np.eye(4)
    rows = [[(e[1], rho), (e[0], -1e-6)]] + [[(e[1], rho), (s * e[2 + i], -plant.region[i])] for i in range(2)
                                               for s in (1.0, -1.0)]
    for k, (centre, half) in enumerate([((0.3, 0.5), 0.05), ((-0.2, 1.0), 0.1), ((0.02, 0.02), 0.015),
                                        ((0.5, -0.8), 0.05)]):
        lo, hi = np.array(centre) - half, np.array(centre) + half
        family.judge(loop, "loop.onnx", f"loop_{k}.vnnlib", lo, hi, 4, rows, "pendulum", 20.0, span=loop.run)
    family.write()
    seen = _check(tmp_path, loop, 2)
    assert seen["found"] >= 1 and seen["none-exists"] >= 1, seen


def test_affine_envelopes_reading_x_and_y(tmp_path: Path) -> None:
    """A ReLU regression net on the sine simulator: over boxes, the output above or below the least-squares plane
    in the inputs by its largest residual plus or minus a step (rows over [Y, X]); consensus by the grid, and by
    the MILP where the grid stays open."""
    x, y = fam.SIMULATORS["sine"].sample(2000, seed=0)
    net = fam.fit_mlp(x, y, (12, 12), epochs=20)
    family = fam.Judged(tmp_path)
    fam.export_onnx(net, 2, tmp_path / "onnx" / "sine.onnx")
    rng = np.random.default_rng(3)
    for k in range(4):
        lo = rng.uniform(-1, 0.7, 2)
        hi = lo + 0.3
        pts = fam._grid(lo, hi, 41)
        out = fam._outputs(net, pts)[:, 0]
        plane, *_ = np.linalg.lstsq(np.hstack([pts, np.ones((len(pts), 1))]), out, rcond=None)
        res = out - pts @ plane[:2]
        step = 0.05 * (res.max() - res.min()) * (1 if k % 2 else -1)
        above = (np.concatenate([[-1.0], plane[:2]]), -(res.max() + step))  # y >= d @ x + e
        below = (np.concatenate([[1.0], -plane[:2]]), res.min() - step)
        family.judge(net, "sine.onnx", f"env_{k}.vnnlib", lo, hi, 1, [[above], [below]], "envelope", 20.0,
                     affine=lambda v: fam.through(net, v))
    family.write()
    seen = _check(tmp_path, net, 2)
    assert seen["found"] >= 1 and seen["none-exists"] >= 1, seen


def test_threshold_specs_with_several_disjuncts(tmp_path: Path) -> None:
    """A tanh 2-8-8-3 classifier: around points near a decision boundary, some other class wins (two disjuncts)
    or one of the two others wins by a margin (two disjuncts of two rows each)."""
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 1, (1500, 2))
    label = (np.arctan2(pts[:, 1], pts[:, 0]) // (2 * np.pi / 3)).astype(int) % 3
    net = fam.fit_mlp(pts, label, (8, 8), nn.Tanh, epochs=30, classes=3)
    family = fam.Judged(tmp_path)
    fam.export_onnx(net, 2, tmp_path / "onnx" / "wedges.onnx")
    probe = rng.uniform(-1, 1, (2000, 2))
    top2 = np.sort(fam._outputs(net, probe), 1)
    near = probe[np.argsort(top2[:, -1] - top2[:, -2])[:40]]
    e = np.eye(3)
    for k, centre in enumerate(near[::8]):
        eps = 0.01 + 0.02 * (k % 3)
        c = int(fam._outputs(net, centre[None])[0].argmax())
        others = [j for j in range(3) if j != c]
        if k % 2:
            disjuncts = [[(e[o] - e[j], -0.3) for o in range(3) if o != j] for j in others]
        else:
            disjuncts = [[(e[c] - e[j], 0.0)] for j in others]
        family.judge(net, "wedges.onnx", f"wedge_{k}.vnnlib", centre - eps, centre + eps, 3, disjuncts,
                     "threshold", 20.0)
    family.write()
    seen = _check(tmp_path, net, 2)
    assert seen["found"] >= 1 and seen["none-exists"] >= 1, seen
