"""``OutputSet``: linear constraints on a network's outputs in disjunctive normal form.

A point ``y`` is in the set when, for at least one disjunct ``(A, b)``, every row holds:
``A y <= b``. The same value serves the exact methods (which read the matrices) and the
gradient methods (which maximize ``objective``: minus the smallest disjunct violation, so it is
positive exactly inside the set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from netinvert.ground.errors import NetinvertError
from netinvert.targets.base import Acts, Target


@dataclass(frozen=True, eq=False)
class OutputSet(Target):
    """A union of polyhedra ``{y : A_k y <= b_k}`` over the flattened outputs (``num_outputs`` of them)."""

    disjuncts: tuple[tuple[np.ndarray, np.ndarray], ...]
    num_outputs: int
    label: str = ""

    def __post_init__(self) -> None:
        if not self.disjuncts:
            raise NetinvertError("output set has no disjunct: give at least one conjunction of constraints")
        fixed = []
        for a, b in self.disjuncts:
            a = np.atleast_2d(np.asarray(a, dtype=np.float64))
            b = np.atleast_1d(np.asarray(b, dtype=np.float64))
            if a.shape[1] != self.num_outputs or a.shape[0] != b.shape[0]:
                raise NetinvertError(
                    f"output constraint of shape A{a.shape}, b{b.shape} does not fit {self.num_outputs} outputs"
                )
            fixed.append((a, b))
        object.__setattr__(self, "disjuncts", tuple(fixed))

    # ------------------------------------------------------------------ builders
    @staticmethod
    def linear(
        a: Sequence[Sequence[float]] | np.ndarray, b: Sequence[float] | np.ndarray, label: str = ""
    ) -> OutputSet:
        """One conjunction ``A y <= b``."""
        a2 = np.atleast_2d(np.asarray(a, dtype=np.float64))
        return OutputSet(((a2, np.asarray(b, dtype=np.float64)),), a2.shape[1], label)

    @staticmethod
    def any_of(sets: Sequence[OutputSet], label: str = "") -> OutputSet:
        """The union (disjunction) of output sets over the same outputs."""
        if not sets:
            raise NetinvertError("any_of needs at least one output set")
        n = sets[0].num_outputs
        if any(s.num_outputs != n for s in sets):
            raise NetinvertError("cannot join output sets over different numbers of outputs")
        return OutputSet(tuple(d for s in sets for d in s.disjuncts), n, label)

    @staticmethod
    def all_of(sets: Sequence[OutputSet], label: str = "") -> OutputSet:
        """The intersection (conjunction) of output sets, distributed back into normal form."""
        if not sets:
            raise NetinvertError("all_of needs at least one output set")
        n = sets[0].num_outputs
        if any(s.num_outputs != n for s in sets):
            raise NetinvertError("cannot intersect output sets over different numbers of outputs")
        acc: list[tuple[np.ndarray, np.ndarray]] = list(sets[0].disjuncts)
        for s in sets[1:]:
            acc = [(np.vstack([a1, a2]), np.concatenate([b1, b2])) for a1, b1 in acc for a2, b2 in s.disjuncts]
        return OutputSet(tuple(acc), n, label)

    @staticmethod
    def from_class(k: int, num_outputs: int, margin: float = 0.0) -> OutputSet:
        """Output ``k`` exceeds every other output by at least ``margin``: ``y_j - y_k <= -margin``."""
        if not 0 <= k < num_outputs:
            raise NetinvertError(f"class {k} is out of range for {num_outputs} outputs")
        rows = [j for j in range(num_outputs) if j != k]
        a = np.zeros((len(rows), num_outputs))
        for i, j in enumerate(rows):
            a[i, j], a[i, k] = 1.0, -1.0
        return OutputSet(((a, np.full(len(rows), -float(margin))),), num_outputs, f"class {k} by {margin:g}")

    @staticmethod
    def not_class(k: int, num_outputs: int) -> OutputSet:
        """Some output other than ``k`` reaches output ``k`` (the usual robustness counterexample)."""
        if not 0 <= k < num_outputs:
            raise NetinvertError(f"class {k} is out of range for {num_outputs} outputs")
        ds = []
        for j in range(num_outputs):
            if j != k:
                a = np.zeros((1, num_outputs))
                a[0, k], a[0, j] = 1.0, -1.0
                ds.append((a, np.zeros(1)))
        return OutputSet(tuple(ds), num_outputs, f"not class {k}")

    # ------------------------------------------------------------------ evaluation
    @property
    def description(self) -> str:  # type: ignore[override]
        if self.label:
            return self.label
        rows = sum(a.shape[0] for a, _ in self.disjuncts)
        return f"output set ({len(self.disjuncts)} disjuncts, {rows} constraints)"

    def violations(self, y: np.ndarray) -> np.ndarray:
        """Per point (rows of ``y``): the smallest over disjuncts of the largest ``A y - b`` (<= 0 inside)."""
        y2 = np.asarray(y, dtype=np.float64).reshape(-1, self.num_outputs)
        per = [np.max(y2 @ a.T - b, axis=1) for a, b in self.disjuncts]
        return np.min(np.stack(per, axis=1), axis=1)

    def contains(self, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether each point satisfies some disjunct with ``A y <= b - margin``."""
        return self.violations(y) <= -margin

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        y = outputs.reshape(outputs.shape[0], -1)
        if y.shape[1] != self.num_outputs:
            raise NetinvertError(f"output set is over {self.num_outputs} outputs but the model gives {y.shape[1]}")
        per = []
        for a, b in self.disjuncts:
            at = torch.as_tensor(a, dtype=y.dtype, device=y.device)
            bt = torch.as_tensor(b, dtype=y.dtype, device=y.device)
            per.append((y @ at.T - bt).amax(dim=1))
        return -torch.stack(per, dim=1).amin(dim=1)
