"""The seed's question at its hardest: by how much can any input make ``roman-mlp`` (401 inputs, sigmoid units)
prefer ``X`` to every other symbol?

Bisects the margin with ``invert(..., method="exact")`` until a margin with ``found`` (an input, re-checked on the
network) and a margin with ``none-exists`` (a proof) are at most ``--within`` apart. A ``found`` raises the lower
end to the margin its input really reaches; ``none-exists`` lowers the upper end; ``unknown`` means the proof must
be sought higher, so the next try goes halfway up from there; if the ends are still too far apart, one last run
looks for an input just within ``--within`` below the proof. Prints every run and the interval, writes
``benchmarks/results/roman_margin.json``.

    python benchmarks/roman_margin.py [--timeout 60] [--within 0.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from netinvert.domains.sets import Box
from netinvert.ground.output import write_json
from netinvert.methods import invert
from netinvert.models.zoo import load_zoo
from netinvert.targets.units import Class


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per exact run")
    ap.add_argument("--within", type=float, default=0.5, help="stop once found and none-exists are this close")
    ap.add_argument("--start", default="10,25", help="a margin to find and a margin to refute first")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/roman_margin.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_zoo("roman-mlp")
    x_class = model.class_index("X")
    runs: list[dict] = []
    low, high, stuck = -np.inf, np.inf, -np.inf  # found at low, none-exists at high, unknown at stuck

    def run(margin: float) -> None:
        nonlocal low, high, stuck
        t0 = time.perf_counter()
        res = invert(model, Class("X", margin=margin), Box(), method="exact", timeout=args.timeout)
        seconds = time.perf_counter() - t0
        status, stage = res.statuses[0], res.items[0].metrics["stage"]
        row = {"margin": margin, "status": status, "stage": stage, "seconds": round(seconds, 2)}
        if status == "found":
            y = res.outputs[0].double().numpy()
            reached = float(y[x_class] - np.delete(y, x_class).max())
            row["reached"] = reached
            low = max(low, reached)
        elif status == "none-exists":
            high = min(high, margin)
            row["certificate"] = {k: v for k, v in res.info["certificates"][0].items()
                                  if k in ("search", "refuted_by_crown", "refuted_by_alpha", "neuron_split")}
        else:
            stuck = max(stuck, margin)
        runs.append(row)
        print(f"margin {margin:7.3f}: {status:12s} {stage:13s} {seconds:6.1f} s"
              + (f"  (the input reaches {row['reached']:.3f})" if "reached" in row else ""), flush=True)

    for m in (float(v) for v in args.start.split(",")):
        run(m)
    while high - low > args.within and len(runs) < 16 and np.isfinite(low) and np.isfinite(high):
        base = max(low, stuck)
        if high - base <= 0.01:
            break
        run(round((base + high) / 2, 4))
    if np.isfinite(high) and high - low > args.within:  # one look for an input close enough below the proof
        run(round(high - args.within + 0.001, 4))
    decided = bool(high - low <= args.within)
    print(f"\nX by {low:.3f} is reached (an input), X by {high:.3f} is not (a proof): "
          f"{'decided' if decided else 'NOT decided'} to within {high - low:.3f}")
    write_json(args.out, {"timeout": args.timeout, "within": args.within, "found_margin": low,
                          "none_exists_margin": high, "decided": decided, "runs": runs})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
