"""Adam for the bound optimizers, without ``torch.optim``.

The first ``torch.optim`` optimizer built in a process imports ``torch._dynamo``, which takes
about 6 s on a busy CPU: longer than many whole solves, and outside every deadline check. This is
the same update (``torch.optim.Adam`` with its defaults, no weight decay) in a few tensor ops.
"""

from __future__ import annotations

import math

import torch


class Adam:
    """``torch.optim.Adam``'s update on ``params`` (each with ``requires_grad``)."""

    def __init__(self, params: list[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2**self.t)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))
