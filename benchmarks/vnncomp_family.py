"""Benchmark ``netinvert solve`` on any VNN-COMP family folder (``instances.csv`` + ``known_results.csv``).

Prints one row per instance as it finishes, then solved / sat / unsat / wrong (against the
consensus column of ``known_results.csv``) / median time per network, next to the same numbers
for every tool with a ``<tool>_result`` column. Each instance is a task of the sweep runner, kept in
``--out``/sweep/ as it finishes (rerunning skips the instances already there with the same files and
timeout, so an interrupted run resumes); ``summary.json`` is written under ``--out``.

    python benchmarks/vnncomp_family.py ../shared/data/vnncomp/acasxu_dev [--timeout 116] [--jobs 1]
        [--engine local|ray] [--ray-address auto]
        [--limit N] [--networks 1_1,1_2] [--only prop_1.vnnlib] [--out benchmarks/results/vnncomp_acasxu_dev]

``--timeout`` defaults to each instance's own limit (the third column of ``instances.csv``).
``--jobs`` runs that many instances at once (local engine), each in its own process with ``--threads`` threads;
``--engine ray`` runs them on a Ray cluster (docs/scale.md).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from netinvert.ground.output import write_json
from netinvert.sweeps.engines import make_engine
from netinvert.sweeps.runner import run_sweep
from netinvert.sweeps.solve import instance_task
from netinvert.sweeps.task import Record, Task, task_key

OURS = {"found": "sat", "none-exists": "unsat", "unknown": "unknown"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="family folder with instances.csv and known_results.csv")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per instance (default: instances.csv)")
    ap.add_argument("--limit", type=int, default=None, help="instances per network (first N)")
    ap.add_argument("--networks", default=None, help="comma-separated substrings of the ONNX names to keep")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/vnncomp_<folder name>")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per instance")
    ap.add_argument("--engine", default="local", choices=("local", "ray"), help="where the instances run")
    ap.add_argument("--jobs", type=int, default=1, help="local engine: instances solved at once, one process each")
    ap.add_argument("--ray-address", default=None, help="ray engine: auto or HOST:PORT (default: a local cluster)")
    ap.add_argument("--only", default=None, help="comma-separated vnnlib names (default: all)")
    args = ap.parse_args()
    data = args.folder.resolve()
    for name in ("instances.csv", "known_results.csv"):
        if not (data / name).is_file():
            raise SystemExit(f"missing {data / name}")
    out = args.out or Path("benchmarks/results") / f"vnncomp_{data.name}"
    known = {(r["onnx"], r["vnnlib"]): r for r in csv.DictReader((data / "known_results.csv").open())}
    tools = sorted({k[: -len("_result")] for k in next(iter(known.values())) if k.endswith("_result")})
    rows = [
        (o, v, args.timeout if args.timeout is not None else float(t))
        for o, v, t in csv.reader((data / "instances.csv").open())
    ]
    nets = list(dict.fromkeys(Path(o).name for o, _, _ in rows))
    if args.networks:
        nets = [n for n in nets if any(s in n for s in args.networks.split(","))]
    todo: dict[str, Task] = {}
    timeouts: dict[str, float] = {}
    for net in nets:
        mine = [r for r in rows if Path(r[0]).name == net][: args.limit]
        if args.only:
            mine = [r for r in mine if Path(r[1]).name in args.only.split(",")]
        for o, v, t in mine:
            key = task_key("solve", [data / o, data / v], timeout=t, alpha_steps=30)
            args_ = {"onnx": str(data / o), "vnnlib": str(data / v), "timeout": t}
            todo[key] = Task(instance_task, args_, key, f"{Path(o).name} {Path(v).name}", timeout=t * 1.25 + 10)
            timeouts[key] = t
    done: dict[tuple[str, str], dict] = {}

    def show(_: int, record: Record) -> None:
        onnx_name, spec = record.label.split(" ", 1)
        rec = _row(record, known, timeouts[record.key])
        wrong = OURS[rec["status"]] in ("sat", "unsat") and rec["consensus"] in ("sat", "unsat")
        wrong = wrong and OURS[rec["status"]] != rec["consensus"]
        print(f"{onnx_name} {spec}: {rec['status']:12s} {rec['stage']:11s} {rec['seconds']:7.2f} s  "
              f"consensus {rec['consensus']}{'  WRONG' if wrong else ''} {rec['reason']}", flush=True)

    engine = make_engine(args.engine, jobs=args.jobs, threads=args.threads) if args.engine == "local" else \
        make_engine("ray", ray_address=args.ray_address, threads=args.threads)
    print(f"{len(todo)} instances, results kept in {out / 'sweep'}", flush=True)
    for record in run_sweep(list(todo.values()), out, engine=engine, on_record=show, description=data.name):
        rec = _row(record, known, timeouts[record.key])
        done[(rec["onnx"], rec["vnnlib"])] = rec
    summary = summarize(nets, done, known, tools, args.limit)
    write_json(out / "summary.json", summary)
    print(f"\nwrote {out / 'summary.json'}")


def _row(record: Record, known: dict, timeout: float) -> dict:
    """One instance's row for the summary, from its runner record (``unknown`` when killed, ``error`` when it raised)."""
    onnx_name, spec = record.label.split(" ", 1)
    row = record.row if record.status == "done" else {"status": "unknown", "stage": record.status, "search": "",
                                                      "seconds": record.seconds, "reason": record.message}
    return {"onnx": onnx_name, "vnnlib": spec, "timeout": timeout, **row, "status": row.get("status", "unknown"), "consensus": known[(onnx_name, spec)]["consensus"]}


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
