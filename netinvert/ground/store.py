"""What netinvert trains and keeps: the cache folder, and a small network stored as one safetensors file.

The zoo, the decoders and the learned priors all live under ``$NETINVERT_HOME`` (default
``~/.cache/netinvert``); a decoder or a prior is its weights plus a JSON config and a format version in
the file's metadata, written atomically through ``ground/output.py``. Whatever is trained on first use is
trained once: :func:`first_use` holds a lock beside the file, so a second process (a sweep's worker, a
parallel test) waits for the first one's file instead of training the same weights again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_file

T = TypeVar("T")


def cache_home(folder: str) -> Path:
    """``$NETINVERT_HOME/<folder>`` (default ``~/.cache/netinvert/<folder>``)."""
    home = os.environ.get("NETINVERT_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "netinvert") / folder


def first_use(path: str | os.PathLike[str], make: Callable[[], T], read: Callable[[Path], T]) -> T:
    """``read(path)`` when the file exists, else ``make()``, which trains, writes ``path`` and returns what it
    made. A lock on ``path`` (in the hidden ``.locks`` folder beside it) makes concurrent first uses in other
    processes wait for this one's file and read it instead of making it again."""
    from filelock import FileLock

    path = Path(path)
    if path.exists():
        return read(path)
    locks = path.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{path.name}.lock")):
        return read(path) if path.exists() else make()


def save_network(module: nn.Module, config: dict[str, Any], path: str | os.PathLike[str], version: str) -> Path:
    """Write ``module``'s weights with its ``config`` and format ``version`` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"config": json.dumps(config), "format": version}
    return write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_network(path: str | os.PathLike[str], what: str, version: str,
                 fix: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and weights written by :func:`save_network`; ``what`` and ``fix`` word the errors."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise NetinvertError(f"cannot read {what} {path}: {exc}") from exc
    if meta.get("format") != version or "config" not in meta:
        raise NetinvertError(f"{path} is not a netinvert {what} (format {version}); {fix}")
    return json.loads(meta["config"]), state
