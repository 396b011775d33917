"""Regularizers on inputs: total variation, L1, L2 and blur penalties, scaled by the value range.

Each returns one penalty per batch item, so per-item results stay separate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def total_variation(x: torch.Tensor, span: float) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, in units of the value range."""
    if x.dim() != 4:
        return x.new_zeros(x.shape[0])
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return (dh + dw) / span


def l1(x: torch.Tensor, centre: float, span: float) -> torch.Tensor:
    return ((x - centre).abs() / span).flatten(1).mean(1)


def l2(x: torch.Tensor, centre: float, span: float) -> torch.Tensor:
    return (((x - centre) / span) ** 2).flatten(1).mean(1)


def blur(x: torch.Tensor, span: float) -> torch.Tensor:
    """Squared distance to a 3x3 Gaussian-blurred copy: penalizes high-frequency noise."""
    if x.dim() != 4:
        return x.new_zeros(x.shape[0])
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (kernel[:, None] * kernel[None, :]) / 16.0
    c = x.shape[1]
    weight = kernel.expand(c, 1, 3, 3)
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=c)
    return (((x - smooth) / span) ** 2).flatten(1).mean(1)
