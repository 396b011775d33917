"""The task runner, the one resume mechanism: a sweep is a list of tasks, each keyed by a content hash of its
inputs and recorded in one file.

A :class:`~netinvert.sweeps.task.Task` names a module-level function and its keyword arguments; its ``key``
hashes what decides its answer (:class:`~netinvert.sweeps.task.Plan`). :func:`run_sweep` hands the tasks not yet
finished to an engine (:mod:`netinvert.sweeps.engines`: this process, local worker processes or Ray) and writes
each answer, as it arrives, to ``FOLDER/sweep/KEY.json`` through the one atomic writer. So a rerun skips finished
tasks, a killed run (even ``kill -9``) loses at most the tasks in flight, and no task is ever half-recorded.
A sweep whose tasks are pieces of one answer (the batches of an atlas, the pairs of a leakage report) also
records the options they share in ``FOLDER/sweep/options.json``, and a rerun with other options is refused
instead of mixing pieces made two ways.

Each record has a ``status``: ``done`` (the function returned its row), ``timeout`` (killed past its
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
from netinvert.ground.output import check_writable, write_json
from netinvert.ground.run import progress_bar
from netinvert.sweeps.engines import make_engine
from netinvert.sweeps.task import Record, Task

RECORDS = "sweep"
OPTIONS = "options.json"
TASK_STATUSES = ("done", "timeout", "error")
LINE_SECONDS = 10.0  # how often progress lines are printed when stderr is not a terminal
log = logging.getLogger("netinvert")


def read_records(folder: str | os.PathLike[str]) -> dict[str, Record]:
    """The records of a sweep folder by key (an unreadable record counts as not there: its task runs again)."""
    records: dict[str, Record] = {}
    where = Path(folder) / RECORDS
    if not where.is_dir():
        return records
    for path in where.glob("*.json"):
        if path.name == OPTIONS:
            continue
        try:
            record = Record.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            continue
        if record.status in TASK_STATUSES:
            records[record.key] = record
    return records


def finished(folder: str | os.PathLike[str], tasks: Sequence[Task]) -> dict[str, Record]:
    """The records of ``tasks`` that a rerun keeps (``done`` and ``timeout``), by key."""
    keys = {t.key for t in tasks}
    return {k: r for k, r in read_records(folder).items() if k in keys and r.status != "error"}


def open_folder(folder: str | os.PathLike[str], options: Mapping[str, Any] | None = None, what: str = "sweep") -> Path:
    """Check up front that ``folder`` can hold this sweep, before anything is written.

    It must be writable, and new, empty or a sweep folder. With ``options`` (what every task shares) a folder made
    with other options is refused: its finished tasks would be pieces of a different answer.
    """
    folder = check_writable(folder, replace=False)
    records = folder / RECORDS
    if folder.is_dir() and any(folder.iterdir()) and not records.is_dir():
        raise NetinvertError(f"{folder} is not empty and holds no {what}; choose an empty or new `out` folder")
    saved = records / OPTIONS
    if options is None or not saved.exists():
        return folder
    try:
        before = json.loads(saved.read_text())
    except (OSError, ValueError) as exc:
        raise NetinvertError(f"{saved} is unreadable ({exc}); delete it or choose another `out`") from None
    changed = _changed(before, json.loads(json.dumps(dict(options))))
    if changed:
        raise NetinvertError(f"{folder} holds {what} made with other options: {', '.join(changed)}; rerun with the "
                             "same options to resume, or choose another `out`")
    return folder


def _changed(before: Any, now: Any, name: str = "") -> list[str]:
    """``name=old (now new)`` for every leaf that differs, nested names joined by dots."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [c for k in dict.fromkeys([*before, *now])
                for c in _changed(before.get(k), now.get(k), f"{name}.{k}" if name else k)]
    return [] if before == now else [f"{name}={before!r} (now {now!r})"]


def run_sweep(tasks: Sequence[Task], folder: str | os.PathLike[str], *, engine: Any = None,
              on_record: Callable[[int, Record], None] | None = None, description: str = "sweep",
              progress: bool | None = None, options: Mapping[str, Any] | None = None,
              what: str = "sweep") -> list[Record]:
    """Run every task of ``tasks`` not yet finished in ``folder``; return one record per task, in task order.

    ``engine``: an engine from :func:`netinvert.sweeps.engines.make_engine` (default: local, one process).
    ``on_record(i, record)`` is called for each task answered now (``i``: its index in ``tasks``).
    ``progress``: a bar with ETA on a terminal (``None``: when stderr is one), else a line every
    ``LINE_SECONDS``. ``options``: what the tasks share, kept in the folder and checked on a rerun
    (:func:`open_folder`; ``what`` names the sweep in its message).
    """
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise NetinvertError("a sweep lists the same task twice (same inputs and options): list each once")
    folder = open_folder(folder, options, what)
    engine = engine if engine is not None else make_engine("local")
    before = finished(folder, tasks)
    todo = [t for t in tasks if t.key not in before]
    if todo:
        engine.start()
    (folder / RECORDS).mkdir(parents=True, exist_ok=True)
    if options is not None:
        write_json(folder / RECORDS / OPTIONS, dict(options))
    index = {t.key: i for i, t in enumerate(tasks)}
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
                 time.perf_counter() - start, len(before))
    every = {**before, **now}
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
    counts = {s: sum(r.status == s for r in records) for s in TASK_STATUSES}
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


def safe_name(name: str) -> str:
    """A layer or method name as a file or folder name in a sweep folder (``features.0`` stays, ``a/b`` is ``a_b``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def merged_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per record: the task's own row, with its ``status`` (the task's, over any its row holds) and, for one
    that failed, its message."""
    return [{"task": r.label, "status": r.status, **{k: v for k, v in r.row.items() if k != "status"},
             "message": r.message, "seconds": round(r.seconds, 3)}
            for r in records]
