"""Tally rules for participatory budgeting: greedy, Method of Equal Shares (MES), MES with
"Add1" completion, and sequential Phragmén.

Outcomes are identical to pabutools 1.2.3 (the reference implementation) with the same
tie-breaking; see docs/pb.md. Satisfaction: cost-satisfaction (`Cost_Sat`) for approval ballots,
points (`Additive_Cardinal_Sat`) for cumulative/scoring ballots, Borda (`Additive_Borda_Sat`,
`len(ballot) - position - 1`) for ordinal ballots.

Arithmetic
----------
Every decision (which project is funded, how much each voter pays, which projects tie) is
either taken in exact rational arithmetic (`fractions.Fraction`) or proven by rigorously
bounded floats, so it cannot differ from pabutools, which uses exact `gmpy2.mpq`.

* The exact MES engine (`_MesRun`; for every result's payments, where the float kernel cannot
  decide, for cumulative/scoring/ordinal ballots, and for everything when the kernel was not
  built or `kernel=False`) takes every decision in `Fraction`s. Floats only *find*
  candidates: each project's rho is estimated in floats with a rigorous relative error bound
  (budgets correctly rounded from the exact values, a sum of N non-negative float terms within
  N*u, the break-point subtraction amplifying that by at most W_total/W_uncapped; 16x that
  bound is used). Every project whose interval reaches the smallest upper end is priced
  exactly; the exact minimum, exact ties broken by the tie-breaking key, wins.
* Exact pricing is float-guided: floats propose which supporters pay all they have; the exact
  price that set implies is accepted only if exact comparisons (or float ones that are
  rigorous: correctly rounded values more than 1e-9 apart relatively) show the set is
  consistent with it, which makes it the unique root of the payment equation; else the plain
  exact scan decides. "Pays all it has or the price" is decided likewise.
* Voters with identical ballots always hold identical budgets, so budgets are kept per
  *class* of groups sharing one exact value; exact pricing aggregates a project's supporters
  per class, so its cost is the number of classes, not of voters.
* Plain `mes` and every step of `mes-add1` (MES at per-voter budget B/n + k, k = 1, 2, ...,
  up to ~850 runs on the shared files) go through a C kernel (`flows/pb/_mes.c`,
  `_FloatMes`; an optional extension) that keeps an interval around every exact budget and
  price, in IEEE binary64 with outward rounding, and takes a decision only when the
  intervals prove it. It proves exact ties too where they are structural (every supporter
  either has nothing left or pays the price, so rho = 1 / supporters with money). Anything
  else it cannot prove makes it give up on that run, which then runs in the exact engine.
  The kept outcome's payments are computed exactly by replaying the funding order the kernel
  proved (`_MesRun(..., order=...)`). The proof is in the C file's header comment.
* `mes-add1` skips steps whose outcome is provably the same (`_SameOutcome`, `_Stretch`) and
  stops with `TallyTooLong` after `max_runs` MES runs.
"""

from __future__ import annotations

import bisect
import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from types import ModuleType
from typing import Literal

import numpy as np
import numpy.typing as npt

from flows.pb.model import Election, Flat, TieBreak, TieKey, natural_key, tie_key, votes_of

Rule = Literal["greedy", "mes", "mes-add1", "phragmen"]
RULES: tuple[Rule, ...] = ("greedy", "mes", "mes-add1", "phragmen")
APPROVAL_ONLY: tuple[Rule, ...] = ("mes-add1", "phragmen")

# Pabulib's names for rules (the META `rule` key), accepted wherever a rule is named
PABULIB_RULES: dict[str, Rule] = {
    "greedy": "greedy",
    "equalshares": "mes",
    "equalshares/add1": "mes-add1",
}
# Pabulib rule names civicbot knows but does not run, and what to do instead
_NOT_RUN = {
    "equalshares/add1-comparison": "MES with Add1 completion, then a comparison with greedy "
    "that keeps the outcome more voters prefer; civicbot runs the first part (mes-add1) and "
    "greedy, not the comparison: tally both and compare",
    "greedy-threshold": "greedy funding only projects above a vote threshold, which the file "
    "does not give; civicbot runs plain greedy",
    "greedy-no-skip": "greedy that stops at the first project that does not fit; civicbot runs "
    "greedy that skips it",
    "unknown": "the file does not say which rule was used",
}


def parse_rule(name: str) -> Rule:
    """The rule called `name`: ours (greedy, mes, mes-add1, phragmen) or Pabulib's alias
    (equalshares, equalshares/add1); ValueError with what to do otherwise."""
    cleaned = name.strip().lower()
    for rule in RULES:
        if rule == cleaned:
            return rule
    if cleaned in PABULIB_RULES:
        return PABULIB_RULES[cleaned]
    known = "greedy, mes, mes-add1, phragmen, or Pabulib's " + ", ".join(PABULIB_RULES)
    if cleaned in _NOT_RUN:
        raise ValueError(f"rule '{name}' is {_NOT_RUN[cleaned]} (expected {known})")
    raise ValueError(f"unknown rule '{name}' (expected {known})")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_U = 2.0**-53  # unit round-off of float64
_INF = math.inf


class RuleNotApplicable(ValueError):
    """The rule does not apply to this kind of ballot."""


@functools.cache
def _kernel() -> ModuleType | None:
    """The C kernel `flows.pb._mes`, or None when it was not built: it is an optional
    extension (a machine without a C compiler installs civicbot without it), and every
    tally is then taken by the exact engine alone, with the same results, more slowly."""
    try:
        from flows.pb import _mes
    except ImportError:
        return None
    return _mes


def kernel_available() -> bool:
    """Whether the C kernel was built (see `_kernel`); callers say so when it was not."""
    return _kernel() is not None


DEFAULT_MAX_RUNS = 20_000
"""How many MES runs `mes-add1` may take by default (the shared real files need at most 845,
Assen 2024); with the provable jumps most odd elections need a handful."""


class TallyTooLong(RuntimeError):
    """The tally would take more than the allowed work (`max_runs` MES runs for `mes-add1`).

    Raised instead of tying a worker up for hours or days; callers (the CLI, PB rounds) turn
    it into a message saying what to do: allow more runs, or use another rule.
    """

    def __init__(
        self,
        rule: str,
        runs: int,
        max_runs: int,
        voter_budget: Fraction,
        start: Fraction,
        last: Fraction,
    ) -> None:
        self.rule = rule
        self.runs = runs
        self.max_runs = max_runs
        self.voter_budget = voter_budget
        self.start = start
        self.last = last
        super().__init__(
            f"{rule} stopped after {runs:,} MES runs (the limit is {max_runs:,}): Add1 had "
            f"raised each voter's budget from {float(start):,.2f} to {float(voter_budget):,.2f} "
            f"and may have to go on up to {float(last):,.2f}, one unit at a time"
        )


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


UnfundedReason = Literal[
    "no-supporters", "not-enough-money", "no-longer-fit", "count-stopped", "free-no-weight"
]
"""Why a project was not funded. `free-no-weight`: it costs nothing and MES with cost
satisfaction gives it no weight (its supporters' satisfaction is its cost, 0), so the vote
cannot fund it; fund it outside the vote, or tally with `fund_free=True`."""


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
    # mes-add1: each voter's share of the budget before Add1 raised it (B / voters), and the
    # first raised budget whose outcome cost more than the budget, with that cost (None when
    # Add1 stopped because the budget could be raised no further)
    add1_start: Fraction | None = None
    add1_next_budget: Fraction | None = None
    add1_next_cost: Fraction | None = None
    fund_free: bool = False  # MES: free projects named on a ballot were funded outside the vote


def tally(
    election: Election,
    rule: Rule,
    tie_break: TieBreak = "cost-votes",
    *,
    fund_free: bool = False,
    max_runs: int = DEFAULT_MAX_RUNS,
    kernel: bool = True,
) -> TallyResult:
    """Run `rule` on `election`; raise `RuleNotApplicable` for e.g. Phragmén on ordinal votes.

    Projects that cost nothing (see docs/pb.md): greedy funds every one of them (they always
    fit), Phragmén funds the approved ones first (they add no load), and MES funds one only if
    its supporters get some satisfaction from it, as pabutools does. With approval ballots
    (cost satisfaction) a free project's satisfaction is its cost, 0, so MES never funds it
    and reports it as `free-no-weight`. `fund_free=True` funds every free project named on a
    ballot before the MES count instead; it does not change what else is funded (a free
    project takes nobody's money) and only MES rules are affected.

    `mes-add1` raises `TallyTooLong` rather than run more than `max_runs` MES runs.
    `kernel=False` leaves every decision to the exact engine, as when the C kernel was not
    built (`kernel_available()`): the same result, more slowly.
    """
    if rule in APPROVAL_ONLY and election.vote_type != "approval":
        raise RuleNotApplicable(
            f"rule {rule} needs approval ballots; this file has {election.vote_type} ballots"
        )
    flat = election.flat()
    votes = votes_of(election, flat)
    key = tie_key(election, tie_break, votes)
    if rule == "greedy":
        return _greedy(election, key, tie_break, votes)
    if rule == "phragmen":
        return _phragmen(election, key, tie_break, votes)
    prep = _Prepared(election, fund_free=fund_free, votes=votes, flat=flat, kernel=kernel)
    n = election.num_voters
    if rule == "mes":
        x = election.budget / n if n else Fraction(0)
        return _mes_result(election, prep, _mes_at(prep, x, key), "mes", tie_break, 0)
    return _mes_add1(election, prep, key, tie_break, max_runs)


# --------------------------------------------------------------------------------------------
# greedy


def _greedy(
    election: Election, key: TieKey, tie_break: TieBreak, votes: list[int]
) -> TallyResult:
    m = len(election.projects)
    total: list[Fraction] | list[int]
    if election.vote_type == "approval":
        total = votes  # every approval is worth 1: integer sums, no Fraction per ballot
    else:
        total = [Fraction(0)] * m
        for g, utils in zip(election.groups, election.utilities(), strict=True):
            for j, u in utils.items():
                total[j] += u * g.weight

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


def _phragmen(
    election: Election, key: TieKey, tie_break: TieBreak, votes: list[int]
) -> TallyResult:
    m = len(election.projects)
    G = len(election.groups)
    weights = np.array([g.weight for g in election.groups], dtype=np.float64)
    sup = _supporter_lists(election)
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

    def __init__(
        self,
        election: Election,
        *,
        fund_free: bool = False,
        votes: list[int] | None = None,
        flat: Flat | None = None,
        kernel: bool = True,
    ) -> None:
        self.election = election
        self.fund_free = fund_free
        self.kernel = kernel  # False: the exact engine decides everything
        flat = flat if flat is not None else election.flat()
        self.flat = flat
        self.votes = votes if votes is not None else votes_of(election, flat)
        m = len(election.projects)
        self.m = m
        self.costs = [p.cost for p in election.projects]
        self.costs_f = np.array([float(c) for c in self.costs], dtype=np.float64)
        self.weights = flat.sizes
        approval = election.vote_type == "approval"
        if approval:
            # every approved project has utility 1: build the supporter lists in numpy
            lens = flat.lens
            flat_p = flat.projects
            flat_g = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
            order = _by_project(flat_p, m)  # stable: groups stay ascending
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
        # supporters of every project, one after the other (the float kernel's CSR layout)
        self.flat_sup = np.concatenate(self.sup + [np.zeros(0, dtype=np.int64)])
        self.nsup_i = np.array([len(s) for s in self.sup], dtype=np.int64)
        # projects MES has to price: supported and not free
        self.priced = [p for p in range(m) if len(self.sup[p]) and self.costs[p] != 0]
        # Free projects. pabutools' MES funds one, before the count, when its supporters'
        # total satisfaction is positive: points or a Borda score above 0, never under cost
        # satisfaction (approval), where a project's satisfaction is its cost. `fund_free`
        # funds every free project named on a ballot instead.
        named = [p for p in range(m) if self.costs[p] == 0 and self.named(p)]
        weighted = [] if approval else [p for p in named if len(self.sup[p])]
        self.free: list[int] = named if fund_free else weighted
        self.free_ignored: list[int] = [p for p in named if p not in self.free]


    def named(self, p: int) -> bool:
        """Whether some ballot names project p (utility 0 included, e.g. last in a ranking)."""
        return self.votes[p] > 0


class _Classes:
    """Exact budget values shared by groups of voters, with their floats.

    Each value is kept as a numerator and a denominator in lowest terms and made a
    `Fraction` only when asked for (`value`): most are only ever subtracted from, which
    plain ints do at a fraction of the cost of Fraction objects.
    """

    def __init__(self, value: Fraction) -> None:
        self.num: list[int] = []
        self.den: list[int] = []
        self.made: dict[int, Fraction] = {}
        self.f: FloatArray = np.empty(256, dtype=np.float64)
        self.lookup: dict[tuple[int, int], int] = {}
        self.get(value)

    def __len__(self) -> int:
        return len(self.num)

    def value(self, c: int) -> Fraction:
        """The exact value of class c."""
        made = self.made.get(c)
        if made is None:
            made = self.made[c] = Fraction(self.num[c], self.den[c])
        return made

    def values(self) -> list[Fraction]:
        return [self.value(c) for c in range(len(self.num))]

    def get(self, value: Fraction) -> int:
        return self._class(value.numerator, value.denominator)

    def minus(self, c: int, n: int, d: int) -> int:
        """The class of value(c) - n/d (n/d in lowest terms), computed in ints as Fraction
        subtracts (Knuth's gcd of the denominators first), without an object per step."""
        a, b = self.num[c], self.den[c]
        g = math.gcd(b, d)
        if g == 1:
            return self._class(a * d - n * b, b * d)
        s = b // g
        top = a * (d // g) - n * s
        g2 = math.gcd(top, g)
        return self._class(top // g2, s * (d // g2))

    def _class(self, n: int, d: int) -> int:
        # keyed by integers (n/d in lowest terms): hashing a Fraction is far slower
        k = (n, d)
        found = self.lookup.get(k)
        if found is not None:
            return found
        i = len(self.num)
        if i == len(self.f):
            self.f = np.concatenate([self.f, np.empty(i, dtype=np.float64)])
        self.num.append(n)
        self.den.append(d)
        # int / int is correctly rounded, exactly as float(Fraction), without its overhead
        self.f[i] = n / d
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
    """One exact run of MES at per-voter budget `b0`.

    With `order` (the funding order the certified kernel proved for this budget), the run
    only replays it: each round prices and pays for the known winner exactly, without
    searching all projects for it. Prices, payments and budgets are the exact ones either way;
    the replay is what makes the payments of a kernel-decided outcome cheap.
    """

    def __init__(
        self, prep: _Prepared, b0: Fraction, key: TieKey, order: Sequence[int] | None = None
    ) -> None:
        self.prep = prep
        self.key = key
        self.b0 = b0
        G = len(prep.weights)
        self.classes = _Classes(b0)
        self.cls: IntArray = np.zeros(G, dtype=np.int64)
        self.selected: list[int] = list(prep.free)
        self.rounds: list[_Round] = []
        self._common: tuple[list[int], int] | None = None
        if order is None:
            self._run()
        else:
            self._replay([p for p in order if p not in prep.free])

    def _replay(self, order: Sequence[int]) -> None:
        for p in order:
            pairs = self._pairs(p)
            t = self._exact_price(p, pairs)
            if t is None:  # the kernel's proof says it cannot happen
                raise AssertionError(f"replayed winner {p} is not affordable")
            self._pay(p, t, pairs)
            self.selected.append(p)

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
        value = self.classes.value
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
            total = _wsum(pairs.weight, [value(c) for c in pairs.cls])
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
            paid = _wsum([pairs.weight[k] for k in capped], [value(pairs.cls[k]) for k in capped])
            rest: int = sum(pairs.weight[k] * pairs.util[k] for k in free)
            t = (cost - paid) / rest
            tf = float(t)
            rl: list[float] = r.tolist()
            lo, hi = tf * (1.0 - 1e-9), tf * (1.0 + 1e-9)
            # r_k = fl(fl(beta)/v) is within 2u of beta/v, and tf within u of t
            if all(rl[k] < lo or value(pairs.cls[k]) <= t * pairs.util[k] for k in capped) and all(
                rl[k] > hi or value(pairs.cls[k]) >= t * pairs.util[k] for k in free
            ):
                return t
        return self._exact_price_scan(cost, pairs)

    def _exact_price_scan(self, cost: Fraction, pairs: _Pairs) -> Fraction:
        value = self.classes.value
        order = sorted(range(len(pairs.cls)), key=lambda k: value(pairs.cls[k]) / pairs.util[k])
        paid = Fraction(0)
        rest = sum(w * v for w, v in zip(pairs.weight, pairs.util, strict=True))
        for k in order:
            beta, v, w = value(pairs.cls[k]), pairs.util[k], pairs.weight[k]
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
        while self._round(alive_set, lb):
            pass

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
                return False
            assert win_pairs is not None
            self._pay(winner, win_t, win_pairs)
            alive_set.discard(winner)
            self.selected.append(winner)
            return True

    def _pay(self, p: int, t: Fraction, pairs: _Pairs) -> None:
        classes = self.classes
        # Each pair pays min(budget, price): "capped" (pays all it has) is decided in floats
        # where the correctly rounded budget and price are clearly apart, exactly otherwise.
        tf = float(t)
        fvals = classes.f[np.array(pairs.cls, dtype=np.int64)].tolist()
        zero = classes.get(Fraction(0))
        new_cls: list[int] = []
        paid: list[Fraction] = []
        t_n, t_d = t.numerator, t.denominator
        for c, v, bf in zip(pairs.cls, pairs.util, fvals, strict=True):
            if v == 1:
                price, price_n, price_d = t, t_n, t_d
            else:
                price = t * v
                price_n, price_d = price.numerator, price.denominator
            pf = tf * v
            if bf < pf * (1.0 - 1e-12):
                capped = True
            elif bf > pf * (1.0 + 1e-12):
                capped = False
            else:
                capped = classes.value(c) <= price
            if capped:
                paid.append(classes.value(c))
                new_cls.append(zero)
            else:
                paid.append(price)
                new_cls.append(classes.minus(c, price_n, price_d))
        groups = self.prep.sup[p]
        self.cls[groups] = np.array(new_cls, dtype=np.int64)[pairs.inv]
        self.rounds.append(_Round(p, t, groups, paid, pairs.inv))

    # -- results ----------------------------------------------------------------------------
    def money_left(self, p: int) -> Fraction:
        """What p's supporters have left (after the run): the budget classes' numerators over
        their common denominator, weighted by how many supporters are in each."""
        s = self.prep.sup[p]
        if len(s) == 0:
            return Fraction(0)
        per = np.bincount(self.cls[s], weights=self.prep.wsup_f[p])
        used = np.flatnonzero(per)
        nums, den = self._common_denominator()
        weights: list[int] = per[used].astype(np.int64).tolist()
        total = sum(map(operator.mul, weights, map(nums.__getitem__, used.tolist())))
        return Fraction(total, den)

    def _common_denominator(self) -> tuple[list[int], int]:
        """Every class value as an integer over one common denominator. (The denominators
        nest: each price's builds on the budgets before it, so their lcm stays about as long
        as the longest one, some 150 digits on Warsaw 2026 for ~19,000 classes.)"""
        classes = self.classes
        if self._common is None or len(self._common[0]) != len(classes):
            den = math.lcm(*set(classes.den))
            scaled = [n * (den // d) for n, d in zip(classes.num, classes.den, strict=True)]
            self._common = (scaled, den)
        return self._common


def _wsum(weights: Sequence[int], values: Sequence[Fraction]) -> Fraction:
    """Exact sum of w * v: numerators of equal denominators are added as integers, then the
    partial sums are added pairwise (a balanced tree keeps the integers small: adding them
    one by one to a growing denominator costs about twice as much), reduced once at the end."""
    by_den: dict[int, int] = {}
    for w, v in zip(weights, values, strict=True):
        d = v.denominator
        by_den[d] = by_den.get(d, 0) + w * v.numerator
    terms = [(a, d) for d, a in by_den.items()]
    if not terms:
        return Fraction(0)
    while len(terms) > 1:
        paired = []
        for (a1, d1), (a2, d2) in zip(terms[::2], terms[1::2], strict=False):
            g = math.gcd(d1, d2)
            paired.append((a1 * (d2 // g) + a2 * (d1 // g), d1 // g * d2))
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return Fraction(*terms[0])


def _ascending(parts: list[IntArray]) -> IntArray:
    """The groups of several ascending runs, ascending (one run is already)."""
    return parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts))


def _mes_result(
    election: Election,
    prep: _Prepared,
    run: _MesRun,
    rule: Rule,
    tie_break: TieBreak,
    runs: int,
) -> TallyResult:
    votes = prep.votes
    funded: list[Funded] = []
    step = 0
    by_round = {r.project: r for r in run.rounds}
    for p in run.selected:
        step += 1
        r = by_round.get(p)
        if r is None:  # free project
            funded.append(Funded(p, step, votes[p], (), Fraction(0)))
            continue
        # group the supporters by what they paid: per pair of (budget class, utility) first,
        # with numpy, then merge pairs that paid the same (few Fractions to hash, not one
        # per supporter)
        by_pair = np.argsort(r.inv, kind="stable")
        bounds = np.searchsorted(r.inv[by_pair], np.arange(len(r.paid) + 1))
        groups_sorted = r.groups[by_pair]
        amounts: dict[tuple[int, int], list[IntArray]] = {}  # hashing ints, not Fractions
        paid_of: dict[tuple[int, int], Fraction] = {}
        for k, paid in enumerate(r.paid):
            if bounds[k + 1] > bounds[k]:
                exact = (paid.numerator, paid.denominator)
                paid_of[exact] = paid
                amounts.setdefault(exact, []).append(groups_sorted[bounds[k] : bounds[k + 1]])
        # largest amount first; sorted by the correctly rounded float (monotone), the exact
        # value deciding only between equal floats (comparing Fractions is slow)
        by_amount = sorted(
            amounts, key=lambda a: (a[0] / a[1], paid_of[a]), reverse=True
        )
        payments = tuple(
            Payment(paid_of[a], tuple(_ascending(amounts[a]).tolist())) for a in by_amount
        )
        funded.append(Funded(p, step, votes[p], payments, r.t / prep.scale[p]))
    chosen = set(run.selected)
    unfunded = []
    for p in range(prep.m):
        if p in chosen:
            continue
        if p in prep.free_ignored:
            unfunded.append(Unfunded(p, "free-no-weight", votes[p]))
        elif len(prep.sup[p]) == 0:
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
        fund_free=prep.fund_free,
    )


class _FloatMes:
    """MES runs (approval, cost-satisfaction) through the certified float kernel `_mes.run`.

    `run(x)` gives the funded projects at per-voter budget x in funding order, exactly as the
    exact engine would, or None when the kernel could not prove a decision (near ties, exact
    ties other than the structural ones, money exactly equal to a cost); see flows/pb/_mes.c.
    """

    def __init__(self, prep: _Prepared, key: TieKey) -> None:
        if prep.election.vote_type != "approval":  # the kernel knows cost-satisfaction only
            raise RuleNotApplicable("the MES kernel needs approval ballots")
        m = prep.m
        self.prep = prep
        self.ptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(prep.nsup_i, out=self.ptr[1:])
        # The kernel's time goes on reading supporters' budgets from memory, in the order of
        # each project's list. Numbered in file order, a project's supporters are scattered
        # over all groups, and each read fetches memory for one group; numbered so that
        # groups backing the same popular projects are neighbours, a project's supporters
        # lie in a few runs and each fetch serves several (twice as fast on Warsaw 2026).
        # Which number a group has changes no decision of the kernel (its sums are bounded
        # in any order).
        perm = _locality_order(prep)
        # every ballot entry, groups in their new order; then by project, stably: each
        # project's supporters, numbered anew, ascending (approval: the entries are exactly
        # the supporters)
        lens = prep.flat.lens
        starts = np.cumsum(lens) - lens
        new_lens = lens[perm]
        entries = np.repeat(starts[perm] - (np.cumsum(new_lens) - new_lens), new_lens)
        entries += np.arange(len(entries), dtype=np.int64)
        by_project = _by_project(prep.flat.projects[entries], m)
        self.idx = np.repeat(np.arange(len(perm), dtype=np.int64), new_lens)[by_project]
        rank = np.empty(m, dtype=np.int64)
        rank[sorted(range(m), key=key)] = np.arange(m)
        self.rank = rank
        self.w = prep.weights[perm].astype(np.float64)
        self.clo = np.array([_float_below(c) for c in prep.costs], dtype=np.float64)
        self.chi = np.array([_float_above(c) for c in prep.costs], dtype=np.float64)
        self.wtot = np.array([max(w, 1) for w in prep.wtot], dtype=np.float64)
        self.alive = np.zeros(m, dtype=np.int8)
        self.alive[prep.priced] = 1
        self.free = list(prep.free)
        G = len(self.w)
        self.lo = np.empty(G, dtype=np.float64)
        self.hi = np.empty(G, dtype=np.float64)
        self.sel = np.empty(m, dtype=np.int64)
        # sums of weights must be exact in float64 for the kernel's argument
        self.kernel = _kernel() if prep.kernel else None
        self.usable = self.kernel is not None and sum(prep.wtot) < 2**52

    def run(self, x: Fraction) -> list[int] | None:
        if not self.usable or self.kernel is None:
            return None
        n = self.kernel.run(
            self.ptr, self.idx, self.rank, self.w, self.clo, self.chi, self.wtot, self.alive,
            _float_below(x), _float_above(x), self.lo, self.hi, self.sel,
        )
        if n < 0:
            return None
        funded: list[int] = self.sel[:n].tolist()
        return self.free + funded


def _locality_order(prep: _Prepared) -> IntArray:
    """The groups in the order the kernel should number them: by which of the 63 most
    supported projects they back, the most supported first (a bit mask of them, sorted)."""
    G = len(prep.weights)
    by_support = np.argsort(-prep.nsup_i, kind="stable")
    bit = np.zeros(prep.m, dtype=np.uint64)
    top = by_support[:63]
    bit[top] = np.left_shift(np.uint64(1), np.arange(62, 62 - len(top), -1, dtype=np.uint64))
    lens = prep.flat.lens
    mask = np.zeros(G, dtype=np.uint64)
    named = np.flatnonzero(lens)  # reduceat needs non-empty ballots
    if len(named):
        starts = np.cumsum(lens) - lens
        mask[named] = np.bitwise_or.reduceat(bit[prep.flat.projects], starts[named])
    return np.argsort(~mask, kind="stable").astype(np.int64)


def _by_project(projects: IntArray, m: int) -> IntArray:
    """The stable order of ballot entries by project (numpy sorts 16-bit keys by radix,
    ten times faster than 64-bit ones)."""
    keys = projects.astype(np.int16) if m < 2**15 else projects
    return np.argsort(keys, kind="stable").astype(np.int64)


def _float_below(v: Fraction) -> float:
    f = v.numerator / v.denominator  # correctly rounded
    return f if Fraction(f) <= v else math.nextafter(f, -math.inf)


def _float_above(v: Fraction) -> float:
    f = v.numerator / v.denominator
    return f if Fraction(f) >= v else math.nextafter(f, math.inf)


def _mes_add1(
    election: Election, prep: _Prepared, key: TieKey, tie_break: TieBreak, max_runs: int
) -> TallyResult:
    """pabutools' `exhaustion_by_budget_increase(..., budget_step=n, exhaustive_stop=False)`.

    The per-voter budget goes B/n, B/n + 1, B/n + 2, ... while the total budget stays at most
    B*(n+1) (so k <= B); the result is the outcome just before the first one costing more
    than B (or the last one if none does). Each step runs the certified float kernel, and the
    exact engine where the kernel cannot decide; the kept outcome is recomputed exactly.

    Three provable jumps skip steps whose outcome is known to be the same (see `_SameOutcome`
    and `_Stretch`); at most `max_runs` MES runs are made, else `TallyTooLong`.
    """
    n = election.num_voters
    budget = election.budget
    if n == 0:
        run = _MesRun(prep, Fraction(0), key)
        return _mes_result(election, prep, run, "mes-add1", tie_break, 1)
    base = budget / n
    kmax = math.floor(budget)
    costs = prep.costs
    supported = [p for p in range(prep.m) if len(prep.sup[p])]
    k = 0
    runs = 0
    nxt: tuple[Fraction, Fraction] | None = None
    if sum((costs[p] for p in supported), Fraction(0)) <= budget:
        k = kmax  # no outcome can cost more than B: the last step is kept
    fast = _FloatMes(prep, key)
    same = _SameOutcome(prep, base, kmax)
    # costs and budget as integers of one common unit: each step's total is an int sum
    unit = math.lcm(budget.denominator, *(c.denominator for c in costs))
    cost_units = [int(c * unit) for c in costs]
    budget_units = int(budget * unit)
    # `_Stretch` costs about as much as an exact run (hundreds of kernel runs): try it once
    # the outcome has stayed the same for `patience` steps, more on larger elections; after a
    # try that jumps little (the outcome stays but the supporters who pay all they have
    # change, as on Assen), not again before the outcome changes, and eight times later
    patience = 16 + int(prep.nsup_i.sum()) // 4
    streak = 0
    gave_up_here = False
    previous: list[int] | None = None
    while k + 1 <= kmax:
        if runs >= max_runs:
            raise TallyTooLong("mes-add1", runs, max_runs, base + k, base, base + kmax)
        x = base + k + 1
        sel = fast.run(x)
        if sel is None:
            sel = _MesRun(prep, x, key).selected
        runs += 1
        spent = sum(cost_units[p] for p in sel)
        if spent > budget_units:
            nxt = (x, Fraction(spent, unit))
            break
        k += 1
        k = max(k, same.last_step(x))
        if sel != previous:
            streak, gave_up_here = 0, False
        else:
            streak += 1
        previous = sel
        if streak >= patience and not gave_up_here and k < kmax:
            stretch = _Stretch(prep, base + k, key)
            runs += 1
            last = stretch.last_step(base, kmax) if stretch.selected == sel else k
            if last - k < patience:
                patience *= 8
                gave_up_here = True
            k, streak = max(k, last), 0
    final = _mes_at(prep, base + k, key, fast)
    result = _mes_result(election, prep, final, "mes-add1", tie_break, runs + 1)
    return replace(
        result,
        add1_start=base,
        add1_next_budget=nxt[0] if nxt else None,
        add1_next_cost=nxt[1] if nxt else None,
    )


class _Stretch:
    """The per-voter budgets around x at which MES takes every decision as it does at x.

    An exact MES run (approval, cost satisfaction) at x in which every budget is kept as an
    affine function a + c*x of the per-voter budget. While the same decisions are taken (which
    projects are affordable, which supporters pay all they have, which project wins each
    round, ties going to the same project), every budget, price and rho is affine in x; so is
    every quantity compared, and each comparison keeps its outcome on a half-line of x. The
    intersection, an interval around x, is where MES funds exactly what it funds at x.
    That proves, for example, the election of issue #17 where one of two equally supported
    projects of cost 10^12 is funded and the second only becomes affordable at x = 10^12:
    the whole stretch up to it is one jump.
    """

    def __init__(self, prep: _Prepared, x: Fraction, key: TieKey) -> None:
        self.x = x
        # the interval: lower and upper ends (None: unbounded) and whether they are open
        self.lo: Fraction | None = None
        self.lo_open = False
        self.hi: Fraction | None = None
        self.hi_open = False
        self.selected: list[int] = list(prep.free)
        affine: list[tuple[Fraction, Fraction]] = [(Fraction(0), Fraction(1))]  # class -> a, c
        lookup = {affine[0]: 0}
        cls: IntArray = np.zeros(len(prep.weights), dtype=np.int64)
        alive = sorted(prep.priced)
        while True:
            best: tuple[Fraction, tuple[object, ...]] | None = None
            rhos: dict[int, tuple[Fraction, Fraction]] = {}
            paying: dict[int, tuple[list[int], list[int], Fraction, Fraction]] = {}
            for p in list(alive):
                sup = prep.sup[p]
                per = np.bincount(cls[sup], weights=prep.wsup_f[p])
                used = np.flatnonzero(per).tolist()
                wts = [int(per[c]) for c in used]
                cost = prep.costs[p]
                total_a = sum(
                    (w * affine[c][0] for w, c in zip(wts, used, strict=True)), Fraction(0)
                )
                total_c = sum(
                    (w * affine[c][1] for w, c in zip(wts, used, strict=True)), Fraction(0)
                )
                if total_a + total_c * x < cost:
                    self._keep(total_a - cost, total_c, strict=True, sign=-1)
                    alive.remove(p)
                    continue
                self._keep(total_a - cost, total_c, strict=False, sign=1)
                value = {c: affine[c][0] + affine[c][1] * x for c in used}
                order = sorted(range(len(used)), key=lambda i: value[used[i]])
                paid, rest = Fraction(0), sum(wts)
                capped: list[int] = []
                for i in order:
                    if (cost - paid) / rest <= value[used[i]]:
                        break
                    capped.append(used[i])
                    paid += wts[i] * value[used[i]]
                    rest -= wts[i]
                weight = dict(zip(used, wts, strict=True))
                qa = (cost - sum((weight[c] * affine[c][0] for c in capped), Fraction(0))) / rest
                qc = -sum((weight[c] * affine[c][1] for c in capped), Fraction(0)) / rest
                uncapped = [c for c in used if c not in set(capped)]
                for c in capped:  # pays all it has: budget < price
                    self._keep(qa - affine[c][0], qc - affine[c][1], strict=True, sign=1)
                for c in uncapped:  # pays the price: budget >= price
                    self._keep(affine[c][0] - qa, affine[c][1] - qc, strict=False, sign=1)
                rho = (qa / cost, qc / cost)
                rhos[p] = rho
                paying[p] = (capped, uncapped, qa, qc)
                rank = (rho[0] + rho[1] * x, key(p))
                if best is None or rank < best:
                    best, winner = rank, p
            if best is None:
                return
            rw = rhos[winner]
            for p, rho in rhos.items():
                if p != winner:  # the winner keeps beating p: rho_p - rho_w >= 0 (or > 0)
                    self._keep(rho[0] - rw[0], rho[1] - rw[1], key(winner) > key(p), 1)
            capped, uncapped, qa, qc = paying[winner]
            remap: dict[int, int] = {}
            for c in capped + uncapped:
                new = (
                    (Fraction(0), Fraction(0))
                    if c in capped
                    else (affine[c][0] - qa, affine[c][1] - qc)
                )
                if new not in lookup:
                    lookup[new] = len(affine)
                    affine.append(new)
                remap[c] = lookup[new]
            sup = prep.sup[winner]
            table = np.arange(len(affine), dtype=np.int64)
            for old, new_c in remap.items():
                table[old] = new_c
            cls[sup] = table[cls[sup]]
            alive.remove(winner)
            self.selected.append(winner)

    def _keep(self, a: Fraction, c: Fraction, strict: bool, sign: int) -> None:
        """Restrict the interval to where sign * (a + c*x) >= 0 (> 0 if strict); it holds at x."""
        if c == 0:
            return
        root = -a / c
        if (c > 0) == (sign > 0):  # a lower end
            if self.lo is None or root > self.lo or (root == self.lo and strict):
                self.lo, self.lo_open = root, strict
        elif self.hi is None or root < self.hi or (root == self.hi and strict):
            self.hi, self.hi_open = root, strict

    def last_step(self, base: Fraction, kmax: int) -> int:
        """The largest k <= kmax with base + k in the interval."""
        if self.hi is None:
            return kmax
        d = self.hi - base
        k = math.ceil(d) - 1 if self.hi_open else math.floor(d)
        return min(kmax, k)


def _mes_at(prep: _Prepared, x: Fraction, key: TieKey, fast: _FloatMes | None = None) -> _MesRun:
    """The exact MES run at per-voter budget x, for its payments: the kernel finds the
    funding order (approval ballots) and the exact engine replays it; where the kernel
    cannot prove a decision, or the ballots are not approval, the exact engine searches."""
    if fast is None and prep.election.vote_type == "approval" and len(prep.weights):
        fast = _FloatMes(prep, key)
    order = fast.run(x) if fast is not None else None
    return _MesRun(prep, x, key, order)


class _SameOutcome:
    """How far the Add1 search may jump because the outcome provably stays the same.

    Let A be the projects whose supporters together hold enough at per-voter budget x
    (W_p x >= c_p, i.e. x >= t_p = c_p / W_p); the others are unaffordable. If x >= the total
    cost of A, any one supporter can pay for every project of A still to be funded, so MES
    funds all of A: the outcome is A (and the free projects), until x reaches the next t_p.
    Only odd elections get here (a project with very few supporters for its cost), where
    every +1 step up to that point would otherwise be run.
    """

    def __init__(self, prep: _Prepared, base: Fraction, kmax: int) -> None:
        pairs = sorted((prep.costs[p] / prep.wtot[p], prep.costs[p]) for p in prep.priced)
        self.thresholds = [t for t, _ in pairs]
        self.total = [Fraction(0)]
        for _, cost in pairs:
            self.total.append(self.total[-1] + cost)
        self.base = base
        self.kmax = kmax

    def last_step(self, x: Fraction) -> int:
        """The last step k whose outcome is provably the outcome at x (0 if none is known)."""
        i = bisect.bisect_right(self.thresholds, x)  # A: the first i projects
        if x < self.total[i]:
            return 0
        if i == len(self.thresholds):
            return self.kmax
        return min(self.kmax, math.ceil(self.thresholds[i] - self.base) - 1)


def selected_ids(election: Election, result: TallyResult) -> list[str]:
    """The funded project ids, numbers sorted as numbers ("2" before "11")."""
    return sorted((election.projects[j].id for j in result.selected), key=natural_key)


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
    "DEFAULT_MAX_RUNS",
    "TallyTooLong",
    "kernel_available",
    "RULES",
    "Funded",
    "Payment",
    "Rule",
    "RuleNotApplicable",
    "TallyResult",
    "Unfunded",
    "PABULIB_RULES",
    "parse_rule",
    "payments_by_voter",
    "selected_ids",
    "tally",
]
