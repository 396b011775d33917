"""Library overhead of the gradient method versus a bare PyTorch loop doing the same maths.

On digits-cnn and digits-mlp, 512 steps, one thread: pixel parameterization (sigmoid), Adam
lr 0.05, no transforms or priors, all 10 classes in one batch. Reports CPU time per step for
both and their ratio (goal <= 1.10x), and all-10-classes batched versus one class at a time.
Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from netinvert import Class, Domain, invert, load_zoo

STEPS = 512


def bare_loop(model, classes: list[int], steps: int) -> float:
    """CPU seconds of a hand-written loop: x = sigmoid(p), maximize the class logits with Adam."""
    net = model.module
    gen = torch.Generator().manual_seed(0)
    start = torch.full((len(classes), 1, 28, 28), 0.5) + 0.01 * torch.randn((len(classes), 1, 28, 28), generator=gen)
    raw = torch.nn.Parameter(torch.log(start) - torch.log1p(-start))
    index = torch.tensor(classes)[:, None]
    opt = torch.optim.Adam([raw], lr=0.05)
    t0 = time.process_time()
    for _ in range(steps):
        x = torch.sigmoid(raw)
        loss = -net(x).gather(1, index).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.process_time() - t0


def ours(model, classes: list[int], steps: int) -> float:
    domain = Domain(param="pixel", transforms=None, data_prior=0.0)
    t0 = time.process_time()
    invert(model, [Class(k) for k in classes], domain, steps=steps, lr=0.05, early_stop=False, threads=1,
           progress=False)
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/imagine_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in ("digits-cnn", "digits-mlp"):
        model = load_zoo(name, verifier=False)
        classes = list(range(10))
        ours(model, classes, 8)  # warm-up
        bare = min(bare_loop(model, classes, args.steps) for _ in range(args.repeats))
        lib = min(ours(model, classes, args.steps) for _ in range(args.repeats))
        sequential = sum(ours(model, [k], args.steps) for k in classes)
        rows.append({
            "model": name, "steps": args.steps, "bare_ms_per_step": 1000 * bare / args.steps,
            "ours_ms_per_step": 1000 * lib / args.steps, "ratio": lib / bare,
            "batched_10_s": lib, "sequential_10_s": sequential, "batched_speedup": sequential / lib,
        })
    header = f"{'model':<11} {'bare ms/step':>12} {'ours ms/step':>12} {'ratio':>6} {'batched s':>10} {'sequential s':>13} {'speedup':>8}"
    print(header)
    for r in rows:
        print(f"{r['model']:<11} {r['bare_ms_per_step']:>12.3f} {r['ours_ms_per_step']:>12.3f} {r['ratio']:>6.2f} "
              f"{r['batched_10_s']:>10.2f} {r['sequential_10_s']:>13.2f} {r['batched_speedup']:>8.1f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "imagine_overhead", "threads": 1, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
