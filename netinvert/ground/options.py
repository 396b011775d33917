"""Method options, declared once: one frozen dataclass per method whose fields carry a default, a valid range and
a help line.

``option(default, help, ...)`` declares a field. :func:`check` validates keyword values against a method's
dataclass (an unknown name gets one line listing the valid ones; a value of the wrong type or out of range one
line naming the option, the value and the range) and returns the instance. :func:`takes` makes a method's ``run``
take its options as validated keywords with the dataclass's defaults, so ``run`` itself lists the names only.
Everything else derives from the same fields: the command line's flags (``netinvert.cli.options.method_command``),
the ``options`` a result records, and the keys and resume manifests of sweep tasks, which hash every field marked
``keyed`` (``netinvert.sweeps.task.material``).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

from netinvert.ground.errors import NetinvertError, choices

F = TypeVar("F", bound=Callable[..., Any])
_NOUNS = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "a string"}


@dataclass(frozen=True)
class Spec:
    """What one option accepts: its help line, its range (``at_least`` / ``above`` a low end, ``at_most`` /
    ``below`` a high end, or ``choices``), whether it is a command-line flag (``cli``; Python objects such as
    callables, decoders or data are not) and whether it decides answers (``keyed``: threads and progress bars
    change none, so sweep task keys leave them out)."""

    help: str
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    cli: bool = True
    keyed: bool = True
    default_text: str = ""

    def range_text(self, typ: str) -> str:
        """The accepted values in words: ``a whole number >= 1``, ``in (0, 1)``, ``more than 0 seconds``."""
        unit = f" {self.unit}" if self.unit else ""
        noun = f"{_NOUNS['int']} " if typ == "int" else ""
        if self.choices:
            return f"one of {choices(self.choices)}"
        low = self.at_least if self.at_least is not None else self.above
        high = self.at_most if self.at_most is not None else self.below
        if low is not None and high is not None:
            left, right = "[" if self.at_least is not None else "(", "]" if self.at_most is not None else ")"
            return f"{noun}in {left}{low:g}, {high:g}{right}{unit}"
        if low is not None:
            return f"{noun}{'>=' if self.at_least is not None else 'more than'} {low:g}{unit}"
        if high is not None:
            return f"{noun}{'<=' if self.at_most is not None else 'less than'} {high:g}{unit}"
        return _NOUNS.get(typ, "")

    def problem(self, value: Any, typ: str) -> str | None:
        """Why ``value`` is refused (``must be ...`` or ``is unknown: ...``), or ``None`` when it is accepted."""
        if typ == "str" and self.choices:
            return None if value in self.choices else f"is unknown: use one of {choices(self.choices)}"
        low = self.at_least if self.at_least is not None else self.above
        high = self.at_most if self.at_most is not None else self.below
        if isinstance(value, numbers.Real) and not (
                (low is None or value > low or (self.at_least is not None and value == low))
                and (high is None or value < high or (self.at_most is not None and value == high))):
            return f"must be {self.range_text(typ)}"
        return None


def option(default: Any, help: str, **spec: Any) -> Any:  # noqa: A002 - the word the CLI uses
    """A field of a method's options: its default, its help line and its range (see :class:`Spec`)."""
    return field(default=default, metadata={"option": Spec(help, **spec)})


# the options many methods share, declared once each
def seed_option() -> Any:
    return option(0, "Random seed (results are deterministic for a seed).")


def threads_option() -> Any:
    return option(None, "Torch CPU threads.", at_least=1, keyed=False,
                  default_text="1 for small networks, else the idle cores")


def progress_option() -> Any:
    return option(None, "Show a progress bar.", cli=False, keyed=False, default_text="on a terminal")


def goal_option(default: float) -> Any:
    return option(default, "Class probability that counts as reached.", above=0.0, below=1.0)


def spec_of(f: Field[Any]) -> Spec:
    """The option spec of a field of a method's options."""
    return f.metadata["option"]


def plain_type(f: Field[Any]) -> tuple[str, bool]:
    """The plain type of a field (``int``, ``float``, ``bool``, ``str``, or ``object`` for any other) and whether
    it may be ``None``, from its annotation."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    parts = [p.strip() for p in text.split("|")]
    optional = "None" in parts
    rest = [p for p in parts if p != "None"]
    return (rest[0] if len(rest) == 1 and rest[0] in _NOUNS else "object"), optional


def _type_problem(value: Any, typ: str) -> str | None:
    ok = {"int": isinstance(value, numbers.Integral) and not isinstance(value, bool),
          "float": isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value),
          "bool": isinstance(value, bool),
          "str": isinstance(value, str)}.get(typ, True)
    return None if ok else f"must be {_NOUNS[typ]}"


def problem(f: Field[Any], value: Any) -> str | None:
    """Why ``value`` does not fit field ``f`` (``must be ...``), or ``None``."""
    typ, optional = plain_type(f)
    if value is None:
        return None if optional or typ == "object" else f"must be {_NOUNS[typ]}"
    return _type_problem(value, typ) or spec_of(f).problem(value, typ)


def check(cls: type[Any], values: Mapping[str, Any], method: str) -> Any:
    """The options of ``method`` (dataclass ``cls``) from keyword ``values``, each checked against its field."""
    known = {f.name: f for f in fields(cls)}
    unknown = [name for name in values if name not in known]
    if unknown:
        raise NetinvertError(f"unknown option {unknown[0]!r} for method {method}: valid options are "
                             f"{choices(known)}")
    for name, value in values.items():
        why = problem(known[name], value)
        if why is not None:
            raise NetinvertError(f"{name}={value!r} {why} (an option of method {method})")
    return cls(**values)


def values(options: Any) -> dict[str, Any]:
    """An options instance as keyword arguments (field by field, without copying the values)."""
    return {f.name: getattr(options, f.name) for f in fields(options)}


def recorded(options: Any) -> dict[str, Any]:
    """The command-line fields of an options instance (plain values), as a result records them."""
    return {f.name: getattr(options, f.name) for f in fields(options) if spec_of(f).cli}


def defaults(cls: type[Any]) -> dict[str, Any]:
    """Every field's default."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def takes(cls: type[Any]) -> Callable[[F], F]:
    """Make a method's ``run(model, targets, domain, *, NAME, ...)`` take its options as validated keywords.

    ``run`` lists exactly the fields of ``cls`` as keyword-only parameters, without defaults (the dataclass holds
    them); the wrapped ``run(model, targets, domain=None, **options)`` checks ``options`` (:func:`check`), fills in
    the defaults and shows them in its signature.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass of options")

    def decorate(fn: F) -> F:
        own = inspect.signature(fn)
        named = [p.name for p in own.parameters.values() if p.kind is p.KEYWORD_ONLY]
        declared = [f.name for f in fields(cls)]
        if named != declared or any(p.default is not p.empty for p in own.parameters.values()
                                    if p.kind is p.KEYWORD_ONLY):
            raise TypeError(f"{fn.__module__}.run must take exactly the options {declared} as keywords without "
                            f"defaults, in that order; it takes {named}")
        method = fn.__module__.rsplit(".", 1)[-1]
        given = defaults(cls)

        @functools.wraps(fn)
        def run(model: Any, targets: Any, domain: Any = None, **options: Any) -> Any:
            return fn(model, targets, domain, **values(check(cls, options, method)))

        run.__signature__ = own.replace(parameters=[  # type: ignore[attr-defined]
            p.replace(default=given[p.name]) if p.kind is p.KEYWORD_ONLY else p for p in own.parameters.values()])
        run.Options = cls  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return decorate
