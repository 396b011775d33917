"""How a long computation runs: torch's thread count for its duration, and a progress bar on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from netinvert.ground.errors import NetinvertError


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch threads, restoring the previous setting afterwards."""
    if count is None:
        yield
        return
    if count < 1:
        raise NetinvertError(f"threads={count} must be >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def progress_bar(enabled: bool | None, total: int, description: str,
                 min_total: int = 0) -> AbstractContextManager[Any]:
    """A rich progress bar (``None``: shown on a terminal for ``total >= min_total``), or a context yielding ``None``."""
    if enabled is None:
        enabled = sys.stderr.isatty() and total >= min_total
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(description), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), transient=True)
