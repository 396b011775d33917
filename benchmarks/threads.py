"""Torch threads vs step time: where intra-op threads start to pay, and what the library's default picks.

A ladder of small-to-large CNNs (28 px to 224 px); for each, one forward+backward step of a batch at every
thread count from 1 to the core count (best of a short timed loop, interleaved so machine noise hits every
count alike), the activation values per step (``Model.step_work``) and the count
``netinvert.ground.run.default_threads`` chooses. Prints a table; writes benchmarks/results/threads.json.

    python benchmarks/threads.py [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from netinvert.ground.run import default_threads
from netinvert.ground.spec import InputSpec
from netinvert.models.wrapper import Model

LADDER = [(28, 8, 10), (32, 16, 10), (64, 32, 10), (128, 32, 8), (224, 64, 4)]  # input size, width, batch


def network(width: int) -> nn.Module:
    c = width
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(2 * c, 4 * c, 3, padding=1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4 * c, 10))


def step_ms(module: nn.Module, x: torch.Tensor, threads: int, seconds: float) -> float:
    torch.set_num_threads(threads)
    module(x).sum().backward()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        module(x).sum().backward()
        count += 1
    return 1000 * (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="timed loop per measurement")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts = list(range(1, cores + 1))
    rows = []
    print(f"{'input':>6} {'width':>6} {'batch':>6} {'work':>10} " + " ".join(f"{f'{t} thr ms':>10}" for t in counts)
          + f" {'default':>8}")
    for size, width, batch in LADDER:
        torch.manual_seed(0)
        module = network(width)
        x = torch.rand(batch, 3, size, size, requires_grad=True)
        work = Model(module, InputSpec((3, size, size))).step_work(batch)
        best = {t: min(step_ms(module, x, t, args.seconds) for _ in range(2)) for t in counts}
        chosen = default_threads(work)
        rows.append({"size": size, "width": width, "batch": batch, "work": work, "ms": best, "default": chosen,
                     "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None})
        print(f"{size:>6} {width:>6} {batch:>6} {work:>10} " + " ".join(f"{best[t]:>10.1f}" for t in counts)
              + f" {chosen:>8}")
    out = Path(__file__).resolve().parent / "results" / "threads.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": cores, "torch": torch.__version__,
                               "machine": platform.processor() or platform.machine(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
