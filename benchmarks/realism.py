"""Realism of imagined class images under each prior, judged by the independent verifier.

For each model (the zoo's digits-cnn, digits-mlp and roman-mlp, and digits-cnn trained on the real MNIST
test set in tests/data/mnist with its own verifier) and each prior, ``imagine`` all classes with
``--samples`` copies each and report judge agreement, the judge's mean probability and the Frechet distance
in the judge's feature space beside its floor (real vs real) and ceiling (uniform noise)
(``netinvert.report.realism``). Priors:

- ``none``: pixel parameterization, no data prior (what a user without data gets);
- ``gaussian``: pixel + the Gaussian data prior, weight 20 (the default before the learned prior);
- ``elbo``: pixel + the learned prior's negative ELBO as a penalty (``vae_prior=20``);
- ``latent``: optimize in the learned prior's latent space (``param="latent"``, then a short pixel nudge
  for items short of the goal): what ``Domain()`` now picks for class targets when the data is known;
- ``latent-restarts``: the same with ``restarts=3`` (per item, the run the model scores best).

Prints a table, writes JSON (``--json``) and one picture per model (``--pictures``): a row per prior, the
first image of each class.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from netinvert import Class, Domain, invert, load_zoo
from netinvert.ground.images import grid_image
from netinvert.ground.output import write_file, write_json
from netinvert.report.realism import realism

MNIST = Path(__file__).resolve().parent.parent / "tests" / "data" / "mnist"
PRIORS = {
    "none": Domain(param="pixel", data_prior=0.0),
    "gaussian": Domain(param="pixel", data_prior=20.0),
    "elbo": Domain(param="pixel", data_prior=0.0, vae_prior=20.0),
    "latent": Domain(param="latent", data_prior=0.0),
    "latent-restarts": Domain(param="latent", data_prior=0.0),
}
RUN_OPTIONS = {"latent-restarts": {"restarts": 3}}
MODELS = ("digits-cnn", "digits-mlp", "roman-mlp", "digits-cnn@mnist")


def load(name: str):  # type: ignore[no-untyped-def]
    if name.endswith("@mnist"):
        return load_zoo(name.split("@")[0], data=f"mnist:{MNIST}")
    return load_zoo(name)


def measure(model, domain: Domain, samples: int, steps: int, **options) -> tuple[dict, object]:  # type: ignore[no-untyped-def]
    targets = [Class(k) for k in range(model.num_outputs)]
    t0 = time.perf_counter()
    result = invert(model, targets, domain, steps=steps, samples=samples, threads=1, progress=False, **options)
    seconds = time.perf_counter() - t0
    found = sum(item.status == "found" for item in result.items) / len(result.items)
    return {"found": found, "seconds": round(seconds, 1), **(realism(model, result) or {})}, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--priors", nargs="*", default=list(PRIORS))
    parser.add_argument("--samples", type=int, default=4, help="images per class")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/realism.json"))
    parser.add_argument("--pictures", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'model':18} {'prior':15} {'found':>6} {'judge':>6} {'judge p':>8} {'FD':>8} {'floor':>7} "
          f"{'ceiling':>8} {'FD/floor':>8} {'gap':>6} {'div':>6} {'div real':>8} {'s':>6}")
    for name in args.models:
        model = load(name)
        sheet, captions = [], []
        for prior in args.priors:
            row, result = measure(model, PRIORS[prior], args.samples, args.steps, **RUN_OPTIONS.get(prior, {}))
            row = {"model": name, "prior": prior, "samples": args.samples, "steps": args.steps, **row}
            rows.append(row)
            print(f"{name:18} {prior:15} {row['found']:6.2f} {row['verifier_agreement']:6.2f} {row['verifier_prob']:8.3f} "
                  f"{row['frechet']:8.1f} {row['frechet_floor']:7.1f} {row['frechet_ceiling']:8.1f} "
                  f"{row['frechet_ratio']:8.2f} {row['gap_closed']:6.2f} {row.get('diversity', 0):6.2f} "
                  f"{row.get('diversity_real', 0):8.2f} {row['seconds']:6.1f}", flush=True)
            first = result.inputs[:: args.samples]
            sheet.append(first)
            labels = [item.target.replace("class ", "") for item in result.items[:: args.samples]]
            captions += [f"{prior}: {labels[0]}", *labels[1:]]
        if args.pictures:
            grid = grid_image(torch.cat(sheet), captions, result.value_range, columns=len(first))
            write_file(args.pictures / f"realism_{name.replace('@', '-')}.png",
                       lambda tmp, grid=grid: grid.save(tmp, format="PNG"))
    write_json(args.json, rows)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
