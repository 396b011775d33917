"""A VNNLIB reader: input boxes and output sets from the verification community's spec files.

Supported: ``declare-const`` of ``X_i``/``Y_j``, ``assert`` of comparisons (``<=``, ``>=``,
``<``, ``>``, ``=``) between linear terms (numbers, variables, ``+``, ``-``, ``*`` by a number),
and ``and``/``or`` nested freely (the formula is brought to disjunctive normal form). Input
constraints must bound one ``X_i`` each; strict comparisons are read as non-strict, as in
VNN-COMP. Every error names the line and column.
"""

from __future__ import annotations

import gzip
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netinvert.ground.errors import NetinvertError
from netinvert.targets.output_set import OutputSet

_TOKEN = re.compile(r"\s+|;[^\n]*|\(|\)|[^\s();]+")
_VAR = re.compile(r"^([XY])_(\d+)$")


@dataclass(frozen=True)
class Case:
    """One input box (flat ``lo``/``hi``) and the output set that must be reached from it."""

    lo: np.ndarray
    hi: np.ndarray
    output: OutputSet


@dataclass(frozen=True)
class Spec:
    """A parsed VNNLIB file: the input and output counts and one case per input disjunct."""

    num_inputs: int
    num_outputs: int
    cases: tuple[Case, ...]
    source: str = ""


@dataclass(frozen=True)
class _Tok:
    text: str
    line: int
    col: int


def _where(source: str, tok: _Tok) -> str:
    return f"{source}:{tok.line}:{tok.col}"


def _tokens(text: str, source: str) -> list[_Tok]:
    out = []
    line, line_start = 1, 0
    for m in _TOKEN.finditer(text):
        s = m.group(0)
        if not s.isspace() and not s.startswith(";"):
            out.append(_Tok(s, line, m.start() - line_start + 1))
        nl = s.count("\n")
        if nl:
            line += nl
            line_start = m.start() + s.rfind("\n") + 1
    return out


def _sexprs(toks: list[_Tok], source: str) -> list[object]:
    stack: list[list[object]] = [[]]
    opens: list[_Tok] = []
    for t in toks:
        if t.text == "(":
            stack.append([t])
            opens.append(t)
        elif t.text == ")":
            if len(stack) == 1:
                raise NetinvertError(f"{_where(source, t)}: unbalanced ')' in VNNLIB: remove it or add the missing '('")
            done = stack.pop()
            opens.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(t)
    if len(stack) > 1:
        raise NetinvertError(f"{_where(source, opens[-1])}: '(' is never closed in VNNLIB: add the missing ')'")
    return stack[0]


# A linear term: ({var: coeff}, constant); an atom: (coeffs, constant) meaning sum coeffs*v + constant <= 0.
_Lin = tuple[dict[tuple[str, int], float], float]


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.declared: dict[tuple[str, int], _Tok] = {}

    def fail(self, tok: _Tok, msg: str) -> NetinvertError:
        return NetinvertError(f"{_where(self.source, tok)}: {msg}")

    def head(self, node: list[object]) -> _Tok:
        if len(node) < 2 or not isinstance(node[1], _Tok):
            raise self.fail(node[0], "expected an operator after '(' in VNNLIB")  # type: ignore[arg-type]
        return node[1]

    def declare(self, node: list[object]) -> None:
        args = node[2:]
        if len(args) != 2 or not all(isinstance(a, _Tok) for a in args):
            raise self.fail(node[0], "declare-const takes a name and a sort, e.g. (declare-const X_0 Real)")  # type: ignore[arg-type]
        name, sort = args  # type: ignore[misc]
        m = _VAR.match(name.text)
        if not m:
            raise self.fail(name, f"variable {name.text!r} is not X_i (input) or Y_j (output)")
        if sort.text != "Real":
            raise self.fail(sort, f"sort {sort.text!r} is not supported: declare variables as Real")
        key = (m.group(1), int(m.group(2)))
        if key in self.declared:
            raise self.fail(name, f"variable {name.text} is declared twice")
        self.declared[key] = name

    def term(self, node: object) -> _Lin:
        if isinstance(node, _Tok):
            m = _VAR.match(node.text)
            if m:
                key = (m.group(1), int(m.group(2)))
                if key not in self.declared:
                    raise self.fail(
                        node, f"variable {node.text} is used but not declared: add (declare-const {node.text} Real)"
                    )
                return {key: 1.0}, 0.0
            try:
                return {}, float(node.text)
            except ValueError:
                raise self.fail(node, f"{node.text!r} is neither a number nor a declared variable") from None
        assert isinstance(node, list)
        op = self.head(node)
        args = [self.term(a) for a in node[2:]]
        if not args:
            raise self.fail(op, f"'{op.text}' needs arguments")
        if op.text == "+":
            return _lin_sum(args, [1.0] * len(args))
        if op.text == "-":
            if len(args) == 1:
                return _lin_sum(args, [-1.0])
            return _lin_sum(args, [1.0] + [-1.0] * (len(args) - 1))
        if op.text == "*":
            coeffs, const = args[0]
            for c2, k2 in args[1:]:
                if coeffs and c2:
                    raise self.fail(op, "product of two variables is not linear: multiply by numbers only")
                if not c2:
                    coeffs, const = {v: c * k2 for v, c in coeffs.items()}, const * k2
                else:
                    coeffs, const = {v: c * const for v, c in c2.items()}, const * k2
            return coeffs, const
        raise self.fail(op, f"unknown term operator {op.text!r}: use +, -, * or a comparison")

    def formula(self, node: object) -> list[list[tuple[_Lin, _Tok]]]:
        """DNF of a formula: a list of conjunctions of atoms ``lin <= 0``."""
        if not isinstance(node, list):
            raise self.fail(node, f"expected a constraint like (<= X_0 1), got {node.text!r}")  # type: ignore[union-attr]
        op = self.head(node)
        args = node[2:]
        if op.text == "and":
            parts = [self.formula(a) for a in args]
            return [sum(combo, []) for combo in itertools.product(*parts)]
        if op.text == "or":
            return [c for a in args for c in self.formula(a)]
        if op.text in ("<=", ">=", "<", ">", "="):
            if len(args) != 2:
                raise self.fail(op, f"'{op.text}' compares exactly two terms")
            left, right = self.term(args[0]), self.term(args[1])
            diff = _lin_sum([left, right], [1.0, -1.0])  # left - right
            if op.text in ("<=", "<"):
                return [[(diff, op)]]
            neg = _lin_sum([diff], [-1.0])
            if op.text in (">=", ">"):
                return [[(neg, op)]]
            return [[(diff, op), (neg, op)]]
        raise self.fail(op, f"unknown operator {op.text!r}: VNNLIB asserts use and, or, <=, >=, <, >, =")


def _lin_sum(terms: list[_Lin], weights: list[float]) -> _Lin:
    coeffs: dict[tuple[str, int], float] = {}
    const = 0.0
    for (c, k), w in zip(terms, weights):
        for v, x in c.items():
            coeffs[v] = coeffs.get(v, 0.0) + w * x
        const += w * k
    return coeffs, const


def parse_vnnlib(text: str, source: str = "<vnnlib>") -> Spec:
    """Parse VNNLIB text into input boxes and output sets."""
    reader = _Reader(source)
    asserts: list[object] = []
    for node in _sexprs(_tokens(text, source), source):
        if not isinstance(node, list):
            raise reader.fail(
                node, f"unexpected {node.text!r} at top level: expected (declare-const ...) or (assert ...)"
            )  # type: ignore[union-attr]
        op = reader.head(node)
        if op.text == "declare-const":
            reader.declare(node)
        elif op.text == "assert":
            if len(node) != 3:
                raise reader.fail(op, "assert takes exactly one formula")
            asserts.append(node[2])
        else:
            raise reader.fail(op, f"unknown command {op.text!r}: expected declare-const or assert")
    n_in = _count(reader, "X", source)
    n_out = _count(reader, "Y", source)
    clauses: list[list[tuple[_Lin, _Tok]]] = [[]]
    for a in asserts:
        clauses = [c1 + c2 for c1 in clauses for c2 in reader.formula(a)]
    groups: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for clause in clauses:
        lo, hi = np.full(n_in, -np.inf), np.full(n_in, np.inf)
        rows, rhs = [], []
        for (coeffs, const), tok in clause:
            coeffs = {v: c for v, c in coeffs.items() if c != 0.0}
            sides = {v[0] for v in coeffs}
            if not coeffs:
                if const > 0:
                    lo[:] = np.inf  # a false constant constraint: this clause is empty
                continue
            if sides == {"X"}:
                if len(coeffs) != 1:
                    raise reader.fail(
                        tok,
                        "input constraints must bound one X_i each (a box); linear input constraints are not supported",
                    )
                ((v, c),) = coeffs.items()
                bound = -const / c
                if c > 0:
                    hi[v[1]] = min(hi[v[1]], bound)
                else:
                    lo[v[1]] = max(lo[v[1]], bound)
            elif sides == {"Y"}:
                row = np.zeros(n_out)
                for v, c in coeffs.items():
                    row[v[1]] = c
                rows.append(row)
                rhs.append(-const)
            else:
                raise reader.fail(
                    tok, "a constraint mixes inputs X and outputs Y: keep input and output constraints separate"
                )
        if np.any(lo > hi):
            continue
        key = (lo.tobytes(), hi.tobytes())
        a = np.array(rows).reshape(-1, n_out)
        b = np.array(rhs)
        groups.setdefault(key, (lo, hi, []))[2].append((a, b))
    if not groups:
        raise NetinvertError(f"{source}: the input constraints are contradictory (every input box is empty)")
    cases = []
    for lo, hi, disjuncts in groups.values():
        unbounded = np.flatnonzero(~np.isfinite(lo) | ~np.isfinite(hi))
        if unbounded.size:
            raise NetinvertError(
                f"{source}: input X_{unbounded[0]} has no lower or upper bound: add (assert (>= X_{unbounded[0]} ...)) "
                "and (assert (<= ...)) for every input"
            )
        if any(a.shape[0] == 0 for a, _ in disjuncts):
            disjuncts = [(np.zeros((1, n_out)), np.zeros(1))]  # no output constraint: every output qualifies
        cases.append(Case(lo, hi, OutputSet(tuple(disjuncts), n_out)))
    return Spec(n_in, n_out, tuple(cases), source)


def _count(reader: _Reader, side: str, source: str) -> int:
    idx = sorted(i for k, i in reader.declared if k == side)
    name = "input" if side == "X" else "output"
    if not idx:
        raise NetinvertError(f"{source}: no {name} variable is declared: add (declare-const {side}_0 Real)")
    if idx != list(range(len(idx))):
        missing = next(i for i in range(len(idx) + 1) if i not in idx)
        raise NetinvertError(
            f"{source}: {name} variables must be {side}_0..{side}_{idx[-1]}, but {side}_{missing} is not declared"
        )
    return len(idx)


def read_vnnlib(path: str | Path) -> Spec:
    """Read and parse a VNNLIB file (``.vnnlib``, or gzipped ``.vnnlib.gz`` as VNN-COMP ships them)."""
    p = Path(path)
    try:
        text = gzip.decompress(p.read_bytes()).decode() if p.suffix.lower() == ".gz" else p.read_text()
    except (OSError, EOFError) as exc:
        raise NetinvertError(f"cannot read VNNLIB file {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    return parse_vnnlib(text, str(p))
