"""scikit-learn's 8x8 handwritten digits, upsampled to MNIST's 28x28 layout (20x20 digit, 4 px margin)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def load_digits_28(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split (x_train, y_train, x_test, y_test); images (n, 1, 28, 28) float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4)).clamp(0.0, 1.0).numpy()
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
