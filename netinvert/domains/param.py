"""Parameterizations: how a batch of inputs is produced from free parameters inside a box.

``Pixel`` maps each value through a sigmoid into ``[low, high]``; ``Fourier`` optimizes a
spectrum scaled by 1/frequency^decay (smooth images, Lucid-style) for any H x W and channel
count; 3-channel images can be colour-decorrelated. All are ``nn.Module``s returning (B, *shape).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Square root of the colour correlation of natural images (ImageNet), as used by Lucid.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_NORM = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


Generators = torch.Generator | Sequence[torch.Generator]


def randn(batch: int, shape: tuple[int, ...], generator: Generators) -> torch.Tensor:
    """Standard normal draws (batch, *shape): from one generator, or row i from generator i (so an item's
    start depends on its own seed only, not on the batch it shares)."""
    if isinstance(generator, torch.Generator):
        return torch.randn((batch, *shape), generator=generator)
    if len(generator) != batch:
        raise ValueError(f"{len(generator)} generators for a batch of {batch}")
    return torch.stack([torch.randn(shape, generator=g) for g in generator])


def _inverse_sigmoid(u: torch.Tensor) -> torch.Tensor:
    u = u.clamp(1e-4, 1 - 1e-4)
    return torch.log(u) - torch.log1p(-u)


class Pixel(nn.Module):
    """x = low + (high - low) * sigmoid(p), one free value per input element."""

    def __init__(self, batch: int, shape: tuple[int, ...], low: torch.Tensor, high: torch.Tensor,
                 generator: Generators, init: torch.Tensor | None = None, noise: float = 0.01) -> None:
        super().__init__()
        self.register_buffer("low", low.reshape(1, *shape))
        self.register_buffer("span", (high - low).reshape(1, *shape))
        self.unit_box = bool((low == 0).all() and (high == 1).all())
        if init is None:
            start = torch.full((batch, *shape), 0.5) + noise * randn(batch, shape, generator)
        else:
            start = (init.reshape(batch, *shape) - self.low) / self.span.clamp_min(1e-12)
        self.raw = nn.Parameter(_inverse_sigmoid(start))

    def forward(self) -> torch.Tensor:
        if self.unit_box:
            return torch.sigmoid(self.raw)
        return self.low + self.span * torch.sigmoid(self.raw)


def spectrum_scale(h: int, w: int, decay: float) -> torch.Tensor:
    """``1 / f^decay`` over the (h, w // 2 + 1) frequencies of ``rfft2`` (the lowest clamped to one cycle per
    image): a natural image's spectral magnitude, which the Fourier and phase-only parameterizations share."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return 1.0 / torch.clamp(torch.sqrt(fx * fx + fy * fy), min=1.0 / max(h, w)) ** decay


class Fourier(nn.Module):
    """Inputs from a decayed Fourier spectrum per channel, squashed into the box by a sigmoid.

    ``decay`` sets how strongly high frequencies are damped (1 = 1/f). Works for any channel
    count and non-square sizes; ``decorrelate`` mixes 3 channels with natural-image colour statistics.
    """

    def __init__(self, batch: int, shape: tuple[int, ...], low: torch.Tensor, high: torch.Tensor,
                 generator: Generators, decay: float = 1.0, decorrelate: bool = False,
                 init: torch.Tensor | None = None, noise: float = 0.01) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError("Fourier parameterization needs (C, H, W) inputs")
        c, h, w = shape
        self.register_buffer("scale", spectrum_scale(h, w, decay)[None, None, :, :, None])
        self.register_buffer("low", low.reshape(1, *shape))
        self.register_buffer("span", (high - low).reshape(1, *shape))
        self.decorrelate = decorrelate and c == 3
        self.register_buffer("color", COLOR_NORM.clone())  # a buffer, so it follows .to(device, dtype)
        self.size = (h, w)
        spectrum = noise * randn(batch, (c, h, w // 2 + 1, 2), generator)
        self.spectrum = nn.Parameter(spectrum)
        if init is not None:
            with torch.no_grad():
                target = _inverse_sigmoid((init.reshape(batch, *shape) - self.low) / self.span.clamp_min(1e-12))
                if self.decorrelate:
                    target = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(COLOR_NORM), target)
                spec = torch.fft.rfft2(target, norm="ortho")
                self.spectrum.copy_(torch.view_as_real(spec) / self.scale)

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        img = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        if self.decorrelate:
            img = torch.einsum("ij,bjhw->bihw", self.color, img)
        return self.low + self.span * torch.sigmoid(img)

