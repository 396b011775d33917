"""Task functions for the sweep tests: importable by name in worker processes, each leaving a trace in a log."""

from __future__ import annotations

import os
import time


def square(x: int, log: str, sleep: float = 0.0, crash_on: int | None = None) -> dict[str, int]:
    """``{"x": x, "y": x * x}`` after ``sleep`` seconds; appends ``x`` to ``log`` once it is done; raises on ``crash_on``."""
    time.sleep(sleep)
    if x == crash_on:
        raise ZeroDivisionError(f"task {x} divides by zero")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)
    return {"x": x, "y": x * x}


def square_tasks(n: int, log: str, sleep: float = 0.0, crash_on: int | None = None) -> list:
    """``n`` runner tasks of :func:`square`, keyed by ``x``."""
    from netinvert.sweeps.task import Task, task_key

    return [Task(square, {"x": x, "log": log, "sleep": sleep, "crash_on": crash_on}, task_key("square", x=x),
                 f"square {x}", timeout=60.0) for x in range(n)]
