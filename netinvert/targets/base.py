"""Targets: what the output (or a hidden layer) should do.

A target is a declarative value. ``objective(outputs, acts)`` returns one number per batch item
to *maximize*; ``layers`` names the activations it reads, so hooks go only on those layers.
Targets compose without mutating their operands: ``a + b``, ``a - b``, ``2 * a``, ``a * b``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import torch

Acts = Mapping[str, torch.Tensor]


class Target(ABC):
    """Base class: subclasses set ``description`` and implement ``objective``."""

    description: str = "target"

    @property
    def layers(self) -> tuple[str, ...]:
        return ()

    @abstractmethod
    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        """One value per batch item, to maximize."""

    def __str__(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    def __add__(self, other: Target | float) -> Target:
        return Sum.of([(1.0, self), (1.0, _as_target(other))])

    def __radd__(self, other: Target | float) -> Target:
        return Sum.of([(1.0, _as_target(other)), (1.0, self)])

    def __sub__(self, other: Target | float) -> Target:
        return Sum.of([(1.0, self), (-1.0, _as_target(other))])

    def __rsub__(self, other: Target | float) -> Target:
        return Sum.of([(1.0, _as_target(other)), (-1.0, self)])

    def __neg__(self) -> Target:
        return Sum.of([(-1.0, self)])

    def __mul__(self, other: Target | float) -> Target:
        if isinstance(other, (int, float)):
            return Sum.of([(float(other), self)])
        if isinstance(other, Target):
            return Product(self, other)
        return NotImplemented

    def __rmul__(self, other: float) -> Target:
        return self.__mul__(other)

    def __truediv__(self, other: float) -> Target:
        return Sum.of([(1.0 / float(other), self)])


def _as_target(value: Target | float) -> Target:
    if isinstance(value, Target):
        return value
    if isinstance(value, (int, float)):
        return Constant(float(value))
    raise TypeError(f"cannot combine a target with {type(value).__name__}")


def _fmt(weight: float) -> str:
    return f"{weight:g}"


@dataclass(frozen=True, eq=False)
class Constant(Target):
    value: float

    @property
    def description(self) -> str:  # type: ignore[override]
        return _fmt(self.value)

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        return outputs.new_full((outputs.shape[0],), self.value)


@dataclass(frozen=True, eq=False)
class Sum(Target):
    """A weighted sum of targets; nested sums flatten so weights read exactly as written."""

    terms: tuple[tuple[float, Target], ...]

    @staticmethod
    def of(terms: list[tuple[float, Target]]) -> Sum:
        flat: list[tuple[float, Target]] = []
        for w, t in terms:
            if isinstance(t, Sum):
                flat.extend((w * w2, t2) for w2, t2 in t.terms)
            else:
                flat.append((w, t))
        return Sum(tuple(flat))

    @property
    def weights(self) -> list[float]:
        return [w for w, _ in self.terms]

    @property
    def description(self) -> str:  # type: ignore[override]
        parts: list[str] = []
        for i, (w, t) in enumerate(self.terms):
            inner = f"({t.description})" if isinstance(t, (Sum, Product)) else t.description
            sign = "-" if w < 0 else "+"
            mag = abs(w)
            body = inner if mag == 1 else f"{_fmt(mag)} * {inner}"
            parts.append(("-" + body if sign == "-" else body) if i == 0 else f" {sign} {body}")
        return "".join(parts)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for _, t in self.terms for layer in t.layers))

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        total = None
        for w, t in self.terms:
            term = w * t.objective(outputs, acts)
            total = term if total is None else total + term
        assert total is not None
        return total


@dataclass(frozen=True, eq=False)
class Product(Target):
    left: Target
    right: Target

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"({self.left.description}) * ({self.right.description})"

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.left.layers + self.right.layers))

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        return self.left.objective(outputs, acts) * self.right.objective(outputs, acts)
