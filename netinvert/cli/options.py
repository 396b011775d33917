"""The options of the command line, each declared once: the model's, a sweep's and the methods'.

``@model_command`` adds the flags of :class:`ModelOptions` to a command's signature (so ``--help``
shows them) and hands the command one ``model: ModelOptions`` value; ``ModelOptions.load()`` parses
the text and calls :func:`netinvert.load`, the one place that decides "zoo name or file".
``@sweep_command`` does the same for where a sweep runs (:class:`SweepOptions`), and ``@method_command``
makes one flag per command-line field of the methods' ``Options`` dataclasses (type, range, help and
default from the field) and hands the command the flags given as ``options: MethodFlags``.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.options import plain_type, problem, spec_of
from netinvert.models.wrapper import Model

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS: dict[str, tuple[Any, Any, Any]] = {
    "arch": (str | None, typer.Option(help="Architecture for a state dict: pkg.module:Class or file.py:Class."), None),
    "arch_kwargs": (str | None, typer.Option("--arch-kwargs", help="Constructor kwargs for --arch, as JSON."), None),
    "trust_pickle": (bool, typer.Option("--trust-pickle", help="Allow loading a pickled whole module (runs code)."),
                     False),
    "input_shape": (str | None, typer.Option("--input-shape", help="Input shape without batch, e.g. 1,28,28."), None),
    "input_range": (str | None, typer.Option("--input-range", help="Input value range, e.g. 0,1 or 0,255."), None),
    "mean": (str | None, typer.Option(help="Per-channel mean applied inside the model, e.g. 0.485,0.456,0.406."),
             None),
    "std": (str | None, typer.Option(help="Per-channel std applied inside the model."), None),
    "labels": (Path | None, typer.Option(help="Class names, one per line."), None),
    "data": (str | None, typer.Option(help="Data: mnist:DIR, file.npz (x, y) or an image folder."), None),
    "verifier": (str | None, typer.Option(help="An independent model file (same loading rules) to score with."),
                 None),
    "keep_softmax": (bool, typer.Option("--keep-softmax", help="Keep a final softmax layer (default: optimize the "
                                                                "logits before it)."), False),
    "verifier_arch": (str | None, typer.Option("--verifier-arch", help="Architecture for a state-dict --verifier."),
                      None),
    "verifier_input_shape": (str | None, typer.Option("--verifier-input-shape", help="The verifier's own input shape "
                                                      "(default: the model's); any --verifier-input-* / mean / std "
                                                      "gives the verifier its own description."), None),
    "verifier_input_range": (str | None, typer.Option("--verifier-input-range", help="The verifier's own input value "
                                                      "range, e.g. 0,255 (with its own description: default 0,1)."),
                             None),
    "verifier_mean": (str | None, typer.Option("--verifier-mean", help="The verifier's own per-channel mean."), None),
    "verifier_std": (str | None, typer.Option("--verifier-std", help="The verifier's own per-channel std."), None),
    "device": (str, typer.Option(help="Where to run: auto (CUDA when available, else CPU), cpu, cuda, cuda:N or "
                                      "mps."), "auto"),
}


@dataclass(frozen=True)
class ModelOptions:
    """What the command line says about the model: its name or file, and how to read a file."""

    model: str
    arch: str | None = None
    arch_kwargs: str | None = None
    trust_pickle: bool = False
    input_shape: str | None = None
    input_range: str | None = None
    mean: str | None = None
    std: str | None = None
    labels: Path | None = None
    data: str | None = None
    verifier: str | None = None
    verifier_arch: str | None = None
    verifier_input_shape: str | None = None
    verifier_input_range: str | None = None
    verifier_mean: str | None = None
    verifier_std: str | None = None
    keep_softmax: bool = False
    device: str = "auto"

    def load(self) -> Model:
        """Parse the text options and load the model (and its verifier) through :func:`netinvert.load`."""
        from netinvert.models.load import load

        return load(self.model, **self.load_options())

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`netinvert.load` these options stand for (a sweep's workers load with them;
        the verifier's own input description only where given, so earlier sweeps' task keys stay the same)."""
        own = {k: v for k, v in _input_description(self, "verifier_").items() if v is not None}
        return dict(
            arch=self.arch, arch_kwargs=parse_json_object(self.arch_kwargs, "--arch-kwargs"),
            trust_pickle=self.trust_pickle, **_input_description(self, ""),
            labels=str(self.labels) if self.labels is not None else None, data=self.data, verifier=self.verifier,
            verifier_arch=self.verifier_arch, **own, keep_softmax=self.keep_softmax, device=self.device,
        )


def _input_description(options: ModelOptions, prefix: str) -> dict[str, Any]:
    """The parsed ``input_shape``, ``input_range``, ``mean`` and ``std`` options under ``prefix`` (the model's own,
    or ``verifier_``), keyed as :func:`netinvert.load` takes them."""
    def flag(name: str) -> str:
        return "--" + (prefix + name).replace("_", "-")

    shape, value_range, mean, std = (getattr(options, prefix + name) for name in ("input_shape", "input_range",
                                                                                  "mean", "std"))
    return {prefix + "input_shape": parse_shape(shape, flag("input_shape")) if shape else None,
            prefix + "input_range": parse_floats(value_range, flag("input_range"), count=2) if value_range else None,
            prefix + "mean": parse_floats(mean, flag("mean")) if mean else None,
            prefix + "std": parse_floats(std, flag("std")) if std else None}


def model_command(*, positional: bool = False) -> Callable[[F], F]:
    """Give a command the shared model flags; it receives them as ``model: ModelOptions``.

    ``positional`` takes the model as the first argument (``netinvert layers MODEL``) instead of ``-m``.
    """
    help_text = "Zoo name (see `netinvert zoo list`) or a model file."
    model_param = typer.Argument(help=help_text) if positional else typer.Option("--model", "-m", help=help_text)
    return _bundle("model", ModelOptions, _OPTIONS, leading=(str, model_param))


_SWEEP_OPTIONS: dict[str, tuple[Any, Any, Any]] = {
    "engine": (str, typer.Option(help="Where the sweep's tasks run: local (worker processes) or ray "
                                      "(see docs/scale.md)."), "local"),
    "jobs": (int, typer.Option(min=1, help="local engine: tasks at once, one process and torch thread each."), 1),
    "ray_address": (str | None, typer.Option(help="ray engine: the cluster, auto or HOST:PORT "
                                                  "(default: start a local one)."), None),
    "gpus_per_task": (float, typer.Option(min=0.0, help="ray engine: GPUs each task asks for "
                                                        "(a fraction such as 0.25 shares one)."), 0.0),
}


@dataclass(frozen=True)
class SweepOptions:
    """Where a sweep's tasks run (docs/scale.md): the engine and its settings."""

    engine: str = "local"
    jobs: int = 1
    ray_address: str | None = None
    gpus_per_task: float = 0.0

    def runner(self, threads: int | None = None) -> Any:
        """The engine these options name, its tasks on ``threads`` torch threads each (default 1);
        ``pip install netinvert[ray]`` is named when Ray is missing."""
        from netinvert.sweeps.engines import make_engine

        return make_engine(self.engine, jobs=self.jobs, ray_address=self.ray_address,
                           gpus_per_task=self.gpus_per_task, threads=threads or 1)


def sweep_command() -> Callable[[F], F]:
    """Give a command the sweep flags (--engine, --jobs, --ray-address, --gpus-per-task); it receives them as
    ``sweep: SweepOptions``."""
    return _bundle("sweep", SweepOptions, _SWEEP_OPTIONS)


@dataclass(frozen=True)
class MethodFlags:
    """The method options given on a command line (each flag left out keeps its method's default)."""

    methods: tuple[str, ...]
    given: Mapping[str, Any]

    def for_method(self, method: str) -> dict[str, Any]:
        """The options for ``method``: every flag given, each of which it must take."""
        taken = _flag_fields(method)
        extra = [name for name in self.given if name not in taken]
        if extra:
            raise NetinvertError(f"{flag_of(extra[0])} does not apply to method {method}: it takes "
                                 f"{choices(flag_of(name) for name in taken)}")
        return dict(self.given)

    def check_shared(self, methods: Sequence[str]) -> None:
        """For a command that runs several methods with the same flags (a leakage report, where each method takes
        the flags it declares): refuse a flag that none of ``methods`` takes."""
        from netinvert.methods import check_shared

        check_shared(methods, self.given)


def flag_of(name: str) -> str:
    """An option's name as its command-line flag: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _flag_fields(method: str) -> dict[str, Field[Any]]:
    """The fields of ``method``'s options that are command-line flags, by name."""
    from netinvert.methods import options_of

    return {f.name: f for f in fields(options_of(method)) if spec_of(f).cli}


def method_command(*methods: str, only: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None,
                   notes: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Give a command one flag per command-line option of ``methods`` (``only``: just these names), each typed,
    ranged and explained by its field; the command receives the flags given as ``options: MethodFlags``.

    ``defaults``: the command's own defaults where it runs a method its own way (an atlas renders 256 steps), shown
    in the help; the command applies them. ``notes``: the command's words added to a flag's help.
    """
    declared = [(method, f) for method in methods for f in _flag_fields(method).values()
                if only is None or f.name in only]
    names = list(dict.fromkeys(f.name for _, f in declared))
    table = {name: _method_flag(name, [(m, f) for m, f in declared if f.name == name], methods, defaults or {},
                                (notes or {}).get(name, "")) for name in names}

    def make(**given: Any) -> MethodFlags:
        return MethodFlags(tuple(methods), {name: value for name, value in given.items() if value is not None})

    def decorate(fn: F) -> F:
        wrapper = _bundle("options", make, table)(fn)
        wrapper.__methods__ = tuple(methods)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _method_flag(name: str, declared: list[tuple[str, Field[Any]]], methods: Sequence[str],
                 defaults: Mapping[str, Any], note: str) -> tuple[Any, Any, Any]:
    """One flag for the field ``name`` as ``declared`` by one or more methods: its type, typer option and default
    (``None``: not given). A value that no declaring method accepts is refused as the flag is read."""
    first = declared[0][1]
    spec = spec_of(first)
    typ = {"int": int, "float": float, "bool": bool, "str": str}[plain_type(first)[0]]
    if name in defaults:
        default = _shown(defaults[name])
    else:
        shown = {m: spec_of(f).default_text or _shown(f.default) + (f" {spec_of(f).unit}" if spec_of(f).unit else "")
                 for m, f in declared}
        default = next(iter(shown.values())) if len(set(shown.values())) == 1 else \
            ", ".join(f"{m} {text}" for m, text in shown.items())
    text = spec.help + (f" One of {choices(spec.choices)}." if spec.choices else "") + f" Default: {default}."
    takers = [m for m, _ in declared]
    if len(takers) < len(methods):
        text += f" Method{'s' if len(takers) > 1 else ''} {', '.join(takers)} only."
    text += f" {note}" if note else ""
    def check(value: Any) -> Any:
        why = [problem(f, value) for _, f in declared] if value is not None else [None]
        if all(why):  # no method takes it (one that does may still refuse it: the method's own check says so)
            raise typer.BadParameter(f"{flag_of(name)} {_shown(value)} {why[0]}")
        return value

    decl = f"{flag_of(name)}/--no-{name.replace('_', '-')}" if typ is bool else flag_of(name)
    return typ | None, typer.Option(decl, help=text, callback=check, show_default=False), None


def _shown(value: Any) -> str:
    """A default or a value as the command line writes it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def split_list(values: Sequence[str] | None) -> list[str]:
    """A list option's values: each flag repeated (``--layers conv --layers fc``) and each also comma-separated
    (``--layers conv,fc``); blanks dropped."""
    return [part.strip() for text in values or () for part in text.split(",") if part.strip()]


def _bundle(name: str, bundle: Callable[..., Any], table: dict[str, tuple[Any, Any, Any]],
            leading: tuple[Any, Any] | None = None) -> Callable[[F], F]:
    """A decorator that declares ``table``'s flags in a command's signature (so ``--help`` shows them) and hands
    the command one ``name: bundle`` value built from them; ``leading`` is a required first flag of the bundle."""

    def decorate(fn: F) -> F:
        own = inspect.signature(fn, eval_str=True)
        if name not in own.parameters:
            raise TypeError(f"{fn.__name__} needs a {name!r} parameter to receive its {name} flags")
        keyword = inspect.Parameter.KEYWORD_ONLY
        params = [p.replace(kind=keyword) for p in own.parameters.values() if p.name != name]
        if leading is not None:
            params.insert(0, inspect.Parameter(name, keyword, annotation=Annotated[leading[0], leading[1]]))
        params += [inspect.Parameter(key, keyword, annotation=Annotated[typ, option], default=default)
                   for key, (typ, option, default) in table.items()]
        signature = own.replace(parameters=params)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = dict(signature.bind(*args, **kwargs).arguments)
            first = {name: values.pop(name)} if leading is not None else {}
            options = bundle(**first, **{k: values.pop(k) for k in table if k in values})
            return fn(**{name: options}, **values)

        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return wrapper  # type: ignore[return-value]

    return decorate


def parse_floats(text: str, flag: str, count: int | None = None) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> finite floats; ``flag`` names the option in the error message."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise NetinvertError(f"{flag} {text!r} is not a comma-separated list of numbers (e.g. 0.485,0.456,0.406)")\
            from None
    if not values or any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise NetinvertError(f"{flag} {text!r} must be finite numbers, e.g. 0.485,0.456,0.406")
    if count is not None and len(values) != count:
        raise NetinvertError(f"{flag} {text!r} needs {count} numbers (e.g. 0,255), got {len(values)}")
    return values


def parse_shape(text: str, flag: str = "--input-shape") -> tuple[int, ...]:
    """``"1,28,28"`` (or ``1x28x28``) -> ``(1, 28, 28)``: one input without the batch dimension."""
    parts = [p.strip() for p in str(text).lower().replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise NetinvertError(f"{flag} {text!r} is not a comma-separated list of sizes "
                             "(e.g. 1,28,28 or 3,224,224, without the batch dimension)") from None
    if any(s <= 0 for s in shape):
        raise NetinvertError(f"{flag} {text!r} needs positive sizes (e.g. 1,28,28)")
    return shape


def parse_json_object(text: str | None, flag: str) -> dict[str, Any] | None:
    """A JSON object given on the command line (``'{"width": 64}'``)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetinvertError(f"{flag} {text!r} is not valid JSON ({exc.msg}); give an object like "
                             "'{\"width\": 64}'") from None
    if not isinstance(value, dict):
        raise NetinvertError(f"{flag} must be a JSON object like '{{\"width\": 64}}', got {text!r}")
    return value


MODEL_FLAGS = ["--model"] + ["--" + f.name.replace("_", "-") for f in fields(ModelOptions) if f.name != "model"]
