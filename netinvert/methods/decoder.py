"""Method ``decoder``: a learned inverse network per layer, trained on (f(x), x) pairs of a data set.

Spatial layers (C, h, w) of image models get a convolutional decoder: convolutions at the
layer's resolution, then a transposed convolution whose stride and kernel map the layer's grid
exactly onto the input's (plus a linear transposed-convolution skip path, which alone inverts a
linear conv layer); flat layers get an MLP. Activations are standardized with statistics of the training pairs and the
output is squashed into the model's input range. Trained decoders are cached as safetensors under
``$NETINVERT_HOME/decoders`` keyed by model weights, layer, data and seed; inversion is then one
forward pass.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netinvert.data.sources import DataSplit, load_source
from netinvert.domains.domain import Domain
from netinvert.domains.sets import Ball, Box
from netinvert.ground.errors import NetinvertError
from netinvert.ground.options import option, progress_option, seed_option, takes, threads_option
from netinvert.ground.result import Result
from netinvert.ground.run import progress_bar, torch_threads
from netinvert.ground.store import cache_home, first_use, load_network, save_network
from netinvert.models.wrapper import Model
from netinvert.targets.activations import activation_targets, add_errors, capture_activations, layer_shape
from netinvert.targets.base import Target
from netinvert.targets.scoring import score

DOMAIN_FIELDS = ("box",)
FORMAT_VERSION = "2"
TRAIN_SAMPLES = 100_000  # default epochs = this many samples seen, clamped to 5..30 epochs


class Decoder(nn.Module):
    """Maps a batch of one layer's activations (B, *layer_shape) to inputs (B, *input_shape)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        layer_shape_ = tuple(config["layer_shape"])
        input_shape = tuple(config["input_shape"])
        self.low, self.high = float(config["low"]), float(config["high"])
        stat_shape = (layer_shape_[0], 1, 1) if config["layout"] == "conv" else layer_shape_
        self.register_buffer("act_mean", torch.zeros(stat_shape))
        self.register_buffer("act_std", torch.ones(stat_shape))
        width = int(config["width"])
        if config["layout"] == "conv":
            c, cin = layer_shape_[0], input_shape[0]
            half = max(8, width // 2)
            stride, kernel = _upsampling(layer_shape_[1:], input_shape[1:])
            self.body = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(width, half, kernel, stride), nn.ReLU(), nn.Conv2d(half, cin, 3, padding=1),
            )
            self.skip: nn.Module | None = nn.ConvTranspose2d(c, cin, kernel, stride)
        else:
            n_in, n_out = math.prod(layer_shape_), math.prod(input_shape)
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                nn.Linear(width, n_out), nn.Unflatten(1, input_shape),
            )
            self.skip = None

    @property
    def layer(self) -> str:
        return str(self.config["layer"])

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        z = (acts.reshape(acts.shape[0], *self.config["layer_shape"]) - self.act_mean) / self.act_std
        y = self.body(z) if self.skip is None else self.body(z) + self.skip(z)
        return self.low + (self.high - self.low) * torch.sigmoid(y)


def _upsampling(layer_hw: tuple[int, ...], input_hw: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Stride and kernel of a transposed convolution mapping the layer's grid exactly onto the input's.

    The stride is the largest power of two within the size ratio (pooling halves sizes), the
    kernel fills the rest: for a valid 5x5 conv (24 -> 28) stride 1, kernel 5; for LeNet's ReLU2
    (8 -> 28) stride 2, kernel 14, its receptive field.
    """
    strides = tuple(2 ** int(math.floor(math.log2(max(1.0, i / h)))) for h, i in zip(layer_hw, input_hw, strict=True))
    kernels = tuple(i - (h - 1) * s for h, i, s in zip(layer_hw, input_hw, strides, strict=True))
    if min(kernels) < 1:
        raise NetinvertError(f"cannot decode a {tuple(layer_hw)} layer to a {tuple(input_hw)} input")
    return (strides[0], strides[1]), (kernels[0], kernels[1])


def build(model: Model, layer: str, width: int | None = None) -> Decoder:
    """An untrained decoder for ``layer``: convolutional for spatial layers of image models, else an MLP."""
    shape = layer_shape(model, layer)
    spec = model.input_spec
    conv = len(shape) == 3 and len(spec.shape) == 3
    config = {"layer": layer, "layer_shape": list(shape), "input_shape": list(spec.shape), "low": spec.low,
              "high": spec.high, "layout": "conv" if conv else "mlp", "width": width or (32 if conv else 512)}
    return Decoder(config)


def train(model: Model, layer: str, x_train: np.ndarray | torch.Tensor, *, epochs: int | None = None,
          batch_size: int = 64, lr: float = 2e-3, seed: int = 0, width: int | None = None,
          threads: int | None = None, progress: bool | None = None) -> Decoder:
    """Train a decoder on pairs (activations of ``x_train`` at ``layer``, ``x_train``) with Adam on the MSE.

    It trains on the model's device, in float32; the returned decoder lives there.
    """
    device = model.device
    x = torch.as_tensor(np.asarray(x_train), dtype=torch.float32).to(device)
    spec = model.input_spec
    if x.dim() != len(spec.shape) + 1 or tuple(x.shape[1:]) != tuple(spec.shape):
        raise NetinvertError(f"training inputs have shape {tuple(x.shape)}; expected (n, {spec.shape})")
    if len(x) < 2:
        raise NetinvertError(f"a decoder needs at least 2 training inputs, got {len(x)}")
    epochs = epochs if epochs is not None else int(min(30, max(5, round(TRAIN_SAMPLES / len(x)))))
    if epochs < 1:
        raise NetinvertError(f"epochs={epochs} must be >= 1")
    start = time.perf_counter()
    with torch_threads(threads, model.step_work(min(len(x), 512))):
        torch.manual_seed(seed)
        decoder = build(model, layer, width).to(device)
        acts = torch.cat([capture_activations(model, layer, x[i : i + 512]) for i in range(0, len(x), 512)]).float()
        dims = (0, 2, 3) if decoder.config["layout"] == "conv" else (0,)
        decoder.act_mean.copy_(acts.mean(dims, keepdim=True)[0])
        decoder.act_std.copy_(acts.std(dims, keepdim=True)[0].clamp_min(1e-3 * float(acts.std()) + 1e-8))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(decoder.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(x) / batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
        span = spec.high - spec.low
        decoder.train()
        last = 0.0
        with progress_bar(progress, epochs, f"training decoder for {layer}") as bar:
            task = bar.add_task("train", total=epochs) if bar is not None else None
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=gen).to(device)
                total = 0.0
                for i in range(0, len(x), batch_size):
                    idx = order[i : i + batch_size]
                    loss = F.mse_loss(decoder(acts[idx]), x[idx]) / span**2
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(idx)
                last = total / len(x)
                if bar is not None and task is not None:
                    bar.advance(task)
        decoder.eval()
    decoder.config.update(epochs=epochs, seed=seed, train_size=len(x), train_mse=last,
                          train_seconds=round(time.perf_counter() - start, 2))
    return decoder


def save(decoder: Decoder, path: str | os.PathLike[str]) -> Path:
    """Write a decoder (weights and config) to one safetensors file, atomically."""
    return save_network(decoder, decoder.config, path, FORMAT_VERSION)


def load(path: str | os.PathLike[str]) -> Decoder:
    """Read a decoder written by ``save``."""
    config, state = load_network(path, "decoder", FORMAT_VERSION, "retrain it")
    if "layout" not in config:
        config["layout"] = config.pop("kind")  # read back: decoders cached by netinvert 0.1.0
    decoder = Decoder(config)
    decoder.load_state_dict(state)
    return decoder.eval()


def decoders_dir() -> Path:
    """``$NETINVERT_HOME/decoders`` (default ``~/.cache/netinvert/decoders``)."""
    return cache_home("decoders")


def weights_digest(model: Model) -> str:
    """A short hash of the model's weights and input description (decoders are valid for exactly these)."""
    h = hashlib.sha1(json.dumps(model.input_spec.to_json()).encode())
    for name, t in sorted(model.module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def cache_path(model: Model, layer: str, data_key: str, seed: int = 0) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model.name}-{layer}-{data_key}")
    return decoders_dir() / f"{safe}-{weights_digest(model)}-s{seed}-v{FORMAT_VERSION}.safetensors"


def decoder_for(model: Model, layer: str, data: DataSplit, *, retrain: bool = False, seed: int = 0,
                epochs: int | None = None, threads: int | None = None, progress: bool | None = None) -> Decoder:
    """The cached decoder for (model, layer, data, seed), trained on ``data.x_train`` when missing."""
    path = cache_path(model, layer, data.key, seed)

    def make() -> Decoder:
        decoder = train(model, layer, data.x_train, epochs=epochs, seed=seed, threads=threads, progress=progress)
        decoder.config["data"] = data.key
        save(decoder, path)
        return decoder

    return make() if retrain else first_use(path, make, load)


def data_option() -> Any:
    return option(None, "The data to train decoders on: a DataSplit or a --data string.", cli=False,
                  default_text="the model's own")


def decoder_option() -> Any:
    return option(None, "Trained decoders to use: one, or one per layer.", cli=False,
                  default_text="cached, else trained")


def epochs_option() -> Any:
    return option(None, "Decoder training epochs.", at_least=1,
                  default_text=f"{TRAIN_SAMPLES:,} samples seen, 5 to 30 epochs")


@dataclass(frozen=True)
class Options:
    """The options of method ``decoder``."""

    data: DataSplit | str | None = data_option()
    decoder: Decoder | dict[str, Decoder] | None = decoder_option()
    epochs: int | None = epochs_option()
    seed: int = seed_option()
    threads: int | None = threads_option()
    progress: bool | None = progress_option()


@takes(Options)
def run(model: Model, targets: Target | list[Target], domain: Domain | Box | Ball | None = None, *,
        data: DataSplit | str | None, decoder: Decoder | dict[str, Decoder] | None, epochs: int | None, seed: int,
        threads: int | None, progress: bool | None) -> Result:
    """Invert ``Activations`` targets with one decoder pass per layer (clipped to the domain's box).

    Decoders come from ``decoder`` (one, or one per layer), else from the cache or fresh training on
    ``data`` (a ``DataSplit`` or a ``--data`` string; default: the model's own data).
    """
    items = activation_targets(targets)
    start = time.perf_counter()
    with torch_threads(threads, model.step_work(len(items))):
        decoders, data_key = resolve_decoders(model, items, data, decoder, seed=seed, epochs=epochs,
                                              progress=progress)
        fit_s = time.perf_counter() - start
        spec = model.input_spec
        device = model.device
        inputs = torch.empty((len(items), *spec.shape), device=device)
        with torch.no_grad():
            for layer, dec in decoders.items():
                rows = [i for i, t in enumerate(items) if t.layer == layer]
                values = torch.stack([items[i].value.reshape(dec.config["layer_shape"]) for i in rows])
                inputs[rows] = dec.to(device)(values.to(device=device, dtype=torch.float32))
        if domain is not None:
            low, high = domain.bounds(spec)
            inputs = torch.maximum(torch.minimum(inputs, high.to(device)), low.to(device))
        outputs, scored = score(model, items, inputs)
    total = time.perf_counter() - start
    result = Result(method="decoder", model=model.name, inputs=inputs, outputs=outputs, items=scored,
                    timing={"total_s": total, "decoder_s": fit_s, "invert_s": total - fit_s},
                    info={"decoders": {k: {key: d.config.get(key) for key in ("layout", "width", "epochs", "data",
                                                                              "train_mse", "train_seconds")}
                                       for k, d in decoders.items()},
                          "options": {"data": data_key, "epochs": epochs, "seed": seed, "threads": threads}},
                    value_range=(spec.low, spec.high))
    return add_errors(result, items)


def resolve_decoders(model: Model, items: list[Any], data: DataSplit | str | None,
                     decoder: Decoder | dict[str, Decoder] | None, *, seed: int = 0, epochs: int | None = None,
                     progress: bool | None = None) -> tuple[dict[str, Decoder], str | None]:
    """One decoder per layer the targets read: given ones (checked), else cached or trained; and the key of
    the data trained on (``None`` when every decoder was given)."""
    layers = list(dict.fromkeys(t.layer for t in items))
    given = {decoder.layer: decoder} if isinstance(decoder, Decoder) else dict(decoder or {})
    split = None
    out: dict[str, Decoder] = {}
    for layer in layers:
        if layer in given:
            dec = given[layer]
            shape = layer_shape(model, layer)
            if tuple(dec.config["layer_shape"]) != shape or tuple(dec.config["input_shape"]) != model.input_spec.shape:
                raise NetinvertError(
                    f"the decoder for {layer!r} maps {tuple(dec.config['layer_shape'])} -> "
                    f"{tuple(dec.config['input_shape'])}, but {model.name} has {shape} -> {model.input_spec.shape}"
                )
            out[layer] = dec
            continue
        if decoder is not None and isinstance(decoder, Decoder):
            raise NetinvertError(f"the decoder given is for layer {decoder.layer!r}, not {layer!r}")
        split = split or _split(model, data)
        out[layer] = decoder_for(model, layer, split, seed=seed, epochs=epochs, progress=progress)
    return out, split.key if split is not None else None


def _split(model: Model, data: DataSplit | str | None) -> DataSplit:
    """The data to train decoders on: the one given, a ``--data`` string read now, or the model's own."""
    if isinstance(data, DataSplit):
        return data
    if isinstance(data, str):
        return load_source(data, model.input_spec)
    return model.data_split()
