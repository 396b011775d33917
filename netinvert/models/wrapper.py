"""The model wrapper: any ``nn.Module`` plus what a reverse run must know about its input.

Layer names are module paths (``features.0``, ``fc1``). Activations are captured with forward
hooks registered only on the layers asked for and always removed, also when the forward fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netinvert.data.sources import FORMS, DataSplit, fit_split
from netinvert.ground.device import DeviceSpec, module_device, resolve_device
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.spec import InputSpec
from netinvert.models.final_softmax import layer_type

OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "none")


class _Normalize(nn.Module):
    """Per-channel (x - mean) / std, broadcast over the input's trailing dimensions."""

    def __init__(self, spec: InputSpec) -> None:
        nn.Module.__init__(self)
        shape = (1, -1) + (1,) * (len(spec.shape) - 1) if len(spec.shape) == 3 else (1, -1)
        mean = torch.tensor(spec.mean or (0.0,), dtype=torch.float32)
        std = torch.tensor(spec.std or (1.0,), dtype=torch.float32)
        if len(spec.shape) != 3:
            mean, std = mean[:1], std[:1]
        self.register_buffer("mean", mean.reshape(shape))
        self.register_buffer("std", std.reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def check_verifier(spec: InputSpec, verifier: Model) -> None:
    """A verifier reads the inputs of a model described by ``spec``: its own range and shape are mapped to, so an
    input must hold as many values for both."""
    own = verifier.input_spec.shape
    if math.prod(own) != math.prod(spec.shape):
        raise NetinvertError(f"the verifier {verifier.name} takes inputs of shape {tuple(own)} ({math.prod(own)} "
                             f"values) but the model's are {tuple(spec.shape)} ({math.prod(spec.shape)} values): "
                             "give the verifier's own `verifier_input_shape`, with as many values")


@dataclass(frozen=True)
class LayerInfo:
    """One named submodule: its type, output shape (no batch; ``None`` when it gives no tensor or does not
    run), where it first runs in the forward pass (``None``: never), whether it has weights of its own (parameters,
    or for an ONNX node a constant weight matrix) and whether it is a leaf."""

    name: str
    layer_type: str
    shape: tuple[int, ...] | None
    order: int | None
    weighted: bool
    leaf: bool


class Model(nn.Module):
    """A trained network ``f`` with named layers and a described input.

    ``forward`` takes a batch in the model's raw input range (``input_spec.low..high``) and
    returns the module's output (logits for classifiers; for a network that ends in a softmax,
    ``logits_layer`` names that layer and its input is returned). ``output_activation`` says how
    outputs become class probabilities: ``softmax`` (default), ``sigmoid`` (independent
    units, as in the classic sigmoid MLP) or ``none`` (regression). ``verifier`` is an independent model that
    scores results, with an input description of its own (``outputs_for`` maps inputs into it). ``data`` is the
    model's data: a ``DataSplit`` or a loader returning one, read once on first use and fitted to the input
    description (it enables data priors, decoders and held-out inputs). The layer table is probed once, on
    first use, and cached. ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) moves the network there;
    ``None`` leaves it where it is. Methods create their tensors on the model's ``device`` in its ``dtype``;
    inputs given to ``forward`` follow both.
    """

    def __init__(
        self,
        module: nn.Module,
        input_spec: InputSpec,
        *,
        name: str = "model",
        class_names: Sequence[str] | None = None,
        output_activation: str = "softmax",
        verifier: Model | None = None,
        info: dict[str, Any] | None = None,
        data: DataSplit | Callable[[], DataSplit] | None = None,
        device: DeviceSpec | None = None,
    ) -> None:
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise NetinvertError(
                f"output activation {output_activation!r} is unknown: use one of {choices(OUTPUT_ACTIVATIONS)}"
            )
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.input_spec = input_spec
        self.name = name
        self.class_names = list(class_names) if class_names is not None else None
        self.output_activation = output_activation
        self.normalize = _Normalize(input_spec) if (input_spec.mean or input_spec.std) else None
        if verifier is not None:
            check_verifier(input_spec, verifier)
        self.verifier = verifier
        self.info: dict[str, Any] = dict(info or {})
        self.data = data
        self.logits_layer: str | None = None
        self._softmax: tuple[str, nn.Module] | None = None
        self._layers: dict[str, LayerInfo] | None = None
        if device is not None:
            self.to(resolve_device(device))

    @property
    def device(self) -> torch.device:
        """Where the network's weights live (methods create their tensors here)."""
        return module_device(self.module)

    @property
    def dtype(self) -> torch.dtype:
        """The network's floating-point type (inputs are cast to it)."""
        return self._dtype()

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device, dtype = self.device, self._dtype()
        if x.device != device or x.dtype != dtype:
            x = x.to(device=device, dtype=dtype)
        if self.normalize is not None:
            x = self.normalize(x)
        if self.logits_layer is None:
            return self.module(x)
        if self._softmax is None or self._softmax[0] != self.logits_layer:  # resolved once, not per forward
            self._softmax = (self.logits_layer, self.get_layer(self.logits_layer))
        logits: list[torch.Tensor] = []
        handle = self._softmax[1].register_forward_pre_hook(lambda _m, args: logits.append(args[0]))
        try:
            self.module(x)
        finally:
            handle.remove()
        return logits[-1]

    def outputs_for(self, x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
        """Outputs for inputs ``x`` described by ``spec``, another model's description: how a verifier scores the
        inputs of the model it verifies, mapped into its own range and shape first (``InputSpec.adopt``)."""
        return self(self.input_spec.adopt(x, spec))

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities from outputs, following ``output_activation``."""
        if self.output_activation == "softmax":
            return torch.softmax(outputs, dim=-1)
        if self.output_activation == "sigmoid":
            return torch.sigmoid(outputs)
        return outputs

    @property
    def num_outputs(self) -> int:
        return int(self.info.get("num_outputs") or self._probe_outputs())

    def _probe_outputs(self) -> int:
        with torch.no_grad():
            out = self(self.example_input(1))
        self.info["num_outputs"] = int(out.reshape(out.shape[0], -1).shape[1])
        return self.info["num_outputs"]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A mid-gray batch in the model's input range (for shape probing)."""
        mid = (self.input_spec.low + self.input_spec.high) / 2
        return torch.full((batch, *self.input_spec.shape), mid, dtype=self._dtype(), device=self.device)

    def _dtype(self) -> torch.dtype:
        p = next(self.module.parameters(), None)
        if p is None:
            p = next(self.module.buffers(), None)
        return p.dtype if p is not None and p.is_floating_point() else torch.float32

    # ---------------------------------------------------------------- classes
    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class name (``X``) or index (``3``) to an output index."""
        n = self.num_outputs
        if isinstance(name_or_index, int) or (isinstance(name_or_index, str) and name_or_index.lstrip("-").isdigit()):
            k = int(name_or_index)
            if not 0 <= k < n:
                raise NetinvertError(f"class index {k} is out of range: {self.name} has classes 0..{n - 1}")
            return k
        if self.class_names and name_or_index in self.class_names:
            return self.class_names.index(name_or_index)
        valid = self.class_names or [str(i) for i in range(n)]
        raise NetinvertError(f"unknown class {name_or_index!r} for {self.name}: choose one of {choices(valid)}")

    def class_label(self, k: int) -> str:
        return self.class_names[k] if self.class_names and k < len(self.class_names) else str(k)

    # ---------------------------------------------------------------- layers
    def layer_table(self) -> dict[str, LayerInfo]:
        """Every named submodule in definition order, probed with one forward pass on first use."""
        if self._layers is None:
            self._layers = self._probe_layers()
        return self._layers

    def _probe_layers(self) -> dict[str, LayerInfo]:
        shapes: dict[str, tuple[int, ...] | None] = {}
        runs: list[str] = []
        handles = []
        named = [(name, m) for name, m in self.module.named_modules() if name]
        try:
            for name, module in named:
                if isinstance(module, torch.jit.ScriptModule):
                    continue

                def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                    t = out[0] if isinstance(out, (tuple, list)) and out else out
                    runs.append(name)
                    if name not in shapes:
                        shapes[name] = tuple(t.shape[1:]) if isinstance(t, torch.Tensor) else None

                handles.append(module.register_forward_hook(hook))
            with torch.no_grad():
                self(self.example_input(1))
        finally:
            for h in handles:
                h.remove()
        first = {name: i for i, name in reversed(list(enumerate(runs)))}
        return {name: LayerInfo(name, layer_type(m), shapes.get(name), first.get(name),
                                any(True for _ in m.parameters(recurse=False)) or getattr(m, "weighted", False) is True,
                                not any(True for _ in m.children()))
                for name, m in named}

    def layer_names(self) -> list[str]:
        """Module paths of every named submodule of the wrapped network."""
        return list(self.layer_table())

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape (without batch) of every layer that gives a tensor."""
        return {name: info.shape for name, info in self.layer_table().items() if info.shape is not None}

    def step_work(self, batch: int) -> int | None:
        """Activation values one forward pass of ``batch`` inputs produces (leaf layers; ``None`` when unknown).

        A measure of a step's arithmetic, used to choose the torch thread count.
        """
        values = sum(math.prod(i.shape) for i in self.layer_table().values() if i.leaf and i.shape)
        return batch * values if values else None

    def layer_depth(self, layer: str) -> int:
        """How many modules with weights (conv, linear, ...) run before ``layer``'s output, itself included."""
        self.get_layer(layer)
        table = self.layer_table()
        at = table[layer].order
        if at is None:
            raise NetinvertError(f"layer {layer!r} of {self.name} does not run in the forward pass")
        return sum(1 for info in table.values() if info.weighted and info.order is not None and info.order <= at)

    def get_layer(self, name: str) -> nn.Module:
        modules = dict(self.module.named_modules())
        if not name or name not in modules:
            raise NetinvertError(f"unknown layer {name!r} in {self.name}: choose one of {choices(self.layer_names())}")
        return modules[name]

    @contextmanager
    def hooks(self, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
        """Record the outputs of ``layers`` while the block runs; hooks always come off."""
        store: dict[str, torch.Tensor] = {}
        handles = []
        try:
            for name in dict.fromkeys(layers):
                module = self.get_layer(name)
                if isinstance(module, torch.jit.ScriptModule):
                    raise NetinvertError(
                        f"layer {name!r} is inside a TorchScript model, which cannot carry hooks: hidden-layer "
                        "targets need a state dict with --arch or an ONNX export"
                    )

                def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                    store[name] = out[0] if isinstance(out, (tuple, list)) else out

                handles.append(module.register_forward_hook(hook))
            yield store
        finally:
            for h in handles:
                h.remove()

    def capture(self, x: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward ``x`` and return the output plus the activations of ``layers``."""
        with self.hooks(layers) as store:
            out = self(x)
        return out, dict(store)

    # ---------------------------------------------------------------- data
    @property
    def has_data(self) -> bool:
        return self.data is not None

    def data_split(self) -> DataSplit:
        """The model's data, read once on first use (zoo models know theirs; others take ``--data``) and fitted
        to its input description (shape, raw range; ``DataSplit.scaling`` says what that took)."""
        if self.data is None:
            raise NetinvertError(f"{self.name} does not know its data: pass --data ({FORMS})")
        if not isinstance(self.data, DataSplit):
            self.data = self.data()
        if self.data.spec != self.input_spec:
            self.data = fit_split(self.data, self.input_spec, f"the data of {self.name}")
        return self.data

    def training_inputs(self) -> Any:
        """The training inputs (numpy, n x shape) when the model knows its data, else ``None``."""
        return self.data_split().x_train if self.has_data else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "input": self.input_spec.to_json(), "output_activation": self.output_activation,
                "classes": self.class_names, **{k: v for k, v in self.info.items() if k != "num_outputs"}}

