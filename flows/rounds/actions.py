"""The actions the PB voting and ideas flows call (``flows/rounds/vote.yaml``,
``flows/rounds/idea.yaml``). Listed in ``bot/services.py`` (``registered_actions``); each
gets the host's action context (session, contact, args, time, channel) and returns the
:class:`ActionResult` the flow continues with.

Texts built here (questions with the round's numbers, read-backs, problems, receipts) come
from the catalogue (``pb_*`` keys) in the person's language. Options on the ballot have the
ballot number as their id ("1", "2", ...): a selection comes back as those numbers, which
:mod:`flows.rounds.ballots` checks against the round's rules.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flows.catalogue import Catalogue
from flows.commands import YES_WORDS, normalise
from flows.events import ActionResult
from flows.needs.definition import london
from flows.rounds import ballots, linking
from flows.rounds.ballots import Ballot, Problem, Rules
from storage.models import Contact, Ward
from storage.pb_rounds import PbProject, PbProposal, PbRound, ProposalStatus, RoundStatus

MAX_IDEA_TITLE = 120
MAX_IDEA_CONTENT = 1000
SHARED_NOT_OWN = (
    "shared:other"  # channels.telegram.updates.SHARED_NOT_OWN (flows never import channels)
)
CHANGE_WORDS = frozenset({"CHANGE", "LIST", "NEWID", "RHESTR"})
_QUOTED = re.compile(r"'([0-9]{1,4})'")


class Context(Protocol):
    """What an action gets from the host (``bot.pipeline.ActionContext`` provides it)."""

    @property
    def session(self) -> AsyncSession: ...

    @property
    def contact(self) -> Contact: ...

    @property
    def args(self) -> Any: ...

    @property
    def now(self) -> datetime: ...

    @property
    def channel(self) -> str | None: ...


RoundAction = Callable[[Context], Awaitable[ActionResult]]


def _arg(ctx: Context, name: str) -> str:
    """An argument; a flow variable that was never set comes through as ``{name}``."""
    value = str(ctx.args.get(name, "") or "")
    return "" if re.fullmatch(r"\{[a-z_]+\}", value) else value


def _local(texts: dict[str, str], language: str) -> str:
    return texts.get(language) or texts.get("en") or ""


def money(amount: int, currency: str) -> str:
    symbol = {"GBP": "£", "EUR": "€", "USD": "$"}.get(currency.upper())
    return f"{symbol}{amount:,}" if symbol else f"{amount:,} {currency}"


def _numbers(language: str, values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


# ---- finding rounds --------------------------------------------------------------------------


async def voting_rounds(session: AsyncSession, now: datetime) -> list[PbRound]:
    """Rounds taking ballots now, the one closing first first."""
    found = await session.execute(
        select(PbRound)
        .where(
            PbRound.status == RoundStatus.VOTING,  # type: ignore[arg-type]
            PbRound.voting_open <= now,  # type: ignore[arg-type]
            PbRound.voting_close > now,  # type: ignore[arg-type]
        )
        .order_by(PbRound.voting_close, PbRound.id)  # type: ignore[arg-type]
    )
    return list(found.scalars())


async def ended_rounds(session: AsyncSession, now: datetime) -> list[PbRound]:
    """Rounds whose voting has ended (closed, or past the closing time), latest first."""
    found = await session.execute(
        select(PbRound)
        .where(
            PbRound.imported.is_(False),  # type: ignore[attr-defined]
            (PbRound.status == RoundStatus.CLOSED) | (PbRound.voting_close <= now),  # type: ignore[arg-type]
        )
        .order_by(PbRound.voting_close.desc())  # type: ignore[attr-defined]
        .limit(20)
    )
    return list(found.scalars())


async def projects_of(session: AsyncSession, round_id: str) -> list[PbProject]:
    found = await session.execute(
        select(PbProject)
        .where(PbProject.round_id == round_id)  # type: ignore[arg-type]
        .order_by(PbProject.position, PbProject.id)  # type: ignore[arg-type]
    )
    return list(found.scalars())


async def ward_names(session: AsyncSession, codes: Sequence[str], language: str) -> str:
    wards = [await session.get(Ward, code) for code in codes[:6]]
    names = [
        (w.name_cy if language == "cy" and w.name_cy else w.name) if w else code
        for w, code in zip(wards, codes[:6], strict=True)
    ]
    return ", ".join(names) + (", ..." if len(codes) > 6 else "")


# ---- the actions -----------------------------------------------------------------------------


def build_actions(catalogue: Catalogue) -> dict[str, RoundAction]:
    """Every PB round action, by name, with the catalogue for the texts they build."""

    def say(ctx: Context, key: str, **values: Any) -> str:
        return catalogue.text(key, ctx.contact.language, **values)

    def problem_text(ctx: Context, problem: Problem, round_: PbRound) -> str:
        values = dict(problem.values)
        for name in ("total", "budget", "over"):
            if problem.code is not ballots.Code.POINTS_OVER and name in values:
                values[name] = money(int(values[name]), round_.currency)
        return say(ctx, problem.key, **values)

    async def ended(ctx: Context, round_: PbRound) -> ActionResult:
        """The answer for a round whose voting has ended: when, and its result if stored."""
        language = ctx.contact.language
        values: dict[str, Any] = {
            "title": _local(round_.title, language),
            "closes": london(round_.closed_at or round_.voting_close),
        }
        results = round_.results or {}
        selected = [str(s) for s in results.get("selected") or []]
        if round_.status == RoundStatus.CLOSED and results:
            by_id = {p.id: p for p in await projects_of(ctx.session, round_.id)}
            names = [_local(by_id[s].title, language) if s in by_id else s for s in selected]
            values["results"] = say(ctx, "pb_results_funded", projects="; ".join(names) or "-")
        else:
            values["results"] = say(ctx, "pb_results_pending")
        return ActionResult("closed", values)

    async def load(ctx: Context) -> ActionResult:
        """The round this person votes in (``args.round`` once they chose one), its
        ballot question and projects; or why they can't vote."""
        session, contact, now = ctx.session, ctx.contact, ctx.now
        language = contact.language
        wanted = _arg(ctx, "round")
        if wanted:
            chosen = await session.get(PbRound, wanted)
            if chosen is None or chosen.imported:
                return ActionResult("none")
            if not ballots.taking_ballots(chosen, now):
                if chosen.status == RoundStatus.CLOSED or chosen.voting_close <= now:
                    return await ended(ctx, chosen)
                return ActionResult("none")
            candidates = [chosen]
        else:
            candidates = await voting_rounds(session, now)
            if not candidates:
                mine = [r for r in await ended_rounds(session, now) if r.covers(contact.ward_code)]
                return await ended(ctx, mine[0]) if mine else ActionResult("none")
        if contact.ward_code is None:
            return ActionResult("no_ward", {"title": _local(candidates[0].title, language)})
        covering = [r for r in candidates if r.covers(contact.ward_code)]
        if not covering:
            first = candidates[0]
            return ActionResult(
                "outside",
                {
                    "title": _local(first.title, language),
                    "wards": await ward_names(session, list(first.wards or []), language),
                },
            )
        if len(covering) > 1:
            options = [
                {"id": str(k), "text": r.title, "value": r.id} for k, r in enumerate(covering, 1)
            ]
            return ActionResult("choose", {"rounds": options})
        round_ = covering[0]
        return await _prepare(ctx, round_)

    async def _prepare(ctx: Context, round_: PbRound) -> ActionResult:
        language = ctx.contact.language
        projects = await projects_of(ctx.session, round_.id)
        rules = Rules.of(round_)
        title = _local(round_.title, language)
        assert ctx.contact.id is not None
        mine = await ballots.ballot_of(ctx.session, round_id=round_.id, contact_id=ctx.contact.id)
        already = say(ctx, "pb_vote_already") + "\n" if mine is not None else ""
        most = rules.most if rules.most is not None else len(projects)
        values: dict[str, Any] = {
            "round_id": round_.id,
            "title": title,
            "kind": rules.kind,
            "least": rules.least,
            "most": None if rules.most is None else min(most, len(projects)),
            "budget": rules.budget,
            "closes": london(round_.voting_close),
            "projects": [
                {"id": str(k), "text": p.title or {"en": p.id}, "cost": p.cost}
                for k, p in enumerate(projects, start=1)
            ],
            "ballot_positions": "",
            "ballot_points": "",
        }
        if rules.kind == "knapsack":
            question = say(
                ctx,
                "pb_vote_question_knapsack",
                title=title,
                budget=money(round_.budget, round_.currency),
            )
        elif rules.kind == "ranked":
            question = say(ctx, "pb_vote_question_ranked", title=title, most=values["most"])
        elif rules.kind == "cumulative":
            question = say(
                ctx,
                "pb_vote_question_cumulative",
                title=title,
                points=rules.points or "",
                list=_project_list(projects, language, round_.currency),
            )
        elif rules.most is None:
            question = say(ctx, "pb_vote_question_approval_any", title=title, least=rules.least)
        else:
            question = say(
                ctx,
                "pb_vote_question_approval",
                title=title,
                least=rules.least,
                most=values["most"],
            )
        values["question"] = already + question
        values["points_question"] = values["question"]
        if round_.verification == "phone" and not await _verified(ctx):
            return ActionResult("verify", values)
        return ActionResult(rules.kind, values)

    async def _verified(ctx: Context) -> bool:
        """Whether this person may vote in a ``verification: phone`` round: by SMS (their
        number is verified by the network), or with a phone linked and confirmed."""
        return await linking.phone_verified(ctx.session, contact=ctx.contact, channel=ctx.channel)

    async def round_for(ctx: Context) -> tuple[PbRound | None, list[PbProject]]:
        round_ = await ctx.session.get(PbRound, _arg(ctx, "round"))
        if round_ is None:
            return None, []
        return round_, await projects_of(ctx.session, round_.id)

    def readback(
        ctx: Context, round_: PbRound, projects: Sequence[PbProject], ballot: Ballot
    ) -> str:
        language = ctx.contact.language
        rules = Rules.of(round_)
        numbers = _numbers(language, ballot.positions)
        titles = "; ".join(_local(projects[p - 1].title, language) for p in ballot.positions)
        if rules.kind == "knapsack":
            return say(
                ctx,
                "pb_readback_knapsack",
                numbers=numbers,
                titles=titles,
                total=money(ballot.cost(projects), round_.currency),
                budget=money(round_.budget, round_.currency),
            )
        if rules.kind == "ranked":
            return say(ctx, "pb_readback_ranked", numbers=numbers, titles=titles)
        if rules.kind == "cumulative":
            assert ballot.points is not None
            given = ", ".join(
                say(
                    ctx,
                    "pb_readback_points_item",
                    number=p,
                    points=n,
                    title=_local(projects[p - 1].title, language),
                )
                for p, n in zip(ballot.positions, ballot.points, strict=True)
            )
            return say(
                ctx,
                "pb_readback_cumulative",
                given=given,
                total=sum(ballot.points),
                points=rules.points or sum(ballot.points),
            )
        return say(ctx, "pb_readback_approval", numbers=numbers, titles=titles)

    def kept(ballot: Ballot) -> dict[str, str]:
        return {
            "ballot_positions": ",".join(str(p) for p in ballot.positions),
            "ballot_points": ",".join(str(p) for p in ballot.points or ()),
        }

    def previous(ctx: Context) -> Ballot | None:
        positions = [int(p) for p in _arg(ctx, "prev").split(",") if p.isdigit()]
        points = [int(p) for p in _arg(ctx, "prev_points").split(",") if p.isdigit()]
        if not positions:
            return None
        return Ballot(tuple(positions), tuple(points) if points else None)

    async def check(ctx: Context) -> ActionResult:
        """A selection from the ballot question (``chosen``: the numbers picked; or
        ``typed``: a cumulative ballot's points) checked; its read-back, or the problem."""
        round_, projects = await round_for(ctx)
        if round_ is None:
            return ActionResult("none")
        rules = Rules.of(round_)
        typed = _arg(ctx, "typed")
        result: Ballot | Problem
        if rules.kind == "cumulative" or typed:
            result = ballots.parse_ballot(typed, rules, projects)
        else:
            chosen = [int(n) for n in _QUOTED.findall(_arg(ctx, "chosen"))]
            result = ballots.check_positions(chosen, rules, projects)
        if isinstance(result, Problem):
            text = problem_text(ctx, result, round_)
            question = f"{text}\n\n{_arg(ctx, 'question')}".strip()
            return ActionResult("problem", {"problem": text, "points_question": question})
        return ActionResult(
            "ok", {"readback": readback(ctx, round_, projects, result), **kept(result)}
        )

    async def answer(ctx: Context) -> ActionResult:
        """The answer to the read-back: YES casts the ballot read back; new numbers (or
        points) are checked and read back; CHANGE shows the list again. A problem keeps
        the ballot read back before and says what was wrong."""
        round_, projects = await round_for(ctx)
        if round_ is None:
            return ActionResult("none")
        text = _arg(ctx, "typed").strip()
        word = normalise(text)
        ballot = previous(ctx)
        if word in CHANGE_WORDS:
            return ActionResult("change", {"ballot_positions": "", "ballot_points": ""})
        if word in YES_WORDS or word in {
            normalise(t) for t in catalogue.all("pb_vote_yes").values()
        }:
            if ballot is None:
                return ActionResult("change")
            return await cast(ctx, round_, projects, ballot)
        rules = Rules.of(round_)
        result = ballots.parse_ballot(text, rules, projects)
        if isinstance(result, Problem):
            shown = problem_text(ctx, result, round_)
            back = readback(ctx, round_, projects, ballot) if ballot else ""
            return ActionResult("problem", {"readback": f"{shown}\n\n{back}".strip()})
        return ActionResult(
            "ok", {"readback": readback(ctx, round_, projects, result), **kept(result)}
        )

    async def cast(
        ctx: Context, round_: PbRound, projects: Sequence[PbProject], ballot: Ballot
    ) -> ActionResult:
        contact, language = ctx.contact, ctx.contact.language
        title = _local(round_.title, language)
        checked = (
            ballot
            if ballot.points is not None
            else ballots.check_positions(ballot.positions, Rules.of(round_), projects)
        )
        if isinstance(checked, Problem):  # the read-back was of another ballot's rules
            return ActionResult("change")
        if not round_.covers(contact.ward_code):  # moved ward since the list was shown
            wards = await ward_names(ctx.session, list(round_.wards or []), language)
            return ActionResult("outside", {"title": title, "wards": wards})
        if round_.verification == "phone" and not await _verified(ctx):
            return ActionResult("verify")
        try:
            done = await ballots.cast_ballot(
                ctx.session,
                round=round_.id,
                contact=contact,
                vote=checked.vote(projects),
                points=None if checked.points is None else list(checked.points),
                channel=ctx.channel,
                now=ctx.now,
            )
        except ballots.RoundClosed:
            fresh = await ctx.session.get(PbRound, round_.id)
            return await ended(ctx, fresh or round_)
        key = "pb_vote_replaced" if done.replaced else "pb_vote_cast"
        return ActionResult(
            "cast",
            {
                "receipt_text": say(
                    ctx,
                    key,
                    receipt=done.receipt,
                    title=title,
                    closes=london(round_.voting_close),
                ),
                "ballot_positions": "",
                "ballot_points": "",
            },
        )

    # ---- ideas --------------------------------------------------------------------------

    async def idea_load(ctx: Context) -> ActionResult:
        """The round taking ideas for this person's ward now, or why there is none."""
        session, contact, now = ctx.session, ctx.contact, ctx.now
        language = contact.language
        open_rounds = [r for r in await _idea_rounds(session, now)]
        if not open_rounds:
            return ActionResult("none")
        if contact.ward_code is None:
            return ActionResult("no_ward", {"title": _local(open_rounds[0].title, language)})
        covering = [r for r in open_rounds if r.covers(contact.ward_code)]
        if not covering:
            first = open_rounds[0]
            wards = await ward_names(session, list(first.wards or []), language)
            return ActionResult("outside", {"title": _local(first.title, language), "wards": wards})
        round_ = covering[0]
        assert round_.proposals_close is not None
        return ActionResult(
            "ok",
            {
                "idea_round": round_.id,
                "title": _local(round_.title, language),
                "closes": london(round_.proposals_close),
            },
        )

    async def idea_save(ctx: Context) -> ActionResult:
        session, contact, now = ctx.session, ctx.contact, ctx.now
        round_ = await session.get(PbRound, _arg(ctx, "round"))
        if round_ is None or not _taking_ideas(round_, now):
            return ActionResult("closed")
        title = _arg(ctx, "title").strip()[:MAX_IDEA_TITLE]
        content = _arg(ctx, "content").strip()[:MAX_IDEA_CONTENT]
        if not title or not content:
            return ActionResult("error")
        session.add(
            PbProposal(
                round_id=round_.id,
                contact_id=contact.id,
                ward_code=contact.ward_code,
                title=title,
                content=content,
                status=ProposalStatus.NEW,
                created_at=now,
            )
        )
        await session.flush()
        return ActionResult("ok")

    # ---- linking a phone (Telegram) ----------------------------------------------------------

    async def link_start(ctx: Context) -> ActionResult:
        if ctx.channel in linking.SMS_CHANNELS:
            return ActionResult("sms")
        if await linking.phone_verified(ctx.session, contact=ctx.contact, channel=ctx.channel):
            return ActionResult("linked")
        return ActionResult("ask")

    async def link_send(ctx: Context) -> ActionResult:
        given = _arg(ctx, "phone")
        if given == SHARED_NOT_OWN:  # a contact shared on Telegram that is not the sender's
            return ActionResult("not_own")
        phone = linking.normalise_phone(given)
        if phone is None:
            return ActionResult("bad_phone")
        try:
            await linking.send_code(
                ctx.session,
                contact=ctx.contact,
                channel=ctx.channel,
                phone=phone,
                text=say(ctx, "pb_link_code_sms"),
                now=ctx.now,
            )
        except linking.TooManyCodes:
            return ActionResult("too_many")
        return ActionResult("sent", {"phone_shown": phone})

    async def link_confirm(ctx: Context) -> ActionResult:
        outcome, phone = await linking.confirm_code(
            ctx.session, contact=ctx.contact, code=_arg(ctx, "code"), now=ctx.now
        )
        if outcome != "ok" or phone is None:
            return ActionResult(outcome)
        await linking.link_phone(
            ctx.session, contact=ctx.contact, channel=ctx.channel, phone=phone, now=ctx.now
        )
        return ActionResult("ok")

    return {
        "pb_link_start": link_start,
        "pb_link_send": link_send,
        "pb_link_confirm": link_confirm,
        "pb_vote_load": load,
        "pb_vote_check": check,
        "pb_vote_answer": answer,
        "pb_idea_load": idea_load,
        "pb_idea_save": idea_save,
    }


def _taking_ideas(round_: PbRound, now: datetime) -> bool:
    return (
        not round_.imported
        and round_.status == RoundStatus.DRAFT
        and round_.proposals_open is not None
        and round_.proposals_close is not None
        and round_.proposals_open <= now < round_.proposals_close
    )


async def _idea_rounds(session: AsyncSession, now: datetime) -> list[PbRound]:
    found = await session.execute(
        select(PbRound)
        .where(
            PbRound.status == RoundStatus.DRAFT,  # type: ignore[arg-type]
            PbRound.proposals_open <= now,  # type: ignore[arg-type,operator]
            PbRound.proposals_close > now,  # type: ignore[arg-type,operator]
        )
        .order_by(PbRound.proposals_close, PbRound.id)  # type: ignore[arg-type]
    )
    return [r for r in found.scalars() if _taking_ideas(r, now)]


def _project_list(projects: Sequence[PbProject], language: str, currency: str) -> str:
    return "\n".join(
        f"{k} {_local(p.title, language) or p.id} ({money(p.cost, currency)})"
        for k, p in enumerate(projects, start=1)
    )
