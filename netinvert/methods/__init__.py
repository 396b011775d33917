"""Methods: every reverse run goes through ``invert(model, target, domain, method=...)``.

Each method is one module with a ``run(model, targets, domain, **options) -> Result`` entry point.
Options are checked against the entry point up front, so a typo gets a message listing the valid ones.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.base import Target

METHODS = {
    "gradient": "netinvert.methods.gradient",
    "langevin": "netinvert.methods.langevin",
    "analytic": "netinvert.methods.analytic",
    "decoder": "netinvert.methods.decoder",
    "hybrid": "netinvert.methods.hybrid",
    "exact": "netinvert.methods.exact",
    "bounds": "netinvert.methods.bounds",
    "dbn": "netinvert.methods.dbn",
    "adjoint": "netinvert.methods.adjoint",
}


def _entry(method: str, target: Target | list[Target], domain: Any) -> Callable[..., Result]:
    """The method's entry point; matching given activations with ``gradient`` uses the inversion schedule."""
    from netinvert.targets.activations import Activations

    targets = target if isinstance(target, list) else [target]
    if method == "gradient" and domain is None and targets and all(isinstance(t, Activations) for t in targets):
        from netinvert.methods.inversion import gradient_inversion

        return gradient_inversion
    return importlib.import_module(METHODS[method]).run


def invert(model: Model, target: Target | list[Target], domain: Any = None, method: str = "gradient",
           **options: Any) -> Result:
    """Find inputs of ``model`` that reach ``target`` (one per target in a list) inside ``domain``."""
    if method not in METHODS:
        raise NetinvertError(f"unknown method {method!r}: choose one of {choices(METHODS)}")
    if not isinstance(model, Model):
        raise NetinvertError("model must be a netinvert Model: wrap your nn.Module with netinvert.Model or use load()")
    entry = _entry(method, target, domain)
    accepted = [name for name, p in inspect.signature(entry).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise NetinvertError(f"unknown option {unknown[0]!r} for method {method}: accepted: {choices(accepted)}")
    return entry(model, target, domain, **options)
