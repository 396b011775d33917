"""Phase-only parameterization (MACO, Fel et al. 2023, "Unlocking feature visualization for deeper networks
with magnitude constrained optimization").

The Fourier magnitude of every image is fixed to a natural-image spectrum (1/f^decay, per channel, the same
for all items) and only the phase is optimized; colour is decorrelated for 3 channels as in ``Fourier``.
Natural images differ from one another mostly in phase, so the optimizer can move structure around but
cannot pump energy into the high frequencies where adversarial textures live.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from netinvert.domains.param import COLOR_NORM, Generators, randn, spectrum_scale


class Maco(nn.Module):
    """x = low + span * sigmoid(irfft2(|S| e^{i phase}) * gain), with ``|S|`` fixed to 1/f^decay."""

    def __init__(self, batch: int, shape: tuple[int, ...], low: torch.Tensor, high: torch.Tensor,
                 generator: Generators, decay: float = 1.0, decorrelate: bool = False) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError("the phase-only parameterization needs (C, H, W) inputs")
        c, h, w = shape
        magnitude = spectrum_scale(h, w, decay)
        magnitude[0, 0] = 0.0  # the mean comes from the sigmoid's centre, not from the spectrum
        # Scale so that the image has unit standard deviation before the sigmoid (Parseval, ortho norm).
        magnitude = magnitude / magnitude.pow(2).sum().div(h * w / 2).sqrt()
        self.register_buffer("magnitude", magnitude.expand(c, -1, -1).clone())
        self.register_buffer("low", low.reshape(1, *shape))
        self.register_buffer("span", (high - low).reshape(1, *shape))
        self.decorrelate = decorrelate and c == 3
        self.register_buffer("color", COLOR_NORM.clone())  # a buffer, so it follows .to(device, dtype)
        self.size = (h, w)
        self.phase = nn.Parameter(math.pi * randn(batch, (c, h, w // 2 + 1), generator))
        self.gain = 2.0

    def forward(self) -> torch.Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        img = torch.fft.irfft2(spec, s=self.size, norm="ortho") * self.gain
        if self.decorrelate:
            img = torch.einsum("ij,bjhw->bihw", self.color, img)
        return self.low + self.span * torch.sigmoid(img)

