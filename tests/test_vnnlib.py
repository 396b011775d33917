"""The VNNLIB reader and the OutputSet target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from known_instances import vnnlib_text

from netinvert.data.mnist import read_idx
from netinvert.ground.errors import NetinvertError
from netinvert.targets.base import Target
from netinvert.targets.output_set import OutputSet
from netinvert.targets.vnnlib import parse_vnnlib, read_vnnlib

MNIST = Path(__file__).parent / "data" / "mnist"

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"


def test_reads_vnncomp_style_files(known_family: Path, tmp_path: Path) -> None:
    """The two layouts of VNN-COMP's specs: ACAS Xu property 3 style (comments, a conjunction of output
    comparisons) and an mnist_fc style L-inf ball around a real MNIST test image (one disjunct per class)."""
    prop = read_vnnlib(known_family / "prop.vnnlib")
    assert (prop.num_inputs, prop.num_outputs, len(prop.cases)) == (5, 5, 1)
    case = prop.cases[0]
    assert case.lo[0] == pytest.approx(-1.0) and case.hi[0] == pytest.approx(1.0)
    a, b = case.output.disjuncts[0]
    assert a.shape == (4, 5) and np.all(a[:, 0] == 1) and np.all(b == 0)  # Y_0 <= Y_j for j = 1..4
    image = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[0].reshape(-1) / 255.0
    label = int(read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")[0])
    others = "\n".join(f"    (and (>= Y_{j} Y_{label}))" for j in range(10) if j != label)
    text = vnnlib_text(np.clip(image - 0.03, 0, 1), np.clip(image + 0.03, 0, 1), 10, f"(assert (or\n{others}\n))",
                       comment=f"Mnist property with label: {label}.")
    (tmp_path / "prop_0_0.03.vnnlib").write_text(text)
    mnist = read_vnnlib(tmp_path / "prop_0_0.03.vnnlib")
    assert (mnist.num_inputs, mnist.num_outputs) == (784, 10)
    out = mnist.cases[0].output
    assert len(out.disjuncts) == 9 and all(a.shape == (1, 10) for a, _ in out.disjuncts)
    y = np.zeros(10)
    y[label] = 1.0
    assert not out.contains(y)[0]  # the label wins: no disjunct holds
    y[(label + 1) % 10] = 1.0
    assert out.contains(y)[0]  # a tie with the label satisfies the non-strict spec
    width = mnist.cases[0].hi - mnist.cases[0].lo
    assert 0.0 < width.min() and width.max() <= 0.06 + 1e-6  # an L-inf ball of radius 0.03 clipped to [0, 1]
    assert width.min() < 0.06  # the clipping at 0 shows on the dark background


def test_linear_terms_and_input_disjunction() -> None:
    text = (
        HEADER
        + """
    ; two input boxes, each with its own output constraint
    (assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= (+ Y_0 (* 2 Y_1)) 3))
                (and (>= X_0 2) (<= X_0 3) (>= X_1 -1) (<= X_1 0) (>= (- Y_0 Y_1) 0.5))))
    """
    )
    spec = parse_vnnlib(text)
    assert len(spec.cases) == 2
    c0, c1 = spec.cases
    np.testing.assert_allclose(c0.lo, [0, 0])
    np.testing.assert_allclose(c1.hi, [3, 0])
    a0, b0 = c0.output.disjuncts[0]
    np.testing.assert_allclose(a0, [[1, 2]])
    np.testing.assert_allclose(b0, [3])
    a1, b1 = c1.output.disjuncts[0]
    np.testing.assert_allclose(a1, [[-1, 1]])
    np.testing.assert_allclose(b1, [-0.5])


def test_output_constraints_may_read_inputs() -> None:
    """An affine envelope ``Y_0 <= 2 X_0 - X_1 + 1`` in one disjunct, a plain output row in the other: both are
    rows over [Y, X] (``num_inputs`` 2), and a point is judged on its output and input together."""
    text = HEADER + """(assert (>= X_0 0))(assert (<= X_0 1))(assert (>= X_1 0))(assert (<= X_1 1))
    (assert (or (<= Y_0 (+ (* 2 X_0) (- X_1) 1)) (>= Y_1 3)))"""
    out = parse_vnnlib(text).cases[0].output
    assert (out.num_outputs, out.num_inputs) == (2, 2)
    np.testing.assert_allclose(out.disjuncts[0][0], [[1, 0, -2, 1]])
    np.testing.assert_allclose(out.disjuncts[0][1], [1])
    np.testing.assert_allclose(out.disjuncts[1][0], [[0, -1, 0, 0]])
    y = np.array([[2.5, 0.0], [2.5, 0.0], [0.0, 3.0]])
    x = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_array_equal(out.contains(y, x=x), [True, False, True])  # 2.5 <= 3, 2.5 > 1.5, Y_1 >= 3
    joined = out.joined()
    assert (joined.num_outputs, joined.num_inputs) == (4, 0)
    np.testing.assert_array_equal(joined.contains(np.hstack([y, x])), [True, False, True])
    with pytest.raises(NetinvertError, match="constrains the inputs too: pass the inputs"):
        out.violations(y)
    with pytest.raises(NetinvertError, match="gradient methods do not see"):
        out.objective(torch.zeros(3, 2), {})
    plain = parse_vnnlib(text.replace("(+ (* 2 X_0) (- X_1) 1)", "1")).cases[0].output
    assert (plain.num_inputs, plain.disjuncts[0][0].shape) == (0, (1, 2))  # no input term: rows over Y only


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("(assert (<= X_0 1)", r"<vnnlib>:5:1: '\(' is never closed"),
        ("(assert (<= X_0 1)))", r"<vnnlib>:5:20: unbalanced '\)'"),
        ("(assert (<= X_7 1))", r"<vnnlib>:5:13: variable X_7 is used but not declared"),
        ("(assert (foo X_0 1))", r"<vnnlib>:5:10: unknown operator 'foo'"),
        ("(assert (<= (* X_0 X_1) 1))", r"<vnnlib>:5:14: product of two variables"),
        ("(assert (<= (+ X_0 X_1) 1))", r"<vnnlib>:5:10: input constraints must bound one X_i"),
        ("(assert (<= X_0 abc))", r"<vnnlib>:5:17: 'abc' is neither a number"),
    ],
)
def test_malformed_files_name_line_and_column(body: str, pattern: str) -> None:
    with pytest.raises(NetinvertError, match=pattern):
        parse_vnnlib(HEADER + body)


def test_unbounded_input_and_gaps_are_errors() -> None:
    with pytest.raises(NetinvertError, match="X_1 has no lower or upper bound"):
        parse_vnnlib(HEADER + "(assert (>= X_0 0))(assert (<= X_0 1))(assert (<= X_1 1))")
    with pytest.raises(NetinvertError, match="X_1 is not declared"):
        parse_vnnlib("(declare-const X_0 Real)(declare-const X_2 Real)(declare-const Y_0 Real)")
    with pytest.raises(NetinvertError, match="cannot read VNNLIB file"):
        read_vnnlib("/nonexistent/spec.vnnlib")


def test_output_set_builders_and_objective() -> None:
    cls = OutputSet.from_class(1, 3, margin=0.5)
    assert isinstance(cls, Target)
    y = np.array([[0.0, 1.0, 0.2], [0.0, 0.4, 0.1], [2.0, 1.0, 0.0]])
    np.testing.assert_allclose(cls.violations(y), [-0.3, 0.2, 1.5])
    np.testing.assert_array_equal(cls.contains(y), [True, False, False])
    obj = cls.objective(torch.tensor(y), {})
    np.testing.assert_allclose(obj.numpy(), -cls.violations(y))  # maximize: positive exactly inside the set
    other = OutputSet.not_class(1, 3)
    np.testing.assert_array_equal(other.contains(y), [False, False, True])
    both = OutputSet.all_of(
        [
            OutputSet.linear([[1, 0, 0]], [1.0]),
            OutputSet.any_of([OutputSet.linear([[0, 1, 0]], [0.5]), OutputSet.linear([[0, 0, 1]], [0.0])]),
        ]
    )
    assert len(both.disjuncts) == 2
    np.testing.assert_array_equal(both.contains(y), [False, True, False])
    with pytest.raises(NetinvertError, match="does not fit 3 outputs"):
        OutputSet(((np.ones((1, 2)), np.zeros(1)),), 3)
