"""Data for any model (``--data``): an MNIST-format folder (``mnist:DIR``), an ``.npz`` with ``x``
(and optionally ``y``), or a folder of images, converted to the model's ``InputSpec`` and split
into a training part and a fixed held-out part (the same every time, so reports are comparable).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from netinvert.ground.errors import NetinvertError
from netinvert.ground.spec import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MAX_HELD_OUT = 2000
FORMS = "mnist:DIR, a file.npz with x (and y), or a folder of images"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSplit:
    """Inputs (n, *shape) in the model's range, split into training and held-out parts.

    ``key`` names the data stably (for caches of things trained on it, such as decoders).
    """

    key: str
    x_train: np.ndarray
    x_held: np.ndarray
    y_train: np.ndarray | None = None
    y_held: np.ndarray | None = None


def load_source(text: str, spec: InputSpec, seed: int = 0) -> DataSplit:
    """Parse a ``--data`` value and load it as a ``DataSplit`` fitted to ``spec``."""
    if text.startswith("mnist:"):
        from netinvert.data.mnist import load_mnist

        folder = Path(text[len("mnist:"):]).expanduser().resolve()
        x_train, y_train, x_held, y_held = load_mnist(folder)
        key = "mnist-" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
        return DataSplit(key, _fit(x_train, spec, text), _fit(x_held, spec, text), y_train, y_held)
    path = Path(text).expanduser()
    if path.is_dir():
        x, key = _read_folder(path, spec), "images-" + _digest(path, sorted(_image_files(path)))
        return _split(key, x, None, seed)
    if path.suffix == ".npz" and path.is_file():
        x, y = _read_npz(path, spec)
        return _split("npz-" + _digest(path, [path]), x, y, seed)
    raise NetinvertError(f"--data {text!r} is not usable: give {FORMS}")


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
        return _fit(array.reshape(1, *spec.shape), spec, str(path))[0]
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


def _read_npz(path: Path, spec: InputSpec) -> tuple[np.ndarray, np.ndarray | None]:
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
    return _fit(x, spec, str(path)), y


def _fit(x: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """Arrays (n, *shape), (n, H, W) for one channel or channels-last (n, H, W, C), scaled to ``spec``."""
    shape = tuple(spec.shape)
    if x.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
        x = x[:, None]
    elif x.ndim == len(shape) + 1 and len(shape) == 3 and x.shape[1:] == (shape[1], shape[2], shape[0]) \
            and x.shape[1:] != shape:
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise NetinvertError(f"{where} holds inputs of shape {x.shape[1:]}; the model's input is {shape}")
    if x.dtype == np.uint8:
        return (spec.low + (spec.high - spec.low) * (x.astype(np.float32) / 255.0)).astype(np.float32)
    if not np.issubdtype(x.dtype, np.number):
        raise NetinvertError(f"{where} holds {x.dtype} values; give numbers")
    x = x.astype(np.float32)
    tol = 1e-3 * (spec.high - spec.low)
    if x.size and (x.min() < spec.low - tol or x.max() > spec.high + tol):
        raise NetinvertError(
            f"{where} has values in [{x.min():g}, {x.max():g}] but the model's input range is "
            f"[{spec.low:g}, {spec.high:g}]: rescale the data or give the right --input-range"
        )
    return np.clip(x, spec.low, spec.high)


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
