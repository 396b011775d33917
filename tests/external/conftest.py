"""Tests on the VNN-COMP instances kept outside the repository (``make test-external``).

The data folder is ``$NETINVERT_VNNCOMP``, by default ``../shared/data/vnncomp`` beside the repository. Missing
data stops the run with an error, never a skip: these tests exist to run where the data is (CI always has it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VNNCOMP = Path(os.environ.get("NETINVERT_VNNCOMP") or ROOT.parent / "shared" / "data" / "vnncomp").resolve()
FAMILIES = ("test", "mnist_fc", "acasxu_dev")


def pytest_configure(config: pytest.Config) -> None:
    missing = [f"{name}/" for name in FAMILIES if not (VNNCOMP / name).is_dir()]
    if missing:
        raise pytest.UsageError(
            f"VNN-COMP data missing: {VNNCOMP} has no {' or '.join(missing)}; set NETINVERT_VNNCOMP to the folder "
            "that holds test/, mnist_fc/ and acasxu_dev/ (default ../shared/data/vnncomp beside the repository)"
        )


@pytest.fixture(scope="session")
def vnncomp() -> Path:
    """The VNN-COMP data folder (checked to hold every family these tests read)."""
    return VNNCOMP
