"""Reconstruction quality: PSNR and SSIM between original and reconstructed inputs, per item.

Both take the data range from the model's input range (``high - low``). SSIM follows Wang et
al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, statistics over the
valid region of the window, averaged over channels and positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from netinvert.ground.errors import NetinvertError

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
MAX_PSNR = 100.0


def _check(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise NetinvertError(f"cannot compare inputs of shapes {tuple(x.shape)} and {tuple(y.shape)}")
    return x.detach().to(torch.float64), y.detach().to(torch.float64)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per item (first dimension is the batch), capped at 100 dB."""
    x, y = _check(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    value = 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-30))
    return value.clamp(max=MAX_PSNR).to(torch.float32)


def _window(dtype: torch.dtype) -> torch.Tensor:
    r = torch.arange(WINDOW, dtype=dtype) - (WINDOW - 1) / 2
    g = torch.exp(-(r**2) / (2 * SIGMA**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per item of image batches (B, C, H, W); H and W must be >= 11."""
    x, y = _check(x, y)
    if x.dim() != 4 or min(x.shape[2:]) < WINDOW:
        raise NetinvertError(
            f"SSIM needs image batches (B, C, H, W) with H, W >= {WINDOW}; got shape {tuple(x.shape)}"
        )
    c = x.shape[1]
    w = _window(x.dtype).expand(c, 1, WINDOW, WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).to(torch.float32)
