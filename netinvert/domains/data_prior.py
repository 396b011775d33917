"""A Gaussian image prior fitted to data: keeps imagined inputs near the data a model was trained on.

The prior is the data's mean and principal components; its penalty is the whitened squared
distance (a Mahalanobis distance with a variance floor), averaged over input elements.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import numpy as np
import torch

from netinvert.models.wrapper import Model


@dataclass(frozen=True)
class GaussianPrior:
    mean: torch.Tensor
    components: torch.Tensor
    inv_std: torch.Tensor
    floor_inv_std: float

    @staticmethod
    def fit(x: np.ndarray | torch.Tensor, components: int = 64, floor: float = 0.05) -> GaussianPrior:
        """Fit to samples (n, *shape); ``floor`` is the variance floor as a fraction of the mean variance."""
        flat = torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1)
        mean = flat.mean(0)
        centred = flat - mean
        k = min(components, min(centred.shape) - 1)
        _, s, vt = torch.linalg.svd(centred, full_matrices=False)
        variances = s[:k] ** 2 / (len(flat) - 1)
        total = (centred**2).sum() / (len(flat) - 1) / flat.shape[1]
        floor_var = max(floor * float(total), 1e-12)  # constant data has no variance to take a floor from
        return GaussianPrior(
            mean=mean.float(), components=vt[:k].float(),
            inv_std=(variances + floor_var).rsqrt().float(), floor_inv_std=floor_var**-0.5,
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> GaussianPrior:
        """The same prior with its tensors on ``device`` in ``dtype`` (so each penalty call copies nothing)."""
        return replace(self, mean=self.mean.to(device, dtype), components=self.components.to(device, dtype),
                       inv_std=self.inv_std.to(device, dtype))

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Per-item whitened squared distance to the data distribution, divided by the input size."""
        d = x.reshape(x.shape[0], -1) - self.mean.to(x)
        coeff = d @ self.components.T.to(x)
        residual = d - coeff @ self.components.to(x)
        inside = (coeff * self.inv_std.to(x)).pow(2).sum(1)
        outside = residual.pow(2).sum(1) * self.floor_inv_std**2
        return (inside + outside) / d.shape[1]


_FITTED: weakref.WeakKeyDictionary[object, GaussianPrior] = weakref.WeakKeyDictionary()


def prior_for(model: Model) -> GaussianPrior | None:
    """The Gaussian prior of the model's training inputs (fitted once per model), or ``None``."""
    if model in _FITTED:
        return _FITTED[model]
    data = model.training_inputs()
    if data is None:
        return None
    _FITTED[model] = GaussianPrior.fit(data)
    return _FITTED[model]
