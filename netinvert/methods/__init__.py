"""Methods: every reverse run goes through ``invert(model, target, domain, method=...)``.

Each method is one module with a ``run(model, targets, domain, **options) -> Result`` entry point.
"""

from __future__ import annotations

import importlib
from typing import Any

from netinvert.errors import NetinvertError, choices
from netinvert.models.wrapper import Model
from netinvert.result import Result
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
}


def invert(model: Model, target: Target | list[Target], domain: Any = None, method: str = "gradient",
           **options: Any) -> Result:
    """Find inputs of ``model`` that reach ``target`` (one per target in a list) inside ``domain``."""
    if method not in METHODS:
        raise NetinvertError(f"unknown method {method!r}: choose one of {choices(METHODS)}")
    if not isinstance(model, Model):
        raise NetinvertError("model must be a netinvert Model: wrap your nn.Module with netinvert.Model or use load()")
    module = importlib.import_module(METHODS[method])
    return module.run(model, target, domain, **options)
