"""Branch-and-bound on ReLU splits with batched beta-CROWN bounds.

A sub-domain fixes some unstable ReLUs active (``l := max(l, 0)``) or inactive (``u := min(u, 0)``).
Each batch of sub-domains has its output rows bounded with lower ReLU slopes and beta-CROWN split
multipliers optimized by a few Adam steps in float32, warm-started from the parent's; the bound that
decides is one float64 pass with the best slopes and multipliers found (any slopes in [0, 1] and
multipliers >= 0 are sound), never below the parent's bound. A sub-domain dies when every disjunct
has a row whose bound exceeds a small safety margin. The neuron to split next is chosen when a
sub-domain is bounded (BaBSR-style score: the unstable neuron whose relaxation intercept costs the
most in the weakest disjunct's bound), so popping a batch costs nothing. Sub-domains are expanded
depth first, which keeps the open list short. Every sub-domain's bound minimizer is tried on the
network as a free counterexample candidate. ``bab_many`` runs many independent problems (such as
the sign proofs of one layer's neurons) through the same batches, each with its own budget of
sub-domains, so that small searches do not each pay for tiny batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from netinvert.solvers.bounds import dense as lb
from netinvert.solvers.bounds.adam import Adam

WORK = torch.float32  # dtype of the slope / multiplier optimization (the deciding pass is float64)
SAFETY = 1e-7  # a row refutes a sub-domain only when its float64 bound exceeds this


@dataclass(frozen=True)
class Tuning:
    """How a search runs: sub-domains popped per batch, Adam steps and learning rates of the lower
    ReLU slopes and split multipliers per batch, branching candidates tried per split."""

    batch: int = 128
    steps: int = 8
    lr_alpha: float = 0.1
    lr_beta: float = 0.1
    candidates: int = 3


@dataclass
class BabOutcome:
    """``status``: 'none' (every sub-domain refuted), 'found' (``x``) or 'unknown' (``reason``).

    An 'unknown' outcome from the time limit keeps its open sub-domains: pass it back to ``bab``
    as ``resume`` to go on where it stopped.
    """

    status: str
    x: np.ndarray | None = None
    reason: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    search: Proofs | None = None


class _Domains:
    """A stack of sub-domains: named per-layer tensor lists, all with the same leading (domain) axis."""

    def __init__(self, fields: dict[str, list[torch.Tensor]]) -> None:
        self.f = fields

    def __len__(self) -> int:
        return int(self.f["val"][0].shape[0])

    def pop(self, n: int) -> _Domains:
        top = _Domains({k: [t[-n:] for t in v] for k, v in self.f.items()})
        self.f = {k: [t[:-n] for t in v] for k, v in self.f.items()}
        return top

    def select(self, idx: torch.Tensor) -> _Domains:
        return _Domains({k: [t[idx] for t in v] for k, v in self.f.items()})

    def push(self, other: _Domains) -> None:
        self.f = {k: [torch.cat([t, o]) for t, o in zip(v, other.f[k], strict=True)] for k, v in self.f.items()}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.f.values() for t in v)


def bab(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    root: lb.Bounds,
    a: np.ndarray,
    b: np.ndarray,
    owner: np.ndarray,
    is_point: Callable[[np.ndarray], np.ndarray],
    *,
    alphas: list[torch.Tensor] | None = None,
    time_limit: float = 60.0,
    tuning: Tuning = Tuning(),
    resume: BabOutcome | None = None,
) -> BabOutcome:
    """Refute the rows ``a y - b`` grouped into disjuncts by ``owner`` on every sub-domain, or find a point.

    ``is_point(xs)`` says which candidate inputs (rows) satisfy the target on the real network;
    ``alphas`` (1, m, n_j) are the root's optimized slopes for the rows; ``resume`` continues an
    earlier call on the same problem that ran out of time (``time_limit`` is then the extra time).
    """
    out = bab_many(
        layers,
        lo,
        hi,
        root,
        a[None],
        b[None],
        owner,
        lambda xs, _: is_point(xs),
        budget=np.array([np.inf]),
        alphas=alphas,
        time_limit=time_limit,
        tuning=tuning,
        resume=resume.search if resume is not None else None,
    )
    stats = {
        "domains": int(out.domains[0]),
        "refuted": int(out.refuted[0]),
        "max_open": out.max_open,
        "stuck": int(out.stuck[0]),
        "max_open_mb": out.max_open_mb,
        "seconds": out.seconds,
    }
    status = out.status(0)
    if status == "found":
        return BabOutcome("found", out.found[0], stats=stats)
    if status == "none":
        return BabOutcome("none", stats=stats)
    if out.stuck[0]:
        return BabOutcome("unknown", reason="sub-domains with every ReLU fixed stay undecided", stats=stats)
    stats["open"], stats["open_lowest_bound"] = out.open_count(0), out.lowest_bound(0)
    return BabOutcome("unknown", reason="time limit in branch-and-bound", stats=stats, search=out)


@dataclass
class Proofs:
    """Where ``bab_many`` stopped: per problem, sub-domains bounded and refuted, sub-domains left
    undecided with every ReLU fixed (``stuck``) and the point found (or None); the open sub-domains
    of every problem (pass back as ``resume``), the most held at once, and the seconds spent.
    A problem is refuted ('none') only when no sub-domain of it is open, stuck or forgotten."""

    open_domains: _Domains
    domains: list[int]
    refuted: list[int]
    stuck: list[int]
    found: list[np.ndarray | None]
    max_open: int = 1
    max_open_mb: float = 0.0
    seconds: float = 0.0
    quality: torch.Tensor | None = None  # per open sub-domain: its weakest disjunct's best row bound
    dropped: set[int] = field(default_factory=set)  # problems whose open sub-domains were forgotten

    def _mine(self, p: int) -> torch.Tensor:
        return self.open_domains.f["pid"][0] == p

    def open_count(self, p: int) -> int:
        return int(self._mine(p).sum())

    def lowest_bound(self, p: int) -> float:
        """A lower bound of problem ``p``'s rows that holds on the whole box (every other leaf is
        refuted): -inf when part of its search is stuck or forgotten."""
        mine = self._mine(p)
        if self.stuck[p] or p in self.dropped:
            return float("-inf")
        return float(self.quality[mine].min()) if bool(mine.any()) else float("inf")

    def status(self, p: int) -> str:
        """'found', 'none' (every sub-domain refuted) or 'open' (sub-domains left, or some stuck)."""
        if self.found[p] is not None:
            return "found"
        return "open" if self.stuck[p] or p in self.dropped or self.open_count(p) else "none"

    def drop(self, problems: list[int]) -> None:
        """Forget the open sub-domains of ``problems`` (to free memory): their bounds stay as reached."""
        self.dropped.update(problems)
        keep = ~torch.isin(self.open_domains.f["pid"][0], torch.as_tensor(problems, dtype=torch.long))
        self.quality = self.quality[keep]
        self.open_domains = self.open_domains.select(keep.nonzero().flatten())

    def nbytes(self, p: int) -> int:
        """Bytes held by problem ``p``'s open sub-domains."""
        return self.open_count(p) * self.open_domains.nbytes() // max(len(self.open_domains), 1)


def bab_many(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    root: lb.Bounds,
    a: np.ndarray,
    b: np.ndarray,
    owner: np.ndarray,
    is_point: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    budget: np.ndarray,
    alphas: list[torch.Tensor] | None = None,
    time_limit: float = 60.0,
    tuning: Tuning = Tuning(),
    resume: Proofs | None = None,
) -> Proofs:
    """Branch-and-bound on ``P`` independent problems at once, batched together: problem ``p``
    refutes the rows ``a[p] y - b[p]`` (grouped into disjuncts by ``owner``) on every sub-domain.

    Many small searches share each batch, so none pays the cost of tiny batches alone. Problem
    ``p`` bounds at most ``budget[p]`` more sub-domains in this call; the rest of its search waits
    in the outcome's open sub-domains for a ``resume`` (as does all of it at ``time_limit``).
    ``is_point(xs, problems)`` says which candidate inputs satisfy their problem's target.
    """
    t0 = time.perf_counter()
    nk = len(layers) - 1
    n_prob = a.shape[0]
    masks = [torch.as_tensor(owner == d) for d in range(int(owner.max()) + 1)]
    spec = _Spec(layers, a, b, lo, hi)
    if resume is not None:
        proofs, stack = resume, resume.open_domains
        t0 -= resume.seconds
        time_limit += resume.seconds
    else:
        stack = _root(spec, root, alphas, masks, tuning.candidates, n_prob)
        proofs = Proofs(stack, [0] * n_prob, [0] * n_prob, [0] * n_prob, [None] * n_prob)
    spent = torch.zeros(n_prob, dtype=torch.long)  # sub-domains bounded per problem in this call
    cap = torch.as_tensor(np.minimum(budget, 2**62), dtype=torch.long)
    parked: list[_Domains] = []  # sub-domains of problems past their budget
    found = torch.as_tensor([x is not None for x in proofs.found])
    while len(stack) and time.perf_counter() - t0 <= time_limit:
        cur = stack.pop(min(tuning.batch, len(stack)))
        if bool(found.any()):
            cur = cur.select((~found[cur.f["pid"][0]]).nonzero().flatten())
        over = spent[cur.f["pid"][0]] >= cap[cur.f["pid"][0]]
        if bool(over.any()):  # their problems spent this call's budget: set aside unexpanded
            parked.append(cur.select(over.nonzero().flatten()))
            cur = cur.select((~over).nonzero().flatten())
        layer, idx, ok = cur.f["split"]
        if not bool(ok.all()):
            for j in (~ok).nonzero().flatten().tolist():  # every ReLU fixed: the sub-domain is one LP
                p = int(cur.f["pid"][0][j])
                if proofs.stuck[p] or found[p]:  # its verdict is settled: 'open' or 'found'
                    continue
                pattern = [(l[j] >= 0).numpy() for l in cur.f["l"]]
                x, refuted = _fixed_pattern(layers, lo, hi, pattern, a[p], b[p], owner)
                if x is not None and bool(is_point(x[None], np.array([p]))[0]):
                    proofs.found[p], found[p] = x, True
                proofs.stuck[p] += int(not refuted and not found[p])
            cur = cur.select((ok & ~found[cur.f["pid"][0]]).nonzero().flatten())
            layer, idx, ok = cur.f["split"]
        if not len(cur):
            continue
        n = len(cur)
        kids = _Domains({k: [torch.cat([t, t]) for t in v] for k, v in cur.f.items() if k != "split"})
        lay2, idx2 = torch.cat([layer, layer]), torch.cat([idx, idx])
        for k in range(nk):
            sel = (lay2 == k).nonzero().flatten()
            act, ina = sel[sel < n], sel[sel >= n]
            kids.f["l"][k][act, idx2[act]] = kids.f["l"][k][act, idx2[act]].clamp(min=0.0)
            kids.f["u"][k][ina, idx2[ina]] = kids.f["u"][k][ina, idx2[ina]].clamp(max=0.0)
            kids.f["s"][k][act, idx2[act]] = 1.0
            kids.f["s"][k][ina, idx2[ina]] = -1.0
        empty = torch.zeros(2 * n, dtype=torch.bool)
        for l, u in zip(kids.f["l"], kids.f["u"], strict=True):
            empty |= (l > u).any(dim=1)
        pid = kids.f["pid"][0]
        bounds = lb.Bounds(kids.f["l"], kids.f["u"])
        al, be = spec.optimize(bounds, pid, kids.f["s"], kids.f["al"], kids.f["be"], tuning)
        coeffs = {}
        with torch.no_grad():
            val = torch.maximum(spec.sound(bounds, pid, kids.f["s"], al, be, coeffs), kids.f["val"][0])
        kids.f["al"], kids.f["be"], kids.f["val"] = al, be, [val]
        counts = torch.bincount(pid, minlength=n_prob)
        spent += counts
        refuted = torch.stack([(val[:, msk] > SAFETY).any(dim=1) for msk in masks], dim=1).all(dim=1) | empty
        alive = (~refuted).nonzero().flatten()
        for p in counts.nonzero().flatten().tolist():
            proofs.domains[p] += int(counts[p])
        for p in pid[refuted].tolist():
            proofs.refuted[p] += 1
        if len(alive):
            worst = _weakest_row(val[alive], masks)
            lam_in = coeffs[-1][alive, worst]
            xs = torch.where(lam_in > 0, spec.lo64, spec.hi64).numpy()
            hit = is_point(xs, pid[alive].numpy())
            for j in np.flatnonzero(hit).tolist():
                p = int(pid[alive[j]])
                if proofs.found[p] is None:
                    proofs.found[p], found[p] = xs[j], True
            keep = ~found[pid[alive]]
            alive, worst = alive[keep], worst[keep]
        if len(alive):
            nxt = kids.select(alive)
            sub = {k: v[alive] for k, v in coeffs.items()}
            with torch.no_grad():
                nxt.f["split"] = _choose(spec, nxt, sub, worst, masks, tuning.candidates)
            stack.push(nxt)
        proofs.max_open = max(proofs.max_open, len(stack))
        proofs.max_open_mb = max(proofs.max_open_mb, stack.nbytes() / 2**20)
    for extra in parked:
        stack.push(extra)
    if bool(found.any()):
        stack = stack.select((~found[stack.f["pid"][0]]).nonzero().flatten())
    vals = stack.f["val"][0]
    proofs.quality = torch.stack([vals[:, msk].max(dim=1).values for msk in masks], dim=1).min(dim=1).values
    proofs.open_domains = stack
    proofs.seconds = time.perf_counter() - t0
    return proofs


def _root(
    spec: _Spec,
    root: lb.Bounds,
    alphas: list[torch.Tensor] | None,
    masks: list[torch.Tensor],
    candidates: int,
    n_prob: int,
) -> _Domains:
    """The stack of the ``n_prob`` problems' roots, bounded, with their first splits chosen."""
    m = spec.a.shape[1]
    lows = [l.expand(n_prob, -1).clone() for l in root.lower]
    ups = [u.expand(n_prob, -1).clone() for u in root.upper]
    bounds = lb.Bounds(lows, ups)
    if alphas is None:
        alphas = [x.unsqueeze(1).expand(-1, m, -1) for x in lb.relaxation(bounds).lower]
    al0 = [x.to(WORK).expand(n_prob, m, -1).clone() for x in alphas]
    be0 = [torch.zeros(n_prob, m, l.shape[1], dtype=WORK) for l in lows]
    signs0 = [torch.zeros_like(l) for l in lows]
    pid = torch.arange(n_prob)
    coeffs: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        val0 = spec.sound(bounds, pid, signs0, al0, be0, coeffs)
    stack = _Domains({"l": lows, "u": ups, "s": signs0, "al": al0, "be": be0, "val": [val0], "pid": [pid]})
    with torch.no_grad():
        stack.f["split"] = _choose(spec, stack, coeffs, _weakest_row(val0, masks), masks, candidates)
    return stack


class _Spec:
    """Each problem's output rows ``a[p] y - b[p]`` over the input box, in the working dtype and in float64."""

    def __init__(
        self,
        layers: list[tuple[torch.Tensor, torch.Tensor]],
        a: np.ndarray,
        b: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
    ) -> None:
        self.layers64 = [(w.to(lb.DT), c.to(lb.DT)) for w, c in layers]
        self.layers = [(w.to(WORK), c.to(WORK)) for w, c in layers]
        self.a64, self.b64 = torch.as_tensor(a, dtype=lb.DT), torch.as_tensor(b, dtype=lb.DT)
        self.a, self.b = self.a64.to(WORK), self.b64.to(WORK)
        self.lo64, self.hi64 = torch.as_tensor(lo, dtype=lb.DT)[None], torch.as_tensor(hi, dtype=lb.DT)[None]
        self.lo, self.hi = self.lo64.to(WORK), self.hi64.to(WORK)

    def batch(
        self, pid: torch.Tensor, wide: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``lam``, ``c``, ``lo``, ``hi`` of ``backsub`` for sub-domains of problems ``pid`` (float64 when ``wide``)."""
        a, b, lo, hi = (self.a64, self.b64, self.lo64, self.hi64) if wide else (self.a, self.b, self.lo, self.hi)
        return a[pid], -b[pid], lo.expand(len(pid), -1), hi.expand(len(pid), -1)

    def sound(
        self,
        bounds: lb.Bounds,
        pid: torch.Tensor,
        signs: list[torch.Tensor],
        al: list[torch.Tensor],
        be: list[torch.Tensor],
        coeffs: dict[int, torch.Tensor],
    ) -> torch.Tensor:
        """Float64 lower bounds of the rows on each sub-domain (B, m) with the given slopes and multipliers."""
        return lb.backsub(
            self.layers64,
            bounds,
            len(self.layers64) - 1,
            *self.batch(pid, wide=True),
            [x.to(lb.DT).clamp(0.0, 1.0) for x in al],
            coeffs,
            [x.to(lb.DT).clamp(min=0.0) for x in be],
            signs,
        )

    def optimize(
        self,
        bounds: lb.Bounds,
        pid: torch.Tensor,
        signs: list[torch.Tensor],
        al0: list[torch.Tensor],
        be0: list[torch.Tensor],
        tuning: Tuning,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The slopes and split multipliers with the best summed row bound per sub-domain over ``tuning.steps`` Adam steps."""
        bsz = bounds.lower[0].shape[0]
        b32 = lb.Bounds([l.to(WORK) for l in bounds.lower], [u.to(WORK) for u in bounds.upper])
        s32 = [s.to(WORK) for s in signs]
        al = [x.clone().requires_grad_(True) for x in al0]
        be = [x.clone().requires_grad_(True) for x in be0]
        best_al = [x.clone() for x in al0]
        best_be = [x.clone() for x in be0]
        best = torch.full((bsz,), -torch.inf, dtype=WORK)
        lam, c, lo, hi = self.batch(pid)
        rel = lb.relaxation(b32)
        opts = [Adam(al, lr=tuning.lr_alpha), Adam(be, lr=tuning.lr_beta)]
        for _ in range(tuning.steps):
            val = lb.backsub(
                self.layers, b32, len(self.layers) - 1, lam, c, lo, hi, al, betas=be, signs=s32, relaxed=rel
            )
            with torch.no_grad():
                score = val.clamp(max=0.0).sum(dim=1)  # rows already above zero need nothing more
                better = score > best
                best = torch.where(better, score, best)
                for dst, src in zip(best_al + best_be, al + be, strict=True):
                    dst[better] = src.detach()[better]
            for opt in opts:
                opt.zero_grad()
            (-val.clamp(max=0.0).sum()).backward()
            for opt in opts:
                opt.step()
            with torch.no_grad():
                for x in al:
                    x.clamp_(0.0, 1.0)
                for x in be:
                    x.clamp_(min=0.0)
        return best_al, best_be


def _fixed_pattern(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    lo: np.ndarray,
    hi: np.ndarray,
    pattern: list[np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    owner: np.ndarray,
) -> tuple[np.ndarray | None, bool]:
    """Solve the sub-domain where every ReLU follows ``pattern`` exactly: one LP per disjunct.

    Returns the best point of a disjunct that the LP cannot refute (or None) and whether every
    disjunct is refuted (no point of the region has all its rows below zero).
    """
    from scipy.optimize import linprog

    m_x, m_c = np.eye(lo.size), np.zeros(lo.size)
    rows, rhs = [], []
    for (w_t, b_t), on in zip(layers[:-1], pattern, strict=True):
        w, bias = w_t.numpy(), b_t.numpy()
        z_x, z_c = w @ m_x, w @ m_c + bias
        sign = np.where(on, -1.0, 1.0)  # active: -z <= 0, inactive: z <= 0
        rows.append(sign[:, None] * z_x)
        rhs.append(-sign * z_c)
        m_x, m_c = on[:, None] * z_x, on * z_c
    y_x, y_c = layers[-1][0].numpy() @ m_x, layers[-1][0].numpy() @ m_c + layers[-1][1].numpy()
    n = lo.size
    best_x, best_t = None, np.inf
    for d in range(int(owner.max()) + 1):
        ad, bd = a[owner == d], b[owner == d]
        a_ub = np.vstack(
            [np.hstack([r, np.zeros((r.shape[0], 1))]) for r in rows] + [np.hstack([ad @ y_x, -np.ones((len(bd), 1))])]
        )
        b_ub = np.concatenate([*rhs, bd - ad @ y_c])
        res = linprog(np.r_[np.zeros(n), 1.0], A_ub=a_ub, b_ub=b_ub, bounds=[*zip(lo, hi, strict=True), (None, None)])
        if res.status == 0 and res.fun < best_t:
            best_x, best_t = res.x[:n], float(res.fun)
        elif res.status not in (0, 2):  # neither solved nor proven infeasible
            best_t = -np.inf
    return best_x, bool(best_t > 1e-7)


def _weakest_row(val: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """Per domain: the best row of the open disjunct whose best row bound is lowest."""
    best_rows, best_vals = [], []
    for m in masks:
        rows = m.nonzero().flatten()
        v, i = val[:, rows].max(dim=1)
        best_rows.append(rows[i])
        best_vals.append(torch.where(v > 0, torch.full_like(v, float("inf")), v))
    pick = torch.stack(best_vals, dim=1).argmin(dim=1)
    return torch.stack(best_rows, dim=1)[torch.arange(val.shape[0]), pick]


def _choose(
    spec: _Spec,
    doms: _Domains,
    coeffs: dict[int, torch.Tensor],
    row: torch.Tensor,
    masks: list[torch.Tensor],
    candidates: int,
) -> list[torch.Tensor]:
    """Per domain: the (layer, neuron) to split next, and whether any neuron is unstable.

    The ``candidates`` unstable neurons with the largest BaBSR-style score (relaxation intercept
    times the weakest row's coefficient) are each tried: both children are bounded once with the
    domain's slopes and multipliers, and the split whose children's summed remaining gap is
    smallest wins (filtered smart branching).
    """
    lows, ups = doms.f["l"], doms.f["u"]
    bsz = row.shape[0]
    scores, layer_id, neuron_id = [], [], []
    for k, (l, u) in enumerate(zip(lows, ups, strict=True)):
        unstable = (l < 0) & (u > 0)
        lam = coeffs[k][torch.arange(bsz), row]
        intercept = torch.where(unstable, -l * u / (u - l).clamp_min(1e-30), torch.zeros_like(l))
        score = (-lam).clamp(min=0) * intercept + 1e-6 * intercept
        scores.append(torch.where(unstable, score, torch.full_like(score, -1.0)))
        layer_id.append(torch.full((l.shape[1],), k, dtype=torch.long))
        neuron_id.append(torch.arange(l.shape[1]))
    top_s, top_i = torch.cat(scores, dim=1).topk(min(candidates, sum(x.shape[1] for x in lows)), dim=1)
    layer, idx = torch.cat(layer_id)[top_i], torch.cat(neuron_id)[top_i]  # (B, c)
    ok = top_s[:, 0] >= 0
    kc = top_i.shape[1]
    if kc == 1:
        return [layer[:, 0], idx[:, 0], ok]
    reps = 2 * kc  # copy r = side * kc + c; row r * bsz + j is domain j
    big_l = [l.to(WORK).repeat(reps, 1) for l in lows]
    big_u = [u.to(WORK).repeat(reps, 1) for u in ups]
    flat_layer, flat_idx = layer.T.reshape(-1), idx.T.reshape(-1)  # (kc * B), candidate-major
    for k in range(len(lows)):
        sel = (flat_layer == k).nonzero().flatten()
        act, ina = sel, sel + kc * bsz
        big_l[k][act, flat_idx[sel]] = big_l[k][act, flat_idx[sel]].clamp(min=0.0)
        big_u[k][ina, flat_idx[sel]] = big_u[k][ina, flat_idx[sel]].clamp(max=0.0)
    val = lb.backsub(
        spec.layers,
        lb.Bounds(big_l, big_u),
        len(spec.layers) - 1,
        *spec.batch(doms.f["pid"][0].repeat(reps)),
        [x.repeat(reps, 1, 1) for x in doms.f["al"]],
        betas=[x.repeat(reps, 1, 1) for x in doms.f["be"]],
        signs=[x.to(WORK).repeat(reps, 1) for x in doms.f["s"]],
    )
    quality = torch.stack([val[:, msk].max(dim=1).values for msk in masks], dim=1).min(dim=1).values
    gap = quality.clamp(max=0.0).reshape(2, kc, bsz).sum(dim=0).T  # (B, c)
    gap = torch.where(top_s >= 0, gap, torch.full_like(gap, -torch.inf))
    pick = gap.argmax(dim=1)
    rows = torch.arange(bsz)
    return [layer[rows, pick], idx[rows, pick], ok]
