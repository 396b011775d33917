"""Make the example files the README's `solve` and `atlas` lines use: the zoo's `moons-relu` as ONNX, two VNNLIB
properties over it and a VNN-COMP style `instances.csv` listing both.

    python examples/make.py [--out examples]

`moons-relu` classifies points of the plane as `upper` (output Y_0) or `lower` (Y_1) moon. Each property asks
whether some input in a small box is classed `upper` (Y_1 <= Y_0): around (1.0, -0.5), deep in the lower moon,
none is (`none-exists`); around (0.5, 0.25), on the border, one is (`found`). The script checks both answers.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from netinvert.models.zoo import load_zoo
from netinvert.tasks.solve import solve_instance

PROPERTIES = {  # name: (box centre, half width, expected answer)
    "deep-lower": ((1.0, -0.5), 0.1, "none-exists"),
    "border": ((0.5, 0.25), 0.1, "found"),
}


def vnnlib(centre: tuple[float, float], half: float, name: str) -> str:
    """A VNNLIB property: X in the box around ``centre``, and the model calls it `upper` (Y_1 <= Y_0)."""
    lines = [f"; moons-relu: is any point within {half} of {centre} classed upper? ({name})", ""]
    lines += ["(declare-const X_0 Real)", "(declare-const X_1 Real)", "(declare-const Y_0 Real)",
              "(declare-const Y_1 Real)", ""]
    for i, c in enumerate(centre):
        lines += [f"(assert (>= X_{i} {c - half!r}))", f"(assert (<= X_{i} {c + half!r}))"]
    return "\n".join([*lines, "", "(assert (<= Y_1 Y_0))", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    model = load_zoo("moons-relu", verifier=False)
    onnx = args.out / "moons.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.module.eval(), (torch.zeros(1, 2),), str(onnx), input_names=["X"],
                          output_names=["Y"], dynamo=False)
    rows = []
    for name, (centre, half, expected) in PROPERTIES.items():
        spec = args.out / f"{name}.vnnlib"
        spec.write_text(vnnlib(centre, half, name))
        status = solve_instance(onnx, spec, timeout=60.0).items[0].status
        if status != expected:
            raise SystemExit(f"{spec.name}: {status}, expected {expected}")
        rows.append(f"{onnx.name},{spec.name},60\n")
        print(f"{spec.name}: {status}")
    (args.out / "instances.csv").write_text("".join(rows))
    print(f"wrote {onnx}, {len(rows)} properties and instances.csv in {args.out}")


if __name__ == "__main__":
    main()
