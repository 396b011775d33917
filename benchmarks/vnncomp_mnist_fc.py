"""Benchmark ``netinvert solve`` on VNN-COMP 2022 mnist_fc (3 networks x 30 properties).

Prints solved counts per network, wrong answers (against the five-verifier consensus in
known_results.csv), median time, and the same numbers for the reference tools; writes JSON.
Resumable: finished instances are kept in ``--out``/results.jsonl.

    python benchmarks/vnncomp_mnist_fc.py --timeout 120 [--jobs 2] [--limit N] [--networks 256x2,256x4]
        [--only prop_1_0.05.vnnlib]

``--jobs`` runs that many instances at once, each in its own process with ``--threads`` threads.
The data is read from ``$NETINVERT_VNNCOMP/mnist_fc`` (default ``../shared/data/vnncomp`` beside the repository).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch

from netinvert.tasks.solve import solve_instance

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NETINVERT_VNNCOMP") or ROOT.parent / "shared" / "data" / "vnncomp") / "mnist_fc"
TOOLS = ("alpha_beta_crown", "neuralsat", "nnenum", "nnv", "pyrat")
OURS = {"found": "sat", "none-exists": "unsat", "unknown": "unknown"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--limit", type=int, default=None, help="instances per network (first N)")
    ap.add_argument("--networks", default="256x2,256x4,256x6")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/vnncomp_mnist_fc"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per instance")
    ap.add_argument("--jobs", type=int, default=1, help="instances solved at once, one process each")
    ap.add_argument("--only", default=None, help="comma-separated vnnlib names (default: all)")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"missing data folder {DATA}: set NETINVERT_VNNCOMP to the VNN-COMP data folder")
    known = {(r["onnx"], r["vnnlib"]): r for r in csv.DictReader((DATA / "known_results.csv").open())}
    nets = [f"mnist-net_{n}.onnx" for n in args.networks.split(",")]
    rows = [(Path(o).name, Path(v).name) for o, v, _ in csv.reader((DATA / "instances.csv").open())]
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "results.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if r["timeout"] == args.timeout:
                done[(r["onnx"], r["vnnlib"])] = r
    todo = []
    for net in nets:
        mine = [r for r in rows if r[0] == net][: args.limit]
        if args.only:
            mine = [r for r in mine if r[1] in args.only.split(",")]
        todo += [r for r in mine if r not in done]
    with multiprocessing.get_context("spawn").Pool(args.jobs, _init_worker, (args.threads,)) as pool:
        for onnx_name, spec, status, stage, reason, seconds in pool.imap_unordered(
            _solve, [(o, v, args.timeout) for o, v in todo]
        ):
            rec = {
                "onnx": onnx_name,
                "vnnlib": spec,
                "timeout": args.timeout,
                "status": status,
                "stage": stage,
                "seconds": seconds,
                "reason": reason,
                "consensus": known[(onnx_name, spec)]["consensus"],
            }
            done[(onnx_name, spec)] = rec
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            wrong = OURS[status] in ("sat", "unsat") and rec["consensus"] in ("sat", "unsat")
            wrong = wrong and OURS[status] != rec["consensus"]
            print(
                f"{onnx_name} {spec}: {status:12s} {stage:7s} {seconds:7.1f} s  "
                f"consensus {rec['consensus']}{'  WRONG' if wrong else ''} {reason}",
                flush=True,
            )
    summary = summarize(nets, done, known, args.timeout, args.limit)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {args.out / 'summary.json'}")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _solve(job: tuple[str, str, float]) -> tuple[str, str, str, str, str, float]:
    onnx_name, spec, timeout = job
    t0 = time.perf_counter()
    item = solve_instance(DATA / "onnx" / onnx_name, DATA / "vnnlib" / spec, timeout).items[0]
    return onnx_name, spec, item.status, str(item.metrics.get("stage", "")), item.reason, time.perf_counter() - t0


def summarize(nets: list[str], done: dict, known: dict, timeout: float, limit: int | None) -> dict:
    header = f"{'network':22s} {'tool':18s} {'solved':>9s} {'sat':>4s} {'unsat':>5s} {'wrong':>5s} {'median s':>9s}"
    print("\n" + header + "\n" + "-" * len(header))
    out: dict = {"timeout": timeout, "limit": limit, "networks": {}}
    for net in nets:
        mine = [r for (o, _), r in done.items() if o == net]
        if not mine:
            continue
        specs = {r["vnnlib"] for r in mine}
        solved = [r for r in mine if r["status"] != "unknown"]
        wrong = [r for r in solved if r["consensus"] in ("sat", "unsat") and OURS[r["status"]] != r["consensus"]]
        entry = {
            "instances": len(mine),
            "solved": len(solved),
            "wrong": len(wrong),
            "sat": sum(r["status"] == "found" for r in mine),
            "unsat": sum(r["status"] == "none-exists" for r in mine),
            "median_seconds": statistics.median([r["seconds"] for r in solved]) if solved else None,
            "wrong_instances": [r["vnnlib"] for r in wrong],
            "tools": {},
        }
        print(
            f"{net:22s} {'netinvert':18s} {len(solved):4d}/{len(mine):<4d} {entry['sat']:4d} {entry['unsat']:5d} "
            f"{len(wrong):5d} {entry['median_seconds'] or float('nan'):9.2f}"
        )
        for tool in TOOLS:
            ks = [known[(net, s)] for s in specs]
            ok = [k for k in ks if k[f"{tool}_result"] in ("sat", "unsat")]
            times = [float(k[f"{tool}_time"]) for k in ok]
            tw = sum(1 for k in ok if k["consensus"] in ("sat", "unsat") and k[f"{tool}_result"] != k["consensus"])
            med = statistics.median(times) if times else float("nan")
            entry["tools"][tool] = {"solved": len(ok), "wrong": tw, "median_seconds": med if times else None}
            print(f"{'':22s} {tool:18s} {len(ok):4d}/{len(ks):<4d} {'':4s} {'':5s} {tw:5d} {med:9.2f}")
        out["networks"][net] = entry
    return out


if __name__ == "__main__":
    main()
