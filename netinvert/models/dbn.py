"""A deep belief net with label units (Hinton, Osindero & Teh, 2006).

A greedy stack of RBMs trained with contrastive divergence; the top RBM sees the penultimate
layer together with softmax label units. After greedy training the lower layers are used as
directed generative weights (top-down) and recognition weights (bottom-up); the optional up-down
(contrastive wake-sleep) fine-tuning unties them. The module's ``forward`` returns label logits
(negative free energies of the top RBM with each label clamped), so the generic tooling can
classify with it; ``generate`` clamps a label, runs alternating Gibbs sampling in the top RBM and
makes one top-down pass to pixels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from netinvert.ground.errors import NetinvertError

log = logging.getLogger(__name__)


class RBM(nn.Module):
    """A binary RBM: ``p(h|v) = sigmoid(v W' + hb)``, ``p(v|h) = sigmoid(h W + vb)``."""

    def __init__(self, n_visible: int, n_hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_hidden, n_visible))
        self.v_bias = nn.Parameter(torch.zeros(n_visible))
        self.h_bias = nn.Parameter(torch.zeros(n_hidden))

    def hidden(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ self.weight.T + self.h_bias)

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight + self.v_bias

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        return -(v @ self.v_bias) - F.softplus(v @ self.weight.T + self.h_bias).sum(dim=1)


class DBN(nn.Module):
    """Visible ``sizes[0]`` -> hidden ``sizes[1:]`` (directed) -> top RBM (``sizes[-1]`` + labels <-> ``top``)."""

    def __init__(self, sizes: Sequence[int] = (784, 256, 256), top: int = 512, n_labels: int = 10,
                 image_shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__()
        if len(sizes) < 2 or any(int(s) <= 0 for s in sizes) or top <= 0 or n_labels < 2:
            raise NetinvertError(f"DBN sizes {tuple(sizes)}, top {top}, labels {n_labels}: give positive sizes "
                                 "(at least visible and one hidden layer) and >= 2 labels")
        if int(torch.tensor(image_shape).prod()) != sizes[0]:
            raise NetinvertError(f"DBN image shape {tuple(image_shape)} does not hold {sizes[0]} visible units")
        self.sizes = tuple(int(s) for s in sizes)
        self.n_labels = n_labels
        self.image_shape = tuple(int(s) for s in image_shape)
        self.layers = nn.ModuleList(RBM(a, b) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        # generative (top-down) weights and visible biases, equal to the RBMs' until up-down fine-tuning
        self.gen_weight = nn.ParameterList(nn.Parameter(torch.zeros(b, a)) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        self.gen_bias = nn.ParameterList(nn.Parameter(torch.zeros(a)) for a in self.sizes[:-1])
        self.top = RBM(self.sizes[-1] + n_labels, top)

    # ------------------------------------------------------------------ inference
    def up(self, x: torch.Tensor) -> torch.Tensor:
        """Bottom-up pass (probabilities) from pixels to the penultimate layer."""
        h = x.reshape(x.shape[0], -1)
        for rbm in self.layers:
            h = rbm.hidden(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Label logits: minus the top RBM's free energy of (penultimate activity, label)."""
        pen = self.up(x)
        eye = torch.eye(self.n_labels, dtype=pen.dtype, device=pen.device)
        logits = [-self.top.free_energy(torch.cat([pen, eye[k].expand(pen.shape[0], -1)], dim=1))
                  for k in range(self.n_labels)]
        return torch.stack(logits, dim=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self(x).argmax(dim=1)

    def down(self, pen: torch.Tensor) -> torch.Tensor:
        """Top-down pass (probabilities) from the penultimate layer to pixels, shaped as images."""
        h = pen
        for w, b in zip(reversed(self.gen_weight), reversed(self.gen_bias)):
            h = torch.sigmoid(h @ w + b)
        return h.reshape(h.shape[0], *self.image_shape)

    @torch.no_grad()
    def generate(self, label: int, n: int, gibbs_steps: int = 200, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """``n`` images of class ``label``: Gibbs sampling in the top RBM with the label clamped, then down."""
        if not 0 <= label < self.n_labels:
            raise NetinvertError(f"label {label} is out of range: this DBN has labels 0..{self.n_labels - 1}")
        if n < 1 or gibbs_steps < 0:
            raise NetinvertError(f"n={n} and gibbs_steps={gibbs_steps}: give n >= 1 and gibbs_steps >= 0")
        d = self.sizes[-1]
        y = torch.zeros(n, self.n_labels, dtype=self.top.weight.dtype, device=self.top.weight.device)
        y[:, label] = 1.0
        w_pen, w_lab = self.top.weight[:, :d], self.top.weight[:, d:]
        h = _bernoulli(torch.sigmoid(y @ w_lab.T + self.top.h_bias), generator)
        pen = torch.sigmoid(h @ w_pen + self.top.v_bias[:d])
        for _ in range(gibbs_steps):
            pen_s = _bernoulli(pen, generator)
            h = _bernoulli(torch.sigmoid(pen_s @ w_pen.T + y @ w_lab.T + self.top.h_bias), generator)
            pen = torch.sigmoid(h @ w_pen + self.top.v_bias[:d])
        return self.down(pen)


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Bernoulli draws of ``p``; on another device drawn on the CPU (the generator's) and moved, so a seed gives
    the same samples everywhere."""
    if p.device.type == "cpu" or generator is None:
        return torch.bernoulli(p, generator=generator)
    return torch.bernoulli(p.cpu(), generator=generator).to(p.device)


# ---------------------------------------------------------------------- training
def _cd_step(rbm: RBM, v0: torch.Tensor, k: int, lr: float, momentum: float, decay: float,
             velocity: list[torch.Tensor], gen: torch.Generator, n_labels: int = 0) -> float:
    """One CD-k update; with ``n_labels`` the last visible units are a softmax group. Returns the reconstruction error."""
    h0 = rbm.hidden(v0)
    h = torch.bernoulli(h0, generator=gen)
    v = v0
    for _ in range(k):
        logits = rbm.visible_logits(h)
        if n_labels:
            v = torch.cat([torch.sigmoid(logits[:, :-n_labels]), torch.softmax(logits[:, -n_labels:], dim=1)], dim=1)
        else:
            v = torch.sigmoid(logits)
        hk = rbm.hidden(v)
        h = torch.bernoulli(hk, generator=gen)
    b = v0.shape[0]
    grads = ((h0.T @ v0 - hk.T @ v) / b - decay * rbm.weight, (v0 - v).mean(0), (h0 - hk).mean(0))
    for vel, p, g in zip(velocity, (rbm.weight, rbm.v_bias, rbm.h_bias), grads):
        vel.mul_(momentum).add_(lr * g)
        p.add_(vel)
    return float((v0 - v).pow(2).mean())


def _train_rbm(rbm: RBM, data: torch.Tensor, *, epochs: int, k: int, lr: float, batch_size: int,
               gen: torch.Generator, n_labels: int = 0) -> float:
    velocity = [torch.zeros_like(p) for p in (rbm.weight, rbm.v_bias, rbm.h_bias)]
    err = 0.0
    for epoch in range(epochs):
        log.info("RBM %d-%d: epoch %d/%d", rbm.weight.shape[1], rbm.weight.shape[0], epoch + 1, epochs)
        order = torch.randperm(data.shape[0], generator=gen)
        momentum = 0.5 if epoch < max(1, epochs // 4) else 0.9
        errs = []
        for i in range(0, len(order), batch_size):
            errs.append(_cd_step(rbm, data[order[i : i + batch_size]], k, lr, momentum, 2e-4, velocity, gen, n_labels))
        err = sum(errs) / len(errs)
    return err


@torch.no_grad()
def train_dbn(x: torch.Tensor, y: torch.Tensor, *, sizes: Sequence[int] = (784, 256, 256), top: int = 512,
              epochs: int = 10, top_epochs: int | None = None, cd_k: int = 1, top_cd_k: int = 3, lr: float = 0.05,
              batch_size: int = 32, finetune_epochs: int = 0, seed: int = 0) -> tuple[DBN, dict[str, float]]:
    """Greedy layer-wise training (CD-k), then the top RBM with labels, then optional up-down fine-tuning.

    ``x``: (n, *image_shape) in [0, 1] (used as Bernoulli probabilities); ``y``: (n,) int labels.
    Returns the DBN and training statistics (reconstruction errors, seconds).
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise NetinvertError(f"DBN training data: {x.shape[0]} images but {y.shape[0]} labels")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_labels = int(y.max()) + 1
    dbn = DBN(sizes, top, n_labels, image_shape=tuple(x.shape[1:]))
    for rbm in (*dbn.layers, dbn.top):
        rbm.weight.normal_(0.0, 0.01, generator=gen)
    data = x.reshape(x.shape[0], -1).float()
    stats: dict[str, float] = {}
    start = time.perf_counter()
    h = data
    for i, rbm in enumerate(dbn.layers):
        p = h.mean(0).clamp(1e-3, 1 - 1e-3)
        rbm.v_bias.copy_(torch.log(p / (1 - p)))
        stats[f"rbm{i + 1}_recon"] = _train_rbm(rbm, h, epochs=epochs, k=cd_k, lr=lr, batch_size=batch_size, gen=gen)
        dbn.gen_weight[i].copy_(rbm.weight)
        dbn.gen_bias[i].copy_(rbm.v_bias)
        h = rbm.hidden(h)
    top_data = torch.cat([h, F.one_hot(y.long(), n_labels).float()], dim=1)
    stats["top_recon"] = _train_rbm(dbn.top, top_data, epochs=top_epochs or epochs, k=top_cd_k, lr=lr,
                                    batch_size=batch_size, gen=gen, n_labels=n_labels)
    for epoch in range(finetune_epochs):
        log.info("up-down fine-tuning: epoch %d/%d", epoch + 1, finetune_epochs)
        _up_down_epoch(dbn, data, y.long(), lr=lr / 5, k=top_cd_k, batch_size=batch_size, gen=gen)
    stats["train_seconds"] = time.perf_counter() - start
    stats["train_accuracy"] = float((dbn(x.float()).argmax(1) == y).float().mean())
    return dbn.eval(), stats


def _up_down_epoch(dbn: DBN, data: torch.Tensor, y: torch.Tensor, *, lr: float, k: int, batch_size: int,
                   gen: torch.Generator) -> None:
    """One epoch of the up-down algorithm: wake phase trains generative weights, CD-k in the top RBM
    with the label clamped, sleep phase trains recognition weights."""
    n_labels = dbn.n_labels
    d = dbn.sizes[-1]
    order = torch.randperm(data.shape[0], generator=gen)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        v, lab = data[idx], F.one_hot(y[idx], n_labels).float()
        b = v.shape[0]
        # wake: stochastic bottom-up pass, generative weights learn to reconstruct each layer from the one above
        wake = [v]
        for rbm in dbn.layers:
            wake.append(torch.bernoulli(rbm.hidden(wake[-1]), generator=gen))
        for j in range(len(dbn.layers)):
            pred = torch.sigmoid(wake[j + 1] @ dbn.gen_weight[j] + dbn.gen_bias[j])
            dbn.gen_weight[j].add_(lr * wake[j + 1].T @ (wake[j] - pred) / b)
            dbn.gen_bias[j].add_(lr * (wake[j] - pred).mean(0))
        # top RBM: CD-k with the label clamped in the negative phase as well
        top_v0 = torch.cat([wake[-1], lab], dim=1)
        h0 = dbn.top.hidden(top_v0)
        h = torch.bernoulli(h0, generator=gen)
        for _ in range(k):
            pen = torch.bernoulli(torch.sigmoid(dbn.top.visible_logits(h)[:, :d]), generator=gen)
            hk = dbn.top.hidden(torch.cat([pen, lab], dim=1))
            h = torch.bernoulli(hk, generator=gen)
        top_vk = torch.cat([pen, lab], dim=1)
        dbn.top.weight.add_(lr * (h0.T @ top_v0 - hk.T @ top_vk) / b)
        dbn.top.v_bias.add_(lr * (top_v0 - top_vk).mean(0))
        dbn.top.h_bias.add_(lr * (h0 - hk).mean(0))
        # sleep: stochastic top-down pass from the top's negative state, recognition weights learn to invert it
        sleep = [pen]
        for j in reversed(range(len(dbn.layers))):
            sleep.insert(0, torch.bernoulli(torch.sigmoid(sleep[0] @ dbn.gen_weight[j] + dbn.gen_bias[j]), generator=gen))
        for j, rbm in enumerate(dbn.layers):
            pred = rbm.hidden(sleep[j])
            rbm.weight.add_(lr * (sleep[j + 1] - pred).T @ sleep[j] / b)
            rbm.h_bias.add_(lr * (sleep[j + 1] - pred).mean(0))


def save_dbn(dbn: DBN, path: str) -> None:
    """Write the DBN's weights and shape as safetensors."""
    from safetensors.torch import save_file

    meta = {"sizes": ",".join(map(str, dbn.sizes)), "top": str(dbn.top.weight.shape[0]),
            "labels": str(dbn.n_labels), "image_shape": ",".join(map(str, dbn.image_shape))}
    save_file({k: v.contiguous() for k, v in dbn.state_dict().items()}, path, metadata=meta)


def load_dbn(path: str) -> DBN:
    """Read a DBN written by :func:`save_dbn`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = dict(f.metadata() or {})
    try:
        dbn = DBN([int(s) for s in meta["sizes"].split(",")], int(meta["top"]), int(meta["labels"]),
                  [int(s) for s in meta["image_shape"].split(",")])
    except KeyError as exc:
        raise NetinvertError(f"{path} is not a DBN file written by netinvert (missing {exc.args[0]!r})") from exc
    dbn.load_state_dict(load_file(path))
    return dbn.eval()
