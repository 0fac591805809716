"""What a tally says to people: the explanation an officer reads and the JSON scripts read.

Pure functions of an `Election` and its `TallyResult` (no I/O), used by `civicbot pb tally`
and meant for PB rounds' results too. Amounts are shown in the file's currency (META
`currency`) rounded to cents; the JSON keeps exact fractions beside the decimal amounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any

from flows.pb.model import Election, Project, natural_key
from flows.pb.rules import Funded, Payment, TallyResult, Unfunded, payments_by_voter, selected_ids

# What happened to a free project that voters named but MES did not fund (docs/pb.md).
_FREE_FUND = "fund it outside the vote (or tally with --fund-free-projects)"
FREE_NO_WEIGHT = {
    "approval": "costs nothing; MES with cost satisfaction gives it no weight, so the vote "
    f"cannot fund it: {_FREE_FUND}",
    "ordinal": "costs nothing and every voter who named it ranked it last (a Borda score of 0), "
    f"so MES gives it no weight: {_FREE_FUND}",
    "cumulative": f"costs nothing and got no points, so MES gives it no weight: {_FREE_FUND}",
    "scoring": f"costs nothing and got no points, so MES gives it no weight: {_FREE_FUND}",
}

_RULE_NAMES = {
    "greedy": "Greedy",
    "mes": "Method of Equal Shares",
    "mes-add1": "Method of Equal Shares with Add1 completion",
    "phragmen": "Sequential Phragmén",
}
_TIE_BREAKS = {
    "cost-votes": "the cheaper project, then the one with more votes, then the lower id",
    "lexico": "the lower project id",
}


def decimal_amount(x: Fraction) -> Decimal:
    """x rounded to cents, half up (exact: no float on the way)."""
    with localcontext() as ctx:
        ctx.prec = 60
        d = Decimal(x.numerator) / Decimal(x.denominator)
        return d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {words or word + 's'}"


class Money:
    """Formats amounts in the election's currency: '1,190.48 EUR' (no currency: '1,190.48')."""

    def __init__(self, election: Election) -> None:
        self.currency = election.meta.get("currency", "").strip()

    def __call__(self, x: Fraction) -> str:
        text = f"{decimal_amount(x):,}"
        return f"{text} {self.currency}" if self.currency else text


def _name(p: Project) -> str:
    return f"{p.id} ({p.name})" if p.name else p.id


def _number(x: Fraction) -> int | float:
    """A JSON number: an integer when it is one, else the amount rounded to cents."""
    return x.numerator if x.denominator == 1 else float(decimal_amount(x))


# -------------------------------------------------------------------------- the reasons


def reasons(election: Election, result: TallyResult) -> dict[int, str]:
    """Why each unfunded project was not funded, in a sentence."""
    money = Money(election)
    out: dict[int, str] = {}
    for u in result.unfunded:
        out[u.project] = _reason(election, u, money)
    return out


def _reason(election: Election, u: Unfunded, money: Money) -> str:
    cost = election.projects[u.project].cost
    if u.reason == "no-supporters":
        return "nobody voted for it"
    if u.reason == "free-no-weight":
        return FREE_NO_WEIGHT[election.vote_type]
    if u.reason == "not-enough-money":
        assert u.money_left is not None
        who = plural(u.supporters, "supporter")
        between = " between them" if u.supporters > 1 else ""
        return (
            f"not enough supporters' money left: its {who} had {money(u.money_left)} "
            f"left{between}, it costs {money(cost)}"
        )
    if u.reason == "no-longer-fit":
        assert u.budget_left is not None
        return (
            f"it no longer fit: {money(u.budget_left)} of the budget was left, "
            f"it costs {money(cost)}"
        )
    return "the count stopped first (Phragmén stops at the first project that does not fit)"


def funded_note(election: Election, result: TallyResult, f: Funded) -> str | None:
    """What to say about a funded project that costs nothing (None for the others)."""
    if election.projects[f.project].cost:
        return None
    if result.rule in ("mes", "mes-add1"):
        if result.fund_free:
            return "costs nothing: funded outside the vote (--fund-free-projects); nobody paid"
        return "costs nothing: funded before the count, as its supporters value it; nobody paid"
    if result.rule == "phragmen":
        return "costs nothing: funded first, as it adds no load to its supporters"
    return "costs nothing: it always fits what is left of the budget"


# ------------------------------------------------------------------------ the explanation


def explain_lines(election: Election, result: TallyResult) -> list[str]:
    """The explanation of a tally, as paragraphs (no voter ids: they say nothing to people)."""
    money = Money(election)
    out = [f"How {_RULE_NAMES[result.rule]} decided:"]
    out += ["  " + line for line in _how(election, result, money)]
    spent = Fraction(0)
    for f in result.funded:
        p = election.projects[f.project]
        spent += p.cost
        head = f"Funded {_name(p)}, step {f.step}, costing {money(p.cost)}:"
        note = funded_note(election, result, f)
        if note:
            out += ["", head, f"  {note}."]
            continue
        if result.rule == "greedy":
            body = (
                f"{plural(f.supporters, 'vote')}; {money(election.budget - spent)} of the "
                "budget left after it."
            )
        elif result.rule == "phragmen":
            load = f" now carry a load of {money(f.price)} each" if f.price is not None else ""
            body = f"its {plural(f.supporters, 'supporter')}{load}."
        else:
            body = _shares(election, f.payments, money)
        out += ["", head, f"  {body}"]
    why = reasons(election, result)
    if result.unfunded:
        out += ["", "Not funded:"]
    for u in result.unfunded:
        out.append(f"  {_name(election.projects[u.project])}: {why[u.project]}")
    return out


def _how(election: Election, result: TallyResult, money: Money) -> list[str]:
    n = result.voters
    tie = f"Ties go to {_TIE_BREAKS[result.tie_break]}."
    if result.rule == "greedy":
        order = {
            "approval": "votes",
            "ordinal": "Borda score per unit of cost",
        }.get(election.vote_type, "points per unit of cost")
        return [
            f"Projects are taken in order of {order}; each one is funded if it still fits "
            f"what is left of the budget, {money(result.budget)}. {tie}"
        ]
    if result.rule == "phragmen":
        return [
            "Each funded project's cost is shared as a load by its supporters; the next project "
            "funded is always the one that keeps its supporters' largest load lowest, and the "
            f"count stops at the first such project that no longer fits the budget, "
            f"{money(result.budget)}. {tie}"
        ]
    assert result.voter_budget is not None
    start = result.add1_start if result.add1_start is not None else result.voter_budget
    per = money.currency or "unit"
    smallest = {
        "approval": f"the smallest share per {per} of its cost",
        "ordinal": "the smallest payment per point of Borda score",
    }.get(election.vote_type, "the smallest payment per point")
    lines = [
        f"The budget, {money(result.budget)}, split equally among the {plural(n, 'voter')} "
        f"gives each {money(start)} to spend on the projects they voted for. Each round funds "
        f"the project whose supporters can pay for it with {smallest} (those with less left "
        "pay all they have); the count stops when no project's supporters can pay for one any "
        f"more. {tie}"
    ]
    if result.rule == "mes-add1":
        lines.append(_add1(election, result, money, start))
    lines.append(
        f"The shares below are MES's accounting with {money(result.voter_budget)} per voter: "
        "they decide which projects are funded; nobody pays them."
    )
    return lines


def _add1(election: Election, result: TallyResult, money: Money, start: Fraction) -> str:
    assert result.voter_budget is not None
    final = result.voter_budget
    unit = money(Fraction(1))
    runs = plural(result.add1_runs, "run")
    if final == start:
        raised = f"Add1 completion kept {money(start)} per voter"
    else:
        raised = (
            f"MES may leave money unspent, so Add1 completion raised every voter's share "
            f"{unit} at a time ({runs} of MES) from {money(start)} to {money(final)}, the last "
            "share whose outcome fits the budget"
        )
    if result.add1_next_budget is not None and result.add1_next_cost is not None:
        return (
            f"{raised}: with {money(final)} each the funded projects cost {money(result.cost)}; "
            f"with {money(result.add1_next_budget)} each MES would fund projects costing "
            f"{money(result.add1_next_cost)}, more than the budget."
        )
    return (
        f"{raised}: with {money(final)} each the funded projects cost {money(result.cost)}, and "
        "the share cannot be raised further (Add1 stops when the budget per voter would pass "
        "the whole budget, or when everything anyone voted for fits)."
    )


def _shares(election: Election, payments: Sequence[Payment], money: Money) -> str:
    """'43 supporters paid 167.44 EUR each; 1 paid all it had left, 276.75 EUR; ...'."""
    counted = [(p.amount, sum(election.groups[g].weight for g in p.groups)) for p in payments]
    counted.sort(key=lambda c: -c[0])
    if not counted:
        return "nobody paid."
    parts = []
    for i, (amount, n) in enumerate(counted):
        if amount == 0:
            parts.append(f"{plural(n, 'supporter')} had nothing left")
        elif i == 0:
            parts.append(f"{plural(n, 'supporter')} paid {money(amount)}" + (" each" * (n > 1)))
        elif election.vote_type == "approval":  # under the full price: all they had left
            parts.append(f"{n:,} paid all they had left, {money(amount)}" + (" each" * (n > 1)))
        else:  # points or Borda scores: a share in proportion to the supporter's score
            parts.append(f"{n:,} paid {money(amount)}" + (" each" * (n > 1)))
    if election.vote_type != "approval" and len(counted) > 1:
        parts[0] = "in proportion to their points (Borda score for rankings): " + parts[0]
    return "; ".join(parts) + "."


# ---------------------------------------------------------------------------------- JSON


def result_json(election: Election, result: TallyResult, explain: bool) -> dict[str, Any]:
    """The tally as JSON. The keys of earlier versions keep their meaning (scripts read them);
    later ones are added beside them."""
    currency = election.meta.get("currency", "").strip() or None
    projects = sorted(result.selected, key=lambda j: natural_key(election.projects[j].id))
    out: dict[str, Any] = {
        "rule": result.rule,
        "selected": selected_ids(election, result),  # numbers sorted as numbers
        "cost": _number(result.cost),
        "budget": _number(result.budget),
        "voters": result.voters,
        "projects": result.projects,
        "tie_break": result.tie_break,
        "currency": currency,
        "selected_projects": [
            {
                "id": election.projects[j].id,
                "name": election.projects[j].name,
                "cost": _number(election.projects[j].cost),
            }
            for j in projects
        ],
    }
    if not explain:
        return out
    why = reasons(election, result)
    funded = []
    for f in result.funded:
        p = election.projects[f.project]
        entry: dict[str, Any] = {
            "project": p.id,
            "name": p.name,
            "cost": _number(p.cost),
            "step": f.step,
            "supporters": f.supporters,
            # "paid" is exact (a fraction as text); "amount" is it rounded to cents
            "payments": [
                {"voter": v, "paid": str(a), "amount": float(decimal_amount(a))}
                for v, a in payments_by_voter(election, f.payments)
            ],
            "shares": [
                {
                    "voters": sum(election.groups[g].weight for g in pay.groups),
                    "amount": float(decimal_amount(pay.amount)),
                    "paid": str(pay.amount),
                }
                for pay in f.payments
            ],
        }
        note = funded_note(election, result, f)
        if note:
            entry["note"] = note
        funded.append(entry)
    out["funded"] = funded
    out["unfunded"] = [
        {
            "project": election.projects[u.project].id,
            "name": election.projects[u.project].name,
            "cost": _number(election.projects[u.project].cost),
            "supporters": u.supporters,
            "reason": u.reason,
            "why": why[u.project],
        }
        for u in result.unfunded
    ]
    out["explanation"] = explain_lines(election, result)
    if result.voter_budget is not None:
        out["voter_budget"] = str(result.voter_budget)
        out["voter_budget_amount"] = float(decimal_amount(result.voter_budget))
        out["fund_free_projects"] = result.fund_free
    if result.rule == "mes-add1" and result.add1_start is not None:
        nxt, cost = result.add1_next_budget, result.add1_next_cost
        out["add1"] = {
            "start_voter_budget": str(result.add1_start),
            "start_voter_budget_amount": float(decimal_amount(result.add1_start)),
            "runs": result.add1_runs,
            "next_voter_budget_amount": None if nxt is None else float(decimal_amount(nxt)),
            "next_cost": None if cost is None else _number(cost),
        }
    return out
