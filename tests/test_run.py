"""How long computations run (ground/run.py): the default thread count and progress for a single long call."""

from __future__ import annotations

import logging
import os
import time

import torch
from torch import nn

from netinvert.ground.run import SMALL_WORK, default_threads, time_limit_progress, torch_threads
from netinvert.ground.spec import InputSpec
from netinvert.models.wrapper import Model


def test_small_work_runs_on_one_thread_and_large_work_on_at_most_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert default_threads(SMALL_WORK - 1) == 1
    assert 1 <= default_threads(SMALL_WORK) <= cores
    assert 1 <= default_threads(None) <= cores


def test_step_work_counts_the_leaf_activations_of_a_batch() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    model = Model(net, InputSpec((1, 28, 28)))
    per_item = 4 * 26 * 26 * 3 + 10
    assert model.step_work(1) == per_item and model.step_work(8) == 8 * per_item


def test_torch_threads_restores_the_setting_and_chooses_one_thread_for_small_work() -> None:
    before = torch.get_num_threads()
    with torch_threads(None, work=10):
        assert torch.get_num_threads() == 1
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_a_single_long_call_reports_its_time_against_the_limit(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="netinvert"):
        with time_limit_progress(False, 5.0, "solving prop_1", every=0.2):
            time.sleep(0.7)
    lines = [r.getMessage() for r in caplog.records if "prop_1" in r.getMessage()]
    assert len(lines) >= 2 and all(line.endswith("of the 5 s limit") for line in lines), lines
    with time_limit_progress(True, 1.0, "bar"):  # a bar ticks on its own thread and stops with the call
        time.sleep(0.6)
