"""Load a user's trained network (or a zoo model by name) into a :class:`Model`.

Formats: a state dict (``.pt``/``.pth``/``.safetensors``) plus ``arch`` (``package.module:Class`` or
``path/file.py:Class``, any callable returning an ``nn.Module``) and its keyword arguments; a
TorchScript file; an ONNX file (converted to a differentiable module); a whole pickled module, only
with ``trust_pickle=True`` because unpickling runs arbitrary code. The input description (shape,
value range, mean/std) comes from the file where it says so and from the options otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pickle
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netinvert.ground.device import DeviceSpec, resolve_device
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.spec import InputSpec
from netinvert.models.final_softmax import find_final_softmax, looks_like_probabilities
from netinvert.models.wrapper import Model, check_verifier

_PICKLE_HINT = ("it holds a pickled Python object (a whole module), and unpickling can run arbitrary code; "
                "pass `trust_pickle` only if you trust where the file comes from, or save a state dict "
                "(torch.save(model.state_dict(), ...)) and load it with `arch`")
log = logging.getLogger(__name__)


def load(
    source: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    input_shape: Sequence[int] | None = None,
    input_range: Sequence[float] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    labels: str | Path | None = None,
    data: str | None = None,
    verifier: str | Path | None = None,
    verifier_arch: str | None = None,
    verifier_input_shape: Sequence[int] | None = None,
    verifier_input_range: Sequence[float] | None = None,
    verifier_mean: Sequence[float] | None = None,
    verifier_std: Sequence[float] | None = None,
    output_activation: str | None = None,
    keep_softmax: bool = False,
    device: DeviceSpec | None = None,
) -> Model:
    """A :class:`Model` from a zoo name or a file (state dict + arch, TorchScript, ONNX, trusted pickle).

    This is the one place that decides "zoo name or file". ``input_shape`` is one input without the
    batch dimension (``(1, 28, 28)``); ``input_range`` the ``(low, high)`` raw values the model was
    trained on (default ``(0, 1)``); ``mean``/``std`` the per-channel normalization the wrapper
    applies before the network; ``labels`` a text file with one class name per line; ``data`` the
    data source (``mnist:DIR``, ``file.npz``, an image folder) for priors, decoders and reports;
    ``verifier`` an independent model file (same loading rules) that scores results. It reads the model's input
    description unless one of ``verifier_input_shape``, ``verifier_input_range``, ``verifier_mean`` and
    ``verifier_std`` is given: then it has its own (defaults as for any model file: range ``(0, 1)``, no
    normalization; the shape the file states, else the model's), and results are mapped into it to be scored.
    A network that ends in a softmax is read up to that layer (its logits) unless ``keep_softmax``.
    ``device`` (``auto``: CUDA when available, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) moves the model and its
    verifier there; ``None`` keeps them on the CPU.
    """
    target_device = resolve_device(device) if device is not None else None
    path = Path(source).expanduser()
    if path.is_dir():
        raise NetinvertError(f"{path} is a folder: give the model file inside it (.pt, .pth, .safetensors, .onnx)")
    if path.is_file():
        model = _load_file(path, arch=arch, arch_kwargs=arch_kwargs, trust_pickle=trust_pickle,
                           input_shape=input_shape, input_range=input_range, mean=mean, std=std,
                           output_activation=output_activation)
        if not keep_softmax:
            _skip_final_softmax(model)
        if data is not None:
            from netinvert.data.sources import load_source

            model.data = load_source(data, model.input_spec)
    else:
        model = _load_named(str(source), arch=arch, arch_kwargs=arch_kwargs, trust_pickle=trust_pickle,
                            input_shape=input_shape, input_range=input_range, mean=mean, std=std, data=data,
                            output_activation=output_activation)
    if labels is not None:
        model.class_names = read_labels(labels, model.num_outputs)
    own = (verifier_input_shape, verifier_input_range, verifier_mean, verifier_std)
    if verifier is None and any(v is not None for v in own):
        raise NetinvertError("`verifier_input_shape`, `verifier_input_range`, `verifier_mean` and `verifier_std` "
                             "describe the inputs of a `verifier` file: give one, or drop them")
    if verifier is not None:
        model.verifier = _load_verifier(Path(verifier).expanduser(), model, arch=verifier_arch,
                                        trust_pickle=trust_pickle, own=own if any(v is not None for v in own) else None)
    if target_device is not None:
        model.to(target_device)
    return model


def _load_file(path: Path, *, arch: str | None, arch_kwargs: Mapping[str, Any] | None, trust_pickle: bool,
               input_shape: Sequence[int] | None, input_range: Sequence[float] | None,
               mean: Sequence[float] | None, std: Sequence[float] | None, output_activation: str | None,
               default_shape: tuple[int, ...] | None = None) -> Model:
    """``default_shape`` is the input shape when neither ``input_shape`` nor the file says one."""
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    file_format, module, inferred = _read(path, arch, arch_kwargs, trust_pickle, shape)
    if shape is None:
        shape = inferred or _infer_linear_shape(module) or default_shape
    if shape is None:
        raise NetinvertError(f"cannot tell the input shape of {path.name}: {_shape_hint(module)}")
    if input_range is not None and len(input_range) != 2:
        raise NetinvertError(f"`input_range` needs two numbers low,high (e.g. 0,255), got {len(input_range)}")
    low, high = (float(input_range[0]), float(input_range[1])) if input_range is not None else (0.0, 1.0)
    spec = InputSpec(shape, low, high, _floats(mean), _floats(std))
    info: dict[str, Any] = {"source": str(path), "format": file_format}
    if arch is not None:
        info["arch"] = arch
    name = path.name[: -len(".onnx.gz")] if path.name.lower().endswith(".onnx.gz") else path.stem
    model = Model(module, spec, name=name, output_activation=output_activation or "softmax", info=info)
    _probe(model, path)
    return model


def _skip_final_softmax(model: Model) -> None:
    """Take a classifier's outputs before its final softmax; warn when outputs look like hidden probabilities."""
    example = model.example_input(2)
    inputs = model.normalize(example) if model.normalize is not None else example
    model.logits_layer = find_final_softmax(model.module, inputs)
    if model.logits_layer is not None:
        model.info["logits_layer"] = model.logits_layer
        return
    with torch.no_grad():
        outputs = model(torch.rand_like(example) * (model.input_spec.high - model.input_spec.low)
                        + model.input_spec.low)
    if model.output_activation == "softmax" and looks_like_probabilities(outputs):
        log.warning("%s: outputs sum to 1 like probabilities, but no final softmax layer was found to skip; "
                    "targets treat them as logits (export the network without its softmax)", model.name)


def _load_verifier(path: Path, model: Model, *, arch: str | None, trust_pickle: bool,
                   own: tuple[Any, Any, Any, Any] | None) -> Model:
    """An independent model that reads the model's inputs, described like the model (``own`` ``None``) or by its
    own ``(input_shape, input_range, mean, std)``; its class count must match the model's."""
    if not path.is_file():
        raise NetinvertError(f"verifier file {path} does not exist: check the path")
    spec = model.input_spec
    shape, value_range, mean, std = own or (spec.shape, (spec.low, spec.high), spec.mean, spec.std)
    try:
        verifier = _load_file(path, arch=arch, arch_kwargs=None, trust_pickle=trust_pickle,
                              input_shape=shape, input_range=value_range, mean=mean, std=std, output_activation=None,
                              default_shape=spec.shape)
    except NetinvertError as exc:
        raise NetinvertError(f"verifier {path.name}: {_verifier_words(str(exc))}") from None
    check_verifier(spec, verifier)
    if verifier.num_outputs != model.num_outputs:
        raise NetinvertError(f"verifier {path} has {verifier.num_outputs} outputs but {model.name} has "
                             f"{model.num_outputs}: a verifier must score the same classes")
    return verifier


def _verifier_words(message: str) -> str:
    """A loading error about the verifier, naming the verifier's own options (`input_shape`: `verifier_input_shape`)."""
    for param in ("input_shape", "input_range", "mean", "std", "arch"):
        message = message.replace(f"`{param}`", f"`verifier_{param}`").replace(f"--{param.replace('_', '-')}",
                                                                             f"--verifier-{param.replace('_', '-')}")
    return message


def read_labels(path: str | Path, expected: int | None = None) -> list[str]:
    """Class names from a text file, one per line (blank trailing lines ignored)."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise NetinvertError(f"cannot read labels file {path}: {exc}") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise NetinvertError(f"labels file {path} is empty: write one class name per line")
    if expected is not None and len(names) != expected:
        raise NetinvertError(f"labels file {path} has {len(names)} names but the model has {expected} outputs: "
                             "write one class name per output, in output order")
    return names


# --------------------------------------------------------------------------- zoo names
def _load_named(name: str, *, arch: str | None, arch_kwargs: Any, trust_pickle: bool, input_shape: Any,
                input_range: Any, mean: Any, std: Any, data: str | None, output_activation: str | None) -> Model:
    looks_like_path = any(c in name for c in "/\\") or Path(name).suffix.lower() in _SUFFIXES
    if looks_like_path:
        raise NetinvertError(f"model file {name} does not exist: check the path")
    from netinvert.models.zoo import load_zoo, zoo_names

    given = [f"`{param}`" for param, v in (("arch", arch), ("arch_kwargs", arch_kwargs), ("input_shape", input_shape),
                                           ("input_range", input_range), ("mean", mean), ("std", std),
                                           ("trust_pickle", trust_pickle or None)) if v is not None]
    if given and name in zoo_names():
        verb = "applies" if len(given) == 1 else "apply"
        raise NetinvertError(f"{', '.join(given)} only {verb} to model files; the zoo model {name} "
                             "describes its own input")
    model = load_zoo(name, data=data, quiet=False)
    if output_activation is not None:
        model.output_activation = output_activation
    return model


_SUFFIXES = {".pt", ".pth", ".onnx", ".gz", ".safetensors", ".bin", ".ckpt", ".pkl", ".jit", ".ts", ".torchscript"}


# --------------------------------------------------------------------------- reading files
def _read(path: Path, arch: str | None, arch_kwargs: Any, trust_pickle: bool,
          shape: tuple[int, ...] | None) -> tuple[str, nn.Module, tuple[int, ...] | None]:
    """(format, module, input shape the file states) for one model file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx" or path.name.lower().endswith(".onnx.gz"):
        _no_arch(arch, path, "an ONNX model")
        from netinvert.models.onnx import load_onnx

        module = load_onnx(path, input_shape=shape)
        return "onnx", module, module.item_shape
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise NetinvertError(f"cannot read {path} as safetensors: {exc}") from None
        return "state_dict", _from_state_dict(state, path, arch, arch_kwargs), None
    if _is_torchscript(path):
        _no_arch(arch, path, "a TorchScript model")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise NetinvertError(f"cannot load TorchScript file {path}: {_first_line(exc)}") from None
        return "torchscript", module, None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise NetinvertError(f"refusing to load {path}: {_PICKLE_HINT}") from None
        return "pickle", _trusted_pickle(path, arch), None
    except Exception as exc:
        raise NetinvertError(f"cannot read {path} as a PyTorch, TorchScript or ONNX file: {_why_unreadable(path, exc)}")\
            from None
    state = _state_dict_of(obj, path)
    return "state_dict", _from_state_dict(state, path, arch, arch_kwargs), None


def _no_arch(arch: str | None, path: Path, what: str) -> None:
    if arch is not None:
        raise NetinvertError(f"`arch` applies to state dict files only; {path.name} is {what}: drop `arch`")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold compiled ``code/``; plain torch.save archives do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in z.namelist())


def _trusted_pickle(path: Path, arch: str | None) -> nn.Module:
    _no_arch(arch, path, "a pickled module")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise NetinvertError(f"cannot unpickle {path}: {_first_line(exc)} (the classes it references must be "
                             "importable)") from None
    if isinstance(obj, Mapping):
        obj = obj.get("model", obj)
    if not isinstance(obj, nn.Module):
        raise NetinvertError(f"{path} holds a {type(obj).__name__}, not an nn.Module")
    return obj


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise NetinvertError(f"{path} holds no state dict (found {type(obj).__name__}); save one with "
                         "torch.save(model.state_dict(), path), or export TorchScript / ONNX")


def _from_state_dict(state: dict[str, torch.Tensor], path: Path, arch: str | None, arch_kwargs: Any) -> nn.Module:
    if arch is None:
        raise NetinvertError(f"{path.name} holds only weights (a state dict): pass `arch` package.module:Class or "
                             "`arch` path/to/file.py:Class (and `arch_kwargs` JSON) naming the network they belong to")
    module = build_arch(arch, arch_kwargs)
    _load_weights(module, state, path, arch)
    return module


def build_arch(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate ``package.module:Name`` or ``path/file.py:Name`` with keyword arguments."""
    target, sep, attr = arch.rpartition(":")
    if not sep or not target or not attr:
        raise NetinvertError(f"`arch` {arch!r} must look like package.module:ClassName or path/to/file.py:ClassName")
    kwargs = _kwargs(arch_kwargs)
    if target.endswith(".py") or "/" in target or "\\" in target:
        namespace = _import_file(Path(target).expanduser())
    else:
        try:
            namespace = importlib.import_module(target)
        except Exception as exc:
            raise NetinvertError(f"`arch`: cannot import module {target!r} ({type(exc).__name__}: "
                                 f"{_first_line(exc)}); is it installed or on PYTHONPATH?") from None
    factory = getattr(namespace, attr, None)
    if not callable(factory):
        found = sorted(k for k, v in vars(namespace).items() if isinstance(v, type) and issubclass(v, nn.Module)
                       and v.__module__ == namespace.__name__)
        raise NetinvertError(f"`arch`: {target} has no class or function {attr!r}; nn.Module classes there: "
                             f"{choices(found) or 'none'}")
    try:
        module = factory(**kwargs)
    except Exception as exc:
        raise NetinvertError(f"`arch`: {attr}(**{kwargs}) failed ({type(exc).__name__}: {_first_line(exc)}); "
                             "check `arch_kwargs`") from None
    if not isinstance(module, nn.Module):
        raise NetinvertError(f"`arch`: {attr}(...) returned a {type(module).__name__}, not an nn.Module")
    return module


def _kwargs(arch_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    if arch_kwargs is None:
        return {}
    if not isinstance(arch_kwargs, Mapping):
        raise NetinvertError(f"arch_kwargs must be a mapping of keyword arguments, got {type(arch_kwargs).__name__}")
    return dict(arch_kwargs)


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise NetinvertError(f"`arch`: file {path} does not exist")
    name = f"netinvert_arch_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise NetinvertError(f"`arch`: cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise NetinvertError(f"`arch`: importing {path} failed ({type(exc).__name__}: {_first_line(exc)})") from None
    finally:
        sys.path.remove(folder)
    return module


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    expected = module.state_dict()
    for prefix in ("module.", "model."):
        if set(state) != set(expected) and all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix):]: v for k, v in state.items()}
            if set(stripped) == set(expected):
                state = stripped
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} in file vs {tuple(v.shape)} in model"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        problems = []
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if keys:
                problems.append(f"{what} ({len(keys)}): {choices(keys, limit=4)}")
        raise NetinvertError(f"the weights in {path.name} do not fit `arch` {arch}: {'; '.join(problems)}. "
                             "Pass the `arch` (and `arch_kwargs`) the weights were trained with")
    module.load_state_dict(state)


# --------------------------------------------------------------------------- input description
def _shape_hint(module: nn.Module) -> str:
    first = next((m for m in module.modules() if not list(m.children()) and list(m.parameters(recurse=False))), None)
    first_type = getattr(first, "original_name", type(first).__name__) if first is not None else None
    weight = getattr(first, "weight", None) if first is not None else None
    if first_type in ("Conv2d", "Conv1d", "Conv3d") and isinstance(weight, torch.Tensor):
        channels = weight.shape[1] * int(getattr(first, "groups", 1))
        spatial = {"Conv1d": "L", "Conv2d": "H,W", "Conv3d": "D,H,W"}[first_type]
        return f"its first layer is a {first_type} on {channels} channels; pass `input_shape` {channels},{spatial}"
    return "the file does not say; pass `input_shape` (without the batch dimension, e.g. 1,28,28)"


def _infer_linear_shape(module: nn.Module) -> tuple[int, ...] | None:
    first = next((m for m in module.modules() if not list(m.children()) and list(m.parameters(recurse=False))), None)
    first_type = getattr(first, "original_name", type(first).__name__) if first is not None else None
    weight = getattr(first, "weight", None) if first is not None else None
    if first_type == "Linear" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return (int(weight.shape[1]),)
    return None


def _probe(model: Model, path: Path) -> int:
    """Run a batch of two through the model so a wrong input description fails now, with its cause."""
    try:
        with torch.no_grad():
            out = model(model.example_input(2))
    except NetinvertError:
        raise
    except Exception as exc:
        shape = ",".join(map(str, model.input_spec.shape))
        raise NetinvertError(f"{path.name} does not run on inputs of shape {shape} (batch dimension excluded): "
                             f"{_first_line(exc)}; pass the `input_shape` it was trained on") from None
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != 2:
        raise NetinvertError(f"{path.name} must return one tensor with the batch first; got "
                             f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    model.info["num_outputs"] = int(out.reshape(2, -1).shape[1])
    return model.info["num_outputs"]


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in values) if values is not None else None


def _why_unreadable(path: Path, exc: BaseException) -> str:
    """Name what the file is when torch.load's own message says nothing useful (a text file gives '101')."""
    head = path.read_bytes()[:64]
    if head and not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        what = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "data"
        return (f"it is {what}, not a torch.save archive or pickle (it starts with {head[:24]!r}); "
                "give a .pt/.pth state dict, TorchScript, .safetensors or .onnx file")
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

