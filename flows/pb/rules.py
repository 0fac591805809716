"""Tally rules for participatory budgeting: greedy, Method of Equal Shares (MES), MES with
"Add1" completion, and sequential Phragmén.

Outcomes are identical to pabutools 1.2.3 (the reference implementation) with the same
tie-breaking; see docs/pb.md. Satisfaction: cost-satisfaction (`Cost_Sat`) for approval ballots,
points (`Additive_Cardinal_Sat`) for cumulative/scoring ballots, Borda (`Additive_Borda_Sat`,
`len(ballot) - position - 1`) for ordinal ballots.

Arithmetic
----------
Every decision (which project is funded, how much each voter pays, which projects tie) is
taken in exact rational arithmetic (`fractions.Fraction`), so it cannot differ from pabutools,
which uses exact `gmpy2.mpq`. Floats (numpy float64) are used only to *find* candidates fast:

* MES: each project's price `rho` is estimated in floats together with a rigorous relative
  error bound `delta` (budgets are correctly rounded from the exact values, a sum of N
  non-negative float terms has relative error <= N*u, the subtraction in the break-point
  formula amplifies it by at most W_total/W_uncapped; we use 16x that bound). Every project
  whose interval `[rho(1-delta), rho(1+delta)]` reaches the smallest upper end is then priced
  exactly, and the exact minimum, with exact ties broken by the tie-breaking key, wins.
  A project whose float estimate is too close to call (affordability or break point) is
  always priced exactly.
* Exact pricing itself is float-guided: floats propose which supporters pay all they have;
  the exact price implied by that set is accepted only if exact comparisons (or float ones
  that are rigorous: correctly rounded values more than 1e-9 apart relatively) show that the
  set is consistent with it, which makes it the unique root of the payment equation; else the
  plain exact scan decides. Likewise "pays all it has or the price" is decided by floats only
  where they are rigorously apart, exactly otherwise. Event distances (below) may be replaced
  by smaller floats (a quotient of integers, correctly rounded, times 1 - 1e-12): a smaller
  distance only makes the search look at more budgets, never fewer.
* Voters with identical ballots always hold identical budgets, so budgets are kept per
  *class* of groups sharing one exact value; exact pricing aggregates the supporters of a
  project per class, so its cost is the number of classes, not of voters.
* Add1 completion: instead of re-running MES for every +1 step of the per-voter budget, the
  run at budget x also yields a lower bound on the next x at which the sequence of funded
  projects can change (below); the runs in between would give the same outcome and are
  skipped. That bound is derived from exact winners' data and from float margins that are
  made conservative by their error bounds; and as a last safeguard the run just before the
  first infeasible budget is recomputed from scratch and must equal the outcome kept.
* Add1 runs are incremental: every round records its state at its start and the distance in x
  to its own first event. The run at the next budget x' keeps every round before the first one
  whose event distance is used up: those rounds have the same winner and are on the same
  affine piece at x', so their budgets (class values, exact affine functions of x) and
  payments are evaluated at x' instead of recomputed, and MES continues from that round.
  (Payments of kept rounds are only evaluated when the result is built.)

Why the Add1 skip is sound: with the sequence of winners fixed, every voter's budget and every
winner's price are piecewise-affine in the per-voter budget x, with kinks only where a
supporter of a winner switches between "pays the price" and "pays everything left" (exact
events on the winner's classes). Between kinks, for every other project p the margin
M_p(x) = cost_p - sum_i w_i min(b_i(x), rho_w(x) u_ip) is convex (a constant minus a sum of
minima of affine functions), so its tangent at x bounds it from below: p cannot become
cheaper than the winner before the tangent reaches zero. The same holds at the last round with
rho = infinity (a project becoming affordable). The next x to evaluate is the earliest of these
events; if no event happens before x', the winners, hence the outcome, are the same at x'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import numpy.typing as npt

from flows.pb.model import Election, TieBreak, TieKey, tie_key

Rule = Literal["greedy", "mes", "mes-add1", "phragmen"]
RULES: tuple[Rule, ...] = ("greedy", "mes", "mes-add1", "phragmen")
APPROVAL_ONLY: tuple[Rule, ...] = ("mes-add1", "phragmen")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_U = 2.0**-53  # unit round-off of float64
_INF = math.inf


class RuleNotApplicable(ValueError):
    """The rule does not apply to this kind of ballot."""


@dataclass(frozen=True, slots=True)
class Payment:
    """Voters in `groups` each paid `amount` towards a funded project (MES, Phragmén)."""

    amount: Fraction
    groups: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Funded:
    project: int
    step: int
    supporters: int
    payments: tuple[Payment, ...] = ()
    price: Fraction | None = None


UnfundedReason = Literal["no-supporters", "not-enough-money", "no-longer-fit", "count-stopped"]


@dataclass(frozen=True, slots=True)
class Unfunded:
    project: int
    reason: UnfundedReason
    supporters: int
    money_left: Fraction | None = None
    budget_left: Fraction | None = None


@dataclass(frozen=True, slots=True)
class TallyResult:
    rule: Rule
    tie_break: TieBreak
    selected: tuple[int, ...]  # in the order the projects were funded
    cost: Fraction
    budget: Fraction
    voters: int
    projects: int
    funded: tuple[Funded, ...] = ()
    unfunded: tuple[Unfunded, ...] = ()
    voter_budget: Fraction | None = None  # MES: each voter's starting budget
    add1_runs: int = 0  # mes-add1: how many MES runs were needed


def tally(election: Election, rule: Rule, tie_break: TieBreak = "cost-votes") -> TallyResult:
    """Run `rule` on `election`; raise `RuleNotApplicable` for e.g. Phragmén on ordinal votes."""
    if rule in APPROVAL_ONLY and election.vote_type != "approval":
        raise RuleNotApplicable(
            f"rule {rule} needs approval ballots; this file has {election.vote_type} ballots"
        )
    key = tie_key(election, tie_break)
    if rule == "greedy":
        return _greedy(election, key, tie_break)
    if rule == "phragmen":
        return _phragmen(election, key, tie_break)
    prep = _Prepared(election)
    n = election.num_voters
    if rule == "mes":
        run = _MesRun(prep, election.budget / n if n else Fraction(0), key, events=False)
        return _mes_result(election, prep, run, "mes", tie_break, 0)
    return _mes_add1(election, prep, key, tie_break)


# --------------------------------------------------------------------------------------------
# greedy


def _supporters(election: Election) -> list[int]:
    return election.votes()


def _greedy(election: Election, key: TieKey, tie_break: TieBreak) -> TallyResult:
    m = len(election.projects)
    total = [Fraction(0)] * m
    for g, utils in zip(election.groups, election.utilities(), strict=True):
        for j, u in utils.items():
            total[j] += u * g.weight
    votes = _supporters(election)

    def density(j: int) -> Fraction | float:
        cost = election.projects[j].cost
        sat = total[j] * cost if election.vote_type == "approval" else total[j]
        if sat > 0:
            return sat / cost if cost > 0 else _INF
        return Fraction(0)

    dens = {j: density(j) for j in range(m)}
    order = sorted(range(m), key=lambda j: (-dens[j], key(j)))
    left = election.budget
    selected: list[int] = []
    funded: list[Funded] = []
    unfunded: list[Unfunded] = []
    for j in order:
        cost = election.projects[j].cost
        if cost <= left:
            left -= cost
            selected.append(j)
            funded.append(Funded(j, len(selected), votes[j]))
        else:
            unfunded.append(Unfunded(j, "no-longer-fit", votes[j], budget_left=left))
    return TallyResult(
        "greedy",
        tie_break,
        tuple(selected),
        election.budget - left,
        election.budget,
        election.num_voters,
        m,
        tuple(funded),
        tuple(unfunded),
    )


# --------------------------------------------------------------------------------------------
# sequential Phragmén (approval only), exact loads kept per class of voters sharing a load


def _phragmen(election: Election, key: TieKey, tie_break: TieBreak) -> TallyResult:
    m = len(election.projects)
    G = len(election.groups)
    weights = np.array([g.weight for g in election.groups], dtype=np.float64)
    sup = _supporter_lists(election)
    votes = _supporters(election)
    load_cls: IntArray = np.zeros(G, dtype=np.int64)
    loads: list[Fraction] = [Fraction(0)]
    budget = election.budget
    remaining = [j for j in range(m) if election.projects[j].cost <= budget]
    spent = Fraction(0)
    selected: list[int] = []
    funded: list[Funded] = []
    stop_project: int | None = None
    while remaining:
        best: Fraction | float | None = None
        tied: list[int] = []
        for j in remaining:
            cost = election.projects[j].cost
            if votes[j] == 0:
                new: Fraction | float = _INF
            else:
                s = sup[j]
                per_class = np.bincount(load_cls[s], weights=weights[s]).tolist()
                total = sum(
                    (int(wc) * loads[c] for c, wc in enumerate(per_class) if wc), Fraction(0)
                )
                new = (total + cost) / votes[j]
            if best is None or new < best:
                best, tied = new, [j]
            elif new == best:
                tied.append(j)
        assert best is not None
        if any(spent + election.projects[j].cost > budget for j in tied):
            stop_project = min(tied, key=key)
            break
        win = min(tied, key=key)
        s = sup[win]
        payments: list[Payment] = []
        if isinstance(best, Fraction):
            old = load_cls[s]
            for c in np.unique(old).tolist():
                groups = s[old == c]
                payments.append(Payment(best - loads[c], tuple(groups.tolist())))
            loads.append(best)
            load_cls[s] = len(loads) - 1
        spent += election.projects[win].cost
        selected.append(win)
        remaining.remove(win)
        price = best if isinstance(best, Fraction) else None
        funded.append(Funded(win, len(selected), votes[win], tuple(payments), price))
    unfunded = []
    for j in range(m):
        if j in selected:
            continue
        left = budget - spent
        if election.projects[j].cost > left:
            unfunded.append(Unfunded(j, "no-longer-fit", votes[j], budget_left=left))
        else:
            unfunded.append(Unfunded(j, "count-stopped", votes[j], budget_left=left))
    _ = stop_project
    return TallyResult(
        "phragmen",
        tie_break,
        tuple(selected),
        spent,
        budget,
        election.num_voters,
        m,
        tuple(funded),
        tuple(unfunded),
    )


def _supporter_lists(election: Election) -> list[IntArray]:
    lists: list[list[int]] = [[] for _ in election.projects]
    for gi, g in enumerate(election.groups):
        for j in g.projects:
            lists[j].append(gi)
    return [np.array(x, dtype=np.int64) for x in lists]


# --------------------------------------------------------------------------------------------
# Method of Equal Shares


class _Prepared:
    """Numeric arrays for MES: per project, the supporting groups and their integer utilities.

    A supporter of group g for project p has satisfaction `scale[p] * util[p][k]`. Approval:
    scale = cost, util = 1 (cost-satisfaction). Cardinal/ordinal: the points or Borda scores,
    multiplied by one common integer so that they are whole numbers (scaling every utility by
    the same factor does not change any MES decision), scale = 1.
    """

    def __init__(self, election: Election) -> None:
        self.election = election
        m = len(election.projects)
        self.m = m
        self.costs = [p.cost for p in election.projects]
        self.costs_f = np.array([float(c) for c in self.costs], dtype=np.float64)
        self.weights = np.array([g.weight for g in election.groups], dtype=np.int64)
        approval = election.vote_type == "approval"
        if approval:
            # every approved project has utility 1: build the supporter lists in numpy
            lens = np.array([len(g.projects) for g in election.groups], dtype=np.int64)
            flat_p = np.fromiter(
                (j for g in election.groups for j in g.projects),
                dtype=np.int64,
                count=int(lens.sum()),
            )
            flat_g = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
            order = np.argsort(flat_p, kind="stable")  # stable: groups stay ascending
            bounds = np.searchsorted(flat_p[order], np.arange(m + 1))
            gs = flat_g[order]
            self.sup: list[IntArray] = [gs[bounds[j] : bounds[j + 1]] for j in range(m)]
            self.util: list[IntArray] = [np.ones(len(x), dtype=np.int64) for x in self.sup]
        else:
            utils = election.utilities()
            lcm = 1
            for u in utils:
                for x in u.values():
                    lcm = lcm * x.denominator // math.gcd(lcm, x.denominator)
            sup: list[list[int]] = [[] for _ in range(m)]
            val: list[list[int]] = [[] for _ in range(m)]
            for gi, u in enumerate(utils):
                for j, x in u.items():
                    if x > 0:
                        sup[j].append(gi)
                        val[j].append(int(x * lcm))
            self.sup = [np.array(s, dtype=np.int64) for s in sup]
            self.util = [np.array(v, dtype=np.int64) for v in val]
        self.util_f: list[FloatArray] = [v.astype(np.float64) for v in self.util]
        self.wsup: list[IntArray] = [self.weights[s] for s in self.sup]
        self.wsup_f: list[FloatArray] = [w.astype(np.float64) for w in self.wsup]
        self.wtot: list[int] = [
            int((w * v).sum()) for w, v in zip(self.wsup, self.util, strict=True)
        ]
        self.uniform = [bool(len(v) == 0 or (v == v[0]).all()) for v in self.util]
        self.vmax = max((int(v.max()) for v in self.util if len(v)), default=1)
        self.scale: list[Fraction] = [(c if approval else Fraction(1)) for c in self.costs]
        self.scale_f = np.array([float(s) for s in self.scale], dtype=np.float64)
        # flattened (project, supporter) arrays for the Add1 event bounds
        self.flat_proj = np.concatenate(
            [np.full(len(s), j, dtype=np.int64) for j, s in enumerate(self.sup)]
            + [np.zeros(0, dtype=np.int64)]
        )
        self.flat_sup = np.concatenate(self.sup + [np.zeros(0, dtype=np.int64)])
        self.flat_v = np.concatenate(self.util_f + [np.zeros(0, dtype=np.float64)])
        self.flat_w = np.concatenate(self.wsup_f + [np.zeros(0, dtype=np.float64)])
        self.nsup = np.array([len(s) for s in self.sup], dtype=np.float64)
        self.nsup_i = np.array([len(s) for s in self.sup], dtype=np.int64)
        # projects MES has to price: supported and not free
        self.priced = [p for p in range(m) if len(self.sup[p]) and self.costs[p] != 0]


class _Classes:
    """Exact budget values (and, for Add1, their slopes in x) shared by groups of voters."""

    def __init__(self, value: Fraction, slope: Fraction) -> None:
        self.val: list[Fraction] = []
        self.slope: list[Fraction] = []
        self.f: FloatArray = np.empty(256, dtype=np.float64)
        self.fs: FloatArray = np.empty(256, dtype=np.float64)
        self.lookup: dict[tuple[int, int, int, int], int] = {}
        self.get(value, slope)

    def get(self, value: Fraction, slope: Fraction) -> int:
        # keyed by integers: hashing a Fraction is far slower than hashing ints
        k = (value.numerator, value.denominator, slope.numerator, slope.denominator)
        found = self.lookup.get(k)
        if found is not None:
            return found
        i = len(self.val)
        if i == len(self.f):
            self.f = np.concatenate([self.f, np.empty(i, dtype=np.float64)])
            self.fs = np.concatenate([self.fs, np.empty(i, dtype=np.float64)])
        self.val.append(value)
        self.slope.append(slope)
        # int / int is correctly rounded, exactly as float(Fraction), without its overhead
        self.f[i] = value.numerator / value.denominator
        self.fs[i] = slope.numerator / slope.denominator
        self.lookup[k] = i
        return i

    def shifted(self, n: int, dx: Fraction) -> _Classes:
        """The first `n` classes, evaluated `dx` further along x (slopes unchanged)."""
        out = _Classes.__new__(_Classes)
        out.slope = self.slope[:n]
        out.val = (
            [v + s * dx for v, s in zip(self.val[:n], out.slope, strict=True)]
            if dx
            else (self.val[:n])
        )
        size = max(256, len(self.f))
        out.f = np.empty(size, dtype=np.float64)
        out.fs = self.fs.copy()
        out.f[:n] = [float(v) for v in out.val]
        out.lookup = {
            (v.numerator, v.denominator, s.numerator, s.denominator): i
            for i, (v, s) in enumerate(zip(out.val, out.slope, strict=True))
        }
        return out


@dataclass(slots=True)
class _Round:
    project: int
    t: Fraction  # price per unit of (integer) utility
    groups: IntArray  # supporting groups
    paid: list[Fraction]  # per pair
    inv: IntArray  # group -> pair
    at: Fraction  # the per-voter budget x at which t and paid were computed
    dt: Fraction = Fraction(0)  # slope of t in x (Add1)
    paid_slope: list[Fraction] | None = None  # slope of `paid` in x (Add1)

    def at_x(self, x: Fraction) -> _Round:
        """This round evaluated at x (Add1 reuses rounds on the same affine piece)."""
        dx = x - self.at
        if not dx or self.paid_slope is None:
            return self
        paid = [a + s * dx for a, s in zip(self.paid, self.paid_slope, strict=True)]
        t = self.t + self.dt * dx
        return _Round(self.project, t, self.groups, paid, self.inv, x, self.dt, self.paid_slope)


@dataclass(frozen=True, slots=True)
class _Snap:
    """State at the start of a round: funded so far, class of every group, classes in use."""

    nsel: int
    cls: IntArray
    ncls: int


@dataclass(slots=True)
class _Pairs:
    """A project's supporters aggregated by (budget class, utility)."""

    cls: list[int]
    util: list[int]
    weight: list[int]
    inv: IntArray


class _MesRun:
    """One run of MES at per-voter budget `b0`. With `events`, also the Add1 skip bound."""

    def __init__(self, prep: _Prepared, b0: Fraction, key: TieKey, *, events: bool) -> None:
        self.prep = prep
        self.key = key
        self.events = events
        self.b0 = b0
        G = len(prep.weights)
        self.classes = _Classes(b0, Fraction(1))
        self.cls: IntArray = np.zeros(G, dtype=np.int64)
        self.selected: list[int] = []
        self.rounds: list[_Round] = []
        self.delta: Fraction | float = _INF  # Add1: the current round's event distance
        # Add1: per round (the last one being the round that finds nothing affordable), the
        # state at its start, the x at which it was computed and its own event distance.
        self.snaps: list[_Snap] = []
        self.at: list[Fraction] = []
        self.until: list[Fraction | float] = []
        for p in range(prep.m):
            if len(prep.sup[p]) and prep.costs[p] == 0:
                self.selected.append(p)
        self._run()

    def remaining(self) -> Fraction | float:
        """How far x can grow from `b0` before some round may change (Add1)."""
        return min(
            (u - (self.b0 - a) for u, a in zip(self.until, self.at, strict=True)), default=_INF
        )

    def resumed(self, b0: Fraction) -> _MesRun:
        """The run at per-voter budget `b0` > `self.b0`, reusing every round still valid there.

        Rounds before the first one whose event distance is used up have the same winner at
        `b0`, and their budgets and payments are on the same affine piece, so they are
        evaluated at `b0` instead of recomputed; the run continues from that round.
        """
        assert self.events and b0 > self.b0
        i0 = len(self.snaps) - 1
        for i, (u, a) in enumerate(zip(self.until, self.at, strict=True)):
            if u - (b0 - a) <= 0:
                i0 = i
                break
        dx = b0 - self.b0
        snap = self.snaps[i0]
        new = _MesRun.__new__(_MesRun)
        new.prep, new.key, new.events, new.b0 = self.prep, self.key, True, b0
        new.classes = self.classes.shifted(snap.ncls, dx)
        new.cls = snap.cls.copy()
        new.selected = self.selected[: snap.nsel]
        new.rounds = self.rounds[:i0]  # evaluated at b0 only for the result (`at_x`)
        new.delta = _INF
        new.snaps = self.snaps[:i0]
        new.at = self.at[:i0]
        new.until = self.until[:i0]
        new._run()
        return new

    # -- float estimate ---------------------------------------------------------------------
    def _estimate(self, p: int) -> tuple[float, float] | None:
        """(lower, upper) bounds on p's price rho, or None if p surely cannot be afforded.

        (0, inf) means "too close to call": price it exactly.
        """
        prep = self.prep
        sup = prep.sup[p]
        n = len(sup)
        b = self.classes.f[self.cls[sup]]
        w = prep.wsup_f[p]
        wb = w * b
        total = float(wb.sum())
        c = float(prep.costs_f[p])
        err = 4.0 * (n + 8) * _U
        if total * (1.0 + err) < c:
            return None
        if total * (1.0 - err) < c:
            return (0.0, _INF)
        v = prep.util_f[p]
        r = b / v
        t0 = c / prep.wtot[p]
        if float(r.min()) >= t0 * (1.0 + err):
            t, rel = t0, err
        else:
            o = np.argsort(r, kind="stable")
            rs = r[o]
            wbs = wb[o]
            wvs = (w * v)[o]
            before = np.concatenate(([0.0], np.cumsum(wbs)[:-1]))
            suffix = prep.wtot[p] - np.concatenate(([0.0], np.cumsum(wvs)[:-1]))
            with np.errstate(divide="ignore", invalid="ignore"):
                tj = (c - before) / suffix
            ok = np.flatnonzero(tj <= rs)
            if len(ok) == 0:
                return (0.0, _INF)
            j = int(ok[0])
            if suffix[j] <= 0:
                return (0.0, _INF)
            t = float(tj[j])
            rel = 16.0 * (n + 8) * _U * (prep.wtot[p] / float(suffix[j])) + err
        if rel >= 0.5:
            return (0.0, _INF)
        rho = t / float(prep.scale_f[p])
        return (rho * (1.0 - rel), rho * (1.0 + rel))

    # -- exact pricing ----------------------------------------------------------------------
    def _pairs(self, p: int) -> _Pairs:
        prep = self.prep
        sup = prep.sup[p]
        ci = self.cls[sup]
        if prep.uniform[p]:
            uniq, inv = np.unique(ci, return_inverse=True)
            cls = uniq.tolist()
            util = [int(prep.util[p][0])] * len(cls)
        else:
            base = prep.vmax + 1
            uniq, inv = np.unique(ci * base + prep.util[p], return_inverse=True)
            cls = (uniq // base).tolist()
            util = (uniq % base).tolist()
        weight = np.bincount(inv, weights=prep.wsup_f[p]).astype(np.int64).tolist()
        return _Pairs(cls, util, weight, inv.astype(np.int64).reshape(-1))

    def _exact_price(self, p: int, pairs: _Pairs) -> Fraction | None:
        """Smallest t with sum_k W_k min(beta_k, t v_k) >= cost (None if unaffordable).

        Floats propose the set of pairs that pay all they have; the exact price that set
        implies is accepted only if exact (or rigorously float-certified) comparisons show it
        is consistent, which makes it the unique root. Otherwise: the plain exact scan.
        """
        val = self.classes.val
        cost = self.prep.costs[p]
        n = len(pairs.cls)
        bf = self.classes.f[np.array(pairs.cls, dtype=np.int64)]
        wf = np.array(pairs.weight, dtype=np.float64)
        vf = np.array(pairs.util, dtype=np.float64)
        total_f = float((wf * bf).sum())
        cost_f = float(self.prep.costs_f[p])
        err = 4.0 * (n + 8) * _U
        if total_f * (1.0 + err) < cost_f:
            return None
        if total_f * (1.0 - err) <= cost_f:
            total = _wsum(pairs.weight, [val[c] for c in pairs.cls])
            if total < cost:
                return None
        r = bf / vf
        o = np.argsort(r, kind="stable")
        wbs = (wf * bf)[o]
        wvs = (wf * vf)[o]
        before = np.concatenate(([0.0], np.cumsum(wbs)[:-1]))
        suffix = float(wvs.sum()) - np.concatenate(([0.0], np.cumsum(wvs)[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            tj = (cost_f - before) / suffix
        ok = np.flatnonzero((tj <= r[o]) & (suffix > 0))
        if len(ok):
            j = int(ok[0])
            capped: list[int] = o[:j].tolist()
            free: list[int] = o[j:].tolist()
            paid = _wsum([pairs.weight[k] for k in capped], [val[pairs.cls[k]] for k in capped])
            rest: int = sum(pairs.weight[k] * pairs.util[k] for k in free)
            t = (cost - paid) / rest
            tf = float(t)
            rl: list[float] = r.tolist()
            lo, hi = tf * (1.0 - 1e-9), tf * (1.0 + 1e-9)
            # r_k = fl(fl(beta)/v) is within 2u of beta/v, and tf within u of t
            if all(rl[k] < lo or val[pairs.cls[k]] <= t * pairs.util[k] for k in capped) and all(
                rl[k] > hi or val[pairs.cls[k]] >= t * pairs.util[k] for k in free
            ):
                return t
        return self._exact_price_scan(cost, pairs)

    def _exact_price_scan(self, cost: Fraction, pairs: _Pairs) -> Fraction:
        val = self.classes.val
        order = sorted(range(len(pairs.cls)), key=lambda k: val[pairs.cls[k]] / pairs.util[k])
        paid = Fraction(0)
        rest = sum(w * v for w, v in zip(pairs.weight, pairs.util, strict=True))
        for k in order:
            beta, v, w = val[pairs.cls[k]], pairs.util[k], pairs.weight[k]
            t = (cost - paid) / rest
            if t * v <= beta:
                return t
            paid += w * beta
            rest -= w * v
        raise AssertionError("an affordable project always has a price")  # pragma: no cover

    # -- the run ----------------------------------------------------------------------------
    def _run(self) -> None:
        prep = self.prep
        done = set(self.selected)
        alive = [p for p in range(prep.m) if p not in done and len(prep.sup[p]) and prep.costs[p]]
        # initial lower bounds: rho >= cost / (scale * sum of w*v), since min(b, rho*u) <= rho*u
        lb: dict[int, float] = {
            p: float(prep.costs[p] / (prep.scale[p] * prep.wtot[p])) * (1.0 - 4 * _U) for p in alive
        }
        alive_set = set(alive)
        while True:
            if self.events:
                self.snaps.append(_Snap(len(self.selected), self.cls.copy(), len(self.classes.val)))
                self.delta = _INF
            funded = self._round(alive_set, lb)
            if self.events:
                self.at.append(self.b0)
                self.until.append(self.delta)
            if not funded:
                return

    def _round(self, alive_set: set[int], lb: dict[int, float]) -> bool:
        """One round: fund the cheapest project (True), or find that none is affordable."""
        prep = self.prep
        while True:
            best_hi = _INF
            evaluated: list[tuple[int, float]] = []
            for p in sorted(alive_set, key=lb.__getitem__):
                if lb[p] > best_hi:
                    break
                est = self._estimate(p)
                if est is None:
                    alive_set.discard(p)
                    continue
                lo, hi = est
                lb[p] = max(lb[p], lo)
                evaluated.append((p, lo))
                best_hi = min(best_hi, hi)
            cands = [p for p, lo in evaluated if lo <= best_hi]
            winner: int | None = None
            win_t = Fraction(0)
            win_rho: Fraction | None = None
            win_pairs: _Pairs | None = None
            for p in cands:
                pairs = self._pairs(p)
                t = self._exact_price(p, pairs)
                if t is None:
                    alive_set.discard(p)
                    continue
                rho = t / prep.scale[p]
                if win_rho is None or (rho, self.key(p)) < (win_rho, self.key(winner or 0)):
                    winner, win_t, win_rho, win_pairs = p, t, rho, pairs
            if winner is None:
                if cands:  # every candidate turned out unaffordable: look again
                    continue
                if self.events:
                    self._margin_events(None, Fraction(0), Fraction(0), alive_set)
                return False
            assert win_pairs is not None
            self._pay(winner, win_t, win_pairs, alive_set)
            alive_set.discard(winner)
            self.selected.append(winner)
            return True

    def _pay(self, p: int, t: Fraction, pairs: _Pairs, alive: set[int]) -> None:
        prep = self.prep
        classes = self.classes
        val, slope = classes.val, classes.slope
        events = self.events
        # capped[k]: the pair's budget is at most its price (it pays all it has). Floats decide
        # where the correctly rounded budget and price are clearly apart, exact arithmetic
        # otherwise (equality included).
        tf = float(t)
        fvals = classes.f[np.array(pairs.cls, dtype=np.int64)].tolist()
        capped: list[bool] = []
        prices: list[Fraction] = []
        for c, v, bf in zip(pairs.cls, pairs.util, fvals, strict=True):
            price = t if v == 1 else t * v
            pf = tf * v
            if bf < pf * (1.0 - 1e-12):
                capped.append(True)
            elif bf > pf * (1.0 + 1e-12):
                capped.append(False)
            else:
                capped.append(val[c] <= price)
            prices.append(price)
        dt = Fraction(0)
        if events:
            # slope of t in x: t = (cost - sum_capped W b) / sum_uncapped W v (an exact
            # equality b = t v counts as uncapped: both give the same t)
            capped_slope = Fraction(0)
            unc = 0
            for c, v, w, cap, price in zip(
                pairs.cls, pairs.util, pairs.weight, capped, prices, strict=True
            ):
                if cap and val[c] != price:
                    capped_slope += w * slope[c]
                else:
                    unc += w * v
            dt = -capped_slope / unc
            self._margin_events(p, t, dt, alive)
        zero = classes.get(Fraction(0), Fraction(0))
        new_cls: list[int] = []
        paid: list[Fraction] = []
        pslope: list[Fraction] = []
        for c, v, cap, price in zip(pairs.cls, pairs.util, capped, prices, strict=True):
            beta = val[c]
            if cap:
                if events:
                    ds = slope[c] - (dt if v == 1 else dt * v)
                    if ds.numerator > 0:  # the gap beta - price (<= 0) grows, reaching 0 at -gap/ds
                        gap = beta - price
                        if gap == 0:
                            self.delta = 0
                        else:
                            self.delta = min(self.delta, _lower_quotient(-gap, ds))
                    elif ds.numerator < 0 and beta == price:  # stable equality (ds = 0): no event
                        self.delta = 0
                    pslope.append(slope[c])
                paid.append(beta)
                new_cls.append(zero)
            else:
                left = beta - price
                if events:
                    ds = slope[c] - (dt if v == 1 else dt * v)
                    if ds.numerator < 0:
                        self.delta = min(self.delta, _lower_quotient(left, -ds))
                    pslope.append(dt if v == 1 else dt * v)
                    new_cls.append(classes.get(left, ds))
                else:
                    new_cls.append(classes.get(left, Fraction(0)))
                paid.append(price)
        groups = prep.sup[p]
        self.cls[groups] = np.array(new_cls, dtype=np.int64)[pairs.inv]
        self.rounds.append(
            _Round(p, t, groups, paid, pairs.inv, self.b0, dt, pslope if events else None)
        )

    def _margin_events(
        self, winner: int | None, t: Fraction, dt: Fraction, alive: set[int]
    ) -> None:
        """Lower bound on when a non-winner could match the winner's price (see module doc).

        `winner is None`: the final round, where a project could become affordable.
        """
        prep = self.prep
        done = set(self.selected)
        if winner is not None:
            done.add(winner)
        todo = [p for p in prep.priced if p not in done]
        if not todo:
            return
        if winner is None:
            rho_f, drho_f = _INF, 0.0
        else:
            rho_f = float(t / prep.scale[winner])
            drho_f = float(dt / prep.scale[winner])
        ta = np.array(todo, dtype=np.int64)
        # only the (project, supporter) pairs of the projects in question (per project, in
        # the same order as in the full flat arrays, so the sums are the same)
        todo_mask = np.zeros(prep.m, dtype=bool)
        todo_mask[ta] = True
        sel = np.repeat(todo_mask, prep.nsup_i)
        fp = prep.flat_proj[sel]
        ci = self.cls[prep.flat_sup[sel]]
        b = self.classes.f[ci]
        db = self.classes.fs[ci]
        fv = prep.flat_v[sel]
        pi = (rho_f * prep.scale_f)[fp] * fv if winner is not None else np.full(len(fp), _INF)
        dpi = (drho_f * prep.scale_f)[fp] * fv
        capped = b < pi
        term = np.where(capped, b, pi)
        dterm = np.where(capped, db, np.where(b == pi, np.minimum(db, dpi), dpi))
        w = prep.flat_w[sel]
        sums = np.bincount(fp, weights=w * term, minlength=prep.m)
        dsums = np.bincount(fp, weights=w * dterm, minlength=prep.m)
        dabs = np.bincount(fp, weights=w * np.abs(dterm), minlength=prep.m)
        err = 8.0 * (prep.nsup[ta] + 8) * _U
        c = prep.costs_f[ta]
        sp = sums[ta]
        near = c - sp <= 1e-7 * c
        for p in ta[near].tolist():
            # possibly an exact tie with the winner: decide in exact arithmetic
            m_exact, dm_exact = self._exact_margin(p, winner, t, dt)
            if m_exact < 0 or (m_exact == 0 and (dm_exact < 0 or winner is None)):
                self.delta = 0
                return
            if m_exact == 0 and winner is not None and self.key(p) < self.key(winner):
                self.delta = 0
                return
            if m_exact > 0 and dm_exact < 0:
                self.delta = min(self.delta, m_exact / -dm_exact)
        # the others, all at once (the same float operations as one by one)
        far = ~near
        margin = c[far] - sp[far] * (1.0 + err[far]) - 1e-9 * c[far]
        da = dabs[ta][far]
        falling = dsums[ta][far] + err[far] * da + 1e-12 * da
        down = falling > 0
        if down.any():
            self.delta = min(
                self.delta, float(((margin[down] / falling[down]) * (1.0 - 1e-9)).min())
            )

    def _exact_margin(
        self, p: int, winner: int | None, t: Fraction, dt: Fraction
    ) -> tuple[Fraction, Fraction]:
        """Exact M_p(x) = cost_p - sum_i w_i min(b_i, pi v_i) and its right derivative in x."""
        prep = self.prep
        pairs = self._pairs(p)
        val, slope = self.classes.val, self.classes.slope
        m = prep.costs[p]
        dm = Fraction(0)
        if winner is None:
            for c, w in zip(pairs.cls, pairs.weight, strict=True):
                m -= w * val[c]
                dm -= w * slope[c]
            return m, dm
        pi = t / prep.scale[winner] * prep.scale[p]
        dpi = dt / prep.scale[winner] * prep.scale[p]
        for c, v, w in zip(pairs.cls, pairs.util, pairs.weight, strict=True):
            beta, price = val[c], pi * v
            if beta < price:
                m, dm = m - w * beta, dm - w * slope[c]
            elif beta > price:
                m, dm = m - w * price, dm - w * dpi * v
            else:
                m, dm = m - w * beta, dm - w * min(slope[c], dpi * v)
        return m, dm

    # -- results ----------------------------------------------------------------------------
    def money_left(self, p: int) -> Fraction:
        s = self.prep.sup[p]
        if len(s) == 0:
            return Fraction(0)
        per = np.bincount(self.cls[s], weights=self.prep.wsup_f[p]).tolist()
        return sum((int(w) * self.classes.val[c] for c, w in enumerate(per) if w), Fraction(0))


def _lower_quotient(a: Fraction, b: Fraction) -> float:
    """A float at most a/b (a >= 0, b > 0): an event distance may only be underestimated."""
    try:
        return (a.numerator * b.denominator) / (a.denominator * b.numerator) * (1.0 - 1e-12)
    except OverflowError:  # pragma: no cover - an event beyond any reachable budget
        return 1e300


def _wsum(weights: Sequence[int], values: Sequence[Fraction]) -> Fraction:
    """Exact sum of w * v, adding numerators of equal denominators as integers first."""
    by_den: dict[int, int] = {}
    for w, v in zip(weights, values, strict=True):
        d = v.denominator
        by_den[d] = by_den.get(d, 0) + w * v.numerator
    return sum((Fraction(a, d) for d, a in by_den.items()), Fraction(0))


def _mes_result(
    election: Election,
    prep: _Prepared,
    run: _MesRun,
    rule: Rule,
    tie_break: TieBreak,
    runs: int,
) -> TallyResult:
    votes = _supporters(election)
    funded: list[Funded] = []
    step = 0
    by_round = {r.project: r.at_x(run.b0) for r in run.rounds}
    for p in run.selected:
        step += 1
        r = by_round.get(p)
        if r is None:  # free project
            funded.append(Funded(p, step, votes[p], (), Fraction(0)))
            continue
        amounts: dict[Fraction, list[int]] = {}
        inv = r.inv.tolist()
        for g, k in zip(r.groups.tolist(), inv, strict=True):
            amounts.setdefault(r.paid[k], []).append(g)
        payments = tuple(
            Payment(a, tuple(gs)) for a, gs in sorted(amounts.items(), key=lambda x: -x[0])
        )
        funded.append(Funded(p, step, votes[p], payments, r.t / prep.scale[p]))
    chosen = set(run.selected)
    unfunded = []
    for p in range(prep.m):
        if p in chosen:
            continue
        if len(prep.sup[p]) == 0:
            unfunded.append(Unfunded(p, "no-supporters", votes[p]))
        else:
            left = run.money_left(p)
            unfunded.append(Unfunded(p, "not-enough-money", votes[p], money_left=left))
    cost = sum((prep.costs[p] for p in run.selected), Fraction(0))
    return TallyResult(
        rule,
        tie_break,
        tuple(run.selected),
        cost,
        election.budget,
        election.num_voters,
        prep.m,
        tuple(funded),
        tuple(unfunded),
        voter_budget=run.b0,
        add1_runs=runs,
    )


def _mes_add1(election: Election, prep: _Prepared, key: TieKey, tie_break: TieBreak) -> TallyResult:
    """pabutools' `exhaustion_by_budget_increase(..., budget_step=n, exhaustive_stop=False)`.

    The per-voter budget goes B/n, B/n + 1, B/n + 2, ... while the total budget stays at most
    B*(n+1) (so k <= B); the result is the outcome just before the first one costing more
    than B (or the last one if none does). Runs that cannot differ are skipped.
    """
    n = election.num_voters
    budget = election.budget
    if n == 0:
        run = _MesRun(prep, Fraction(0), key, events=False)
        return _mes_result(election, prep, run, "mes-add1", tie_break, 1)
    base = budget / n
    kmax = math.floor(budget)

    def cost(r: _MesRun) -> Fraction:
        return sum((prep.costs[p] for p in r.selected), Fraction(0))

    k = 0
    run = _MesRun(prep, base, key, events=True)
    runs = 1
    while True:
        rem = run.remaining()
        step = _INF if rem == _INF else max(1, math.ceil(rem))
        if step == _INF or k + step > kmax:
            return _mes_result(election, prep, run, "mes-add1", tie_break, runs)
        k_next = k + int(step)
        nxt = run.resumed(base + k_next)
        runs += 1
        if cost(nxt) > budget:
            if k_next - 1 > k:
                # safeguard: the outcome just before must be the one we keep
                check = _MesRun(prep, base + k_next - 1, key, events=False)
                runs += 1
                if sorted(check.selected) != sorted(run.selected):  # pragma: no cover
                    return _add1_linear(election, prep, key, tie_break, k, runs)
            return _mes_result(election, prep, run, "mes-add1", tie_break, runs)
        k, run = k_next, nxt


def _add1_linear(
    election: Election, prep: _Prepared, key: TieKey, tie_break: TieBreak, k: int, runs: int
) -> TallyResult:
    """Plain +1 stepping from k (only reached if the skip safeguard ever fails)."""
    budget = election.budget
    base = budget / election.num_voters
    run = _MesRun(prep, base + k, key, events=False)
    while k + 1 <= math.floor(budget):
        nxt = _MesRun(prep, base + k + 1, key, events=False)
        runs += 1
        if sum((prep.costs[p] for p in nxt.selected), Fraction(0)) > budget:
            break
        k, run = k + 1, nxt
    return _mes_result(election, prep, run, "mes-add1", tie_break, runs)


def selected_ids(election: Election, result: TallyResult) -> list[str]:
    """The funded project ids, sorted as strings."""
    return sorted(election.projects[j].id for j in result.selected)


def payments_by_voter(
    election: Election, payments: Sequence[Payment]
) -> list[tuple[str, Fraction]]:
    """(voter id, amount) for every supporter of a funded project."""
    out: list[tuple[str, Fraction]] = []
    for pay in payments:
        for g in pay.groups:
            out += [(v, pay.amount) for v in election.groups[g].voters]
    return out


__all__ = [
    "APPROVAL_ONLY",
    "RULES",
    "Funded",
    "Payment",
    "Rule",
    "RuleNotApplicable",
    "TallyResult",
    "Unfunded",
    "payments_by_voter",
    "selected_ids",
    "tally",
]
