"""A learned generative prior: a small variational autoencoder fitted to the model's data.

Two ways to use it in a gradient run (both domain options):

- ``param="latent"``: optimize a latent code ``z`` (kept within +-3 standard deviations by a tanh) and
  decode it; every input is then something the VAE can draw, so images stay on the data's manifold;
- ``vae_prior=w``: keep pixel (or any other) parameters and add ``w`` times the VAE's negative evidence
  lower bound per input element (reconstruction error of the encoded mean plus the KL term) as a penalty.

The VAE is a plain-torch MLP (inputs -> 256 -> 2 x 16 latent -> 256 -> inputs, Bernoulli likelihood on values
scaled to [0, 1]); on MNIST-size data it trains in well under a minute on two cores. Trained priors are cached
as safetensors under ``$NETINVERT_HOME/priors``, keyed by the data and the seed, like the decoders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netinvert.domains.domain import Domain
from netinvert.domains.param import Generators, randn
from netinvert.domains.sets import Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.run import progress_bar, torch_threads
from netinvert.ground.store import cache_home, first_use, load_network, save_network
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target
from netinvert.targets.units import Class

FORMAT_VERSION = "1"
LATENT = 16
HIDDEN = 256
TRAIN_SAMPLES = 256_000  # sample passes: about 180 epochs of the 1438 digits, 43 of the 6000 glyphs
LATENT_RANGE = 3.0
CODE_WEIGHT = 1.0
# Copies of one target (samples > 1) count as different enough below this feature cosine similarity (the
# pixel default is 0.8): decoded images differ in shape, not texture, and pushing them to 0.8 drives codes
# off the data (digits-mlp, 4 per class: verifier 0.95 -> 1.00, Frechet distance 3.07 -> 1.52 x real-vs-real).
DIVERSITY_MARGIN = 0.95
NUDGE_STEPS = 128  # pixel steps after the latent ones for items that missed the goal
NUDGE_LR = 0.03
AUTO_MAX_SIZE = 4096

log = logging.getLogger(__name__)


class VAE(nn.Module):
    """An MLP VAE over inputs of ``shape`` in ``[low, high]``."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        size = int(np.prod(config["shape"]))
        hidden, latent = int(config["hidden"]), int(config["latent"])
        self.encoder = nn.Sequential(nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, size))

    @property
    def latent(self) -> int:
        return int(self.config["latent"])

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.config["low"]) / (self.config["high"] - self.config["low"])).flatten(1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x)."""
        mu, logvar = self.encoder(self._unit(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 6)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Inputs (B, *shape) in ``[low, high]`` for latent codes (B, latent)."""
        low, high = self.config["low"], self.config["high"]
        unit = torch.sigmoid(self.decode_logits(z))
        return (low + (high - low) * unit).reshape(z.shape[0], *self.config["shape"])

    def negative_elbo(self, x: torch.Tensor, sample: torch.Generator | None = None) -> torch.Tensor:
        """Per item -ELBO per input element (reconstruction BCE + KL); ``sample=None`` uses the mean code."""
        mu, logvar = self.encode(x)
        z = mu
        if sample is not None:
            z = mu + torch.randn(mu.shape, generator=sample) * (0.5 * logvar).exp()
        target = self._unit(x).clamp(0, 1)
        recon = F.binary_cross_entropy_with_logits(self.decode_logits(z), target, reduction="none").sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return (recon + kl) / target.shape[1]

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        """The ``vae_prior`` penalty: -ELBO per element minus the value a perfect fit would reach (>= 0)."""
        target = self._unit(x).clamp(1e-6, 1 - 1e-6)
        entropy = -(target * target.log() + (1 - target) * (1 - target).log()).mean(1)
        return self.negative_elbo(x) - entropy


def train(x_train: np.ndarray | torch.Tensor, low: float, high: float, *, seed: int = 0,
          samples: int = TRAIN_SAMPLES, threads: int | None = None, progress: bool | None = None) -> VAE:
    """Fit a VAE to ``x_train`` (n, *shape) with Adam on the ELBO."""
    x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    if len(x) < 2:
        raise NetinvertError(f"a learned prior needs at least 2 training inputs, got {len(x)}")
    start = time.perf_counter()
    batch = 128
    steps = max(1, samples // batch)
    work = batch * (2 * HIDDEN + 2 * LATENT + 2 * x[0].numel())  # activation values per step: small, one thread
    with torch_threads(threads, work):
        torch.manual_seed(seed)
        vae = VAE({"shape": list(x.shape[1:]), "low": float(low), "high": float(high), "hidden": HIDDEN,
                   "latent": LATENT})
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
        last = 0.0
        with progress_bar(progress, steps, "training the learned prior", min_total=200) as bar:
            task = bar.add_task("train", total=steps) if bar is not None else None
            for _ in range(steps):
                idx = torch.randint(len(x), (batch,), generator=gen)
                loss = vae.negative_elbo(x[idx], sample=gen).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                last = float(loss.detach())
                if bar is not None and task is not None:
                    bar.advance(task)
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    vae.config.update(seed=seed, train_size=len(x), steps=steps, train_loss=last,
                      train_seconds=round(time.perf_counter() - start, 2))
    return vae


def save(vae: VAE, path: str | os.PathLike[str]) -> Path:
    return save_network(vae, vae.config, path, FORMAT_VERSION)


def load(path: str | os.PathLike[str]) -> VAE:
    config, state = load_network(path, "learned prior", FORMAT_VERSION, "delete it")
    vae = VAE(config)
    vae.load_state_dict(state)
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae.eval()


def priors_dir() -> Path:
    """``$NETINVERT_HOME/priors`` (default ``~/.cache/netinvert/priors``)."""
    return cache_home("priors")


def cache_path(data_key: str, shape: tuple[int, ...], low: float, high: float, seed: int = 0) -> Path:
    digest = hashlib.sha1(json.dumps([data_key, list(shape), low, high, LATENT, HIDDEN]).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in data_key)[:40]
    return priors_dir() / f"vae-{safe}-{digest}-s{seed}-v{FORMAT_VERSION}.safetensors"


_LOADED: weakref.WeakKeyDictionary[object, VAE] = weakref.WeakKeyDictionary()


def learned_prior_for(model: Model) -> VAE:
    """The model's learned prior (seed 0): from memory, the cache, or trained on its data on first use."""
    if model in _LOADED:
        return _LOADED[model]
    if not model.has_data:
        raise NetinvertError(f"the learned prior is fitted to the model's data and {model.name} has none: "
                             "pass --data, or use param 'pixel' / 'fourier' and vae_prior 0")
    split = model.data_split()
    spec = model.input_spec
    path = cache_path(split.key, tuple(spec.shape), spec.low, spec.high)

    def make() -> VAE:
        log.warning("training the learned prior on %s (first use; cached in %s) ...", split.key, path.parent)
        vae = train(split.x_train, spec.low, spec.high)
        save(vae, path)
        return vae

    vae = first_use(path, make, load)
    _LOADED[model] = vae
    return vae


class Latent(nn.Module):
    """Inputs decoded from latent codes ``z = 3 tanh(u)``, clamped into the box ``[low, high]``."""

    def __init__(self, vae: VAE, batch: int, low: torch.Tensor, high: torch.Tensor, generator: Generators,
                 init: torch.Tensor | None = None, noise: float = 0.5) -> None:
        super().__init__()
        self.vae = vae
        shape = tuple(vae.config["shape"])
        self.register_buffer("low", low.reshape(1, *shape))
        self.register_buffer("high", high.reshape(1, *shape))
        if init is None:
            start = noise * randn(batch, (vae.latent,), generator)
        else:
            with torch.no_grad():
                start = vae.encode(init.reshape(batch, *shape))[0]
        start = torch.atanh((start / LATENT_RANGE).clamp(-0.995, 0.995))
        self.raw = nn.Parameter(start)

    def code(self) -> torch.Tensor:
        """The current latent codes (B, latent)."""
        return LATENT_RANGE * torch.tanh(self.raw)

    def code_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Per item ``(|z| / sqrt(latent) - 1)^2``: keeps each code on the shell where draws from N(0, I) lie
        (``x``, the decoded batch, is unused). Pulling codes towards 0 instead (the prior's mode) fades the
        images towards the data's mean: a faint "I" that the verifier did not recognise."""
        return (self.code().norm(dim=1) / self.vae.latent**0.5 - 1).pow(2)

    def forward(self) -> torch.Tensor:
        x = self.vae.decode(self.code())
        return torch.maximum(torch.minimum(x, self.high), self.low)



def resolve(model: Model, domain: Domain, targets: Sequence[Target]) -> Domain:
    """``domain`` with ``param="auto"`` made ``latent`` where the learned prior is the default.

    That is for class targets on a model that knows its data, with inputs of at most ``AUTO_MAX_SIZE``
    values (MNIST size; the MLP VAE does not suit photos), no given start and no other region than the
    model's range; the Gaussian data prior is then off unless a weight is given. Unit targets keep the pixel
    parameterization: the learned prior would draw every unit as a digit.
    """
    if (domain.param != "auto" or domain.init is not None or domain.region != Box() or not model.has_data
            or not targets or not all(isinstance(t, Class) for t in targets)
            or math.prod(model.input_spec.shape) > AUTO_MAX_SIZE):
        return domain
    return replace(domain, param="latent", data_prior=0.0 if domain.data_prior is None else domain.data_prior)


def objective_targets(domain: Domain, targets: Sequence[Target]) -> list[Target]:
    """The targets a run optimizes: in latent space, class targets maximize their log-probability.

    A logit grows without bound and drags the code off the prior into images no verifier recognises; the
    log-probability levels off once the class is certain, so the code prior then keeps the image typical
    (a MAP estimate). Items keep their targets' names; only the optimized objective changes.
    """
    if domain.param != "latent":
        return list(targets)
    return [replace(t, log_prob=True) if isinstance(t, Class) else t for t in targets]


def parameterize(model: Model, domain: Domain, batch: int, generator: Generators) -> nn.Module:
    """The domain's parameterization; ``latent`` decodes codes through the model's learned prior."""
    if domain.param != "latent":
        return domain.parameterize(model.input_spec, batch, generator)
    low, high = domain.bounds(model.input_spec)
    init = domain.init.detach().to(torch.float32) if domain.init is not None else None
    return Latent(learned_prior_for(model), batch, low, high, generator, init=init)


def penalty_terms(model: Model, domain: Domain, param: nn.Module) -> list[tuple[float, Callable[[torch.Tensor], torch.Tensor]]]:
    """``(weight, f(x) -> (B,))``: the learned prior's ELBO penalty when ``domain.vae_prior`` is on; for the
    latent parameterization, the code prior with weight ``domain.vae_prior`` (default ``CODE_WEIGHT``)."""
    if isinstance(param, Latent):
        return [(CODE_WEIGHT if domain.vae_prior is None else domain.vae_prior, param.code_penalty)]
    if not domain.vae_prior:
        return []
    return [(domain.vae_prior, learned_prior_for(model).to(model.device, model.dtype).penalty)]
