"""Library overhead of ``imagine`` on a large network: ``invert(..., method="gradient")`` versus a bare loop.

The bare loop is hand-written PyTorch doing the same maths as the library's defaults for a 3-channel
image: a Fourier spectrum scaled by 1/f, colour decorrelation and a sigmoid into [0, 1] (the
parameterization), pad + jitter + scale + rotation by one ``grid_sample`` per step (the transforms),
per-channel normalization inside the model, the class logits as objective and Adam. Priors that need
data or BatchNorm statistics are off on both sides. The network is a ResNet (random weights: speed only).

On CUDA (default there): ResNet-50, 224 x 224, batch 64, 64 steps. On the CPU the defaults shrink to a
ResNet-18 layout of width 16 at 64 x 64, batch 4, 8 steps, so CI can run it. Times are wall-clock per
step of the optimization loop (the library's own ``timing["per_step_ms"]``), best of ``--repeats``, with
the device synchronized; the table also gives the library's whole call (setup, final scoring) per step.
Prints a table and writes JSON to ``benchmarks/results/gpu_<device>.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from netinvert import Class, Domain, InputSpec, Model, invert
from netinvert.ground.device import resolve_device
from netinvert.ground.output import write_json
from netinvert.models.architectures import resnet18, resnet50

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COLOR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR = COLOR / COLOR.norm(dim=0).max()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(net: torch.nn.Module, classes: list[int], size: int, steps: int, lr: float,
              device: torch.device) -> float:
    """Seconds per step of a hand-written loop with the library's default parameterization and transforms."""
    b = len(classes)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    scale = (1.0 / torch.clamp(torch.sqrt(fx * fx + fy * fy), min=1.0 / size))[None, None, :, :, None].to(device)
    gen = torch.Generator().manual_seed(0)
    spectrum = torch.nn.Parameter((0.01 * torch.randn((b, 3, size, size // 2 + 1, 2), generator=gen)).to(device))
    color = COLOR.to(device)
    mean = torch.tensor(MEAN, device=device).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).reshape(1, 3, 1, 1)
    index = torch.tensor(classes, device=device)[:, None]
    pad, jitter, degrees = max(1, round(size / 20)), max(1, round(size / 32)), 5.0 if size >= 64 else 3.0
    opt = torch.optim.Adam([spectrum], lr=lr)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        img = torch.fft.irfft2(torch.view_as_complex((spectrum * scale).contiguous()), s=(size, size), norm="ortho")
        x = torch.sigmoid(torch.einsum("ij,bjhw->bihw", color, img))
        padded = F.pad(x, (pad,) * 4, value=0.5)
        side = padded.shape[2]
        u = torch.rand((b, 4), generator=gen)
        angle = (u[:, 0] * 2 - 1) * math.radians(degrees)
        zoom = 0.95 + u[:, 1] * 0.1
        shift = (u[:, 2:] * (2 * jitter + 1)).floor().clamp(max=2 * jitter) - jitter
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0] * 2 / side], 1),
                             torch.stack([sin, cos, shift[:, 1] * 2 / side], 1)], 1).to(device)
        grid = F.affine_grid(theta, [b, 3, side, side], align_corners=False)
        moved = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x_in = moved[:, :, pad : pad + size, pad : pad + size]
        loss = -net((x_in - mean) / std).gather(1, index).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def library(model: Model, classes: list[int], steps: int, lr: float, precision: str) -> tuple[float, float]:
    """(loop seconds per step, whole call seconds per step) of ``invert`` with the same maths."""
    domain = Domain(param="fourier", decorrelate=True, bn_prior=0.0, data_prior=0.0)
    sync(model.device)
    t0 = time.perf_counter()
    result = invert(model, [Class(k) for k in classes], domain, steps=steps, lr=lr, early_stop=False,
                    progress=False, precision=precision)
    sync(model.device)
    return result.timing["per_step_ms"] / 1000, (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--size", type=int, help="image side (default 224 on a GPU, 64 on the CPU)")
    parser.add_argument("--batch", type=int, help="images per batch (default 64 on a GPU, 4 on the CPU)")
    parser.add_argument("--steps", type=int, help="Adam steps per run (default 64 on a GPU, 8 on the CPU)")
    parser.add_argument("--arch", choices=("resnet50", "resnet18"), help="default resnet50 on a GPU, else resnet18")
    parser.add_argument("--width", type=int, help="resnet18 base width (default 64 on a GPU, 16 on the CPU)")
    parser.add_argument("--precision", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="the library's precision (the bare loop runs float32 unless this is float32)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="default benchmarks/results/gpu_<device type>.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    big = device.type != "cpu"
    size = args.size or (224 if big else 64)
    batch = args.batch or (64 if big else 4)
    steps = args.steps or (64 if big else 8)
    arch = args.arch or ("resnet50" if big else "resnet18")
    width = args.width or (64 if big else 16)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = resnet50() if arch == "resnet50" else resnet18(width=width)
    model = Model(net, InputSpec((3, size, size), 0.0, 1.0, MEAN, STD), name=arch, device=device)
    classes = [k % 1000 for k in range(0, 7 * batch, 7)]
    lr = 0.05
    bare_loop(model.module, classes, size, 2, lr, device)  # warm-up (kernels, allocator)
    library(model, classes, 2, lr, args.precision)
    bare = min(bare_loop(model.module, classes, size, steps, lr, device) for _ in range(args.repeats))
    runs = [library(model, classes, steps, lr, args.precision) for _ in range(args.repeats)]
    ours, whole = min(r[0] for r in runs), min(r[1] for r in runs)
    row = {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "arch": arch, "width": width, "size": size, "batch": batch, "steps": steps, "precision": args.precision,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "bare_ms_per_step": 1000 * bare, "ours_ms_per_step": 1000 * ours, "ours_call_ms_per_step": 1000 * whole,
           "ratio": ours / bare, "call_ratio": whole / bare, "images_per_s": batch / ours}
    print(f"{'device':<8} {'arch':<9} {'size':>4} {'batch':>5} {'steps':>5} {'bare ms/step':>12} "
          f"{'ours ms/step':>12} {'ratio':>6} {'call ms/step':>12} {'call ratio':>10} {'img/s':>7}")
    print(f"{row['device']:<8} {arch:<9} {size:>4} {batch:>5} {steps:>5} {row['bare_ms_per_step']:>12.2f} "
          f"{row['ours_ms_per_step']:>12.2f} {row['ratio']:>6.3f} {row['ours_call_ms_per_step']:>12.2f} "
          f"{row['call_ratio']:>10.3f} {row['images_per_s']:>7.1f}")
    out = args.json or Path(__file__).parent / "results" / f"gpu_{device.type}.json"
    write_json(out, {"benchmark": "gpu", "goal": "ratio <= 1.05 at 224 px on a GPU", **row})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
