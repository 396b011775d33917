"""The stopping rule on an adversarially trained MNIST CNN (issue 19, item 21), with and without data.

Trains (once; cached under ``$NETINVERT_HOME/benchmarks``) a small CNN on the 8,000 training images of
``tests/data/mnist`` by FGSM with a random start (eps 0.2, Wong et al. 2020) and, as the judge, a plain MLP
on the same images. Then imagines all 10 classes with ``--seeds`` seeds each under three rules:

- ``goal``: stop once reached (p >= 0.99), the rule before;
- ``settled``: stop once reached and the picture has settled (``gradient.SETTLE``; applies without priors);
- ``all``: every step (``early_stop=False``);

without data (pixels, no prior) and with the data (the learned prior's latent space, the default then).
Reports judge agreement, the Frechet distance against the 2,000 held-out images in the judge's features
(``netinvert.report.realism``), the fraction of saturated pixels (within 2 % of black or white; real MNIST
digits: about 0.89) and the steps run. Prints a table, writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from netinvert import Class, Domain, InputSpec, Model, invert
from netinvert.data.mnist import load_mnist
from netinvert.data.sources import load_source
from netinvert.ground.output import write_file, write_json
from netinvert.ground.store import cache_home
from netinvert.methods import gradient
from netinvert.report.realism import realism

MNIST = Path(__file__).resolve().parent.parent / "tests" / "data" / "mnist"
EPS = 0.2
RULES = ("goal", "settled", "all")


def robust_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5, padding=2),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 49, 100), nn.ReLU(), nn.Linear(100, 10))


def judge_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, epochs: int = 6, seed: int = 0) -> nn.Module:
    """Adam on cross-entropy; with ``eps`` > 0 on FGSM examples from a random start in the eps box."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            xb, yb = x[perm[i : i + 64]], y[perm[i : i + 64]]
            if eps > 0:
                d = ((torch.rand_like(xb) * 2 - 1) * eps).requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(net((xb + d).clamp(0, 1)), yb), d)
                xb = (xb + (d + 1.25 * eps * g.sign()).clamp(-eps, eps)).clamp(0, 1).detach()
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def pgd_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10) -> float:
    d = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(F.cross_entropy(net((x + d).clamp(0, 1)), y), d)
        d = (d + 2.5 * eps / steps * g.sign()).clamp(-eps, eps).detach().requires_grad_(True)
    with torch.no_grad():
        return float((net((x + d).clamp(0, 1)).argmax(1) == y).float().mean())


def networks() -> tuple[nn.Module, nn.Module, dict]:
    """The robust CNN and the judge, trained on first use and cached."""
    folder = cache_home("benchmarks")
    path = folder / f"stopping-mnist-fgsm{EPS}.pt"
    net, judge = robust_cnn(), judge_mlp()
    if path.exists():
        saved = torch.load(path)
    else:
        x, y, xh, yh = (torch.as_tensor(a) for a in load_mnist(MNIST))
        train(net, x, y, EPS)
        train(judge, x, y, 0.0, seed=1)
        with torch.no_grad():
            info = {"clean_accuracy": float((net(xh).argmax(1) == yh).float().mean()),
                    "judge_accuracy": float((judge(xh).argmax(1) == yh).float().mean())}
        info["pgd_accuracy"] = pgd_accuracy(net, xh[:500], yh[:500], EPS)
        saved = {"net": net.state_dict(), "judge": judge.state_dict(), "info": info}
        write_file(path, lambda tmp: torch.save(saved, tmp))
    net.load_state_dict(saved["net"])
    judge.load_state_dict(saved["judge"])
    return net.eval(), judge.eval(), saved["info"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=4, help="runs of all 10 classes per rule")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/stopping.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    net, judge_net, info = networks()
    spec = InputSpec((1, 28, 28))
    judge = Model(judge_net, spec, name="mnist-judge-mlp")
    data = load_source(f"mnist:{MNIST}", spec)
    models = {"no data": Model(net, spec, name="mnist-fgsm-cnn", verifier=judge),
              "data": Model(net, spec, name="mnist-fgsm-cnn", verifier=judge, data=data)}
    print(f"robust CNN: clean accuracy {info['clean_accuracy']:.3f}, PGD-10 at eps {EPS} {info['pgd_accuracy']:.3f}; "
          f"judge accuracy {info['judge_accuracy']:.3f}")
    print(f"{'data':8} {'rule':8} {'param':7} {'found':>6} {'judge':>6} {'FD':>7} {'floor':>6} {'FD/floor':>8} "
          f"{'sat':>5} {'steps':>12} {'s':>6}")
    rows, default_settle = [], gradient.SETTLE
    for mode, model in models.items():
        for rule in RULES:
            gradient.SETTLE = 0.0 if rule == "goal" else default_settle
            t0 = time.perf_counter()
            runs = [invert(model, [Class(k) for k in range(10)], Domain(), steps=args.steps, seed=seed,
                           early_stop=rule != "all", threads=1, progress=False) for seed in range(args.seeds)]
            seconds = time.perf_counter() - t0
            result = replace(runs[0], inputs=torch.cat([r.inputs for r in runs]), items=sum([r.items for r in runs], []))
            measured = realism(models["data"], result) or {}
            x = result.inputs
            row = {"data": mode, "rule": rule, "param": runs[0].info["options"]["param"],
                   "found": sum(i.status == "found" for i in result.items) / len(result.items),
                   "saturated": float(((x < 0.02) | (x > 0.98)).float().mean()),
                   "steps": [r.timing["steps"] for r in runs], "seconds": round(seconds, 1), **measured}
            rows.append(row)
            print(f"{mode:8} {rule:8} {row['param']:7} {row['found']:6.2f} {row['verifier_agreement']:6.2f} "
                  f"{row['frechet']:7.1f} {row['frechet_floor']:6.1f} {row['frechet_ratio']:8.2f} {row['saturated']:5.2f} "
                  f"{min(row['steps']):5}-{max(row['steps']):<6} {seconds:6.1f}", flush=True)
    gradient.SETTLE = default_settle
    write_json(args.json, {"networks": info, "eps": EPS, "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
