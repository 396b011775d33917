"""The domain of a gradient run: the input set, its parameterization, transforms and priors.

``Domain()`` with no arguments works out of the box: the model's input range, pixel
parameterization for small images and Fourier for large ones, colour decorrelation for RGB,
size-scaled transforms, and mild TV/L2 priors.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from netinvert.domains.maco import Maco
from netinvert.domains.param import Fourier, Generators, Pixel
from netinvert.domains.sets import Ball, Box
from netinvert.domains.transforms import Transforms
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.spec import InputSpec

PARAMETERIZATIONS = ("auto", "pixel", "fourier", "maco", "latent")


@dataclass(frozen=True)
class Domain:
    """Where inputs live and how gradient methods search it.

    ``region``: a ``Box`` (default: the model's range) or ``Ball``. ``param``: ``pixel``,
    ``fourier``, ``maco`` (phase-only Fourier with a fixed natural-image magnitude), ``latent`` (the latent
    space of the learned prior, a VAE fitted to the model's data) or ``auto``. ``transforms``: ``"auto"`` (scaled to the input size), ``None``,
    or a ``Transforms``. Prior weights are per item and relative to the value range.
    ``bn_prior``: weight of the BatchNorm-statistics prior (``None``: on for class targets when the
    model has BatchNorm; unit targets keep their own statistics).
    ``data_prior``: weight of the Gaussian prior fitted to the model's training inputs
    (``None``: on with weight 20 when the model knows its data, e.g. zoo models or ``--data``).
    ``vae_prior``: weight of the learned prior's negative ELBO per input element (``None``: off; see
    ``netinvert.domains.generative`` for what ``auto`` picks).
    ``init``: starting inputs (B, *shape) in the model's range (e.g. a decoder's output).
    """

    region: Box | Ball = Box()
    param: str = "auto"
    decay: float = 1.0
    decorrelate: bool | None = None
    transforms: Transforms | str | None = "auto"
    tv: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    blur: float = 0.0
    bn_prior: float | None = None
    data_prior: float | None = None
    vae_prior: float | None = None
    init: torch.Tensor | None = None

    def changed(self) -> list[str]:
        """The fields set to something other than their default (``init``: given at all)."""
        default = Domain()
        return [f.name for f in fields(self) if (getattr(self, f.name) is not None if f.name == "init"
                                                  else getattr(self, f.name) != getattr(default, f.name))]

    def __post_init__(self) -> None:
        if self.param not in PARAMETERIZATIONS:
            raise NetinvertError(f"unknown parameterization {self.param!r}: use one of {choices(PARAMETERIZATIONS)}")
        if isinstance(self.transforms, str) and self.transforms != "auto":
            raise NetinvertError(f"transforms={self.transforms!r} is unknown: use 'auto', None or a Transforms")
        for name in ("tv", "l1", "l2", "blur", "bn_prior", "data_prior", "vae_prior"):
            if (getattr(self, name) or 0) < 0:
                raise NetinvertError(f"prior weight {name}={getattr(self, name)} must be >= 0")

    def bounds(self, spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
        return self.region.bounds(spec)

    def resolved_param(self, spec: InputSpec) -> str:
        if self.param != "auto":
            if self.param in ("fourier", "maco") and len(spec.shape) != 3:
                raise NetinvertError(f"{self.param} parameterization needs (C, H, W) inputs, not {spec.shape}: use pixel")
            return self.param
        return "fourier" if len(spec.shape) == 3 and min(spec.shape[1:]) >= 64 else "pixel"

    def resolved_transforms(self, spec: InputSpec) -> Transforms:
        if self.transforms is None or len(spec.shape) != 3:
            return Transforms()
        if isinstance(self.transforms, Transforms):
            return self.transforms
        return Transforms.for_size(spec.shape[1], spec.shape[2])

    def parameterize(self, spec: InputSpec, batch: int, generator: Generators) -> nn.Module:
        """A module producing a (batch, *shape) tensor inside the domain's bounds (on the CPU: move it with ``.to``)."""
        low, high = self.bounds(spec)
        init = self.init
        if init is not None:
            init = init.detach().to(device="cpu", dtype=torch.float32)  # built on the CPU, then moved
            if init.shape != (batch, *spec.shape):
                raise NetinvertError(
                    f"initial inputs have shape {tuple(init.shape)}; expected {(batch, *spec.shape)}"
                )
            init = torch.maximum(torch.minimum(init, high), low)
        param = self.resolved_param(spec)
        decorrelate = spec.channels == 3 if self.decorrelate is None else self.decorrelate
        if param == "latent":
            raise NetinvertError("param 'latent' needs the model's learned prior: build it with "
                                 "netinvert.domains.generative.parameterize")
        if param == "maco":
            if init is not None:
                raise NetinvertError("param 'maco' fixes the spectrum's magnitude, so it cannot start from given "
                                     "inputs: use 'fourier' or 'pixel' with init")
            return Maco(batch, spec.shape, low, high, generator, decay=self.decay, decorrelate=decorrelate)
        if param == "fourier":
            return Fourier(batch, spec.shape, low, high, generator, decay=self.decay, decorrelate=decorrelate, init=init)
        noise = 0.01 if len(spec.shape) == 3 else 0.5
        return Pixel(batch, spec.shape, low, high, generator, init=init, noise=noise)
