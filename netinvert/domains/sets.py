"""Input sets: ``Box`` (value bounds) and ``Ball`` (an L-p ball around a point, clipped to the box)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from netinvert.ground.errors import NetinvertError
from netinvert.ground.spec import InputSpec


@dataclass(frozen=True)
class Box:
    """Element-wise bounds; scalars broadcast, ``None`` means the model's input range."""

    low: float | torch.Tensor | None = None
    high: float | torch.Tensor | None = None

    def bounds(self, spec: InputSpec, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of the input's shape (``dtype`` float64 keeps float64 bounds exact)."""
        lo = _full(self.low, spec.low, spec.shape, dtype)
        hi = _full(self.high, spec.high, spec.shape, dtype)
        if bool((lo > hi).any()):
            raise NetinvertError("box is empty: some lower bound exceeds its upper bound")
        return lo, hi


@dataclass(frozen=True)
class Ball:
    """Inputs within ``eps`` of ``center`` in the L-``p`` norm (``p`` = inf, 2 or 1), inside ``box``."""

    center: torch.Tensor
    eps: float
    p: float = math.inf
    box: Box = Box()

    def __post_init__(self) -> None:
        if self.eps < 0:
            raise NetinvertError(f"ball radius eps={self.eps} must be >= 0")
        if self.p not in (1, 2, math.inf):
            raise NetinvertError(f"ball norm p={self.p} is not supported: use 1, 2 or inf")

    def bounds(self, spec: InputSpec, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounding box of the ball intersected with the input box."""
        lo, hi = self.box.bounds(spec, dtype)
        c = self.center.reshape(spec.shape).to(dtype)
        return torch.maximum(lo, c - self.eps), torch.minimum(hi, c + self.eps)

    def project(self, x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
        """Project a batch onto the ball (and the box)."""
        c = self.center.reshape(1, *spec.shape).to(x)
        d = x - c
        if self.p == math.inf:
            d = d.clamp(-self.eps, self.eps)
        else:
            norms = d.flatten(1).norm(p=self.p, dim=1).clamp_min(1e-12)
            scale = (self.eps / norms).clamp(max=1.0).reshape(-1, *([1] * (x.dim() - 1)))
            d = d * scale
        lo, hi = self.box.bounds(spec)
        return torch.maximum(torch.minimum(c + d, hi.to(x)), lo.to(x))


def _full(value: float | torch.Tensor | None, default: float, shape: tuple[int, ...],
          dtype: torch.dtype) -> torch.Tensor:
    if value is None:
        return torch.full(shape, float(default), dtype=dtype)
    t = torch.as_tensor(value, dtype=dtype)
    try:
        return t.expand(shape).clone() if t.numel() > 1 else torch.full(shape, float(t), dtype=dtype)
    except RuntimeError:
        try:
            return t.reshape(shape).clone()
        except RuntimeError as exc:
            raise NetinvertError(f"box bound of shape {tuple(t.shape)} does not fit the input shape {shape}") from exc
