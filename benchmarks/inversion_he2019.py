"""Feature inversion on the MNIST LeNet of He, Zhang & Lee (ACSAC 2019), next to the paper's numbers.

Trains the paper's LeNet (conv 1->8 5x5, ReLU, maxpool, conv 8->16 5x5, ReLU, maxpool, 256, fc
120, fc 84, 10) on the real MNIST test images in tests/data/mnist (8k training / 2k held out),
trains decoders on the same 8k images, inverts 200 held-out images at conv1 and ReLU2 with the
gradient, decoder and hybrid methods, prints PSNR / SSIM / verifier agreement beside the paper's
white-box (rMLE) and inverse-network numbers, and writes JSON.

    python benchmarks/inversion_he2019.py [--count 200] [--threads 2] [--out benchmarks/results/...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from netinvert.data.mnist import load_mnist
from netinvert.data.sources import DataSplit
from netinvert.ground.spec import InputSpec
from netinvert.models.wrapper import Model
from netinvert.models.zoo import load_zoo
from netinvert.tasks.leakage import evaluate

MNIST = Path(__file__).resolve().parents[1] / "tests" / "data" / "mnist"  # the MNIST test set, in the repository
PAPER = {  # layer -> method -> (PSNR dB, SSIM), He et al. 2019, Table (MNIST)
    "conv1": {"white-box (rMLE)": (39.69, 0.9969), "inverse network": (40.72, 0.9950)},
    "relu2": {"white-box (rMLE)": (15.10, 0.5998), "inverse network": (20.81, 0.8046)},
}


def lenet() -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 8, 5), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(8, 16, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2), flatten=nn.Flatten(),
        fc1=nn.Linear(256, 120), relu3=nn.ReLU(), fc2=nn.Linear(120, 84), relu4=nn.ReLU(), fc3=nn.Linear(84, 10),
    ))


def train_lenet(x: torch.Tensor, y: torch.Tensor, epochs: int = 12, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = lenet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", default="conv1,relu2")
    parser.add_argument("--methods", default="gradient,decoder,hybrid")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inversion_he2019.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x_train, y_train, x_held, y_held = load_mnist(MNIST)
    start = time.perf_counter()
    net = train_lenet(torch.from_numpy(x_train), torch.from_numpy(y_train))
    with torch.no_grad():
        accuracy = float((net(torch.from_numpy(x_held)).argmax(1) == torch.from_numpy(y_held)).float().mean())
    train_s = time.perf_counter() - start
    verifier = load_zoo("digits-verifier", data=f"mnist:{MNIST}", verifier=False)
    model = Model(net, InputSpec((1, 28, 28)), name="lenet-he2019", class_names=[str(i) for i in range(10)],
                  verifier=verifier, info={"test_accuracy": accuracy})
    split = DataSplit("mnist-he2019", x_train, x_held, y_train, y_held)
    print(f"LeNet: held-out accuracy {accuracy:.4f} (trained in {train_s:.0f} s); verifier accuracy "
          f"{verifier.info['test_accuracy']:.4f}", flush=True)
    rows = evaluate(model, args.layers.split(","), args.methods.split(","), split, count=args.count,
                    log=lambda row: print(f"  {row['layer']:6s} {row['method']:8s} PSNR {row['psnr']:6.2f} dB  "
                                          f"SSIM {row['ssim']:.4f}  agree {row['verifier_agreement']:.3f}  "
                                          f"{row['seconds']:.0f} s", flush=True))
    print(f"\n{'layer':7s}{'method':22s}{'PSNR dB':>9s}{'SSIM':>8s}{'agree':>7s}")
    for layer in args.layers.split(","):
        for name, (p, s) in PAPER.get(layer, {}).items():
            print(f"{layer:7s}{'paper ' + name:22s}{p:9.2f}{s:8.4f}{'':>7s}")
        for row in rows:
            if row["layer"] == layer:
                print(f"{layer:7s}{'netinvert ' + row['method']:22s}{row['psnr']:9.2f}{row['ssim']:8.4f}"
                      f"{row['verifier_agreement']:7.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": "LeNet (He et al. 2019)", "held_out_accuracy": accuracy,
                                    "count": args.count, "threads": args.threads, "paper": PAPER, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
