"""Tests of the participatory-budgeting tally engine, and the pabutools reference adaptor.

pabutools (GPL) is a test and benchmark dependency only: it is imported here, lazily, and
never by civicbot's runtime code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.pb.model import TieBreak, natural_key
from flows.pb.rules import Rule

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pabulib"


def pabutools_tally(path: str | Path, rule: Rule, tie_break: TieBreak = "cost-votes") -> list[str]:
    """Ids of the projects pabutools funds for `rule` on the file at `path`, sorted as
    `selected_ids` sorts them (numbers as numbers)."""
    from pabutools.election import (
        Additive_Borda_Sat,
        Additive_Cardinal_Sat,
        ApprovalProfile,
        Cost_Sat,
        OrdinalProfile,
        parse_pabulib,
    )
    from pabutools.rules import (
        exhaustion_by_budget_increase,
        greedy_utilitarian_welfare,
        method_of_equal_shares,
        sequential_phragmen,
    )

    instance, profile = parse_pabulib(str(path))
    tb = _tie_breaking(instance, profile, tie_break)
    sat: Any
    if isinstance(profile, ApprovalProfile):
        sat = Cost_Sat
    elif isinstance(profile, OrdinalProfile):
        sat = Additive_Borda_Sat
    else:
        sat = Additive_Cardinal_Sat
    run: Callable[[], Any]
    if rule == "greedy":
        # Additive_Borda_Sat is a sum of per-project scores; declaring it additive selects
        # pabutools' fast greedy variant, which gives the same outcome as the general one.
        def run() -> Any:
            return greedy_utilitarian_welfare(
                instance, profile, sat_class=sat, tie_breaking=tb, is_sat_additive=True
            )
    elif rule == "mes":

        def run() -> Any:
            return method_of_equal_shares(instance, profile, sat_class=sat, tie_breaking=tb)
    elif rule == "mes-add1":

        def run() -> Any:
            return exhaustion_by_budget_increase(
                instance,
                profile,
                method_of_equal_shares,
                rule_params={"sat_class": Cost_Sat, "tie_breaking": tb},
                budget_step=profile.num_ballots(),
                exhaustive_stop=False,
            )
    else:

        def run() -> Any:
            return sequential_phragmen(instance, profile, tie_breaking=tb)

    return sorted((p.name for p in run()), key=natural_key)


def pabutools_mes_at_step(
    path: str | Path, k: int, tie_break: TieBreak = "cost-votes"
) -> list[str]:
    """Sorted ids pabutools' MES (Cost_Sat) funds with the budget raised by k per voter.

    This is one step of pabutools' `exhaustion_by_budget_increase(..., budget_step=n)`, which
    raises the budget limit by n (one unit per voter) per step: checking our `mes-add1`
    endpoint with it costs two MES runs where pabutools' whole Add1 takes many minutes.
    """
    from pabutools.election import Cost_Sat, parse_pabulib
    from pabutools.rules import method_of_equal_shares
    instance, profile = parse_pabulib(str(path))
    tb = _tie_breaking(instance, profile, tie_break)
    instance.budget_limit = instance.budget_limit + k * profile.num_ballots()
    outcome = method_of_equal_shares(instance, profile, sat_class=Cost_Sat, tie_breaking=tb)
    return sorted((p.name for p in outcome), key=natural_key)


def _tie_breaking(instance: Any, profile: Any, tie_break: TieBreak) -> Any:
    """pabutools' tie-breaking rule equal to ours: lexico, or cost, then votes, then id."""
    from pabutools.tiebreaking import TieBreakingRule, lexico_tie_breaking

    if tie_break == "lexico":
        return lexico_tie_breaking
    votes: dict[str, int] = {p.name: 0 for p in instance}
    for ballot in profile:
        for p in ballot:
            votes[p.name] += profile.multiplicity(ballot)
    return TieBreakingRule(lambda inst, prof, p: (p.cost, -votes[p.name], p.name))
