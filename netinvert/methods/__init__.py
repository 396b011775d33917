"""Methods: every reverse run goes through ``invert(model, target, domain, method=...)``.

Each method is one module with an ``Options`` dataclass (every option once: its default, range and help; see
``netinvert.ground.options``), a ``run(model, targets, domain, **options) -> Result`` entry point that takes
them, and a ``DOMAIN_FIELDS`` tuple naming the domain fields it honours (``region``: any Box or Ball; ``box``: a
Box or an L-inf Ball only; the other names are ``Domain`` fields). ``invert`` checks the options against the
dataclass, resolves the targets and the domain once, and refuses a domain field the method would silently
ignore, so a typo, an out-of-range value or a mismatch gets one clear message up front.

Methods run on the model's device (``invert(..., device=...)`` moves the model first); the methods in
``CPU_METHODS`` (sound solvers and NumPy linear algebra) always run on the CPU. Every result says where it
ran in ``info["device"]`` and its ``kind`` (``KINDS``), and its tensors come back on the CPU. Where the model's
data was read, ``info["data"]`` names it and says how it was scaled into the model's input range.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from types import ModuleType
from typing import Any

from netinvert.data.sources import DataSplit
from netinvert.domains.domain import Domain
from netinvert.domains.sets import Ball, Box
from netinvert.ground.device import DeviceSpec, resolve_device
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.options import check, values
from netinvert.ground.result import Result
from netinvert.models.wrapper import Model
from netinvert.targets.activations import Activations
from netinvert.targets.base import Target
from netinvert.targets.resolve import resolve_all

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
KINDS = {"gradient": "imagine", "langevin": "imagine", "analytic": "imagine", "decoder": "invert", "hybrid": "invert",
         "exact": "solve", "bounds": "preimage", "dbn": "sample", "adjoint": "design"}
"""The kind of run each method's result records (``Activations`` targets make any method's run an ``invert``)."""
CPU_METHODS = ("exact", "bounds", "analytic", "adjoint")  # NumPy, sound solvers: always on the CPU
REGION_ONLY = ("box",)  # methods that declare nothing take a box-shaped region and no other domain field


def options_of(method: str) -> type[Any]:
    """The options dataclass of ``method`` (its fields: every option's default, range and help)."""
    if method not in METHODS:
        raise NetinvertError(f"unknown method {method!r}: choose one of {choices(METHODS)}")
    return importlib.import_module(METHODS[method]).Options  # type: ignore[no-any-return]


def shared_options(method: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Those of ``values`` that ``method`` declares: a run of several methods with one set of options (a leakage
    report) hands each method the ones it takes."""
    names = {f.name for f in fields(options_of(method))}
    return {name: value for name, value in values.items() if name in names}


def check_shared(methods: Sequence[str], values: Mapping[str, Any]) -> None:
    """Refuse an option that none of ``methods`` declares."""
    names = {f.name for method in methods for f in fields(options_of(method))}
    unknown = [name for name in values if name not in names]
    if unknown:
        raise NetinvertError(f"option `{unknown[0]}` applies to none of the methods {', '.join(methods)}: valid "
                             f"options are {choices(sorted(names))}")


def invert(model: Model, target: Target | list[Target], domain: Any = None, method: str = "gradient", *,
           device: DeviceSpec | None = None, **options: Any) -> Result:
    """Find inputs of ``model`` that reach ``target`` (one per target in a list) inside ``domain``.

    ``domain``: ``None`` (the model's input range), a ``Box``, a ``Ball`` or a ``Domain``. ``device``
    (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) moves the model there first, where it stays; ``None``
    runs where the model is.
    """
    if method not in METHODS:
        raise NetinvertError(f"unknown method {method!r}: choose one of {choices(METHODS)}")
    if not isinstance(model, Model):
        raise NetinvertError("model must be a netinvert Model: wrap your nn.Module with netinvert.Model or use load()")
    module = importlib.import_module(METHODS[method])
    chosen = values(check(module.Options, options, method))
    if device is not None:
        model.to(resolve_device(device))
    targets = resolve_all(target, model)
    region = _domain_for(module, method, domain)
    if method in CPU_METHODS and model.device.type != "cpu":
        with _on_cpu(model):
            result = module.run(model, targets, region, **chosen)
    else:
        result = module.run(model, targets, region, **chosen)
    result.info.setdefault("device", "cpu" if method in CPU_METHODS else str(model.device))
    result.kind = "invert" if targets and all(isinstance(t, Activations) for t in targets) else KINDS[method]
    if isinstance(model.data, DataSplit) and model.data.scaling is not None:
        result.info.setdefault("data", {"key": model.data.key, "scaling": model.data.scaling})
    return result


@contextmanager
def _on_cpu(model: Model) -> Iterator[None]:
    """The model on the CPU while the block runs, then back on its device."""
    before = model.device
    model.to("cpu")
    try:
        yield
    finally:
        model.to(before)


def _domain_for(module: ModuleType, method: str, domain: Any) -> Any:
    """The domain in the form ``method`` takes, or a clear error naming any field it would ignore."""
    if domain is None:
        return None
    if isinstance(domain, (Box, Ball)):
        domain = Domain(region=domain)
    if not isinstance(domain, Domain):
        raise NetinvertError(f"domain must be a Box, a Ball or a Domain, not {type(domain).__name__}")
    honoured = getattr(module, "DOMAIN_FIELDS", REGION_ONLY)
    fields = [name for name in domain.changed() if name != "region"]
    ignored = [name for name in fields if name not in honoured]
    region = domain.region
    if region != Box() and "region" not in honoured:
        if "box" not in honoured:
            ignored.insert(0, "region")
        elif isinstance(region, Ball) and region.p != math.inf:
            raise NetinvertError(f"method {method} keeps inputs in a box; it would replace this Ball with "
                                 f"p={region.p:g} by its bounding box: use a Box or a Ball with p=inf")
    if ignored:
        takes = ", ".join(name for name in honoured) or "no domain fields"
        raise NetinvertError(f"method {method} would ignore the domain's {', '.join(ignored)} "
                             f"(it takes {takes}): leave them unset or choose another method")
    if "region" in honoured or any(name not in ("region", "box") for name in honoured):
        return domain
    return region if honoured else None
