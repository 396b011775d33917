"""The ``langevin`` defaults: 400 steps (Python's) against 1024 (what ``imagine --method langevin`` ran before its
flags came from the method's options), 8 samples per class.

Six classes of ``digits-mlp``, ``digits-cnn`` and ``roman-mlp``, one thread: how many samples reach the goal,
the fraction the independent verifier recognises, the mean diversity of a class's samples (mean pairwise RMS
distance in units of the value range) and seconds. Prints one line per run and writes JSON.

    PYTHONPATH=. python benchmarks/langevin_defaults.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from netinvert import Class, invert, load_zoo
from netinvert.methods.langevin import pairwise_diversity

MODELS = ("digits-mlp", "digits-cnn", "roman-mlp")


def measure(name: str, steps: int, samples: int, classes: int) -> dict[str, object]:
    model = load_zoo(name)
    span = model.input_spec.high - model.input_spec.low
    t0 = time.perf_counter()
    result = invert(model, [Class(k) for k in range(classes)], method="langevin", samples=samples, steps=steps,
                    threads=1, progress=False)
    seconds = time.perf_counter() - t0
    agrees = [bool(a) for a in result.metric("verifier_agrees")]
    diversity = sum(pairwise_diversity(result.inputs[k * samples : (k + 1) * samples], span)
                    for k in range(classes)) / classes
    return {"model": name, "steps": steps, "samples": samples, "found": sum(s == "found" for s in result.statuses),
            "items": len(result.items), "verifier": round(sum(agrees) / len(agrees), 3),
            "diversity": round(diversity, 3), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="*", default=[400, 1024])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/langevin_defaults.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in MODELS:
        for steps in args.steps:
            rows.append(measure(name, steps, args.samples, args.classes))
            print(rows[-1], flush=True)
    args.json.write_text(json.dumps({"benchmark": "langevin_defaults", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
