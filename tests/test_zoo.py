"""The zoo's first use: it says what it is doing and leaves a cache others can read."""

from __future__ import annotations

import logging
import multiprocessing
import stat
import time
from pathlib import Path

import pytest

from netinvert.ground.store import first_use
from netinvert.models.zoo import cache_path, load_zoo


@pytest.mark.slow
def test_first_use_training_reports_each_epoch_and_caches_readable_weights(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NETINVERT_HOME", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="netinvert"):
        model = load_zoo("moons-relu", quiet=False)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("training zoo model moons-relu") for m in messages)
    epochs = [m for m in messages if m.startswith("moons-relu: epoch ")]
    assert len(epochs) >= 10 and epochs[-1].split()[2].split("/")[0] == epochs[-1].split()[2].split("/")[1]
    assert model.info["test_accuracy"] > 0.95
    mode = stat.S_IMODE(cache_path("moons-relu").stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH, oct(mode)


def _first_use(out: Path, log: Path) -> None:
    def make() -> str:
        with log.open("a") as f:
            f.write("trained\n")
        time.sleep(1.0)
        out.write_text("weights")
        return "weights"

    first_use(out, make, Path.read_text)


def test_concurrent_first_uses_train_once(tmp_path):
    """Two processes asking for the same untrained file at once (two sweep workers, two test workers on a fresh
    cache): one trains, the other waits for its file."""
    out, log = tmp_path / "cache" / "net.safetensors", tmp_path / "log.txt"
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=_first_use, args=(out, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert out.read_text() == "weights"
    assert log.read_text().splitlines() == ["trained"]
