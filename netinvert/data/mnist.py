"""A reader for MNIST-format IDX files (plain or gzipped), e.g. ``mnist:DIR`` on the command line."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from netinvert.ground.errors import NetinvertError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file into an array of its declared shape and type."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise NetinvertError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise NetinvertError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise NetinvertError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def load_mnist(folder: str | Path, held_out: int = 2000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test), images (n, 1, 28, 28) float32 in [0, 1].

    Uses the official train/test files when both are present; with only the test set
    (``t10k-*``), splits it into ``len - held_out`` training and ``held_out`` held-out images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NetinvertError(f"MNIST folder {folder} does not exist: give mnist:DIR with the IDX files")
    found = {k: _find(folder, k) for k in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    if found["t10k-images-idx3-ubyte"] is None or found["t10k-labels-idx1-ubyte"] is None:
        raise NetinvertError(f"{folder} holds no t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]")
    x_test = read_idx(found["t10k-images-idx3-ubyte"]).astype(np.float32)[:, None] / 255.0
    y_test = read_idx(found["t10k-labels-idx1-ubyte"]).astype(np.int64)
    if found["train-images-idx3-ubyte"] is not None and found["train-labels-idx1-ubyte"] is not None:
        x_train = read_idx(found["train-images-idx3-ubyte"]).astype(np.float32)[:, None] / 255.0
        y_train = read_idx(found["train-labels-idx1-ubyte"]).astype(np.int64)
        return x_train, y_train, x_test, y_test
    if not 0 < held_out < len(y_test):
        raise NetinvertError(f"held_out={held_out} must be between 1 and {len(y_test) - 1}")
    order = np.random.default_rng(seed).permutation(len(y_test))
    keep, hold = order[:-held_out], order[-held_out:]
    return x_test[keep], y_test[keep], x_test[hold], y_test[hold]
