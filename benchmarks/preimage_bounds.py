"""Preimage bounds (``method="bounds"``) on the zoo's 2-D models: certified fractions and seconds per box budget.

Targets: ``moons-relu`` class 0 and class 1 (margin 0), ``sine`` y = 0.5 within 0.1. For each
budget it prints the certified inside fraction (``fraction_under``), the over-approximation
(``fraction_over``), the uncertain fraction between them, the boxes examined and the seconds, with
one torch thread. Writes benchmarks/results/preimage_bounds.json.

    python benchmarks/preimage_bounds.py [--budgets 500 2000 4000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from netinvert.ground.output import write_json
from netinvert.ground.run import torch_threads
from netinvert.methods import bounds
from netinvert.models.load import load
from netinvert.targets.regression import Regression
from netinvert.targets.units import Class

CASES = (("moons-relu", Class(0)), ("moons-relu", Class(1)), ("sine", Regression(0.5, tolerance=0.1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[500, 2000, 4000])
    args = parser.parse_args()
    rows = []
    print(f"{'model':<11} {'target':<26} {'boxes':>6} {'under':>7} {'over':>7} {'uncert':>7} {'examined':>8} {'s':>6}")
    with torch_threads(1):
        for name, target in CASES:
            model = load(name)
            for budget in args.budgets:
                t0 = time.perf_counter()
                item = bounds.run(model, target, None, max_boxes=budget).items[0]
                m = item.metrics
                row = {"model": name, "target": item.target, "max_boxes": budget, "seconds": time.perf_counter() - t0,
                       **{k: m[k] for k in ("fraction_under", "fraction_over", "boxes_examined")}}
                rows.append(row)
                print(f"{name:<11} {item.target:<26} {budget:>6} {m['fraction_under']:>7.4f} {m['fraction_over']:>7.4f} "
                      f"{m['fraction_over'] - m['fraction_under']:>7.4f} {m['boxes_examined']:>8} {row['seconds']:>6.2f}")
    write_json(Path(__file__).resolve().parent / "results" / "preimage_bounds.json", rows)


if __name__ == "__main__":
    main()
