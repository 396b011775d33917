"""Benchmark ``netinvert solve`` on any VNN-COMP family folder (``instances.csv`` + ``known_results.csv``).

Prints one row per instance as it finishes, then solved / sat / unsat / wrong (against the
consensus column of ``known_results.csv``) / median time per network, next to the same numbers
for every tool with a ``<tool>_result`` column. Writes ``results.jsonl`` (one row per instance,
appended as it goes: rerunning skips the instances already there at the same timeout, so an
interrupted run resumes) and ``summary.json`` under ``--out``.

    python benchmarks/vnncomp_family.py ../shared/data/vnncomp/acasxu_dev [--timeout 116] [--jobs 1]
        [--limit N] [--networks 1_1,1_2] [--only prop_1.vnnlib] [--out benchmarks/results/vnncomp_acasxu_dev]

``--timeout`` defaults to each instance's own limit (the third column of ``instances.csv``).
``--jobs`` runs that many instances at once, each in its own process with ``--threads`` threads.
``--graph`` solves every network through the graph form (``solvers/graph.py``) instead of the
dense chain, to compare the two on the same instances.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import torch

from netinvert.ground.output import write_json
from netinvert.solvers import problem
from netinvert.tasks.solve import solve_instance

OURS = {"found": "sat", "none-exists": "unsat", "unknown": "unknown"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="family folder with instances.csv and known_results.csv")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per instance (default: instances.csv)")
    ap.add_argument("--limit", type=int, default=None, help="instances per network (first N)")
    ap.add_argument("--networks", default=None, help="comma-separated substrings of the ONNX names to keep")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/vnncomp_<folder name>")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per instance")
    ap.add_argument("--jobs", type=int, default=1, help="instances solved at once, one process each")
    ap.add_argument("--only", default=None, help="comma-separated vnnlib names (default: all)")
    ap.add_argument("--graph", action="store_true",
                    help="solve every network as a graph (solvers.graph), not as a dense chain: for comparison")
    args = ap.parse_args()
    data = args.folder.resolve()
    for name in ("instances.csv", "known_results.csv"):
        if not (data / name).is_file():
            raise SystemExit(f"missing {data / name}")
    out = args.out or Path("benchmarks/results") / f"vnncomp_{data.name}{'_graph' if args.graph else ''}"
    known = {(r["onnx"], r["vnnlib"]): r for r in csv.DictReader((data / "known_results.csv").open())}
    tools = sorted({k[: -len("_result")] for k in next(iter(known.values())) if k.endswith("_result")})
    rows = [
        (o, v, args.timeout if args.timeout is not None else float(t))
        for o, v, t in csv.reader((data / "instances.csv").open())
    ]
    nets = list(dict.fromkeys(Path(o).name for o, _, _ in rows))
    if args.networks:
        nets = [n for n in nets if any(s in n for s in args.networks.split(","))]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done: dict[tuple[str, str], dict] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["onnx"], r["vnnlib"])] = r
    todo = []
    for net in nets:
        mine = [r for r in rows if Path(r[0]).name == net][: args.limit]
        if args.only:
            mine = [r for r in mine if Path(r[1]).name in args.only.split(",")]
        todo += [(data, o, v, t) for o, v, t in mine if done.get((net, Path(v).name), {}).get("timeout") != t]
    print(f"{len(todo)} instances to run, {len(done)} already in {log}", flush=True)
    with multiprocessing.get_context("spawn").Pool(args.jobs, _init_worker, (args.threads, args.graph)) as pool:
        for onnx_name, spec, timeout, status, stage, reason, seconds, search in pool.imap_unordered(_solve, todo):
            rec = {
                "onnx": onnx_name,
                "vnnlib": spec,
                "timeout": timeout,
                "status": status,
                "stage": stage,
                "search": search,
                "seconds": seconds,
                "reason": reason,
                "consensus": known[(onnx_name, spec)]["consensus"],
            }
            done[(onnx_name, spec)] = rec
            with log.open("a") as f:  # one line per finished instance: the resumable log
                f.write(json.dumps(rec) + "\n")
            wrong = OURS[status] in ("sat", "unsat") and rec["consensus"] in ("sat", "unsat")
            wrong = wrong and OURS[status] != rec["consensus"]
            print(
                f"{onnx_name} {spec}: {status:12s} {stage:11s} {seconds:7.2f} s  "
                f"consensus {rec['consensus']}{'  WRONG' if wrong else ''} {reason}",
                flush=True,
            )
    summary = summarize(nets, done, known, tools, args.limit)
    write_json(out / "summary.json", summary)
    print(f"\nwrote {out / 'summary.json'}")


def _init_worker(threads: int, graph: bool) -> None:
    torch.set_num_threads(threads)
    if graph:
        problem.DENSE_LIMIT = -1.0  # no network counts as a small chain


def _solve(job: tuple[Path, str, str, float]) -> tuple[str, str, float, str, str, str, float, str]:
    data, onnx_path, spec_path, timeout = job
    t0 = time.perf_counter()
    res = solve_instance(data / onnx_path, data / spec_path, timeout)
    item = res.items[0]
    search = ",".join(sorted({c.get("search", "") for c in res.info.get("certificates", [])}))
    return (
        Path(onnx_path).name,
        Path(spec_path).name,
        timeout,
        item.status,
        str(item.metrics.get("stage", "")),
        item.reason,
        time.perf_counter() - t0,
        search,
    )


def summarize(nets: list[str], done: dict, known: dict, tools: list[str], limit: int | None) -> dict:
    """Per network: ours and every tool's solved / wrong / median seconds (printed and returned)."""
    header = f"{'network':34s} {'tool':18s} {'solved':>9s} {'sat':>4s} {'unsat':>5s} {'wrong':>5s} {'median s':>9s}"
    print("\n" + header + "\n" + "-" * len(header))
    out: dict = {"limit": limit, "networks": {}}
    for net in [*nets, "all"]:
        mine = [r for (o, _), r in done.items() if o == net or (net == "all" and o in nets)]
        if not mine:
            continue
        keys = [(r["onnx"], r["vnnlib"]) for r in mine]
        solved = [r for r in mine if r["status"] != "unknown"]
        wrong = [r for r in solved if r["consensus"] in ("sat", "unsat") and OURS[r["status"]] != r["consensus"]]
        entry = {
            "instances": len(mine),
            "solved": len(solved),
            "wrong": len(wrong),
            "sat": sum(r["status"] == "found" for r in mine),
            "unsat": sum(r["status"] == "none-exists" for r in mine),
            "median_seconds": statistics.median([r["seconds"] for r in mine]) if solved else None,
            "timeouts": sorted({r["timeout"] for r in mine}),
            "wrong_instances": [f"{r['onnx']} {r['vnnlib']}" for r in wrong],
            "tools": {},
        }
        med = entry["median_seconds"] if entry["median_seconds"] is not None else float("nan")
        print(
            f"{net:34s} {'netinvert':18s} {len(solved):4d}/{len(mine):<4d} {entry['sat']:4d} {entry['unsat']:5d} "
            f"{len(wrong):5d} {med:9.2f}"
        )
        for tool in tools:
            ks = [known[k] for k in keys]
            ok = [k for k in ks if k[f"{tool}_result"] in ("sat", "unsat")]
            times = [float(k[f"{tool}_time"]) for k in ok]
            tw = sum(1 for k in ok if k["consensus"] in ("sat", "unsat") and k[f"{tool}_result"] != k["consensus"])
            tmed = statistics.median(times) if times else float("nan")
            entry["tools"][tool] = {"solved": len(ok), "wrong": tw, "median_seconds": tmed if times else None}
            print(f"{'':34s} {tool:18s} {len(ok):4d}/{len(ks):<4d} {'':4s} {'':5s} {tw:5d} {tmed:9.2f}")
        out["networks"][net] = entry
    return out


if __name__ == "__main__":
    main()
