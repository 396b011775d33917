"""The zoo's first use: it says what it is doing and leaves a cache others can read."""

from __future__ import annotations

import logging
import stat

from netinvert.models.zoo import cache_path, load_zoo


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
