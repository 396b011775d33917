"""Inverse design on the neural-adjoint benchmark (Ren, Padilla & Malof, NeurIPS 2020): arm, sine, ballistics.

Per task: 200 fixed targets (simulator outputs of held-out prior samples, seed 2020), the ``adjoint``
method with T = 200 distinct proposals per target, each re-simulated with the true simulator.
r_T = mean over targets of the smallest re-simulation MSE among the first T proposals (raw output
units). NA's figures are read off the paper's Fig. 3 (about +-25 %).

    PYTHONPATH=. python benchmarks/inverse_design.py [--restarts 256] [--steps 200] [--targets 200]

Prints a table and writes ``benchmarks/results/inverse_design.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from netinvert.data.simulators import SIMULATORS
from netinvert.ground.output import write_json
from netinvert.methods import invert
from netinvert.models.zoo import load_zoo
from netinvert.targets.regression import Regression

NA = {"arm": (2e-4, 2.6e-6), "sine": (1e-3, 1.7e-6), "ballistics": (5e-3, 4.5e-6)}
TARGET_SEED = 2020


def run_task(name: str, targets: int, samples: int, restarts: int, steps: int) -> dict[str, object]:
    model = load_zoo(name, quiet=False)
    sim = SIMULATORS[name]
    _, y = sim.sample(targets, seed=TARGET_SEED)
    t0 = time.perf_counter()
    res = invert(model, [Regression(v) for v in y], method="adjoint", samples=samples, restarts=restarts, steps=steps,
                 simulator=sim.simulate, prove=0, threads=1, seed=0)
    seconds = time.perf_counter() - t0
    curve = res.info["r_curve"]
    failed = int(np.sum(~np.isfinite(np.array(res.metric("resim_mse"), dtype=float))))
    return {"task": name, "targets": targets, "samples": samples, "restarts": restarts, "steps": steps,
            "surrogate_test_mse": model.info["test_mse"], "r_1": curve[0], "r_50": curve[min(49, len(curve) - 1)],
            "r_curve": curve, "seconds_per_target": seconds / targets, "na_r_1": NA[name][0], "na_r_50": NA[name][1],
            "found_top1": sum(s == "found" for s in res.statuses[::samples]), "simulator_failures": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--restarts", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tasks", default="arm,sine,ballistics")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inverse_design.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.tasks.split(","):
        row = run_task(name, args.targets, args.samples, args.restarts, args.steps)
        rows.append(row)
        print(f"{name}: r_1 {row['r_1']:.2e} (NA {row['na_r_1']:.1e}), r_50 {row['r_50']:.2e} "
              f"(NA {row['na_r_50']:.1e}), {row['seconds_per_target']:.2f} s per target", flush=True)
    print("\n| task | surrogate test MSE | r_1 | NA r_1 | r_50 | NA r_50 | r_200 | s / target |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['surrogate_test_mse']:.1e} | {r['r_1']:.1e} | {r['na_r_1']:.1e} | {r['r_50']:.1e} "
              f"| {r['na_r_50']:.1e} | {r['r_curve'][-1]:.1e} | {r['seconds_per_target']:.2f} |")
    write_json(args.out, {"rows": rows, "protocol": __doc__})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
