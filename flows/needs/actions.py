"""The actions the needs flows call (``flows/needs/*.yaml``), each a small function over the
unit of work's open session. They are listed by hand in ``bot/services.py``
(``registered_actions``); the host passes each an action context (session, contact, args,
time) and resumes the flow with the :class:`ActionResult` returned.

Texts residents see are in the flow YAML (options' Welsh names come from the census file and
the assessment's own en/cy texts), never here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from flows.events import ActionResult
from flows.needs.definition import london
from storage import needs as store
from storage.models import Contact, Ward
from storage.needs import PREFER_NOT, NeedsAssessment

MAX_FREE_TEXT = 500
SKIP_WORDS = frozenset({"SKIP", "NO", "NONE", "NA", "N/A", "-", "HEPGOR", "DIM", "NA DIOLCH"})
ASKED_DIMENSIONS = ("age_band", "disability", "ethnic_group")  # each has its own question
_PICK = re.compile(r"'([A-Za-z0-9_-]{1,32})'")


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


def _arg(ctx: Context, name: str) -> str:
    """An argument; a flow variable that was never set comes through as ``{name}``."""
    value = str(ctx.args.get(name, "") or "")
    return "" if re.fullmatch(r"\{[a-z_]+\}", value) else value


def _text(texts: dict[str, str], language: str) -> str:
    return texts.get(language) or texts.get("en") or ""


async def _choose(ctx: Context) -> tuple[str, NeedsAssessment | None]:
    """The assessment this conversation is about, and the outcome for the flow."""
    session, contact, now = ctx.session, ctx.contact, ctx.now
    wanted = _arg(ctx, "assessment")
    if wanted:
        found = await store.get_assessment(session, wanted)
        if found is None or found.opens_at > now:
            return "none", None
        if found.has_closed(now):
            return "closed", found
        candidates = [found]
    else:
        candidates = await store.open_assessments(session, now=now)
        if not candidates:
            started = await store.latest_started(session, now=now)
            mine = [a for a in started if a.wards is None or a.covers(contact.ward_code)]
            return ("closed", mine[0]) if mine else ("none", None)
    if contact.ward_code is None:
        return "no_ward", candidates[0]
    covering = [a for a in candidates if a.covers(contact.ward_code)]
    if not covering:
        return "outside", candidates[0]
    return "ok", covering[0]


async def _ward_names(session: AsyncSession, codes: list[str], language: str) -> str:
    wards = [await session.get(Ward, code) for code in codes[:6]]
    names = [
        (w.name_cy if language == "cy" and w.name_cy else w.name) if w else code
        for w, code in zip(wards, codes[:6], strict=True)
    ]
    return ", ".join(names) + (", ..." if len(codes) > 6 else "")


async def needs_load(ctx: Context) -> ActionResult:
    """Find the open assessment for this person (``args.assessment`` when an invitation
    named one): its title, categories and limits, or why they can't answer it."""
    outcome, assessment = await _choose(ctx)
    language = ctx.contact.language
    if assessment is None:
        return ActionResult(outcome)
    values: dict[str, Any] = {
        "assessment_id": assessment.id,
        "title": _text(assessment.title, language),
        "closes": london(assessment.closed_at or assessment.closes_at),
    }
    if outcome == "outside":
        values["wards"] = await _ward_names(ctx.session, list(assessment.wards or []), language)
    if outcome != "ok":
        return ActionResult(outcome, values)
    values.update(
        categories=[
            {"id": c["id"], "text": {"en": c["en"], "cy": c["cy"]}}
            for c in assessment.categories
        ],
        picks=min(assessment.picks, len(assessment.categories)),
        ask_free_text=assessment.ask_free_text,
        free_text="",
    )
    return ActionResult("ok", values)


def parse_picks(value: str, allowed: list[str], most: int) -> list[str]:
    """The picks in order, each once, only known categories, at most ``most``."""
    picks: list[str] = []
    for pick in _PICK.findall(value):
        if pick in allowed and pick not in picks:
            picks.append(pick)
    return picks[:most]


async def _pending(ctx: Context, assessment: NeedsAssessment) -> list[str]:
    """The "about you" questions of this assessment the person has not answered yet (and
    for which a census is loaded, so there are answers to offer)."""
    assert ctx.contact.id is not None
    answered = await store.profile_answers(ctx.session, contact_id=ctx.contact.id)
    groups = await store.census_groups(ctx.session)
    return [d for d in assessment.about_you if d not in answered and d in groups]


async def needs_save(ctx: Context) -> ActionResult:
    """Save the person's ranking (and free text), replacing an earlier answer; then say
    whether to ask for consent to the "about you" questions, ask them, or finish."""
    contact, session, now = ctx.contact, ctx.session, ctx.now
    assert contact.id is not None
    assessment = await store.get_assessment(session, _arg(ctx, "assessment"))
    if assessment is None or not assessment.is_open(now):
        if assessment is None:
            return ActionResult("closed")
        ended = assessment.closed_at or min(assessment.closes_at, now)
        return ActionResult("closed", {"closes": london(ended)})
    if not assessment.covers(contact.ward_code):  # moved ward since the question was asked
        wards = await _ward_names(session, list(assessment.wards or []), contact.language)
        return ActionResult("outside", {"wards": wards})
    allowed = [c["id"] for c in assessment.categories]
    picks = parse_picks(_arg(ctx, "picks"), allowed, assessment.picks)
    if not picks:
        return ActionResult("error")
    text = _arg(ctx, "free_text").strip() if assessment.ask_free_text else ""
    free_text = None if not text or text.upper() in SKIP_WORDS else text[:MAX_FREE_TEXT]
    profile = await store.profile(session, contact_id=contact.id)
    consented = profile is not None and profile.consent_at is not None
    answered = await store.profile_answers(session, contact_id=contact.id) if consented else {}
    demographics = {d: answered[d] for d in assessment.about_you if d in answered}
    await store.save_response(
        session,
        assessment_id=assessment.id,
        contact_id=contact.id,
        ward_code=contact.ward_code,
        picks=picks,
        free_text=free_text,
        demographics=demographics,
        now=now,
    )
    pending = await _pending(ctx, assessment)
    if not pending or (profile is not None and profile.declined_at is not None):
        return ActionResult("done")
    return ActionResult("ask" if consented else "consent", {"about_pending": ",".join(pending)})


async def needs_consent(ctx: Context) -> ActionResult:
    """Explicit consent to the "about you" questions (special-category data), or a refusal
    (which also withdraws any earlier answers)."""
    assert ctx.contact.id is not None
    agreed = _arg(ctx, "answer").lower() in ("yes", "true")
    await store.set_consent(ctx.session, contact_id=ctx.contact.id, consent=agreed, now=ctx.now)
    if not agreed:
        assessment = await store.get_assessment(ctx.session, _arg(ctx, "assessment"))
        if assessment is not None:
            response = await store.response_of(
                ctx.session, assessment_id=assessment.id, contact_id=ctx.contact.id
            )
            if response is not None and assessment.is_open(ctx.now):
                response.demographics = None
        return ActionResult("declined")
    return ActionResult("ask")


async def needs_next_about(ctx: Context) -> ActionResult:
    """The next "about you" question: its census groups plus "prefer not to say" as
    options, and the outcome naming the dimension (the flow words each question)."""
    pending = [d for d in _arg(ctx, "pending").split(",") if d]
    groups = await store.census_groups(ctx.session)
    while pending:
        dimension = pending.pop(0)
        names = groups.get(dimension)
        if not names:
            continue
        options: list[dict[str, Any]] = [
            {"id": f"g{i}", "text": {"en": name, "cy": name_cy or name}, "value": name}
            for i, (name, name_cy) in enumerate(names, start=1)
        ]
        options.append(
            {
                "id": "prefer_not",
                "text": {"en": _arg(ctx, "prefer_en"), "cy": _arg(ctx, "prefer_cy")},
                "value": PREFER_NOT,
            }
        )
        outcome = dimension if dimension in ASKED_DIMENSIONS else "other"
        return ActionResult(
            outcome,
            {
                "about_options": options,
                "about_dimension": dimension,
                "about_label": dimension.replace("_", " "),
                "about_pending": ",".join(pending),
            },
        )
    return ActionResult("done")


async def needs_save_about(ctx: Context) -> ActionResult:
    """Keep one "about you" answer (with consent only), and put it on the person's response
    to the assessment they are answering now; responses they gave before keep what they
    said then."""
    contact, session, now = ctx.contact, ctx.session, ctx.now
    assert contact.id is not None
    profile = await store.profile(session, contact_id=contact.id)
    if profile is None or profile.consent_at is None:
        return ActionResult("ok")
    dimension, group = _arg(ctx, "dimension"), _arg(ctx, "group")
    names = [name for name, _ in (await store.census_groups(session)).get(dimension, [])]
    if group != PREFER_NOT and group not in names:
        return ActionResult("ok")
    await store.set_profile_answer(
        session, contact_id=contact.id, dimension=dimension, group=group, now=now
    )
    assessment = await store.get_assessment(session, _arg(ctx, "assessment"))
    if assessment is not None and assessment.is_open(now) and dimension in assessment.about_you:
        response = await store.response_of(
            session, assessment_id=assessment.id, contact_id=contact.id
        )
        if response is not None:
            response.demographics = {**(response.demographics or {}), dimension: group}
    return ActionResult("ok")


async def needs_about_start(ctx: Context) -> ActionResult:
    """ABOUT ME: go through every "about you" question again (answers replace the person's
    earlier ones; responses already given keep what was said then)."""
    assert ctx.contact.id is not None
    groups = await store.census_groups(ctx.session)
    order = [d for d in ASKED_DIMENSIONS if d in groups] + sorted(
        d for d in groups if d not in ASKED_DIMENSIONS
    )
    if not order:
        return ActionResult("none")
    profile = await store.profile(ctx.session, contact_id=ctx.contact.id)
    consented = profile is not None and profile.consent_at is not None
    return ActionResult("ask" if consented else "consent", {"about_pending": ",".join(order)})


def needs_actions() -> dict[str, Any]:
    """Every action the needs flows call, by name."""
    return {
        "needs_load": needs_load,
        "needs_save": needs_save,
        "needs_consent": needs_consent,
        "needs_next_about": needs_next_about,
        "needs_save_about": needs_save_about,
        "needs_about_start": needs_about_start,
    }
