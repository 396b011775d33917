"""How a long computation runs: torch's thread count for its duration, and a progress bar on a terminal."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from netinvert.ground.errors import NetinvertError

# Below this many activation values per step, torch's intra-op threads cost more than they save: on 2 cores a
# 28x28 CNN step took 13.5 ms on one thread and 466 ms on two while the machine was busy (benchmarks/threads.py).
SMALL_WORK = 1_000_000


def default_threads(work: int | None) -> int:
    """Torch threads for a loop whose steps each touch ``work`` activation values (``None``: unknown).

    One thread for small work (thread wake-ups outweigh the arithmetic); otherwise the cores that are idle now
    (cores minus the one-minute load average, at least one), so a busy machine is not oversubscribed.
    """
    if work is not None and work < SMALL_WORK:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - load)))


@contextmanager
def torch_threads(count: int | None, work: int | None = None) -> Iterator[None]:
    """Run with ``count`` torch threads (``None``: :func:`default_threads` for ``work``), then restore the setting."""
    if count is None:
        count = default_threads(work)
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


@contextmanager
def time_limit_progress(enabled: bool | None, seconds: float, description: str,
                        every: float = 10.0) -> Iterator[None]:
    """Show how much of its time limit one long call has used while it runs.

    On a terminal (``None``: when stderr is one) a bar of elapsed seconds against ``seconds``; otherwise an
    ``info`` line on the ``netinvert`` logger every ``every`` seconds. The call itself cannot report progress
    (one solver call), so a background thread ticks the clock.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    stop = threading.Event()
    start = time.perf_counter()
    bar = None
    if enabled:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn(description), BarColumn(), TimeElapsedColumn(),
                       TextColumn(f"of {seconds:.0f} s limit"), transient=True)

    def tick() -> None:
        task = bar.add_task("run", total=seconds) if bar is not None else None
        while not stop.wait(0.5 if bar is not None else every):
            elapsed = time.perf_counter() - start
            if bar is not None and task is not None:
                bar.update(task, completed=min(elapsed, seconds))
            else:
                logging.getLogger("netinvert").info("%s: %.0f s of the %.0f s limit", description, elapsed, seconds)

    clock = threading.Thread(target=tick, daemon=True)
    with bar if bar is not None else nullcontext():
        clock.start()
        try:
            yield
        finally:
            stop.set()
            clock.join()
