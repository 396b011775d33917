"""What a reverse run must know about a model's input: its shape, value range and normalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from netinvert.ground.errors import NetinvertError

Array = TypeVar("Array")  # a torch tensor or a NumPy array: both have the arithmetic and reshape used here


@dataclass(frozen=True)
class InputSpec:
    """Shape of one input (no batch dimension), its value range and per-channel normalization.

    The model's own input space is ``[low, high]``; ``mean``/``std`` are applied inside the
    wrapper, so every method works in the raw range a user's data lives in.
    """

    shape: tuple[int, ...]
    low: float = 0.0
    high: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise NetinvertError(f"input shape {self.shape} is invalid: give positive sizes, e.g. 1,28,28")
        if not self.high > self.low:
            raise NetinvertError(f"input range [{self.low}, {self.high}] is empty: give low < high, e.g. 0,1")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, self.channels):
                raise NetinvertError(
                    f"`{name}` has {len(values)} values but the input has {self.channels} channels: "
                    f"give 1 or {self.channels} values"
                )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise NetinvertError(f"`std` {self.std} must be positive")

    @property
    def channels(self) -> int:
        return int(self.shape[0]) if len(self.shape) == 3 else 1

    @property
    def is_image(self) -> bool:
        """True for (C, H, W) inputs with 1 or 3 channels, which render as pictures."""
        return len(self.shape) == 3 and self.shape[0] in (1, 3) and min(self.shape[1:]) >= 4

    def adopt(self, x: Array, source: InputSpec) -> Array:
        """A batch ``x`` of inputs described by ``source`` as inputs of this description: values mapped linearly
        from ``source``'s range onto this one, items reshaped to this shape (each model applies its own mean/std).
        How a verifier reads the inputs of the model it verifies."""
        if (source.low, source.high) != (self.low, self.high):
            scale = (self.high - self.low) / (source.high - source.low)
            x = (x - source.low) * scale + self.low  # type: ignore[operator]
        if tuple(source.shape) != tuple(self.shape):
            x = x.reshape(-1, *self.shape)  # type: ignore[attr-defined]
        return x

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "range": [self.low, self.high], "mean": self.mean, "std": self.std}
