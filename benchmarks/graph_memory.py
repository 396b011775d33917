"""Memory and deadline of the exact methods on a CIFAR ResNet-sized graph (issue 14 part 3, issue 19 item 5).

Builds a ResNet-8-like network (16-32-64 channels, BatchNorm, residual adds, global average
pooling) on 3x32x32 inputs with random weights, then, in this one process, measures the peak RSS
(``resource.getrusage``) and the time of: reading it as a graph, interval bounds, CROWN bounds
(intermediate rows until a deadline), the output rows, and ``invert(..., method="exact",
timeout=T)`` on an L-inf ball, which must end within T plus a few seconds with a named stage.

    python benchmarks/graph_memory.py [--eps 0.004] [--timeout 30] [--out benchmarks/results/graph_memory.json]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from torch import nn

from netinvert.domains.sets import Ball
from netinvert.ground.output import write_json
from netinvert.methods import invert
from netinvert.models.wrapper import InputSpec, Model
from netinvert.solvers.bounds import graph as gbm
from netinvert.solvers.problem import network_of
from netinvert.targets.output_set import OutputSet


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(h)) + self.skip(x))


class ResNet8(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=1 / 255)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/graph_memory.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = ResNet8().eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    model = Model(module, InputSpec((3, 32, 32), low=0.0, high=1.0), name="resnet8")
    rows: dict[str, dict[str, float]] = {"start": {"seconds": 0.0, "peak_rss_gib": rss_gib()}}

    def mark(name: str, t0: float, **extra: float) -> None:
        rows[name] = {"seconds": round(time.perf_counter() - t0, 3), "peak_rss_gib": round(rss_gib(), 3), **extra}
        print(f"{name:>10}: {rows[name]}", flush=True)

    t0 = time.perf_counter()
    net = network_of(model)
    mark("read", t0, nodes=len(net.nodes), neurons=sum(net.hidden_sizes))  # type: ignore[union-attr]
    x0 = torch.rand(3, 32, 32)
    lo = (x0 - args.eps).clamp(0, 1).reshape(1, -1).double()
    hi = (x0 + args.eps).clamp(0, 1).reshape(1, -1).double()
    t0 = time.perf_counter()
    with torch.no_grad():
        ib = gbm.bounds(net, lo, hi, use_crown=False)  # type: ignore[arg-type]
    mark("interval", t0, unstable=sum(ib.unstable()))
    t0 = time.perf_counter()
    with torch.no_grad():
        gb = gbm.bounds(net, lo, hi, deadline=t0 + args.timeout)  # type: ignore[arg-type]
    mark("crown", t0, unstable=sum(gb.unstable()), crown_rows=gb.crown_rows, interval_rows=gb.skipped_rows)
    k = int(model(x0[None]).argmax())
    target = OutputSet.not_class(k, 10)
    t0 = time.perf_counter()
    res = invert(model, target, Ball(x0, args.eps), method="exact", timeout=args.timeout)
    item = res.items[0]
    mark("solve", t0, timeout=args.timeout)
    rows["solve"].update(status=item.status, stage=item.metrics["stage"], reason=item.reason)  # type: ignore[dict-item]
    print(f"solve: {item.status} ({item.metrics['stage']}, {item.reason})")
    write_json(args.out, {"eps": args.eps, "timeout": args.timeout, "threads": 1, "rows": rows,
                          "certificate": res.info["certificates"][0]})


if __name__ == "__main__":
    main()
