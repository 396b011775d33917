"""Data for any model (``--data``): an MNIST-format folder (``mnist:DIR``), an ``.npz`` with ``x``
(and optionally ``y``), or a folder of images, converted to the model's ``InputSpec`` and split
into a training part and a fixed held-out part (the same every time, so reports are comparable).

Every source ends in the model's declared input shape and raw range (``fit_split``; mean/std stay inside
the model). Values whose scale is known (images by their bit depth, IDX and ``uint8`` arrays as 0..255,
``uint16`` as 0..65535) are mapped onto ``[low, high]``; other arrays are read by the narrowest range that
holds all their values among the model's own, its mean/std-normalized form and, for pictures, the pixel
conventions [0, 1], [-1, 1] and [0, 255] (a range other than the model's own only where the values span at
least half of it, so a narrow slice of values is never taken for a convention). What was done is recorded
in ``DataSplit.scaling`` and said on the ``netinvert`` logger; values that fit none of these, or another
shape, are one clear error.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from netinvert.ground.errors import NetinvertError
from netinvert.ground.spec import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MAX_HELD_OUT = 2000
FORMS = "mnist:DIR, a file.npz with x (and y), or a folder of images"
PIXEL_CONVENTIONS = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))
DTYPE_RANGES = {np.dtype(np.uint8): (0.0, 255.0), np.dtype(np.uint16): (0.0, 65535.0), np.dtype(np.bool_): (0.0, 1.0)}
TOLERANCE = 1e-3  # of a range's width: values this far outside still count as inside (float rounding)
MIN_SPAN = 0.5  # values are read in a convention other than the model's own only when they span this much of it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSplit:
    """Inputs (n, *shape), split into training and held-out parts.

    ``key`` names the data stably (for caches of things trained on it, such as decoders). ``spec`` is the
    input description the inputs were fitted to and ``scaling`` says how (``None`` for both: not fitted yet;
    ``Model.data_split`` fits them to its own description on first use).
    """

    key: str
    x_train: np.ndarray
    x_held: np.ndarray
    y_train: np.ndarray | None = None
    y_held: np.ndarray | None = None
    spec: InputSpec | None = None
    scaling: str | None = None


def load_source(text: str, spec: InputSpec, seed: int = 0) -> DataSplit:
    """Parse a ``--data`` value and load it as a ``DataSplit`` fitted to ``spec``."""
    if text.startswith("mnist:"):
        from netinvert.data.mnist import load_mnist

        folder = Path(text[len("mnist:"):]).expanduser().resolve()
        x_train, y_train, x_held, y_held = load_mnist(folder)
        key = "mnist-" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
        return fit_split(DataSplit(key, x_train, x_held, y_train, y_held), spec, text,
                         known=((0.0, 1.0), "MNIST bytes / 255"))
    path = Path(text).expanduser()
    if path.is_dir():
        x, key = _read_folder(path, spec), "images-" + _digest(path, sorted(_image_files(path)))
        scaling = f"images scaled by their bit depth to the model's input range [{spec.low:g}, {spec.high:g}]"
        return replace(_split(key, x, None, seed), spec=spec, scaling=scaling)
    if path.suffix == ".npz" and path.is_file():
        x, y = _read_npz(path)
        return fit_split(_split("npz-" + _digest(path, [path]), x, y, seed), spec, str(path))
    raise NetinvertError(f"--data {text!r} is not usable: give {FORMS}")


def fit_split(split: DataSplit, spec: InputSpec, where: str | None = None,
              known: tuple[tuple[float, float], str] | None = None) -> DataSplit:
    """``split`` in ``spec``'s shape and raw range, one mapping for both parts (see the module's docstring).

    ``known`` is the range the values are known to be in and what says so (a source's own convention);
    otherwise it is read from the values. Scaled data gets a key of its own, so nothing trained on the
    unscaled values (a learned prior, a decoder) is taken for it.
    """
    where = where or f"data {split.key}"
    parts = [_shaped(x, spec, where) for x in (split.x_train, split.x_held)]
    mapping = _mapping(parts, spec, where, known)
    scaled = [mapping.apply(x, spec) for x in parts]
    key = split.key if mapping.identity else f"{split.key}-{hashlib.sha1(mapping.text.encode()).hexdigest()[:6]}"
    if not mapping.identity:
        log.warning("%s: %s", where, mapping.text)
    return replace(split, key=key, x_train=scaled[0], x_held=scaled[1], spec=spec, scaling=mapping.text)


def read_input(path: str | Path, spec: InputSpec) -> np.ndarray:
    """One input of shape ``spec.shape`` from an image file (resized, converted) or an ``.npy`` array."""
    path = Path(path)
    if not path.is_file():
        raise NetinvertError(f"input file {path} does not exist: give an image or an .npy file")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise NetinvertError(f"cannot read {path}: {exc}") from exc
        if array.size != int(np.prod(spec.shape)):
            raise NetinvertError(f"{path} holds shape {array.shape}; the model's input is {spec.shape}")
        x = array.reshape(1, *spec.shape)
        mapping = _mapping([x], spec, str(path), None)
        if not mapping.identity:
            log.warning("%s: %s", path.name, mapping.text)
        return mapping.apply(x, spec)[0]
    return _read_image(path, spec)


def _read_image(path: Path, spec: InputSpec, *, announce: bool = True) -> np.ndarray:
    """An image file as (C, H, W) in the model's range: scaled by its bit depth, converted to the model's
    channels and size (said once on the ``netinvert`` logger when ``announce``)."""
    if not spec.is_image:
        raise NetinvertError(f"the model's input {spec.shape} is not an image (C, H, W) with 1 or 3 channels; "
                             f"give an .npy file instead of {path.name}")
    try:
        with Image.open(path) as img:
            array, changes = _unit_array(img, spec)
    except (OSError, UnidentifiedImageError) as exc:
        raise NetinvertError(f"cannot read image {path}: {exc}") from exc
    if changes and announce:
        log.warning("%s: %s to fit the model's input %s", path.name, ", ".join(changes), tuple(spec.shape))
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return (spec.low + (spec.high - spec.low) * array).astype(np.float32)


def _unit_array(img: Image.Image, spec: InputSpec) -> tuple[np.ndarray, list[str]]:
    """Pixels in [0, 1], (H, W) or (H, W, 3), scaled by the image's own bit depth; and the conversions made."""
    changes = []
    if (img.width, img.height) != (spec.shape[2], spec.shape[1]):
        changes.append(f"resized from {img.width}x{img.height}")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        changes.append("alpha dropped")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raw = np.asarray(img, dtype=np.float64)
        deep = img.mode.startswith("I;16") or raw.max(initial=0.0) > 255
        full = 1.0 if img.mode == "F" and raw.max(initial=0.0) <= 1.0 else 65535.0 if deep else 255.0
        img, full = Image.fromarray(np.clip(raw / full, 0.0, 1.0).astype(np.float32), mode="F"), 1.0
    else:
        if spec.channels == 1 and img.mode not in ("L", "1", "LA", "P"):
            changes.append(f"{img.mode} converted to gray")
        img, full = img.convert("L" if spec.channels == 1 or img.mode in ("L", "1", "LA") else "RGB"), 255.0
    array = np.asarray(img.resize((spec.shape[2], spec.shape[1]), Image.BILINEAR), dtype=np.float32) / full
    if spec.channels == 3 and array.ndim == 2:
        changes.append("gray copied to 3 channels")
        array = np.repeat(array[..., None], 3, axis=-1)
    return array, changes


def _image_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]


def _read_folder(folder: Path, spec: InputSpec) -> np.ndarray:
    files = sorted(_image_files(folder))
    if len(files) < 2:
        raise NetinvertError(f"{folder} holds {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); give at least 2")
    return np.stack([_read_image(p, spec, announce=False) for p in files])


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise NetinvertError(f"{path} has arrays {npz.files} but no 'x': save inputs as x (and labels as y)")
            x = npz["x"]
            y = npz["y"].astype(np.int64) if "y" in npz.files else None
    except (OSError, ValueError) as exc:
        raise NetinvertError(f"cannot read {path}: {exc}") from exc
    if y is not None and len(y) != len(x):
        raise NetinvertError(f"{path}: x has {len(x)} rows but y has {len(y)}; give one label per input")
    return x, y


def _shaped(x: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """Arrays (n, *shape); (n, H, W) for one channel, channels-last (n, H, W, C), or the same values in
    another layout where that is unambiguous (flat vectors of a one-channel or non-image input, size-1 axes)."""
    shape = tuple(spec.shape)
    item = tuple(x.shape[1:])
    if x.ndim == len(shape) + 1 and len(shape) == 3 and item == (shape[1], shape[2], shape[0]) and item != shape:
        return x.transpose(0, 3, 1, 2)
    squeezed, wanted = [tuple(s for s in dims if s != 1) for dims in (item, shape)]
    one_channel = spec.channels == 1 and (len(item) != 3 or item[0] == 1)
    flat = len(squeezed) <= 1 or len(wanted) <= 1
    if item != shape and math.prod(item) == math.prod(shape) and (
            squeezed == wanted or (flat and one_channel)):
        return x.reshape(len(x), *shape)
    if item != shape:
        raise NetinvertError(f"{where} holds inputs of shape {item}; the model's input is {shape}: give arrays "
                             "of that shape, or the model's right --input-shape")
    return x


@dataclass(frozen=True)
class _Mapping:
    """Per-channel ``x * scale + shift`` onto the model's range, and the sentence that says so."""

    scale: np.ndarray
    shift: np.ndarray
    text: str
    identity: bool

    def apply(self, x: np.ndarray, spec: InputSpec) -> np.ndarray:
        x = x.astype(np.float32)
        if not self.identity:
            axes = (1, -1) + (1,) * (x.ndim - 2) if len(self.scale) > 1 else (1,) * x.ndim
            x = x * self.scale.reshape(axes).astype(np.float32) + self.shift.reshape(axes).astype(np.float32)
        return np.clip(x, spec.low, spec.high)


def _mapping(parts: list[np.ndarray], spec: InputSpec, where: str,
             known: tuple[tuple[float, float], str] | None) -> _Mapping:
    """How values of ``parts`` map onto ``spec``'s range: by ``known`` or their dtype, else by their values."""
    dtypes = {x.dtype for x in parts}
    if any(not (np.issubdtype(d, np.number) or d == np.bool_) for d in dtypes):
        raise NetinvertError(f"{where} holds {', '.join(map(str, dtypes))} values; give numbers")
    if known is None and len(dtypes) == 1 and next(iter(dtypes)) in DTYPE_RANGES:
        dtype = next(iter(dtypes))
        known = (DTYPE_RANGES[dtype], str(dtype))
    if known is not None:
        (a, b), why = known
        return _linear(a, b, spec, f"values in [{a:g}, {b:g}] ({why})")
    per_channel = spec.is_image and spec.channels > 1
    lows, highs = _value_bounds(parts, per_channel)
    if not (np.isfinite(lows).all() and np.isfinite(highs).all()):
        raise NetinvertError(f"{where} holds NaN or infinite values: give finite numbers")
    seen = f"[{lows.min():g}, {highs.max():g}]"
    candidates = [(np.array([spec.low]), np.array([spec.high]), None)]
    if spec.mean is not None or spec.std is not None:
        m = np.array(spec.mean or (0.0,), dtype=np.float64)
        sd = np.array(spec.std or (1.0,), dtype=np.float64)
        candidates.append(((spec.low - m) / sd, (spec.high - m) / sd, "normalized with the model's mean/std"))
    if spec.is_image:
        candidates += [(np.array([a]), np.array([b]), f"the [{a:g}, {b:g}] pixel convention")
                       for a, b in PIXEL_CONVENTIONS]
    holding = [(a, b, why) for a, b, why in candidates
               if np.all(lows >= a - TOLERANCE * (b - a)) and np.all(highs <= b + TOLERANCE * (b - a))
               and (why is None or float(np.mean((highs - lows) / (b - a))) >= MIN_SPAN)]
    if not holding:
        conventions = ", ".join(f"[{a:g}, {b:g}]" for a, b in PIXEL_CONVENTIONS)
        fits = (f"fit neither the model's input range [{spec.low:g}, {spec.high:g}] nor, spanning at least "
                f"{MIN_SPAN:.0%} of it, a pixel convention ({conventions})" if spec.is_image
                else f"lie outside the model's input range [{spec.low:g}, {spec.high:g}]")
        raise NetinvertError(f"{where} has values in {seen}, which {fits}: rescale the data or give the model's "
                             "right --input-range")
    a, b, why = min(holding, key=lambda c: float(np.mean(c[1] - c[0])))
    return _linear(a, b, spec, f"values in {seen}" + (f" ({why})" if why else ""))


def _linear(a: np.ndarray | float, b: np.ndarray | float, spec: InputSpec, values: str) -> _Mapping:
    """The map taking ``[a, b]`` (per channel where arrays) onto ``[spec.low, spec.high]``; ``values`` says
    what is mapped."""
    a, b = np.atleast_1d(np.asarray(a, np.float64)), np.atleast_1d(np.asarray(b, np.float64))
    scale = (spec.high - spec.low) / (b - a)
    shift = spec.low - a * scale
    target = f"the model's input range [{spec.low:g}, {spec.high:g}]"
    if np.allclose(scale, 1.0) and np.allclose(shift, 0.0):
        return _Mapping(np.ones(1), np.zeros(1), f"none: {values} lie in {target}", True)
    return _Mapping(scale, shift, f"{values} scaled to {target}", False)


def _value_bounds(parts: list[np.ndarray], per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest value of all parts: per channel (axis 1) for colour pictures, else overall."""
    present = [x for x in parts if x.size]
    if not present:
        raise NetinvertError("the data holds no inputs: give at least 2")
    if per_channel:
        axes = tuple(i for i in range(present[0].ndim) if i != 1)
        return (np.min([x.min(axis=axes) for x in present], axis=0).astype(np.float64),
                np.max([x.max(axis=axes) for x in present], axis=0).astype(np.float64))
    return (np.array([min(float(x.min()) for x in present)]), np.array([max(float(x.max()) for x in present)]))


def _split(key: str, x: np.ndarray, y: np.ndarray | None, seed: int) -> DataSplit:
    n = len(x)
    if n < 2:
        raise NetinvertError(f"the data holds {n} input(s); give at least 2 (one to train on, one to hold out)")
    held = min(MAX_HELD_OUT, max(1, n // 5))
    order = np.random.default_rng(seed).permutation(n)
    train, hold = np.sort(order[held:]), np.sort(order[:held])
    return DataSplit(key, x[train], x[hold], None if y is None else y[train], None if y is None else y[hold])


def _digest(root: Path, files: list[Path]) -> str:
    h = hashlib.sha1(str(root.resolve()).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root) if p != root else p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]
