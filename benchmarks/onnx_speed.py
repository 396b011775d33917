"""ONNX import speed: a converted graph against the PyTorch module it came from.

A CIFAR-size ResNet-8 (3x32x32, 16-32-64 channels, BatchNorm, residual adds) with seeded random weights is
exported twice with torch.onnx.export: with a dynamic batch and with a fixed batch of 1 (as many exporters
write it). Each is loaded with ``netinvert.load`` and timed on one forward+backward of a batch (the work of one
gradient step), next to the original module and onnxruntime's forward alone. Outputs are compared with the
original. Prints a table; writes benchmarks/results/onnx_speed.json.

    python benchmarks/onnx_speed.py [--batch 10] [--seconds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from netinvert import load


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


def resnet8() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def step_ms(step: Callable[[], None], seconds: float) -> float:
    step()
    best = float("inf")
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            step()
            count += 1
        best = min(best, (time.perf_counter() - start) / count)
    return 1000 * best


def backward_step(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        xi = x.clone().requires_grad_(True)
        module(xi).sum().backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = resnet8()
    x = torch.rand(args.batch, 3, 32, 32)
    with torch.no_grad():
        want = net(x)
    rows = [{"what": "PyTorch module", "ms": step_ms(backward_step(net, x), args.seconds), "max_error": 0.0}]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, dynamic in (("dynamic batch", True), ("fixed batch 1", False)):
            path = Path(tmp) / f"{kind.replace(' ', '_')}.onnx"
            torch.onnx.export(net, x[:1], str(path), input_names=["x"], output_names=["y"], dynamo=False,
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic else None)
            model = load(str(path))
            with torch.no_grad():
                error = float((model(x) - want).abs().max())
            rows.append({"what": f"netinvert, {kind}", "ms": step_ms(backward_step(model, x), args.seconds),
                         "max_error": error})
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feed = x.numpy() if dynamic else None
            if feed is not None:
                rows.append({"what": f"onnxruntime forward only, {kind}",
                             "ms": step_ms(lambda: session.run(None, {"x": feed}), args.seconds),
                             "max_error": float(np.abs(session.run(None, {"x": feed})[0] - want.numpy()).max())})
    base = rows[0]["ms"]
    print(f"ResNet-8 on 3x32x32, batch {args.batch}, forward+backward, {args.threads} thread(s)")
    print(f"{'':40} {'ms':>8} {'vs torch':>9} {'max error':>10}")
    for r in rows:
        r["ratio"] = r["ms"] / base
        print(f"{r['what']:40} {r['ms']:>8.2f} {r['ratio']:>8.2f}x {r['max_error']:>10.1e}")
    out = Path(__file__).resolve().parent / "results" / "onnx_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "threads": args.threads, "torch": torch.__version__,
                               "machine": platform.processor() or platform.machine(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
