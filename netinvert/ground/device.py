"""Devices and precisions: the one place that turns ``"auto"``, ``"cuda:1"`` or ``"mps"`` into a ``torch.device``.

``auto`` is CUDA when torch sees a GPU, else the CPU. A device that is asked for by name but absent
gets one clear line, never a torch stack trace. Out-of-memory errors are recognised here too, so a
batch loop can split its batch and go on (``is_out_of_memory``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import torch

from netinvert.ground.errors import NetinvertError

DeviceSpec = str | torch.device
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
T = TypeVar("T")
log = logging.getLogger(__name__)
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(spec: DeviceSpec | None = "auto") -> torch.device:
    """``auto`` (or ``None``): CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` as named."""
    if isinstance(spec, torch.device):
        device = spec
    else:
        text = "auto" if spec is None else str(spec).strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(text)
        except RuntimeError:
            raise NetinvertError(f"device {spec!r} is unknown: use one of {', '.join(DEVICES)}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NetinvertError(f"device {str(device)!r} was asked for but torch sees no CUDA GPU here: "
                                 "use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NetinvertError(f"device {str(device)!r} does not exist: this machine has CUDA devices "
                                 f"0..{torch.cuda.device_count() - 1}")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise NetinvertError("device 'mps' was asked for but torch sees no Apple GPU here: use --device cpu "
                                 "(or auto)")
        return device
    raise NetinvertError(f"device {str(device)!r} is not supported: use one of {', '.join(DEVICES)}")


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's first parameter (or buffer) lives; the CPU for a module without tensors."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """Mixed precision for a forward pass: ``float32`` runs as is; ``float16``/``bfloat16`` under autocast.

    float16 autocast needs a GPU; on the CPU only bfloat16 is offered.
    """
    if precision not in PRECISIONS:
        raise NetinvertError(f"precision={precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return nullcontext()
    if precision == "float16" and device.type == "cpu":
        raise NetinvertError("precision float16 needs a GPU (autocast float16 does not run on the CPU): use "
                             "--precision bfloat16 or float32 on the CPU, or --device cuda")
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA, MPS, or the CPU allocator's own message)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def split_on_oom(run_part: Callable[[int, int], T], total: int, chunk: int, group: int = 1,
                 notes: list[str] | None = None) -> list[T]:
    """``run_part(start, stop)`` over items ``0..total`` in chunks of ``chunk``, in order.

    A chunk that runs out of device memory is split in halves (whole groups of ``group`` items, so the
    copies of one target stay together) and the run goes on with the smaller chunk; each split is logged as a
    warning and appended to ``notes``. An item runs the same in any chunk, so the answer does not change.
    """
    parts: list[T] = []
    start = 0
    while start < total:
        stop = min(start + chunk, total)
        try:
            parts.append(run_part(start, stop))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if stop - start <= group:
                raise NetinvertError(f"out of memory even for a batch of {stop - start} on this device: use a "
                                     "smaller input or --device cpu") from None
            half = (stop - start + 1) // 2
            chunk = -(-half // group) * group  # half the batch, rounded up to whole groups
            note = f"out of memory on a batch of {stop - start}: split into batches of {chunk} and went on"
            log.warning(note)
            if notes is not None:
                notes.append(note)
            _release_cache()
            continue
        start = stop
    return parts


def _release_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
