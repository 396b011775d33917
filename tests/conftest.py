"""Shared fixtures: a per-checkout zoo cache and a family of ONNX + VNNLIB instances with known answers.

The plain suite needs nothing outside the repository; the VNN-COMP tests live in ``tests/external``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NETINVERT_HOME", str(ROOT / ".netinvert-home"))


@pytest.fixture(scope="session")
def zoo():
    """Load zoo models once per session (trained on first use, cached under NETINVERT_HOME)."""
    from netinvert.models.zoo import load_zoo

    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_zoo(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def known_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of ONNX + VNNLIB files and ``instances.csv`` whose answers are known (``known_instances.FAMILY``)."""
    from known_instances import write_family

    return write_family(tmp_path_factory.mktemp("known_family"))
