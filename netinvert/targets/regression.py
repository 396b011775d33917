"""``Regression``: outputs of a regression network that should equal given values (inverse design).

The objective is minus the squared error to ``y`` on the chosen outputs (0 is a perfect hit). With a
``tolerance`` the target is also the box ``|f(x)_j - y_j| <= tol`` as an ``OutputSet``, so the exact
methods can answer "which inputs reach y within tol, or none".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError
from netinvert.targets.base import Acts, Target
from netinvert.targets.output_set import OutputSet


@dataclass(frozen=True, eq=False)
class Regression(Target):
    """Outputs ``outputs`` (default: all, in order) should equal ``y``; ``tolerance`` makes it a box."""

    y: tuple[float, ...]
    outputs: tuple[int, ...] | None = None
    tolerance: float | None = None

    def __init__(self, y: float | Sequence[float] | np.ndarray | torch.Tensor,
                 outputs: Sequence[int] | None = None, tolerance: float | None = None) -> None:
        values = tuple(float(v) for v in np.atleast_1d(np.asarray(y, dtype=np.float64)).reshape(-1))
        if not values:
            raise NetinvertError("regression target has no values: give y, e.g. Regression([1.2, 0.5])")
        if not all(math.isfinite(v) for v in values):
            raise NetinvertError(f"regression target {list(values)} holds a non-finite value: give finite numbers")
        picked = None if outputs is None else tuple(int(j) for j in outputs)
        if picked is not None and len(picked) != len(values):
            raise NetinvertError(f"regression target gives {len(values)} values for {len(picked)} outputs "
                                 f"{list(picked)}: give one value per chosen output")
        if tolerance is not None and not (math.isfinite(tolerance) and tolerance > 0):
            raise NetinvertError(f"tolerance={tolerance} must be a positive number")
        object.__setattr__(self, "y", values)
        object.__setattr__(self, "outputs", picked)
        object.__setattr__(self, "tolerance", None if tolerance is None else float(tolerance))

    @property
    def description(self) -> str:  # type: ignore[override]
        values = ", ".join(f"{v:g}" for v in self.y)
        where = "" if self.outputs is None else f" on outputs {list(self.outputs)}"
        tol = "" if self.tolerance is None else f" within {self.tolerance:g}"
        return f"y = ({values}){where}{tol}"

    def indices(self, num_outputs: int) -> list[int]:
        """The output indices this target reads, checked against the model's ``num_outputs``."""
        if self.outputs is None:
            if len(self.y) != num_outputs:
                raise NetinvertError(f"regression target gives {len(self.y)} values but the model has "
                                     f"{num_outputs} outputs: give {num_outputs} values or choose outputs")
            return list(range(num_outputs))
        bad = [j for j in self.outputs if not 0 <= j < num_outputs]
        if bad:
            raise NetinvertError(f"output index {bad[0]} is out of range: the model has outputs 0..{num_outputs - 1}")
        return list(self.outputs)

    def errors(self, outputs: torch.Tensor) -> torch.Tensor:
        """Squared error to ``y`` per batch item, summed over the chosen outputs."""
        flat = outputs.reshape(outputs.shape[0], -1)
        idx = self.indices(flat.shape[1])
        y = torch.tensor(self.y, dtype=flat.dtype, device=flat.device)
        return (flat[:, idx] - y).pow(2).sum(1)

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        return -self.errors(outputs)

    def output_set(self, num_outputs: int) -> OutputSet:
        """The box ``|f_j - y_j| <= tolerance`` on the chosen outputs as an ``OutputSet``."""
        if self.tolerance is None:
            raise NetinvertError(f"regression target {self.description} has no tolerance: exact methods need "
                                 "one, e.g. Regression(y, tolerance=0.05)")
        idx = self.indices(num_outputs)
        a = np.zeros((2 * len(idx), num_outputs))
        b = np.zeros(2 * len(idx))
        for r, (j, v) in enumerate(zip(idx, self.y, strict=True)):
            a[2 * r, j], b[2 * r] = 1.0, v + self.tolerance
            a[2 * r + 1, j], b[2 * r + 1] = -1.0, -(v - self.tolerance)
        return OutputSet.linear(a, b, label=self.description)
