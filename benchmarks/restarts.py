"""What ``restarts=3`` buys, per item, against one run: the judge's probability for the intended class.

``restarts=R`` keeps, per item, the run the model scores best (``gradient.best_of``: found first, then the
larger logit margin; the judge never chooses). Runs differ by seed a lot on some classes (``roman-mlp``'s
``X``: judge p 0.07 to 0.87), so one triple of runs says little about the rule. This script runs ``imagine``
``--runs`` times per model (all classes, one picture each, the default domain and 1024 steps, one thread) and
scores every rule over every triple of those runs (``C(runs, 3)`` triples, each item picked by the rule):

- ``one run``: every run alone (what ``restarts=1`` gets on average);
- ``margin``: the rule ``best_of`` uses;
- ``data-like``: found first, then the lowest Gaussian data-prior penalty (``domains.data_prior``), a
  candidate rule that reads the model's data instead of its margin;
- ``judge (oracle)``: the run the judge itself scores best, the ceiling no fair rule reaches.

For each rule it also counts how often, per class, the kept run scores below or above the first run of its
triple (``restarts=3`` against ``restarts=1`` at the same seed), and per class how well the margin follows
the judge's p across runs.

Also prints the triple ``imagine --restarts 3 --seed 0`` itself runs (seeds 0, 1 000 003, 2 000 006).
Writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netinvert import Class, Domain, invert, load_zoo
from netinvert.domains.data_prior import prior_for
from netinvert.ground.output import write_json
from netinvert.methods.gradient import RESTART_SEED

MODELS = ("roman-mlp", "digits-mlp", "digits-cnn")
RULES = {
    "margin": lambda run: (run["found"], run["margin"]),
    "data-like": lambda run: (run["found"], -run["data_penalty"]),
    "judge (oracle)": lambda run: run["judge_p"],
}


def runs_of(name: str, count: int) -> list[list[dict[str, Any]]]:
    """``count`` imagine runs of every class of ``name`` (seed ``k // 3 + (k % 3) * RESTART_SEED``, so runs 0-2 are
    the ones ``--restarts 3 --seed 0`` makes); per run, per item: found, margin, data penalty, judge p and verdict."""
    model = load_zoo(name)
    prior = prior_for(model)
    assert prior is not None
    targets = [Class(k) for k in range(model.num_outputs)]
    runs = []
    for k in range(count):
        seed = k // 3 + (k % 3) * RESTART_SEED
        result = invert(model, targets, Domain(), steps=1024, seed=seed, threads=1, progress=False)
        with torch.no_grad():
            penalty = prior.penalty(result.inputs).tolist()
        runs.append([{"found": item.status == "found", "margin": item.metrics["margin"], "data_penalty": penalty[i],
                      "judge_p": item.metrics["verifier_prob"], "judge_agrees": bool(item.metrics["verifier_agrees"])}
                     for i, item in enumerate(result.items)])
        print(f"{name} run {k} (seed {seed}): judge p {[round(r['judge_p'], 2) for r in runs[-1]]}", flush=True)
    return runs


def score(runs: list[list[dict[str, Any]]], labels: list[str]) -> dict[str, Any]:
    """Mean judge p and agreement, overall and per class, of one run alone and of each rule over every triple;
    per rule and class, how often the kept run's judge p is below / above the first run's (every ordered
    triple: what ``restarts=3`` does against ``restarts=1`` at the same seed); per class, the correlation of
    the margin with the judge's p over all runs."""
    items = len(runs[0])
    picks: dict[str, list[list[dict[str, Any]]]] = {"one run": runs}
    for rule, key in RULES.items():
        picks[rule] = [[max((run[i] for run in triple), key=key) for i in range(items)]
                       for triple in itertools.combinations(runs, 3)]
    out: dict[str, Any] = {}
    for rule, chosen in picks.items():
        p = np.array([[item["judge_p"] for item in row] for row in chosen])
        agrees = np.array([[item["judge_agrees"] for item in row] for row in chosen])
        out[rule] = {"judge_p": float(p.mean()), "judge_agreement": float(agrees.mean()),
                     "per_class_judge_p": dict(zip(labels, p.mean(0).round(3).tolist(), strict=True))}
    for rule, key in RULES.items():
        change = np.array([[np.sign(max((run[i] for run in triple), key=key)["judge_p"] - triple[0][i]["judge_p"])
                            for i in range(items)] for triple in itertools.permutations(runs, 3)])
        out[rule]["below_first"] = dict(zip(labels, (change < 0).mean(0).round(3).tolist(), strict=True))
        out[rule]["above_first"] = dict(zip(labels, (change > 0).mean(0).round(3).tolist(), strict=True))
    out["margin_judge_correlation"] = {
        label: round(float(np.corrcoef([run[i]["margin"] for run in runs], [run[i]["judge_p"] for run in runs])[0, 1]),
                     3) for i, label in enumerate(labels)}
    seed_zero = [max((run[i] for run in runs[:3]), key=RULES["margin"]) for i in range(items)]
    out["restarts 3, seed 0"] = {"runs": {labels[i]: [round(run[i]["judge_p"], 3) for run in runs[:3]]
                                          for i in range(items)},
                                 "kept": {labels[i]: round(seed_zero[i]["judge_p"], 3) for i in range(items)}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=24, help="imagine runs per model (multiple of 3)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/restarts.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for name in args.models:
        labels = [load_zoo(name).class_label(k) for k in range(load_zoo(name).num_outputs)]
        rows[name] = {"runs": args.runs, **score(runs_of(name, args.runs), labels)}
        for rule in ("one run", *RULES):
            r = rows[name][rule]
            worst = min(r["per_class_judge_p"], key=r["per_class_judge_p"].get)
            below = f", below the first run {r['below_first'][worst]:.2f}, above {r['above_first'][worst]:.2f}" \
                if "below_first" in r else ""
            print(f"{name:11s} {rule:15s} judge p {r['judge_p']:.3f} agree {r['judge_agreement']:.3f}; "
                  f"class {worst}: {r['per_class_judge_p'][worst]:.3f}{below}", flush=True)
        print(f"{name:11s} margin vs judge p correlation: {rows[name]['margin_judge_correlation']}", flush=True)
        print(f"{name:11s} --restarts 3 --seed 0: {rows[name]['restarts 3, seed 0']}", flush=True)
    write_json(args.json, rows)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
