"""``OutputSet``: linear constraints on a network's outputs in disjunctive normal form.

A point ``y`` is in the set when, for at least one disjunct ``(A, b)``, every row holds:
``A y <= b``. The same value serves the exact methods (which read the matrices) and the
gradient methods (which maximize ``objective``: minus the smallest disjunct violation, so it is
positive exactly inside the set). Rows may also read the flat input ``x`` (``num_inputs`` > 0: the
rows are over ``[y, x]``, e.g. an affine envelope ``y_0 <= d @ x + e``); the exact methods answer
those on the network with its input appended to its outputs (``joined``).
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
    """A union of polyhedra ``{y : A_k y <= b_k}`` over the flattened outputs (``num_outputs`` of them),
    followed, when ``num_inputs`` > 0, by the flat input: then each ``A_k`` has ``num_outputs + num_inputs``
    columns and a point is the pair ``(y, x)``."""

    disjuncts: tuple[tuple[np.ndarray, np.ndarray], ...]
    num_outputs: int
    label: str = ""
    num_inputs: int = 0

    def __post_init__(self) -> None:
        if not self.disjuncts:
            raise NetinvertError("output set has no disjunct: give at least one conjunction of constraints")
        fixed = []
        for a, b in self.disjuncts:
            a = np.atleast_2d(np.asarray(a, dtype=np.float64))
            b = np.atleast_1d(np.asarray(b, dtype=np.float64))
            if a.shape[1] != self.num_outputs + self.num_inputs or a.shape[0] != b.shape[0]:
                inputs = f" and {self.num_inputs} inputs" if self.num_inputs else ""
                raise NetinvertError(
                    f"output constraint of shape A{a.shape}, b{b.shape} does not fit {self.num_outputs} outputs{inputs}"
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
        n, k = sets[0].num_outputs, sets[0].num_inputs
        if any((s.num_outputs, s.num_inputs) != (n, k) for s in sets):
            raise NetinvertError("cannot join output sets over different numbers of outputs or inputs")
        return OutputSet(tuple(d for s in sets for d in s.disjuncts), n, label, k)

    @staticmethod
    def all_of(sets: Sequence[OutputSet], label: str = "") -> OutputSet:
        """The intersection (conjunction) of output sets, distributed back into normal form."""
        if not sets:
            raise NetinvertError("all_of needs at least one output set")
        n, k = sets[0].num_outputs, sets[0].num_inputs
        if any((s.num_outputs, s.num_inputs) != (n, k) for s in sets):
            raise NetinvertError("cannot intersect output sets over different numbers of outputs or inputs")
        acc: list[tuple[np.ndarray, np.ndarray]] = list(sets[0].disjuncts)
        for s in sets[1:]:
            acc = [(np.vstack([a1, a2]), np.concatenate([b1, b2])) for a1, b1 in acc for a2, b2 in s.disjuncts]
        return OutputSet(tuple(acc), n, label, k)

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

    def joined(self) -> OutputSet:
        """The same set as constraints on ``num_outputs + num_inputs`` outputs alone: the outputs of a
        network that appends its flat input to its outputs."""
        return OutputSet(self.disjuncts, self.num_outputs + self.num_inputs, self.label)

    def violations(self, y: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        """Per point (rows of ``y``, and of the flat inputs ``x`` when the rows read inputs): the smallest
        over disjuncts of the largest ``A y - b`` (<= 0 inside)."""
        y2 = np.asarray(y, dtype=np.float64).reshape(-1, self.num_outputs)
        if self.num_inputs:
            if x is None:
                raise NetinvertError("this output set constrains the inputs too: pass the inputs `x` beside `y`")
            y2 = np.hstack([y2, np.asarray(x, dtype=np.float64).reshape(len(y2), self.num_inputs)])
        per = [np.max(y2 @ a.T - b, axis=1) for a, b in self.disjuncts]
        return np.min(np.stack(per, axis=1), axis=1)

    def contains(self, y: np.ndarray, margin: float = 0.0, x: np.ndarray | None = None) -> np.ndarray:
        """Whether each point satisfies some disjunct with ``A y <= b - margin``."""
        return self.violations(y, x) <= -margin

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        if self.num_inputs:
            raise NetinvertError("this output set constrains the inputs too, which gradient methods do not see: "
                                 "use method='exact' or 'bounds'")
        y = outputs.reshape(outputs.shape[0], -1)
        if y.shape[1] != self.num_outputs:
            raise NetinvertError(f"output set is over {self.num_outputs} outputs but the model gives {y.shape[1]}")
        per = []
        for a, b in self.disjuncts:
            at = torch.as_tensor(a, dtype=y.dtype, device=y.device)
            bt = torch.as_tensor(b, dtype=y.dtype, device=y.device)
            per.append((y @ at.T - bt).amax(dim=1))
        return -torch.stack(per, dim=1).amin(dim=1)
