"""Targets on classes and units: ``Class``, ``Neuron``, ``Channel``, ``Layer``, ``Direction``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from netinvert.ground.errors import NetinvertError
from netinvert.targets.base import Acts, Target


@dataclass(frozen=True, eq=False)
class Class(Target):
    """Output class ``index``: maximize its logit (or its log-probability with ``log_prob=True``).

    ``margin`` is the goal used by exact methods and early stopping: the class output must
    exceed every other output by at least ``margin``. ``index`` may be a class name until a
    model resolves it (``Class("X")``).
    """

    index: int | str
    log_prob: bool = False
    margin: float = 0.0
    output_activation: str = "softmax"
    name: str | None = None

    @property
    def description(self) -> str:  # type: ignore[override]
        word = "log p" if self.log_prob else "class"
        return f"{word} {self.name if self.name is not None else self.index}"

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        k = self._k()
        logits = outputs.reshape(outputs.shape[0], -1)
        if not self.log_prob:
            return logits[:, k]
        if self.output_activation == "sigmoid":
            return torch.nn.functional.logsigmoid(logits[:, k]) + torch.nn.functional.logsigmoid(
                -torch.cat([logits[:, :k], logits[:, k + 1 :]], dim=1)
            ).sum(dim=1)
        return torch.log_softmax(logits, dim=1)[:, k]

    def _k(self) -> int:
        if not isinstance(self.index, int):
            raise NetinvertError(f"class {self.index!r} is not resolved to an index: pass it through the model first")
        return self.index


def _unit(acts: Acts, layer: str) -> torch.Tensor:
    if layer not in acts:
        raise NetinvertError(f"layer {layer!r} produced no activation in the forward pass")
    return acts[layer]


@dataclass(frozen=True, eq=False)
class Neuron(Target):
    """One unit of a layer: ``index`` into the flattened activation, or the centre of channel ``index``."""

    layer: str
    index: int

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"neuron {self.layer}:{self.index}"

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        a = _unit(acts, self.layer)
        if a.dim() == 4:
            return a[:, self.index, a.shape[2] // 2, a.shape[3] // 2]
        return a.reshape(a.shape[0], -1)[:, self.index]


@dataclass(frozen=True, eq=False)
class Channel(Target):
    """Mean activation of channel ``index`` of a conv layer."""

    layer: str
    index: int

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"channel {self.layer}:{self.index}"

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        a = _unit(acts, self.layer)
        if a.dim() < 3:
            return a.reshape(a.shape[0], -1)[:, self.index]
        return a[:, self.index].reshape(a.shape[0], -1).mean(dim=1)


@dataclass(frozen=True, eq=False)
class Layer(Target):
    """Deep-dream objective: mean square of a whole layer's activation."""

    layer: str

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"layer {self.layer}"

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        a = _unit(acts, self.layer)
        return a.reshape(a.shape[0], -1).pow(2).mean(dim=1)


@dataclass(frozen=True, eq=False)
class Direction(Target):
    """Dot product of a layer's activation (channel vector, averaged over space) with ``vector``."""

    layer: str
    vector: torch.Tensor

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"direction {self.layer}[{self.vector.numel()}]"

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def objective(self, outputs: torch.Tensor, acts: Acts) -> torch.Tensor:
        a = _unit(acts, self.layer)
        v = self.vector.to(a.dtype).reshape(-1)
        if a.dim() == 4 and v.numel() == a.shape[1]:
            a = a.mean(dim=(2, 3))
        flat = a.reshape(a.shape[0], -1)
        if flat.shape[1] != v.numel():
            raise NetinvertError(
                f"direction has {v.numel()} values but layer {self.layer!r} has {flat.shape[1]} (or channels)"
            )
        return flat @ v
