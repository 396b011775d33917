"""Atlas throughput: units per second for an atlas of a conv layer, batched vs one unit at a time.

The network is a small digits-sized CNN (1x28x28 -> conv 16 -> conv 32 -> fc 10) with seeded random
weights (throughput does not depend on training). Every configuration renders all 32 channels of
``conv2`` with the same number of steps through ``netinvert.sweeps.atlas.render`` into a fresh
folder (PNG and checkpoint writing included). A last row is what a user gets from
``netinvert atlas -m digits-cnn -l fc`` with every default (256 steps, the data prior, batch 16, the
library's thread choice). Prints a table; writes benchmarks/results/atlas_throughput.json.

    python benchmarks/atlas_throughput.py [--steps 128] [--threads N] [--repeats 2]

``--threads`` defaults to the library's own choice (``netinvert.ground.run.default_threads``).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from netinvert.ground.run import torch_threads
from netinvert.ground.spec import InputSpec
from netinvert.models.load import load
from netinvert.models.wrapper import Model
from netinvert.sweeps.atlas import render

LAYER = "conv2"


def network() -> Model:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 16, 3, padding=1), act1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(16, 32, 3, padding=1), act2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc=nn.Linear(32 * 49, 10),
    ))
    return Model(net, InputSpec((1, 28, 28)), name="bench-cnn")


def measure(model: Model, layer: str, batch_size: int, steps: int, repeats: int,
            threads: int | None) -> dict[str, float]:
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = render(model, layer, Path(tmp) / "atlas", batch_size=batch_size, steps=steps, threads=threads)
            best = min(best, time.perf_counter() - start)
    units = len(result.items)
    return {"batch_size": batch_size, "units": units, "seconds": best, "units_per_s": units / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,4,8,16,32")
    args = parser.parse_args()
    model = network()
    rows = [measure(model, LAYER, int(b), args.steps, args.repeats, args.threads) for b in args.batch_sizes.split(",")]
    single = next((r["units_per_s"] for r in rows if r["batch_size"] == 1), rows[0]["units_per_s"])
    with torch_threads(args.threads, model.step_work(1)):
        threads = torch.get_num_threads()
    print(f"atlas of {LAYER} (32 channels), {args.steps} steps per unit, {threads} thread(s), best of "
          f"{args.repeats}")
    print(f"{'batch':>6} {'seconds':>9} {'units/s':>9} {'speed-up':>9}")
    for r in rows:
        r["speedup"] = r["units_per_s"] / single
        print(f"{r['batch_size']:>6} {r['seconds']:>9.2f} {r['units_per_s']:>9.2f} {r['speedup']:>8.1f}x")
    defaults = measure(load("digits-cnn"), "fc", 16, 256, args.repeats, None)
    print(f"netinvert atlas -m digits-cnn -l fc, every default: {defaults['units']} units in "
          f"{defaults['seconds']:.2f} s, {defaults['units_per_s']:.2f} units/s")
    out = Path(__file__).resolve().parent / "results" / "atlas_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"layer": LAYER, "steps": args.steps, "threads": threads, "cli_defaults": defaults,
                               "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
