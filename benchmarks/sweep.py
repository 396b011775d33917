"""Benchmark the sweep engines: the mnist_fc 256x2 family and a two-layer atlas under local --jobs 1,
local --jobs 2 and Ray on this machine: wall time, per-task engine overhead, identical results.

    python benchmarks/sweep.py [--timeout 20] [--steps 64] [--layers conv,fc] [--limit N]

The family comes from ``$NETINVERT_VNNCOMP/mnist_fc`` (default ``../shared/data/vnncomp/mnist_fc``);
only its 256x2 rows run, each with ``--timeout`` seconds. The atlas renders ``--layers`` of
``digits-cnn``. Each engine starts from an empty folder. The per-task engine overhead of a task is
the time from handing it to the engine to having its answer back, less the time the task itself
ran (worker start-up included; the median shows the steady state). Prints a table and writes
``benchmarks/results/sweep.json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from netinvert.ground.output import write_json
from netinvert.models.load import load
from netinvert.sweeps.atlas import layer_tasks
from netinvert.sweeps.engines import make_engine
from netinvert.sweeps.runner import run_sweep
from netinvert.sweeps.solve import instance_task
from netinvert.sweeps.task import Record, Task, task_key

DOMAIN = {"param": "auto", "tv": 0.0, "bn_prior": None, "data_prior": None}


def family_tasks(folder: Path, timeout: float, limit: int | None) -> list[Task]:
    rows = [r for r in csv.reader((folder / "instances.csv").open()) if r and "256x2" in r[0]][:limit]
    return [Task(instance_task, {"onnx": str(folder / o), "vnnlib": str(folder / v), "timeout": timeout},
                 task_key("solve", [folder / o, folder / v], timeout=timeout, alpha_steps=30),
                 f"{Path(o).name} {Path(v).name}", timeout=timeout * 1.25 + 10) for o, v, _ in rows]


def overhead(records: list[Record]) -> dict[str, float]:
    values = [r.engine_s for r in records if r.status == "done"]
    return {"median_ms": 1e3 * statistics.median(values), "mean_ms": 1e3 * statistics.fmean(values),
            "max_ms": 1e3 * max(values)}


def run(name: str, engine: Any, family: list[Task], layers: list[str], steps: int, root: Path) -> dict[str, Any]:
    out = root / name
    t0 = time.perf_counter()
    solved = run_sweep(family, out / "family", engine=engine, description=f"{name} family")
    family_s = time.perf_counter() - t0
    net = load("digits-cnn")
    tasks = layer_tasks(net, "digits-cnn", {}, layers, out / "atlas", DOMAIN, steps=steps)
    t0 = time.perf_counter()
    drawn = run_sweep(tasks, out / "atlas", engine=engine, description=f"{name} atlas")
    atlas_s = time.perf_counter() - t0
    digests = {layer: hashlib.sha256(np.load(out / "atlas" / layer / "inputs.npy").tobytes()).hexdigest()[:16]
               for layer in layers}
    return {"family_wall_s": family_s, "family_task_s": sum(r.seconds for r in solved),
            "family_overhead": overhead(solved), "atlas_wall_s": atlas_s,
            "atlas_task_s": sum(r.seconds for r in drawn), "atlas_overhead": overhead(drawn),
            "statuses": [r.row.get("status", r.status) for r in solved], "states": [r.status for r in solved],
            "atlas_inputs_sha256": digests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per instance")
    ap.add_argument("--steps", type=int, default=64, help="atlas steps per unit")
    ap.add_argument("--layers", default="conv,fc", help="digits-cnn layers of the atlas")
    ap.add_argument("--limit", type=int, default=None, help="first N instances of the 256x2 family")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the runner's progress lines
    vnncomp = Path(os.environ.get("NETINVERT_VNNCOMP", Path(__file__).resolve().parents[2] / "shared/data/vnncomp"))
    family = family_tasks(vnncomp / "mnist_fc", args.timeout, args.limit)
    layers = args.layers.split(",")
    on_ray = make_engine("ray")
    t0 = time.perf_counter()
    on_ray.start()  # a local Ray instance with one slot per CPU
    ray_start_s = time.perf_counter() - t0
    engines = {"local --jobs 1": make_engine("local", jobs=1), "local --jobs 2": make_engine("local", jobs=2),
               f"ray ({os.cpu_count()} CPUs)": on_ray}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, engine) in enumerate(engines.items()):
            results[name] = run(name, engine, family, layers, args.steps, Path(tmp) / f"e{i}")
    on_ray.ray.shutdown()
    first = next(iter(results.values()))
    same = {name: {"statuses": r["statuses"] == first["statuses"],
                   "atlas_inputs": r["atlas_inputs_sha256"] == first["atlas_inputs_sha256"]}
            for name, r in results.items()}
    header = (f"{'engine':16s} {'family wall s':>13s} {'task s':>8s} {'overhead ms med/mean':>21s} "
              f"{'atlas wall s':>12s} {'same answers':>12s}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, r in results.items():
        o = r["family_overhead"]
        ok = same[name]["statuses"] and same[name]["atlas_inputs"]
        print(f"{name:16s} {r['family_wall_s']:13.1f} {r['family_task_s']:8.1f} "
              f"{o['median_ms']:10.1f} /{o['mean_ms']:9.1f} {r['atlas_wall_s']:12.1f} {'yes' if ok else 'NO':>12s}")
    statuses = first["statuses"]
    print(f"\n{len(family)} instances ({', '.join(f'{statuses.count(s)} {s}' for s in sorted(set(statuses)))}), "
          f"atlas of digits-cnn {args.layers} at {args.steps} steps; Ray start-up {ray_start_s:.1f} s (not in the walls)")
    write_json(args.out, {"timeout": args.timeout, "steps": args.steps, "layers": layers, "instances": len(family),
                          "cpus": os.cpu_count(), "ray_start_s": ray_start_s, "engines": results, "same_as_first": same})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
