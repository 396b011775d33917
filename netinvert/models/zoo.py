"""The built-in zoo: models that train on first use from data shipped with the package (or with
scikit-learn), cache their weights as safetensors and are deterministic given a seed.

Cache folder: ``$NETINVERT_HOME/zoo`` (default ``~/.cache/netinvert/zoo``).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from netinvert.data.sources import DataSplit
from netinvert.ground.errors import NetinvertError, choices
from netinvert.ground.output import write_file
from netinvert.ground.run import torch_threads
from netinvert.ground.spec import InputSpec
from netinvert.ground.store import cache_home, first_use
from netinvert.models import architectures as arch
from netinvert.models.wrapper import Model

CACHE_VERSION = "1"
Dataset = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How to train a classifier: epochs, batch size, learning rate, loss and augmentation."""

    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    sigmoid_targets: bool = False
    augment: bool = False


Trainer = Callable[[nn.Module, Dataset, int], dict[str, str]]


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: how to build it, its data and input, and how to train it (``trainer`` overrides ``recipe``)."""

    name: str
    summary: str
    build: Callable[[], nn.Module]
    dataset: str
    input_spec: InputSpec
    class_names: tuple[str, ...]
    recipe: Recipe
    output_activation: str = "softmax"
    verifier: str | None = None
    data_options: tuple[str, ...] = field(default_factory=tuple)
    trainer: Trainer | None = None


def _train_dbn(module: nn.Module, data: Dataset, seed: int) -> dict[str, str]:
    """Greedy CD training plus up-down fine-tuning on the digits and copies shifted by up to 2 pixels."""
    from netinvert.models.dbn import train_dbn

    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in data)
    moves = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 2), (-2, -2))
    x = torch.cat([torch.roll(x_train, m, (2, 3)) for m in moves])
    trained, stats = train_dbn(x, y_train.repeat(len(moves)), epochs=10, top_epochs=20, finetune_epochs=5, seed=seed)
    module.load_state_dict(trained.state_dict())
    accuracy = float((trained.classify(x_test) == y_test).float().mean())
    return {"test_accuracy": f"{accuracy:.4f}", "seed": str(seed), "train_seconds": f"{stats['train_seconds']:.1f}"}


def _build_dbn() -> nn.Module:
    from netinvert.models.dbn import DBN

    return DBN((784, 256, 256), 512, 10, image_shape=(1, 28, 28))


def _glyph_data(seed: int) -> Dataset:
    from netinvert.data.glyphs import render_glyphs

    x, y = render_glyphs(7200, seed=1000 + seed)
    return x[:6000], y[:6000], x[6000:], y[6000:]


def _digits_data(seed: int) -> Dataset:
    from netinvert.data.digits import load_digits_28

    return load_digits_28(seed=0)


def _moons_data(seed: int) -> Dataset:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=2400, noise=0.12, random_state=seed)
    x = x.astype(np.float32)
    return x[:2000], y[:2000].astype(np.int64), x[2000:], y[2000:].astype(np.int64)


def _simulated(name: str) -> Callable[[int], Dataset]:
    """10 000 training and 2 000 test samples of a built-in simulator's prior (float32)."""

    def load(seed: int) -> Dataset:
        from netinvert.data.simulators import SIMULATORS

        sim = SIMULATORS[name]
        x, y = sim.sample(10_000, seed)
        xt, yt = sim.sample(2_000, seed + 1000)
        return tuple(a.astype(np.float32) for a in (x, y, xt, yt))  # type: ignore[return-value]

    return load


def _surrogate(inputs: int, outputs: int, width: int, depth: int) -> Callable[[], nn.Module]:
    """A ReLU MLP ``inputs -> width x depth -> outputs`` (plain layers, so exact methods can read it)."""

    def build() -> nn.Module:
        layers: dict[str, nn.Module] = {}
        size = inputs
        for i in range(1, depth + 1):
            layers[f"fc{i}"], layers[f"act{i}"] = nn.Linear(size, width), nn.ReLU()
            size = width
        layers[f"fc{depth + 1}"] = nn.Linear(size, outputs)
        return nn.Sequential(OrderedDict(layers))

    return build


def _train_surrogate(recipe: Recipe) -> Trainer:
    """Fit a forward surrogate with Adam (one-cycle schedule) on standardized inputs and outputs, then fold
    the standardization into the first and last layers; records the test MSE (raw units)."""

    def train(module: nn.Module, data: Dataset, seed: int) -> dict[str, str]:
        x, y, xt, yt = (torch.from_numpy(a) for a in data)
        mx, sx, my, sy = x.mean(0), x.std(0), y.mean(0), y.std(0)
        xn, yn = (x - mx) / sx, (y - my) / sy
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        batches = (len(x) + recipe.batch_size - 1) // recipe.batch_size
        opt = torch.optim.Adam(module.parameters(), lr=recipe.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * batches)
        start = time.perf_counter()
        module.train()
        for _ in range(recipe.epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), recipe.batch_size):
                idx = order[i : i + recipe.batch_size]
                loss = F.mse_loss(module(xn[idx]), yn[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        module.eval()
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            first, last = linears[0], linears[-1]
            first.bias -= first.weight @ (mx / sx)
            first.weight /= sx
            last.weight *= sy[:, None]
            last.bias.mul_(sy).add_(my)
            mse = F.mse_loss(module(xt), yt).item()
        return {"test_mse": f"{mse:.4g}", "seed": str(seed), "train_seconds": f"{time.perf_counter() - start:.1f}"}

    return train


DATASETS: dict[str, Callable[[int], Dataset]] = {"glyphs": _glyph_data, "digits": _digits_data, "moons": _moons_data,
                                               **{f"sim-{n}": _simulated(n) for n in ("arm", "sine", "ballistics")}}
DIGIT_NAMES = tuple(str(i) for i in range(10))
GRAY20 = InputSpec((1, 20, 20))
GRAY28 = InputSpec((1, 28, 28))

ENTRIES: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("roman-mlp", "sigmoid MLP 400+bias -> 100 -> 25 -> 6 on drawn Roman glyphs", arch.roman_mlp,
             "glyphs", GRAY20, ("I", "II", "III", "IV", "V", "X"), Recipe(epochs=40, lr=3e-3, sigmoid_targets=True),
             output_activation="sigmoid", verifier="roman-verifier"),
    ZooEntry("roman-verifier", "independent CNN verifier for the Roman glyphs", lambda: arch.verifier_cnn(1, 20, 6),
             "glyphs", GRAY20, ("I", "II", "III", "IV", "V", "X"), Recipe(epochs=8, augment=True)),
    ZooEntry("digits-cnn", "CNN: 3 filters 5x5 -> ReLU -> maxpool 2 -> 432 -> 10 on digits 28x28", arch.digits_cnn,
             "digits", GRAY28, DIGIT_NAMES, Recipe(epochs=40), verifier="digits-verifier", data_options=("mnist",)),
    ZooEntry("digits-mlp", "ReLU MLP 784 -> 64 -> 32 -> 10 on digits 28x28", arch.digits_mlp,
             "digits", GRAY28, DIGIT_NAMES, Recipe(epochs=40), verifier="digits-verifier", data_options=("mnist",)),
    ZooEntry("digits-verifier", "independent CNN verifier for digits 28x28", lambda: arch.verifier_cnn(1, 28, 10),
             "digits", GRAY28, DIGIT_NAMES, Recipe(epochs=25, augment=True), data_options=("mnist",)),
    ZooEntry("dbn-digits", "deep belief net 784-256-256-(512+10 labels), CD + up-down", _build_dbn,
             "digits", GRAY28, DIGIT_NAMES, Recipe(epochs=10), verifier="digits-verifier", data_options=("mnist",),
             trainer=_train_dbn),
    ZooEntry("moons-relu", "2-D ReLU classifier 2 -> 16 -> 16 -> 2 on two moons", arch.moons_relu,
             "moons", InputSpec((2,), low=-2.0, high=3.0), ("upper", "lower"), Recipe(epochs=60, lr=1e-2)),
    *(ZooEntry(name, f"ReLU MLP surrogate {d} -> {w}x{k} -> {m} of the {name} simulator", _surrogate(d, m, w, k),
               f"sim-{name}", spec, (), recipe, output_activation="none", trainer=_train_surrogate(recipe))
      for name, d, m, w, k, spec, recipe in (
          ("arm", 4, 2, 128, 3, InputSpec((4,), low=-math.pi, high=math.pi), Recipe(epochs=100, batch_size=256, lr=3e-3)),
          ("sine", 2, 1, 128, 3, InputSpec((2,), low=-1.0, high=1.0), Recipe(epochs=200, batch_size=256, lr=3e-3)),
          ("ballistics", 4, 1, 128, 3, InputSpec((4,), low=-3.0, high=40.0),
           Recipe(epochs=100, batch_size=256, lr=3e-3)))),
)}

_SEEDS = {"roman-verifier": 7, "digits-verifier": 7}


def zoo_names() -> list[str]:
    return list(ENTRIES)


def cache_dir() -> Path:
    return cache_home("zoo")


def _entry(name: str) -> ZooEntry:
    if name not in ENTRIES:
        raise NetinvertError(f"unknown model {name!r}: give a file path or one of the zoo models {choices(ENTRIES)}")
    return ENTRIES[name]


def _data_key(entry: ZooEntry, data: str | None) -> tuple[str, Callable[[int], Dataset]]:
    if data is None:
        return entry.dataset, DATASETS[entry.dataset]
    scheme, _, where = data.partition(":")
    if scheme not in entry.data_options or not where:
        allowed = ", ".join(f"{k}:DIR" for k in entry.data_options) or "none (it trains on its built-in data)"
        raise NetinvertError(f"--data {data!r} does not fit {entry.name}: allowed: {allowed}")
    from netinvert.data.mnist import load_mnist

    folder = Path(where).expanduser().resolve()
    load_mnist(folder)  # validate early, with a clear message
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    return f"mnist-{digest}", lambda seed: load_mnist(folder)


def cache_path(name: str, data: str | None = None, seed: int = 0) -> Path:
    entry = _entry(name)
    key, _ = _data_key(entry, data)
    return cache_dir() / f"{name}-{key}-s{seed}-v{CACHE_VERSION}.safetensors"


def load_zoo(name: str, *, data: str | None = None, seed: int = 0, verifier: bool = True, quiet: bool = True) -> Model:
    """The zoo model ``name``, trained on first use and then loaded from the cache."""
    entry = _entry(name)
    key, loader = _data_key(entry, data)
    path = cache_path(name, data, seed)
    module = entry.build()

    def make() -> dict[str, str]:
        if not quiet:
            log.warning("training zoo model %s on %s (first use; cached in %s) ...", name, key, path.parent)
        train = entry.trainer or (lambda m, d, s: _train(entry, m, d, s))
        probe = Model(copy.deepcopy(module), entry.input_spec)  # Model freezes its module's weights
        with torch_threads(None, probe.step_work(entry.recipe.batch_size)):
            meta = train(module, loader(seed), seed + _SEEDS.get(name, 0))
        meta["data"] = key
        _save_atomic(module, meta, path)
        return meta

    def read(cached: Path) -> dict[str, str]:
        module.load_state_dict(load_file(cached))
        with safe_open(str(cached), "pt") as f:
            return dict(f.metadata() or {})

    meta = first_use(path, make, read)
    info = {"architecture": entry.summary, "data": meta["data"],
            **{k: float(meta[k]) for k in ("test_accuracy", "test_mse") if k in meta}}
    verifier_model = None
    if verifier and entry.verifier is not None:
        verifier_model = load_zoo(entry.verifier, data=data, seed=seed, verifier=False, quiet=quiet)
    return Model(module, entry.input_spec, name=name, class_names=entry.class_names,
                 output_activation=entry.output_activation, verifier=verifier_model, info=info,
                 data=lambda: _split(key, loader(seed)))


def _split(key: str, data: Dataset) -> DataSplit:
    x_train, y_train, x_held, y_held = data
    return DataSplit(key, x_train, x_held, y_train, y_held)


def load_dataset(name: str, data: str | None = None, seed: int = 0) -> Dataset:
    """The (x_train, y_train, x_test, y_test) arrays a zoo model trains and is tested on."""
    _, loader = _data_key(_entry(name), data)
    return loader(seed)


def _save_atomic(module: nn.Module, meta: dict[str, str], path: Path) -> None:
    tensors = {k: v.contiguous() for k, v in module.state_dict().items()}
    write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels and light noise, per image."""
    n = x.shape[0]
    shift = torch.randint(-2, 3, (n, 2), generator=gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift.float() * 2.0 / torch.tensor([x.shape[3], x.shape[2]], dtype=torch.float32)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    return (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


def _train(entry: ZooEntry, module: nn.Module, data: Dataset, seed: int) -> dict[str, str]:
    """Train a classifier with Adam; deterministic for a seed. Returns metadata (accuracy, seconds)."""
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in data)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    recipe = entry.recipe
    opt = torch.optim.Adam(module.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.epochs)
    start = time.perf_counter()
    n_classes = len(entry.class_names)
    module.train()
    for epoch in range(recipe.epochs):
        log.info("%s: epoch %d/%d (%.0f s)", entry.name, epoch + 1, recipe.epochs, time.perf_counter() - start)
        order = torch.randperm(len(y_train), generator=gen)
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if recipe.augment and xb.dim() == 4:
                xb = _augment(xb, gen)
            out = module(xb)
            if recipe.sigmoid_targets:
                loss = F.binary_cross_entropy_with_logits(out, F.one_hot(yb, n_classes).float())
            else:
                loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    module.eval()
    with torch.no_grad():
        accuracy = (module(x_test).argmax(1) == y_test).float().mean().item()
    return {"test_accuracy": f"{accuracy:.4f}", "seed": str(seed), "train_seconds": f"{time.perf_counter() - start:.1f}"}
