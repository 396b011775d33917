"""Sweeps on the task runner (issue 18): content-hashed tasks, resume after kill -9, errors kept apart from
timeouts, the local and Ray engines giving the same answers, and one clear line when Ray is missing."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from known_instances import FAMILY
from sweep_tasks import square, square_tasks
from typer.testing import CliRunner

import netinvert
from netinvert.ground.errors import NetinvertError
from netinvert.sweeps.engines import make_engine
from netinvert.sweeps.runner import RECORDS, read_records, run_sweep
from netinvert.sweeps.solve import solve_family
from netinvert.sweeps.task import Plan, Task, task_key

TESTS = Path(__file__).resolve().parent
ROOT = Path(netinvert.__file__).resolve().parents[1]


def _lines(log: Path) -> list[int]:
    return [int(v) for v in log.read_text().split()] if log.exists() else []


def test_keys_hash_file_content_not_path_spelling(tmp_path: Path, known_family: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(known_family / "tiny.onnx", tmp_path / "copy.onnx")
    same = task_key("solve", [known_family / "tiny.onnx"], timeout=20.0)
    assert task_key("solve", [tmp_path / "sub" / ".." / "copy.onnx"], timeout=20.0) == same
    assert task_key("solve", [known_family / "tiny.onnx"], timeout=30.0) != same
    assert task_key("solve", [known_family / "nano.onnx"], timeout=20.0) != same
    assert task_key("solve", [tmp_path / "missing.onnx"], timeout=20.0) != same


def test_plan_keys_every_argument_but_those_that_change_no_answer(tmp_path: Path, known_family: Path) -> None:
    """Issue 25 item 11: a key is made from the arguments a task receives, so a new option cannot be left out."""
    plan = Plan(square, {"log": str(tmp_path / "log"), "sleep": 0.0}, unkeyed=("log",))
    task = plan.task({"x": 2}, "square 2")
    assert task.args == {"log": str(tmp_path / "log"), "sleep": 0.0, "x": 2} and task.run is square
    assert Plan(square, {"log": "elsewhere", "sleep": 0.0}, unkeyed=("log",)).task({"x": 2}, "").key == task.key
    assert Plan(square, {"log": "", "sleep": 0.5}, unkeyed=("log",)).task({"x": 2}, "").key != task.key
    assert plan.task({"x": 2, "crash_on": 7}, "").key != task.key  # an argument no list names is keyed too
    assert plan.options == {"sleep": 0.0}
    shutil.copy(known_family / "tiny.onnx", tmp_path / "copy.onnx")
    by_file = [plan.task({"x": path}, "").key for path in (known_family / "tiny.onnx", tmp_path / "copy.onnx",
                                                           known_family / "nano.onnx")]
    assert by_file[0] == by_file[1] != by_file[2]  # a Path is keyed by its file's bytes
    with pytest.raises(TypeError, match="cannot be keyed by a object"):
        plan.task({"x": object()}, "")


@pytest.mark.slow
def test_crash_is_an_error_with_its_message_timeout_is_apart_and_the_rest_finish(tmp_path: Path) -> None:
    log = tmp_path / "log"
    tasks = square_tasks(5, str(log), crash_on=2)
    slow = Task(square, {"x": 9, "log": str(log), "sleep": 30.0}, task_key("square", x=9), "square 9", timeout=1.0)
    records = run_sweep([*tasks, slow], tmp_path / "out", engine=make_engine("local", jobs=2), progress=False)
    assert [r.status for r in records] == ["done", "done", "error", "done", "done", "timeout"]
    assert records[2].message == "ZeroDivisionError: task 2 divides by zero" and records[2].row == {}
    assert records[5].row == {"status": "unknown"} and "time limit of 1 s" in records[5].message
    assert [r.row["y"] for r in records if r.status == "done"] == [0, 1, 9, 16]
    assert sorted(_lines(log)) == [0, 1, 3, 4]
    saved = read_records(tmp_path / "out")
    assert saved[records[2].key].message == records[2].message and len(saved) == 6
    again = run_sweep([*tasks, slow], tmp_path / "out", engine=make_engine("local", jobs=2), progress=False)
    assert [r.status for r in again] == [r.status for r in records]
    assert sorted(_lines(log)) == [0, 1, 3, 4]  # finished and timed-out tasks are not run again; the error is retried


@pytest.mark.slow
def test_sweep_killed_mid_way_resumes_with_nothing_lost_and_nothing_done_twice(tmp_path: Path) -> None:
    n, out, log = 12, tmp_path / "out", tmp_path / "log"
    code = ("from sweep_tasks import square_tasks\n"
            "from netinvert.sweeps.engines import make_engine\n"
            "from netinvert.sweeps.runner import run_sweep\n"
            f"run_sweep(square_tasks({n}, {str(log)!r}, sleep=0.4), {str(out)!r}, "
            "engine=make_engine('local', jobs=2), progress=False)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list((out / RECORDS).glob("*.json"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, like a machine going down
    proc.wait()
    tasks = square_tasks(n, str(log), sleep=0.4)
    recorded = set(read_records(out))
    first = _lines(log)
    assert 3 <= len(recorded) < n
    assert len(first) == len(set(first)) and len(set(first)) - len(recorded) <= 2  # lost: the 2 in flight at most
    records = run_sweep(tasks, out, engine=make_engine("local", jobs=2), progress=False)
    assert [r.row for r in records] == [{"x": x, "y": x * x} for x in range(n)]
    second = _lines(log)[len(first):]
    done_before = {t.row["x"] for t in records if t.key in recorded}
    assert sorted(second) == sorted(set(range(n)) - done_before)  # each unfinished task once, no finished one


def _descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (Linux: read from /proc; zombies count as ended)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(pid)
        except OSError:
            pass
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_workers_and_resource_tracker_end_with_a_killed_sweep(tmp_path: Path, how: signal.Signals) -> None:
    """Issue 25 item 4: `kill -9` or SIGTERM of a `--jobs 2` sweep left its two workers (about 350 MB each) and
    multiprocessing's resource tracker running; now they end with it."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "netinvert", "atlas", "-m", "digits-mlp", "--layers", "fc3,act2", "--steps",
               "100000", "--batch-size", "64", "--jobs", "2", "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    below: set[int] = set()
    try:
        deadline = time.time() + 240
        while not all((out / layer / RECORDS).is_dir() for layer in ("fc3", "act2")) and time.time() < deadline:
            assert proc.poll() is None, "the sweep ended before its workers started"
            time.sleep(0.1)
        below = _descendants(proc.pid)
        assert len(below) >= 3  # two workers and the resource tracker
        os.kill(proc.pid, how)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while _alive(below) and time.time() < deadline:
            time.sleep(0.1)
        assert _alive(below) == set()
    finally:
        for pid in _alive(below):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_ray_cluster_gives_the_local_engine_answers(tmp_path: Path, known_family: Path) -> None:
    """A local Ray cluster (2 CPUs) answers a solve family as the known answers say (which
    test_exact checks without an engine) and renders a 2-layer atlas bit-identical to local processes."""
    ray = pytest.importorskip("ray")
    from netinvert.models.load import load
    from netinvert.sweeps.atlas import layer_tasks

    path = os.pathsep.join([str(ROOT), str(TESTS)])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": path, "NETINVERT_HOME": os.environ["NETINVERT_HOME"]}})
    try:
        on_ray = make_engine("ray")
        rows = solve_family(known_family / "instances.csv", 20.0, tmp_path / "ray", engine=on_ray)
        assert [r["status"] for r in rows] == [answer for _, _, answer in FAMILY]
        assert list(csv.DictReader((tmp_path / "ray" / "results.csv").open())) == rows
        assert (tmp_path / "ray" / "003_sat_prop" / "counterexample.txt").exists()

        net = load("digits-cnn")
        domain = {"param": "auto", "tv": 0.0, "bn_prior": None, "data_prior": None}
        records = {}
        for name, engine in (("ray", on_ray), ("local", make_engine("local"))):
            tasks = layer_tasks(net, "digits-cnn", {}, ["conv", "fc"], tmp_path / f"atlas-{name}", domain, steps=4)
            records[name] = run_sweep(tasks, tmp_path / f"atlas-{name}", engine=engine, progress=False)
        assert [r.status for r in records["ray"]] == ["done", "done"]
        assert [r.row["units"] for r in records["ray"]] == [3, 10]
        for layer in ("conv", "fc"):
            a = np.load(tmp_path / "atlas-ray" / layer / "inputs.npy")
            b = np.load(tmp_path / "atlas-local" / layer / "inputs.npy")
            np.testing.assert_array_equal(a, b)

        crash = run_sweep(square_tasks(3, str(tmp_path / "log"), crash_on=1), tmp_path / "crash", engine=on_ray,
                          progress=False)
        assert [r.status for r in crash] == ["done", "error", "done"]
        assert "task 1 divides by zero" in crash[1].message
    finally:
        ray.shutdown()


def test_ray_engine_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       known_family: Path) -> None:
    import builtins

    from netinvert.cli.solve import solve

    real = builtins.__import__

    def no_ray(name: str, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(NetinvertError, match=r"pip install netinvert\[ray\]"):
        make_engine("ray")
    app = typer.Typer()
    app.command("solve")(solve)
    app.command("other")(lambda: None)
    r = CliRunner().invoke(app, ["solve", "--instances", str(known_family / "instances.csv"), "--engine", "ray",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert r.output.strip() == "error: the ray engine needs Ray, which is not installed: pip install netinvert[ray]"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_unreachable_ray_address_is_one_line_and_writes_nothing(tmp_path: Path, known_family: Path) -> None:
    """Issue 25 item 5: an unreachable --ray-address printed Ray's warnings for tens of seconds and left an empty
    results.csv; it is refused in one line before anything is written."""
    pytest.importorskip("ray")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "netinvert", "solve", "--instances", str(known_family / "instances.csv"),
               "--engine", "ray", "--ray-address", "127.0.0.1:1", "-o", str(out)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still trying to reach Ray after 120 s: {exc.stderr}") from None
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: cannot reach the Ray cluster at 127.0.0.1:1 ("), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", proc.stderr
    assert not out.exists()


def test_engine_options_are_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(NetinvertError, match="unknown engine 'dask'"):
        make_engine("dask")
    with pytest.raises(NetinvertError, match="options of the ray engine"):
        make_engine("local", gpus_per_task=0.5)
    with pytest.raises(NetinvertError, match="same task twice"):
        run_sweep(square_tasks(2, str(tmp_path / "log")) * 2, tmp_path / "out", progress=False)


@pytest.mark.slow
def test_atlas_layers_sweep_command(tmp_path: Path) -> None:
    from netinvert.cli.atlas import atlas

    app = typer.Typer()
    app.command("atlas")(atlas)
    app.command("other")(lambda: None)
    out = tmp_path / "atlas"
    r = CliRunner().invoke(app, ["atlas", "-m", "digits-mlp", "--layers", "fc3,act2", "--steps", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "layers.csv").open()))
    assert [(row["layer"], row["status"], row["units"]) for row in rows] == [("fc3", "done", "10"),
                                                                             ("act2", "done", "32")]
    assert json.loads((out / "fc3" / "result.json").read_text())["atlas"]["units"] == 10
    r = CliRunner().invoke(app, ["atlas", "-m", "digits-mlp", "--layer", "fc3", "--layers", "fc3", "--out", str(out)])
    assert r.exit_code == 2 and "give one layer with --layer or several" in r.output


@pytest.mark.slow
def test_atlas_layers_finish_each_layer_with_its_command_and_resume_under_another_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer of an atlas sweep is finished (report.finish) with the command line, which is not part of the
    sweep's key: a rerun spelled differently (another --jobs) resumes instead of being refused or redone."""
    from netinvert.cli.atlas import atlas
    from netinvert.ground.result import Result

    app = typer.Typer()
    app.command("atlas")(atlas)
    app.command("other")(lambda: None)
    out = tmp_path / "atlas"
    args = ["atlas", "-m", "digits-mlp", "--layers", "fc3", "--steps", "2", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["netinvert", *args])
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    first = Result.load(out / "fc3")
    assert first.kind == "atlas" and first.info["command"] == ["netinvert", *args]
    assert (out / "fc3" / "report.html").read_text().startswith("<!DOCTYPE html>")
    again = [*args, "--jobs", "1"]
    monkeypatch.setattr(sys, "argv", ["netinvert", *again])
    r = CliRunner().invoke(app, again)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "layers.csv").open()))
    assert [(row["layer"], row["status"]) for row in rows] == [("fc3", "done")]
    assert Result.load(out / "fc3").info["command"] == ["netinvert", *args]  # finished once, not rendered again


@pytest.mark.slow
def test_design_over_a_targets_file(tmp_path: Path, zoo) -> None:
    from netinvert.cli.design import design

    zoo("arm")
    app = typer.Typer()
    app.command("design")(design)
    app.command("other")(lambda: None)
    (tmp_path / "targets.txt").write_text("1.2,0.5\n# wanted end points\n0.5 1.0\n")
    out = tmp_path / "out"
    args = ["design", "-m", "arm", "--targets", str(tmp_path / "targets.txt"), "--samples", "2", "--restarts", "16",
            "--steps", "10", "--prove", "0", "-o", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "targets.csv").open()))
    assert [(row["task"], row["status"], row["samples"]) for row in rows] == [("y=1.2,0.5", "done", "2"),
                                                                              ("y=0.5,1", "done", "2")]
    assert json.loads((out / "t00001" / "result.json").read_text())["targets"][0]["y"] == [0.5, 1.0]
    (tmp_path / "bad.txt").write_text("1.2,0.5\n1.2,abc\n")
    r = CliRunner().invoke(app, [*args[:4], str(tmp_path / "bad.txt"), *args[5:]])
    assert r.exit_code == 2 and "bad.txt:2: '1.2,abc' is not a list of numbers" in " ".join(r.output.split())
