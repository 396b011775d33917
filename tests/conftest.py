"""Shared fixtures: a per-checkout zoo cache, the shared data folder (required, never skipped)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NETINVERT_HOME", str(ROOT / ".netinvert-home"))
SHARED = ROOT.parent / "shared"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; fails loudly when the shared folder is missing."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the tests need ../shared/data beside the repository")
    return path


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
