"""Random transforms applied to inputs before each forward pass (robustness priors).

One ``grid_sample`` applies pad, jitter, scale and rotation to the whole batch with independent
random draws per item (from one generator, or item i's from generator i, so that an item's draws
do not depend on the batch it shares). Default magnitudes scale with the input size, so the same defaults suit
20x20 glyphs and 224x224 photos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Transforms:
    """Magnitudes: ``pad`` and ``jitter`` in pixels, ``scale`` as (min, max), ``degrees`` of rotation."""

    pad: int = 0
    jitter: int = 0
    scale: tuple[float, float] = (1.0, 1.0)
    degrees: float = 0.0

    @staticmethod
    def for_size(height: int, width: int) -> Transforms:
        """Defaults proportional to the input size (about 1 px of jitter on a 28x28 digit, 7 on 224x224)."""
        side = min(height, width)
        if side < 16:
            return Transforms()
        return Transforms(
            pad=max(1, round(side / 20)),
            jitter=max(1, round(side / 32)),
            scale=(0.95, 1.05),
            degrees=5.0 if side >= 64 else 3.0,
        )

    @property
    def is_identity(self) -> bool:
        return self.pad == 0 and self.jitter == 0 and self.scale == (1.0, 1.0) and self.degrees == 0.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator],
                 fill: float) -> torch.Tensor:
        if self.is_identity or x.dim() != 4:
            return x
        b, _, h, w = x.shape
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, value=fill)
        ph, pw = x.shape[2], x.shape[3]
        u = _uniform(b, generator)  # drawn on the CPU (the same draws on every device)
        angle = (u[:, 0] * 2 - 1) * math.radians(self.degrees)
        scale = self.scale[0] + u[:, 1] * (self.scale[1] - self.scale[0])
        shift = (u[:, 2:] * (2 * self.jitter + 1)).floor().clamp(max=2 * self.jitter) - self.jitter
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([
            torch.stack([cos, -sin, shift[:, 0] * 2 / pw], dim=1),
            torch.stack([sin, cos, shift[:, 1] * 2 / ph], dim=1),
        ], dim=1).to(x)
        grid = F.affine_grid(theta, [b, x.shape[1], ph, pw], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        top, left = (ph - h) // 2, (pw - w) // 2
        return out[:, :, top : top + h, left : left + w]


def _uniform(batch: int, generator: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
    """(batch, 4) uniform draws: one generator for the batch, or row i from generator i."""
    if isinstance(generator, torch.Generator):
        return torch.rand((batch, 4), generator=generator)
    return torch.cat([torch.rand((1, 4), generator=g) for g in generator])
