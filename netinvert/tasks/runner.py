"""The task runner: a sweep is a list of tasks, each keyed by a content hash of its inputs and kept as one file.

A :class:`~netinvert.tasks.task.Task` names a module-level function and its keyword arguments; its ``key``
hashes what decides its answer (the *content* of its model and spec files, never their path spelling,
plus target, domain, method and options). :func:`run_sweep` hands the tasks not yet finished to an engine
(:mod:`netinvert.tasks.engines`: local processes or Ray) and writes each answer, as it arrives, to
``FOLDER/sweep/KEY.json`` through the one atomic writer. So a rerun skips finished tasks, a killed run
(even ``kill -9``) loses at most the tasks in flight, and no task is ever half-recorded.

Each record has a ``state``: ``done`` (the function returned its row), ``timeout`` (killed past its
time limit; its status is ``unknown``) or ``error`` (it raised; the message is kept). Errors are
tried again on a rerun; done and timed-out tasks are not.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from netinvert.ground.errors import NetinvertError
from netinvert.ground.output import write_json
from netinvert.ground.run import progress_bar
from netinvert.tasks.engines import make_engine
from netinvert.tasks.task import Record, Task

RECORDS = "sweep"
STATES = ("done", "timeout", "error")
LINE_SECONDS = 10.0  # how often progress lines are printed when stderr is not a terminal
log = logging.getLogger("netinvert")


def read_records(folder: str | os.PathLike[str]) -> dict[str, Record]:
    """The records of a sweep folder by key (an unreadable record counts as not there: its task runs again)."""
    records: dict[str, Record] = {}
    where = Path(folder) / RECORDS
    if not where.is_dir():
        return records
    for path in where.glob("*.json"):
        try:
            record = Record.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            continue
        if record.state in STATES:
            records[record.key] = record
    return records


def run_sweep(tasks: Sequence[Task], folder: str | os.PathLike[str], *, engine: Any = None,
              on_record: Callable[[int, Record], None] | None = None, description: str = "sweep",
              progress: bool | None = None) -> list[Record]:
    """Run every task of ``tasks`` not yet finished in ``folder``; return one record per task, in task order.

    ``engine``: an engine from :func:`netinvert.tasks.engines.make_engine` (default: local, one process).
    ``on_record(i, record)`` is called for each task answered now (``i``: its index in ``tasks``).
    ``progress``: a bar with ETA on a terminal (``None``: when stderr is one), else a line every
    ``LINE_SECONDS``.
    """
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise NetinvertError("a sweep lists the same task twice (same inputs and options): list each once")
    engine = engine if engine is not None else make_engine("local")
    folder = Path(folder)
    (folder / RECORDS).mkdir(parents=True, exist_ok=True)
    finished = {k: r for k, r in read_records(folder).items() if r.state != "error"}
    index = {t.key: i for i, t in enumerate(tasks)}
    todo = [t for t in tasks if t.key not in finished]
    now: dict[str, Record] = {}
    start = time.perf_counter()
    with progress_bar(progress, len(todo), description) as bar:
        job = bar.add_task(description, total=len(todo)) if bar is not None else None
        last_line = [start]

        def record(task: Task, rec: Record) -> None:
            write_json(folder / RECORDS / f"{task.key}.json", rec.to_json())
            now[task.key] = rec
            if bar is not None:
                bar.update(job, completed=len(now))
            elif progress is not False:
                last_line[0] = _progress_line(description, len(now), len(todo), start, last_line[0])
            if on_record is not None:
                on_record(index[task.key], rec)

        if todo:
            engine.run(todo, record)
    if todo and bar is None and progress is not False:
        log.info("%s: %d tasks in %.1f s (%d finished before)", description, len(todo),
                 time.perf_counter() - start, len(finished))
    every = {**finished, **now}
    return [every[k] for k in keys]


def _progress_line(description: str, done: int, total: int, start: float, last: float) -> float:
    """Print ``done/total`` with an ETA at most every ``LINE_SECONDS``; return when the last line was printed."""
    t = time.perf_counter()
    if t - last < LINE_SECONDS and done < total:
        return last
    eta = (t - start) / done * (total - done)
    log.info("%s: %d/%d tasks, %.0f s elapsed, eta %.0f s", description, done, total, t - start, eta)
    return t


def summary(records: Sequence[Record]) -> str:
    """``3 done, 1 timeout, 1 error`` for a sweep's records."""
    counts = {s: sum(r.state == s for r in records) for s in STATES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """A sweep's merged table as CSV text, columns in the order they first appear."""
    import csv
    import io

    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def merged_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per record: the task's own row, with its ``state`` and, for one that failed, its message."""
    return [{"task": r.label, "state": r.state, **r.row, "message": r.message, "seconds": round(r.seconds, 3)}
            for r in records]
