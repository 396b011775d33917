"""Data-free parameterizations on a 3-channel model (issue 16, item 3): pixel, fourier and maco side by side.

No 3-channel data set ships, so one is made from one that does: the 8,000 + 2,000 digits of
``tests/data/mnist``, each scaled to 80 % of a ``size`` x ``size`` canvas at a random offset, painted in a
random foreground colour on a random background colour (at least 0.6 apart in RGB) with a smooth
low-frequency texture and mild pixel noise on the background, so that both colour and shape vary. On it
this script trains (once per size; cached under ``$NETINVERT_HOME/benchmarks``) the model to visualize, a
small 3-layer CNN with max pooling, and a judge of a different architecture (strided 5x5 convolutions,
average pooling, an MLP head) on the same images.

Then it imagines all 10 classes with ``--seeds`` seeds each WITHOUT data (the model given to ``invert``
does not know its data, so ``param="auto"`` means pixels below 64x64 and fourier from 64x64 up) under
``pixel``, ``fourier`` (colour decorrelation and transforms sized to the input: the defaults) and ``maco``
(phase only, fixed 1/f magnitude), the same steps each. Realism is computed afterwards with the data
(``netinvert.report.realism``): judge agreement and probability, Frechet distance in the judge's features
against real-vs-real (floor) and noise (ceiling), gap closed, diversity. Prints a table, writes JSON
(``--json``) and one picture per size (a row of the 10 classes per parameterization, ``--pictures``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netinvert import Class, Domain, InputSpec, Model, invert
from netinvert.data.mnist import load_mnist
from netinvert.data.sources import DataSplit
from netinvert.ground.images import grid_image
from netinvert.ground.output import write_file, write_json
from netinvert.ground.store import cache_home
from netinvert.report.realism import realism

MNIST = Path(__file__).resolve().parent.parent / "tests" / "data" / "mnist"
PARAMS = ("pixel", "fourier", "maco")


def coloured_digits(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    """(n, 1, 28, 28) digits in [0, 1] as (n, 3, size, size) coloured pictures (deterministic in ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    n, inner = len(x), int(size * 0.8)
    mask = torch.zeros(n, 1, size, size)
    digits = F.interpolate(torch.as_tensor(x), size=(inner, inner), mode="bilinear", align_corners=False)
    offsets = torch.randint(0, size - inner + 1, (n, 2), generator=g)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        mask[i, :, dy : dy + inner, dx : dx + inner] = digits[i]
    fg, bg = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    while bool((far := (fg - bg).norm(dim=1) < 0.6).any()):
        fg[far], bg[far] = torch.rand(int(far.sum()), 3, generator=g), torch.rand(int(far.sum()), 3, generator=g)
    texture = F.interpolate(torch.randn(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    background = bg[:, :, None, None] + 0.08 * texture
    picture = mask * fg[:, :, None, None] + (1 - mask) * background + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return picture.clamp(0, 1).numpy().astype(np.float32)


def dataset(size: int) -> DataSplit:
    x, y, xh, yh = load_mnist(MNIST)
    return DataSplit(f"coloured-mnist-{size}", coloured_digits(x, size, 0), coloured_digits(xh, size, 1),
                     y.astype(np.int64), yh.astype(np.int64))


class Centre(nn.Module):
    """Subtracts each picture's mean colour, so that the first layers see edges rather than the background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=(2, 3), keepdim=True)


def model_cnn() -> nn.Module:
    return nn.Sequential(Centre(), nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 10))


def judge_cnn() -> nn.Module:
    return nn.Sequential(Centre(), nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
                         nn.Flatten(), nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10))


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(net(x[perm[i : i + 64]]), y[perm[i : i + 64]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def trained(name: str, net: nn.Module, data: DataSplit, epochs: int, seed: int) -> tuple[nn.Module, dict]:
    """``net`` trained on ``data`` on first use and cached under ``name``, with its held-out accuracy."""
    path = cache_home("benchmarks") / f"{name}-e{epochs}.pt"
    if path.exists():
        saved = torch.load(path)
    else:
        t0 = time.perf_counter()
        train(net, torch.as_tensor(data.x_train), torch.as_tensor(data.y_train), epochs, seed)
        with torch.no_grad():
            accuracy = (net(torch.as_tensor(data.x_held)).argmax(1) == torch.as_tensor(data.y_held)).float().mean()
        saved = {"net": net.state_dict(), "info": {"accuracy": float(accuracy),
                                                   "train_seconds": round(time.perf_counter() - t0, 1)}}
        write_file(path, lambda tmp: torch.save(saved, tmp))
    net.load_state_dict(saved["net"])
    return net.eval(), saved["info"]


def networks(size: int, data: DataSplit, epochs: int) -> tuple[nn.Module, nn.Module, dict]:
    """The model and the judge for ``size`` (each cached apart, so either can change alone)."""
    net, net_info = trained(f"maco-model-{size}", model_cnn(), data, epochs, seed=0)
    judge, judge_info = trained(f"maco-judge-{size}", judge_cnn(), data, epochs, seed=1)
    return net, judge, {"model": net_info, "judge": judge_info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--params", nargs="+", default=list(PARAMS), choices=PARAMS)
    parser.add_argument("--seeds", type=int, default=4, help="runs of all 10 classes per parameterization")
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (the imagine default: 0.1)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/maco.json"))
    parser.add_argument("--pictures", type=Path, default=Path("docs/images"), help="folder for PNGs ('' for none)")
    args = parser.parse_args()
    rows, meta = [], {}
    print(f"{'size':>4} {'param':8} {'auto':8} {'found':>6} {'judge':>6} {'judge p':>8} {'FD':>8} {'floor':>7} "
          f"{'FD/floor':>8} {'gap':>6} {'div':>6} {'div real':>8} {'s':>6}")
    for size in args.sizes:
        data = dataset(size)
        net, judge_net, info = networks(size, data, args.epochs)
        meta[size] = info
        print(f"{size}x{size}: model accuracy {info['model']['accuracy']:.3f}, judge {info['judge']['accuracy']:.3f}", flush=True)
        spec = InputSpec((3, size, size))
        judge = Model(judge_net, spec, name=f"coloured-mnist-{size}-judge")
        blind = Model(net, spec, name=f"coloured-mnist-{size}-cnn", verifier=judge)
        known = Model(net, spec, name=f"coloured-mnist-{size}-cnn", verifier=judge, data=data)
        auto = Domain().resolved_param(spec)
        sheet, captions = [], []
        for param in args.params:
            t0 = time.perf_counter()
            runs = [invert(blind, [Class(k) for k in range(10)], Domain(param=param), steps=args.steps, seed=seed,
                           lr=args.lr, progress=False) for seed in range(args.seeds)]
            seconds = time.perf_counter() - t0
            # seed-major runs regrouped class-major, so each class's seeds count as copies (diversity)
            order = [s * 10 + k for k in range(10) for s in range(args.seeds)]
            inputs = torch.cat([r.inputs for r in runs])[order]
            items = [sum([r.items for r in runs], [])[i] for i in order]
            result = replace(runs[0], inputs=inputs, items=items)
            measured = realism(known, result) or {}
            row = {"size": size, "param": param, "auto": auto, "steps": args.steps, "lr": args.lr, "seeds": args.seeds,
                   "found": sum(i.status == "found" for i in items) / len(items), "seconds": round(seconds, 1), **measured}
            rows.append(row)
            print(f"{size:4} {param:8} {auto:8} {row['found']:6.2f} {row['verifier_agreement']:6.2f} {row['verifier_prob']:8.3f} "
                  f"{row['frechet']:8.1f} {row['frechet_floor']:7.1f} {row['frechet_ratio']:8.2f} {row['gap_closed']:6.2f} "
                  f"{row.get('diversity') or 0:6.2f} {row.get('diversity_real') or 0:8.2f} {seconds:6.1f}", flush=True)
            sheet.append(runs[0].inputs)
            captions += [f"{param}: 0", *[str(k) for k in range(1, 10)]]
        if str(args.pictures) not in ("", "."):
            grid = grid_image(torch.cat(sheet), captions, (0.0, 1.0), columns=10)
            small = grid.quantize(colors=64)  # 64 colours: a quarter of the bytes, the same picture to the eye
            write_file(args.pictures / f"maco_coloured-mnist-{size}.png",
                       lambda tmp, small=small: small.save(tmp, format="PNG", optimize=True))
    write_json(args.json, {"networks": meta, "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
