"""The VNN-COMP tool scripts (``vnncomp/prepare_instance.sh``, ``vnncomp/run_instance.sh``) run as the competition's
harness runs them (``run_single_instance.sh``: prepare, then run with the timeout and a kill 60 s after it, the result
file's first line read and the counterexample on the lines after it), on instances with known answers; the
counterexample is parsed the way the competition's checker parses it and re-evaluated with onnxruntime."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from known_instances import ort_outputs, write_family, write_twin

from netinvert.ground.result import Item, Result
from netinvert.models.load import load
from netinvert.targets.vnnlib import read_vnnlib
from netinvert.tasks.solve import FINISH_RESERVE, solve_instance, vnncomp_answer

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "vnncomp"


def _gzip(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    return gz


def _env(tmp: Path) -> dict[str, str]:
    """The scripts run this interpreter on this checkout, keeping their run folder under ``tmp``."""
    return dict(os.environ, NETINVERT_PYTHON=sys.executable, NETINVERT_VNNCOMP_RUN=str(tmp / "run"),
                PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))


def _script(tmp: Path, name: str, *args: object, limit: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPTS / name), *map(str, args)], env=_env(tmp), capture_output=True,
                          text=True, timeout=limit, cwd=tmp)


def _harness(tmp: Path, onnx: Path, vnnlib: Path, timeout: float) -> tuple[str, str]:
    """``run_single_instance.sh``'s steps: prepare (must exit 0), ``no_result_in_file`` written into the result
    file, run (killed 60 s after the timeout, must exit 0); the result and the counterexample text."""
    prep = _script(tmp, "prepare_instance.sh", "v1", "test", onnx, vnnlib)
    assert prep.returncode == 0, prep.stderr
    out = tmp / "out.txt"
    out.write_text("no_result_in_file\n")
    run = _script(tmp, "run_instance.sh", "v1", "test", onnx, vnnlib, out, timeout, limit=timeout + 60)
    assert run.returncode == 0, run.stderr
    first, _, rest = out.read_text().partition("\n")
    return first.strip(), rest


def read_counterexample(text: str) -> tuple[np.ndarray, np.ndarray]:
    """X and Y of a counterexample, parsed as VNN-COMP's checker does (SCORING/counterexamples.py: newlines to
    spaces, one outer pair of parentheses, then ``(NAME VALUE)`` pairs split at ``)``, X_i and Y_j in order)."""
    content = text.replace("\n", " ").strip()
    assert content[0] == "(" and content[-1] == ")"
    xs: list[float] = []
    ys: list[float] = []
    for part in content[1:-1].split(")"):
        part = " ".join(part.split())
        if not part:
            continue
        assert part[0] == "("
        name, num = part[1:].split(" ")
        values = xs if name.startswith("X_") else ys
        assert name[:2] in ("X_", "Y_") and int(name[2:]) == len(values)
        values.append(float(num))
    return np.array(xs), np.array(ys)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fam = write_family(tmp_path_factory.mktemp("family"))
    write_twin(fam)
    return fam


@pytest.mark.slow
def test_sat_from_gzipped_files_with_a_counterexample_the_checker_accepts(family: Path, tmp_path: Path) -> None:
    onnx, vnnlib = _gzip(family / "sat.onnx"), _gzip(family / "prop.vnnlib")
    result, text = _harness(tmp_path, onnx, vnnlib, 60)
    assert result == "sat"
    x, y = read_counterexample(text)
    case = read_vnnlib(family / "prop.vnnlib").cases[0]
    assert x.shape == (5,) and y.shape == (5,)
    assert np.all(x >= case.lo) and np.all(x <= case.hi)
    fresh = ort_outputs(family / "sat.onnx", x)  # the network re-run at X matches Y (the checker's 1e-3 rule) ...
    assert np.abs(fresh - y).max() <= 1e-3 * np.abs(y).max()
    assert case.output.contains(y)[0] and case.output.contains(fresh)[0]  # ... and violates the property


@pytest.mark.slow
def test_unsat_timeout_and_error(family: Path, tmp_path: Path) -> None:
    assert _harness(tmp_path, family / "unsat.onnx", family / "prop.vnnlib", 60)[0] == "unsat"

    # Y_0 = Y_1 everywhere: unsat, but out of reach in 12 s; the time before solving counts against the limit
    result, _ = _harness(tmp_path, family / "twin.onnx", family / "twin.vnnlib", 12)
    assert result == "timeout"
    run = json.loads((tmp_path / "run" / "last" / "result.json").read_text())
    assert run["status"] == "unknown" and run["time_limit"] < 12 - FINISH_RESERVE

    # a spec over 5 inputs for a one-input network: prepare refuses it in one line, run writes `error`
    prep = _script(tmp_path, "prepare_instance.sh", "v1", "test", family / "nano.onnx", family / "prop.vnnlib")
    assert prep.returncode == 2 and "declares 5 inputs" in prep.stderr and "Traceback" not in prep.stderr
    out = tmp_path / "bad.txt"
    run_bad = _script(tmp_path, "run_instance.sh", "v1", "test", family / "nano.onnx", family / "prop.vnnlib", out, 30)
    assert run_bad.returncode == 2 and out.read_text() == "error\n"
    wrong = _script(tmp_path, "run_instance.sh", "v2", "test", family / "nano.onnx", family / "prop.vnnlib", out, 30)
    assert wrong.returncode == 1 and "Expected first argument" in wrong.stderr


def test_gzipped_network_and_spec_read_as_the_plain_files(family: Path, tmp_path: Path) -> None:
    shutil.copy(family / "sat.onnx", tmp_path / "net.onnx")
    plain, zipped = load(tmp_path / "net.onnx"), load(_gzip(tmp_path / "net.onnx"))
    assert zipped.name == "net"
    x = torch.rand(4, 5)
    assert torch.equal(plain(x), zipped(x))
    a, b = read_vnnlib(family / "prop.vnnlib"), read_vnnlib(_gzip(family / "prop.vnnlib"))
    assert np.array_equal(a.cases[0].lo, b.cases[0].lo) and np.array_equal(a.cases[0].hi, b.cases[0].hi)
    assert a.cases[0].output.description == b.cases[0].output.description


def test_result_file_text_per_status() -> None:
    def answer(status: str, reason: str = "", files: dict[str, bytes] | None = None) -> str:
        item = Item("prop.vnnlib", status, reason, {})
        return vnncomp_answer(Result(method="exact", model="net", inputs=torch.empty(0), outputs=torch.empty(0),
                                     items=[item], files=files or {}))

    cex = b"((X_0 0.5)\n (Y_0 -1.0))\n"
    assert answer("found", files={"counterexample.txt": cex}) == "sat\n" + cex.decode()
    assert answer("none-exists") == "unsat\n"
    assert answer("unknown", "time limit in branch-and-bound") == "timeout\n"
    assert answer("unknown", "a box too small to split stays undecided") == "unknown\n"


@pytest.mark.slow
def test_building_the_solvers_network_counts_against_the_time_limit(family: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The solvers' form of the network (0.7 s for a 784-input net with 1600 neurons) is built on the instance's
    clock: with 3 s added to building it, a 4 s instance that runs out of time still ends near 4 s, not 7 s."""
    import netinvert.solvers.problem as problem

    build = problem.choose_network

    def slow_build(*args: object, **kwargs: object) -> object:
        time.sleep(3.0)
        return build(*args, **kwargs)

    monkeypatch.setattr(problem, "choose_network", slow_build)
    t0 = time.perf_counter()
    res = solve_instance(family / "twin.onnx", family / "twin.vnnlib", 4.0)
    assert res.items[0].status == "unknown" and res.items[0].reason == "time limit"
    assert time.perf_counter() - t0 < 4.0 + FINISH_RESERVE


def test_a_harness_start_that_used_up_the_time_answers_timeout(family: Path, tmp_path: Path) -> None:
    """`--started-at` long past: the instance is still read and answered `timeout` (not refused as a time limit of
    at most 0 s, which a time limit given by the user is)."""
    from netinvert.ground.errors import NetinvertError
    from netinvert.tasks.solve import solve_one

    out = tmp_path / "answer.txt"
    row = solve_one(family / "sat.onnx", family / "prop.vnnlib", 5.0, tmp_path / "run", started_at=time.time() - 10,
                    result_file=out)
    assert (row["status"], row["reason"]) == ("unknown", "time limit") and out.read_text() == "timeout\n"
    assert json.loads((tmp_path / "run" / "result.json").read_text())["time_limit"] < 5.0 - 10
    with pytest.raises(NetinvertError, match="must be more than 0 seconds"):
        solve_instance(family / "sat.onnx", family / "prop.vnnlib", 0.0)
