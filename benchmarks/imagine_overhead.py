"""Library overhead of the gradient method versus a bare PyTorch loop doing the same maths.

On every zoo classifier (roman-mlp, digits-cnn, digits-mlp, moons-relu), 512 steps, one thread: pixel
parameterization (sigmoid into the input box), Adam lr 0.05, no transforms or priors, all classes in
one batch. Reports CPU time per step for both (best of ``--repeats`` interleaved runs), the median of
their per-run ratios (goal <= 1.10x; the median of pairs resists load from other processes), and all
classes batched versus one class at a time. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from netinvert import Class, Domain, invert, load_zoo
from netinvert.ground.output import write_json

STEPS = 512
MODELS = ("roman-mlp", "digits-cnn", "digits-mlp", "moons-relu")


def bare_loop(model, classes: list[int], steps: int) -> float:
    """CPU seconds of a hand-written loop: x = low + span * sigmoid(p), maximize the class logits with Adam."""
    net = model.module
    spec = model.input_spec
    shape = (len(classes), *spec.shape)
    gen = torch.Generator().manual_seed(0)
    start = torch.full(shape, 0.5) + 0.01 * torch.randn(shape, generator=gen)
    raw = torch.nn.Parameter(torch.log(start) - torch.log1p(-start))
    index = torch.tensor(classes)[:, None]
    low, span = spec.low, spec.high - spec.low
    unit = low == 0 and span == 1
    opt = torch.optim.Adam([raw], lr=0.05)
    t0 = time.process_time()
    for _ in range(steps):
        x = torch.sigmoid(raw) if unit else low + span * torch.sigmoid(raw)
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
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="zoo classifiers to time")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved runs: best time, median ratio")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/imagine_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        model = load_zoo(name, verifier=False)
        classes = list(range(model.num_outputs))
        ours(model, classes, 8)  # warm-up
        runs = [(bare_loop(model, classes, args.steps), ours(model, classes, args.steps))
                for _ in range(args.repeats)]  # interleaved, so load from other processes hits both alike
        bare, lib = min(r[0] for r in runs), min(r[1] for r in runs)
        ratio = statistics.median(o / b for b, o in runs)  # per pair: robust on a shared machine
        sequential = sum(ours(model, [k], args.steps) for k in classes)
        rows.append({
            "model": name, "steps": args.steps, "bare_ms_per_step": 1000 * bare / args.steps,
            "ours_ms_per_step": 1000 * lib / args.steps, "ratio": ratio, "ratio_of_best": lib / bare,
            "batched_s": lib, "sequential_s": sequential, "batched_speedup": sequential / lib,
        })
    header = f"{'model':<11} {'bare ms/step':>12} {'ours ms/step':>12} {'ratio':>6} {'batched s':>10} {'sequential s':>13} {'speedup':>8}"
    print(header)
    for r in rows:
        print(f"{r['model']:<11} {r['bare_ms_per_step']:>12.3f} {r['ours_ms_per_step']:>12.3f} {r['ratio']:>6.2f} "
              f"{r['batched_s']:>10.2f} {r['sequential_s']:>13.2f} {r['batched_speedup']:>8.1f}x")
    write_json(args.json, {"benchmark": "imagine_overhead", "threads": 1, "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
