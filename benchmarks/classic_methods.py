"""The classic answers side by side: transpose, pseudoinverse, gradient, langevin and dbn.

On ``roman-mlp`` and ``digits-mlp`` (and ``dbn-digits`` for the DBN, which is its own model of the
same digits), every class with K samples: mean model probability of the target class, fraction
recognised by the independent verifier, diversity of the K samples (mean pairwise RMS distance in
units of the value range) and seconds. Prints a table, writes JSON and a picture grid per model
(rows: methods, columns: classes) for the docs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from netinvert import Class, Domain, invert, load_zoo
from netinvert.ground.images import save_grid
from netinvert.ground.result import Result
from netinvert.methods.langevin import pairwise_diversity


def _summary(result: Result, classes: int, k: int, seconds: float, span: float) -> dict[str, float]:
    probs = np.array(result.metric("model_prob"), dtype=float)
    agrees = np.array([bool(a) for a in result.metric("verifier_agrees")])
    groups = result.inputs.reshape(classes, k, *result.inputs.shape[1:])
    diversity = float(np.mean([pairwise_diversity(g, span) for g in groups]))
    return {"model_prob": float(probs.mean()), "verifier_agreement": float(agrees.mean()),
            "diversity": diversity, "seconds": seconds}


def _gradient_k(model, targets: list[Class], k: int) -> Result:  # type: ignore[no-untyped-def]
    """K independent gradient runs (seeds 0..K-1), interleaved to the K-per-class layout."""
    runs = [invert(model, targets, Domain(), method="gradient", seed=s) for s in range(k)]
    order = [runs[s] for s in range(k)]
    inputs = torch.stack([r.inputs for r in order], dim=1).reshape(-1, *order[0].inputs.shape[1:])
    items = [order[s].items[c] for c in range(len(targets)) for s in range(k)]
    return Result(method="gradient", model=model.name, inputs=inputs, outputs=inputs, items=items)


def run_model(name: str, k: int, out: Path) -> list[dict[str, object]]:
    model = load_zoo(name)
    classes = model.num_outputs
    targets = [Class(c) for c in range(classes)]
    span = model.input_spec.high - model.input_spec.low
    methods = {
        "transpose (baseline)": lambda: invert(model, targets, None, method="analytic", mode="transpose"),
        "pseudoinverse": lambda: invert(model, targets, None, method="analytic", samples=k),
        "gradient": lambda: _gradient_k(model, targets, k),
        "langevin": lambda: invert(model, targets, method="langevin", samples=k),
    }
    if name == "digits-mlp":
        dbn = load_zoo("dbn-digits")
        methods["dbn (dbn-digits)"] = lambda: invert(dbn, targets, None, method="dbn", samples=k)
    rows, pictures, captions = [], [], []
    for method, call in methods.items():
        start = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - start
        if method == "transpose (baseline)" and result.inputs.shape[0] == classes:
            result.inputs = result.inputs.repeat_interleave(k, 0)
            result.items = [item for item in result.items for _ in range(k)]
        row = {"model": name, "method": method, **_summary(result, classes, k, seconds, span)}
        rows.append(row)
        pictures.append(result.inputs.reshape(classes, k, *result.inputs.shape[1:])[:, 0])
        captions += [f"{method.split()[0]} {model.class_label(c)}" for c in range(classes)]
    out.mkdir(parents=True, exist_ok=True)
    save_grid(torch.cat(pictures), captions, out / f"classic_{name}.png",
              (model.input_spec.low, model.input_spec.high), columns=classes)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=4, help="K samples per class")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/classic_methods.json"))
    parser.add_argument("--pictures", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    rows = []
    for name in ("roman-mlp", "digits-mlp"):
        rows += run_model(name, args.samples, args.pictures)
    print(f"{'model':<11} {'method':<22} {'model p':>8} {'verifier':>9} {'diversity':>10} {'seconds':>8}")
    for r in rows:
        print(f"{r['model']:<11} {r['method']:<22} {r['model_prob']:>8.3f} {r['verifier_agreement']:>9.2f} "
              f"{r['diversity']:>10.3f} {r['seconds']:>8.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "classic_methods", "samples": args.samples, "rows": rows}, indent=2))
    print(f"wrote {args.json} and {args.pictures}/classic_*.png")


if __name__ == "__main__":
    main()
