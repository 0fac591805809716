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
* Voters with identical ballots always hold identical budgets, so budgets are kept per
  *class* of groups sharing one exact value; exact pricing aggregates the supporters of a
  project per class, so its cost is the number of classes, not of voters.
* Add1 completion: instead of re-running MES for every +1 step of the per-voter budget, the
  run at budget x also yields a lower bound on the next x at which the sequence of funded
  projects can change (below); the runs in between would give the same outcome and are
  skipped. That bound is derived from exact winners' data and from float margins that are
  made conservative by their error bounds; and as a last safeguard the run just before the
  first infeasible budget is recomputed and must equal the outcome kept.

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
        utils = election.utilities()
        lcm = 1
        if not approval:
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
        self.sup: list[IntArray] = [np.array(s, dtype=np.int64) for s in sup]
        self.util: list[IntArray] = [np.array(v, dtype=np.int64) for v in val]
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


class _Classes:
    """Exact budget values (and, for Add1, their slopes in x) shared by groups of voters."""

    def __init__(self, value: Fraction, slope: Fraction) -> None:
        self.val: list[Fraction] = []
        self.slope: list[Fraction] = []
        self.f: FloatArray = np.empty(256, dtype=np.float64)
        self.fs: FloatArray = np.empty(256, dtype=np.float64)
        self.lookup: dict[tuple[Fraction, Fraction], int] = {}
        self.get(value, slope)

    def get(self, value: Fraction, slope: Fraction) -> int:
        k = (value, slope)
        found = self.lookup.get(k)
        if found is not None:
            return found
        i = len(self.val)
        if i == len(self.f):
            self.f = np.concatenate([self.f, np.empty(i, dtype=np.float64)])
            self.fs = np.concatenate([self.fs, np.empty(i, dtype=np.float64)])
        self.val.append(value)
        self.slope.append(slope)
        self.f[i] = float(value)
        self.fs[i] = float(slope)
        self.lookup[k] = i
        return i


@dataclass(slots=True)
class _Round:
    project: int
    t: Fraction  # price per unit of (integer) utility
    groups: IntArray  # supporting groups
    paid: list[Fraction]  # per pair
    inv: IntArray  # group -> pair


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
        self.delta: Fraction | float = _INF  # distance in x to the next possible change
        self._run()

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
        """Smallest t with sum_k W_k min(beta_k, t v_k) >= cost (None if unaffordable)."""
        val = self.classes.val
        cost = self.prep.costs[p]
        total = sum((w * val[c] for c, w in zip(pairs.cls, pairs.weight, strict=True)), Fraction(0))
        if total < cost:
            return None
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
        alive: list[int] = []
        for p in range(prep.m):
            if len(prep.sup[p]) == 0:
                continue
            if prep.costs[p] == 0:
                self.selected.append(p)
            else:
                alive.append(p)
        # initial lower bounds: rho >= cost / (scale * sum of w*v), since min(b, rho*u) <= rho*u
        lb: dict[int, float] = {
            p: float(prep.costs[p] / (prep.scale[p] * prep.wtot[p])) * (1.0 - 4 * _U) for p in alive
        }
        alive_set = set(alive)
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
                return
            assert win_pairs is not None
            self._pay(winner, win_t, win_pairs, alive_set)
            alive_set.discard(winner)
            self.selected.append(winner)

    def _pay(self, p: int, t: Fraction, pairs: _Pairs, alive: set[int]) -> None:
        prep = self.prep
        val, slope = self.classes.val, self.classes.slope
        dt = Fraction(0)
        if self.events:
            # slope of t in x: t = (cost - sum_capped W b) / sum_uncapped W v
            capped_slope = Fraction(0)
            unc = 0
            for c, v, w in zip(pairs.cls, pairs.util, pairs.weight, strict=True):
                if val[c] < t * v:
                    capped_slope += w * slope[c]
                else:
                    unc += w * v
            dt = -capped_slope / unc
            self._margin_events(p, t, dt, alive)
        new_cls: list[int] = []
        paid: list[Fraction] = []
        for c, v in zip(pairs.cls, pairs.util, strict=True):
            beta = val[c]
            price = t * v
            if beta <= price:
                if self.events:
                    gap = beta - price
                    if gap == 0:
                        if slope[c] - dt * v != 0:  # a stable equality is no event
                            self.delta = 0
                    elif slope[c] - dt * v > 0:
                        self.delta = min(self.delta, -gap / (slope[c] - dt * v))
                paid.append(beta)
                new_cls.append(self.classes.get(Fraction(0), Fraction(0)))
            else:
                s = slope[c] - dt * v if self.events else Fraction(0)
                if self.events and s < 0:
                    self.delta = min(self.delta, (beta - price) / -s)
                paid.append(price)
                new_cls.append(self.classes.get(beta - price, s))
        groups = prep.sup[p]
        self.cls[groups] = np.array(new_cls, dtype=np.int64)[pairs.inv]
        self.rounds.append(_Round(p, t, groups, paid, pairs.inv))

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
        todo = [p for p in range(prep.m) if p not in done and len(prep.sup[p]) and prep.costs[p]]
        if not todo:
            return
        if winner is None:
            rho_f, drho_f = _INF, 0.0
        else:
            rho_f = float(t / prep.scale[winner])
            drho_f = float(dt / prep.scale[winner])
        fp = prep.flat_proj
        b = self.classes.f[self.cls[prep.flat_sup]]
        db = self.classes.fs[self.cls[prep.flat_sup]]
        pi = (
            (rho_f * prep.scale_f)[fp] * prep.flat_v
            if winner is not None
            else np.full(len(fp), _INF)
        )
        dpi = (drho_f * prep.scale_f)[fp] * prep.flat_v
        capped = b < pi
        term = np.where(capped, b, pi)
        dterm = np.where(capped, db, np.where(b == pi, np.minimum(db, dpi), dpi))
        w = prep.flat_w
        sums = np.bincount(fp, weights=w * term, minlength=prep.m)
        dsums = np.bincount(fp, weights=w * dterm, minlength=prep.m)
        dabs = np.bincount(fp, weights=w * np.abs(dterm), minlength=prep.m)
        for p in todo:
            n = float(prep.nsup[p])
            err = 8.0 * (n + 8) * _U
            c = float(prep.costs_f[p])
            if c - float(sums[p]) <= 1e-7 * c:
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
                continue
            margin = c - float(sums[p]) * (1.0 + err) - 1e-9 * c
            falling = float(dsums[p]) + err * float(dabs[p]) + 1e-12 * float(dabs[p])
            if falling > 0:
                self.delta = min(self.delta, (margin / falling) * (1.0 - 1e-9))

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
    by_round = {r.project: r for r in run.rounds}
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
        step = _INF if run.delta == _INF else max(1, math.ceil(run.delta))
        if step == _INF or k + step > kmax:
            return _mes_result(election, prep, run, "mes-add1", tie_break, runs)
        k_next = k + int(step)
        nxt = _MesRun(prep, base + k_next, key, events=True)
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
