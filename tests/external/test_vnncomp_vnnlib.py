"""The VNNLIB reader on the VNN-COMP files themselves: ACAS Xu property 3 (``test``) and ``mnist_fc``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netinvert.targets.vnnlib import read_vnnlib


def test_reads_the_shared_families(vnncomp: Path) -> None:
    prop = read_vnnlib(vnncomp / "test" / "test_prop.vnnlib")
    assert (prop.num_inputs, prop.num_outputs, len(prop.cases)) == (5, 5, 1)
    case = prop.cases[0]
    assert case.lo[0] == pytest.approx(-0.30353115613746867) and case.hi[0] == pytest.approx(-0.29855281193475053)
    a, b = case.output.disjuncts[0]
    assert a.shape == (4, 5) and np.all(a[:, 0] == 1) and np.all(b == 0)  # Y_0 <= Y_j for j = 1..4
    mnist = read_vnnlib(vnncomp / "mnist_fc" / "vnnlib" / "prop_0_0.03.vnnlib")
    assert (mnist.num_inputs, mnist.num_outputs) == (784, 10)
    out = mnist.cases[0].output
    assert len(out.disjuncts) == 9 and all(a.shape == (1, 10) for a, _ in out.disjuncts)
    y = np.zeros(10)
    y[4] = 1.0
    assert not out.contains(y)[0]  # label 4 wins: no disjunct holds
    y[2] = 1.0
    assert out.contains(y)[0]  # a tie Y_2 >= Y_4 satisfies the non-strict spec
    width = mnist.cases[0].hi - mnist.cases[0].lo
    assert 0.0 < width.min() and width.max() <= 0.06 + 1e-6  # an L-inf ball of radius 0.03 clipped to [0, 1]
