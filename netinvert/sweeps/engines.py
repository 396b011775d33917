"""Engines that run the tasks of a sweep: ``local`` (worker processes on this machine), ``ray`` (a Ray cluster)
and :class:`InProcess` (this process, for the pieces of one answer over a model loaded here).

``local`` and ``ray`` run each task as ``task.run(**task.args)`` with one torch thread (by default), hand each answer to
the runner as soon as it arrives, and kill a task that runs past its ``timeout`` (recorded as
``timeout``). A task that raises is recorded as ``error`` with its message; the others go on.

``local`` is :class:`concurrent.futures.ProcessPoolExecutor` with the spawn start method and ``jobs``
workers; it keeps at most ``jobs`` tasks in flight, so a task's time is counted from when a worker
starts it. ``ray`` submits Ray tasks (``num_cpus=1``, and ``num_gpus`` = ``gpus_per_task`` for GPU work),
at most as many at once as the cluster has CPUs (a watchdog in the worker
kills a task at its timeout, counted from its start); Ray itself is an optional extra (``pip install netinvert[ray]``).
Local workers end with the process that started them, however it ends (``kill -9`` included): the kernel kills
them on Linux, and everywhere they watch a pipe that only their parent holds open.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from netinvert.ground.errors import NetinvertError, choices
from netinvert.sweeps.task import Record, Task

ENGINES = ("local", "ray")
RAY_MISSING = "the ray engine needs Ray, which is not installed: pip install netinvert[ray]"
POLL_S = 0.05
RAY_START_S = 60.0  # allowance for a Ray worker to start before a task's own watchdog is running
RAY_CONNECT_S = 3.0  # how long a --ray-address may take to accept a connection before it counts as unreachable
PR_SET_PDEATHSIG = 1  # linux/prctl.h: ask for a signal when the thread that started this process ends
Outcome = tuple[str, dict[str, Any], str, float]  # status, row, message, seconds
Report = Callable[[Task, Record], None]


def call_task(run: Callable[..., dict[str, Any]], args: Mapping[str, Any], threads: int = 1,
              timeout: float | None = None) -> Outcome:
    """Run one task in a worker: ``("done", row, "", s)``, or ``("error", {}, message, s)`` when it raises.

    With ``timeout`` a watchdog kills the worker process that many seconds after the task starts
    (a solver stuck in C code cannot be interrupted more gently).
    """
    import torch

    torch.set_num_threads(threads)
    watchdog = None
    if timeout is not None:
        watchdog = threading.Timer(timeout, _kill, (os.getpid(),))
        watchdog.daemon = True
        watchdog.start()
    t0 = time.perf_counter()
    try:
        row = run(**args)
    except NetinvertError as exc:
        return "error", {}, str(exc), time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - a crashing task is recorded with its message; the sweep goes on
        return "error", {}, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
    finally:
        if watchdog is not None:
            watchdog.cancel()
    return "done", dict(row), "", time.perf_counter() - t0


def make_engine(name: str = "local", *, jobs: int = 1, ray_address: str | None = None, gpus_per_task: float = 0.0,
                threads: int = 1) -> LocalEngine | RayEngine:
    """An engine by name; options that the engine does not take are refused in one line."""
    if name not in ENGINES:
        raise NetinvertError(f"unknown engine {name!r}: choose one of {choices(ENGINES)}")
    if threads < 1:
        raise NetinvertError(f"threads={threads} must be >= 1")
    if name == "local":
        if ray_address is not None or gpus_per_task:
            raise NetinvertError("--ray-address and --gpus-per-task are options of the ray engine: add --engine ray")
        if jobs < 1:
            raise NetinvertError(f"--jobs {jobs} must be >= 1")
        return LocalEngine(jobs=jobs, threads=threads)
    if gpus_per_task < 0:
        raise NetinvertError(f"--gpus-per-task {gpus_per_task} must be >= 0 (a fraction such as 0.25 shares a GPU)")
    return RayEngine(address=ray_address, gpus_per_task=gpus_per_task, threads=threads)


def _record(task: Task, out: Outcome, engine: str, engine_s: float) -> Record:
    status, row, message, seconds = out
    return Record(task.key, task.label, status, row, message, seconds, max(engine_s, 0.0), engine)


def _timeout_record(task: Task, engine: str) -> Record:
    return Record(task.key, task.label, "timeout", {"status": "unknown"},
                  f"killed after its time limit of {task.timeout:g} s", float(task.timeout or 0.0), 0.0, engine)


_STARTED: Any = None  # in a local worker: the queue that announces (key, pid, start time) of each task


def _init_local(threads: int, started: Any, parent: int, lifeline: Any) -> None:
    global _STARTED
    _die_with_parent(parent, lifeline)
    import torch

    torch.set_num_threads(threads)
    _STARTED = started


def _die_with_parent(parent: int, lifeline: Any) -> None:
    """End this worker when ``parent`` ends, however it ends, so that no worker outlives its sweep.

    On Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``), which also ends a
    worker busy in C code; on every system a thread waits on ``lifeline``, a pipe whose only writer is the parent,
    and exits at its end of file.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the line above took effect
        os._exit(1)
    threading.Thread(target=_exit_at_eof, args=(lifeline,), daemon=True).start()


def _exit_at_eof(lifeline: Any) -> None:
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _call_local(run: Callable[..., dict[str, Any]], args: Mapping[str, Any], key: str, threads: int) -> Outcome:
    _STARTED.put((key, os.getpid(), time.time()))
    return call_task(run, args, threads)


class InProcess:
    """The tasks one after another in this process, for the pieces of one answer over a model loaded here (the
    batches of one atlas layer). A task that raises stops the sweep with its error; the pieces recorded stay."""

    name = "in-process"

    def start(self) -> None:
        """Nothing to start."""

    def run(self, tasks: Sequence[Task], report: Report) -> None:
        for task in tasks:
            t0 = time.perf_counter()
            row = task.run(**task.args)
            report(task, Record(task.key, task.label, "done", dict(row), "", time.perf_counter() - t0, 0.0, self.name))


class LocalEngine:
    """``jobs`` spawned worker processes on this machine (:class:`ProcessPoolExecutor`)."""

    name = "local"

    def __init__(self, jobs: int = 1, threads: int = 1) -> None:
        self.jobs, self.threads = jobs, threads

    def start(self) -> None:
        """Nothing to start: the workers start with each :meth:`run`."""

    def run(self, tasks: Sequence[Task], report: Report) -> None:
        """Run ``tasks``, calling ``report(task, record)`` as each finishes; a worker that dies is replaced."""
        todo, deaths = deque(tasks), {}
        while todo:
            self._pool(todo, report, deaths)

    def _pool(self, todo: deque[Task], report: Report, deaths: dict[str, int]) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        started = ctx.Queue()
        lifeline, held = ctx.Pipe(duplex=False)  # the workers read; only this process holds the writing end
        pool = ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_local,
                                   initargs=(self.threads, started, os.getpid(), lifeline))
        flying: dict[Future[Outcome], tuple[Task, float]] = {}
        running: dict[str, tuple[int, float]] = {}
        killed: set[str] = set()
        try:
            while todo or flying:
                while todo and len(flying) < self.jobs:
                    task = todo.popleft()
                    flying[pool.submit(_call_local, task.run, dict(task.args), task.key, self.threads)] = (
                        task, time.time())
                done, _ = wait(flying, timeout=POLL_S, return_when=FIRST_COMPLETED)
                _drain(started, running)
                broken = False
                for future in done:
                    task, submitted = flying.pop(future)
                    try:
                        out = future.result()
                    except BrokenProcessPool:
                        broken = True
                        flying[future] = (task, submitted)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. a task function workers cannot import
                        out = ("error", {}, f"cannot hand the task to a worker: {type(exc).__name__}: {exc}", 0.0)
                    report(task, _record(task, out, self.name, time.time() - submitted - out[3]))
                if broken:
                    wait(flying, timeout=10)
                    for future, (task, submitted) in flying.items():
                        if future.done() and future.exception() is None:
                            out = future.result()
                            report(task, _record(task, out, self.name, time.time() - submitted - out[3]))
                        else:
                            self._lost(task, killed, deaths, todo, report)
                    return
                now = time.time()
                for task, _ in flying.values():
                    pid_start = running.get(task.key)
                    if task.timeout is not None and pid_start and now - pid_start[1] > task.timeout:
                        killed.add(task.key)
                        _kill(pid_start[0])
        except BaseException:
            for pid, _ in running.values():
                _kill(pid)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            started.close()
            held.close()
            lifeline.close()

    def _lost(self, task: Task, killed: set[str], deaths: dict[str, int], todo: deque[Task], report: Report) -> None:
        """A task whose worker process ended: timed out if we killed it, else tried once more, then ``error``."""
        if task.key in killed:
            report(task, _timeout_record(task, self.name))
            return
        deaths[task.key] = deaths.get(task.key, 0) + 1
        if deaths[task.key] >= 2:
            report(task, Record(task.key, task.label, "error", {}, "its worker process died (twice)",
                                engine=self.name))
        else:
            todo.appendleft(task)


def _drain(started: Any, running: dict[str, tuple[int, float]]) -> None:
    while True:
        try:
            key, pid, t = started.get_nowait()
        except queue.Empty:
            return
        running[key] = (pid, t)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RayEngine:
    """Ray tasks on a cluster: ``address`` ``None`` starts (or joins) a local one, ``auto`` or ``HOST:PORT`` joins."""

    name = "ray"

    def __init__(self, address: str | None = None, gpus_per_task: float = 0.0, threads: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise NetinvertError(RAY_MISSING) from None
        self.ray, self.address, self.gpus, self.threads = ray, address, gpus_per_task, threads
        if address is not None and address != "auto" and "://" not in address:
            _check_reachable(address)

    def start(self) -> None:
        """Connect to the cluster (once per process); workers import the same netinvert as this process."""
        ray = self.ray
        if ray.is_initialized():
            return
        import netinvert

        package_root = str(Path(netinvert.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise NetinvertError(f"cannot reach the Ray cluster at {self.address or 'local'} ({exc}); start it with "
                                 "`ray start --head` or give --ray-address HOST:PORT") from None

    def run(self, tasks: Sequence[Task], report: Report) -> None:
        """Submit ``tasks`` (at most one per cluster CPU at once); a task past its timeout is cancelled by force."""
        ray = self.ray
        self.start()
        resources = ray.cluster_resources()
        width = max(1, int(resources.get("CPU", 1)))
        if self.gpus:
            gpus = resources.get("GPU", 0)
            if gpus < self.gpus:
                raise NetinvertError(f"--gpus-per-task {self.gpus:g} but the Ray cluster has {gpus:g} GPUs")
            width = max(1, min(width, int(gpus / self.gpus)))
        remote = ray.remote(call_task).options(num_cpus=1, num_gpus=self.gpus, max_retries=0)
        todo, flying = deque(tasks), {}
        try:
            while todo or flying:
                while todo and len(flying) < width:
                    task = todo.popleft()
                    ref = remote.remote(task.run, dict(task.args), self.threads, task.timeout)
                    flying[ref] = (task, time.time())
                ready, _ = ray.wait(list(flying), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    task, submitted = flying.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        if task.timeout is not None and time.time() - submitted >= task.timeout:
                            report(task, _timeout_record(task, self.name))  # its watchdog ended the worker
                            continue
                        out = ("error", {}, f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                               time.time() - submitted)
                    report(task, _record(task, out, self.name, time.time() - submitted - out[3]))
                now = time.time()
                for ref, (task, submitted) in list(flying.items()):
                    if task.timeout is not None and now - submitted > task.timeout + RAY_START_S:
                        ray.cancel(ref, force=True)
                        del flying[ref]
                        report(task, _timeout_record(task, self.name))
        except BaseException:
            for ref in flying:
                ray.cancel(ref, force=True)
            raise


def _check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` that is malformed or accepts no connection within ``RAY_CONNECT_S``, in one line
    (Ray itself retries for tens of seconds, printing warnings)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise NetinvertError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_S).close()
    except OSError as exc:
        raise NetinvertError(f"cannot reach the Ray cluster at {address} ({exc.strerror or 'no answer'}); start it "
                             "with `ray start --head` there, or give the right --ray-address HOST:PORT") from None
