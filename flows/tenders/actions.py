"""The actions tender flows call, each a small function over the conversation's open
transaction (``ctx.session``; nothing here commits or sends: proactive messages go later
through the broadcast path, see :meth:`flows.tenders.service.TenderService`).

Flow variables reach an action as formatted text (``args``); lists arrive as their Python
form ("['youth', 'health']") and are read back with :func:`ast.literal_eval`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from flows.catalogue import LANGUAGES, Catalogue
from flows.events import ActionResult
from flows.tenders.alerts import AlertTexts
from flows.tenders.service import FREQUENCIES, next_digest
from flows.tenders.taxonomy import CATEGORY_IDS, REGION_IDS
from storage import tenders as store
from storage.models import Contact
from storage.tenders import (
    IntroductionStatus,
    TenderAlert,
    TenderIntroduction,
    TenderOrg,
    TenderProcess,
    TenderSubscription,
)

ORG_KINDS = ("charity", "cic", "coop", "mutual", "community", "social", "other")
MAX_SUBSCRIPTIONS = 10
MAX_VALUE = 1e13
_BAND = re.compile(
    r"^\s*£?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([km]?)\s*(?:-|to|i|–)\s*"
    r"£?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([km]?)\s*$",
    re.IGNORECASE,
)
_NONE_WORDS = {"NONE", "NO", "NA", "DIM", "-", "SKIP", "HEPGOR", "N/A"}


class Ctx(Protocol):
    """What the pipeline gives an action (``bot.pipeline.ActionContext``)."""

    @property
    def session(self) -> AsyncSession: ...
    @property
    def contact(self) -> Contact: ...
    @property
    def args(self) -> Mapping[str, str]: ...
    @property
    def now(self) -> datetime: ...


TenderAction = Callable[[Any], Awaitable[ActionResult]]


def _list(text: str | None) -> list[str]:
    if not text or not text.startswith("["):
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _given(text: str | None) -> bool:
    """Whether a flow variable reached the action (a missing one arrives as ``{name}``)."""
    return bool(text and text.strip() and not text.startswith("{"))


def _ref(text: str | None) -> int | None:
    word = (text or "").strip().lstrip("#")
    return int(word) if re.fullmatch(r"[0-9]{1,9}", word) else None


def normalise_number(text: str) -> str | None:
    """A charity or company number as stored (upper case, no spaces); None for SKIP."""
    compact = re.sub(r"\s+", "", text or "").upper()
    if compact in _NONE_WORDS or not compact or compact.startswith("{"):
        return None
    return compact[:20]


def parse_band(text: str) -> tuple[float | None, float | None] | str:
    """A value band from an option id (``25000-100000``, ``500000-``, ``any``) or typed
    text (``£10k to £50,000``); a problem's catalogue key when it can't stand."""
    word = text.strip().lower()
    if word in ("any", ""):
        return None, None
    option = re.fullmatch(r"([0-9]+)-([0-9]*)", word)
    if option:
        return float(option.group(1)) or None, float(option.group(2)) if option.group(2) else None
    match = _BAND.match(text)
    if not match:
        return "tender_band_unreadable"
    numbers = []
    for figure, unit in ((match.group(1), match.group(2)), (match.group(3), match.group(4))):
        value = float(figure.replace(",", ""))
        value *= {"k": 1e3, "m": 1e6}.get(unit.lower(), 1)
        numbers.append(value)
    low, high = numbers
    if low > MAX_VALUE or high > MAX_VALUE:
        return "tender_band_too_large"
    if low > high:
        return "tender_band_min_over_max"
    return (low or None), high


def parse_keywords(text: str) -> tuple[list[str], list[str]]:
    """(keywords, CPV prefixes) from "youth mentoring, sport, 8531": comma-separated
    phrases; figures of 2 to 8 digits are CPV code beginnings."""
    if (text or "").strip().upper() in _NONE_WORDS or text.startswith("{"):
        return [], []
    keywords: list[str] = []
    prefixes: list[str] = []
    for piece in re.split(r"[,;\n]+", text):
        piece = piece.strip()
        if not piece:
            continue
        cpv = re.fullmatch(r"([0-9]{2,8})(?:-[0-9])?", piece)
        if cpv:
            prefixes.append(cpv.group(1))
        else:
            keywords.append(piece[:60].lower())
    return keywords[:10], prefixes[:10]


def build_actions(catalogue: Catalogue) -> dict[str, TenderAction]:
    """Every tender action, with the catalogue for labels shown in questions."""

    def texts(ctx: Ctx) -> AlertTexts:
        return AlertTexts(catalogue, ctx.contact.language)

    def labels(key: str) -> dict[str, str]:
        return {lang: catalogue.text(key, lang) for lang in LANGUAGES}

    async def org_of(ctx: Ctx) -> TenderOrg | None:
        assert ctx.contact.id is not None
        return await store.org_of_contact(ctx.session, contact_id=ctx.contact.id)

    async def org_status(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        if org is None:
            return ActionResult("none")
        return ActionResult("ok", {"org_name": org.name})

    async def save_org(ctx: Ctx) -> ActionResult:
        assert ctx.contact.id is not None
        name = ctx.args.get("name", "").strip()[:120]
        kind = ctx.args.get("kind", "other")
        if not name or name.startswith("{"):
            return ActionResult("error")
        org = await org_of(ctx)
        created = org is None
        if org is None:
            org = TenderOrg(
                contact_id=ctx.contact.id, name=name, kind="other", created_at=ctx.now,
                updated_at=ctx.now,
            )
            ctx.session.add(org)
        org.name = name
        org.kind = kind if kind in ORG_KINDS else "other"
        org.number = normalise_number(ctx.args.get("number", ""))
        details = ctx.args.get("details", "").strip()
        org.contact_details = "" if details.startswith("{") else details[:300]
        org.listed = ctx.args.get("listed", "") == "yes"
        org.updated_at = ctx.now
        await ctx.session.flush()
        return ActionResult("new" if created else "ok", {"org_name": name})

    async def subscription_options(ctx: Ctx) -> ActionResult:
        values: dict[str, Any] = {
            "categories": [
                {"id": c, "text": labels(f"tender_cat_{c}")} for c in CATEGORY_IDS
            ],
            "regions": [{"id": "all", "text": labels("tender_regions_all_option")}]
            + [{"id": r, "text": labels(f"tender_region_{r}")} for r in REGION_IDS],
        }
        if ctx.args.get("new") == "yes":
            values["edit"] = ""
        return ActionResult("ok", values)

    async def check_band(ctx: Ctx) -> ActionResult:
        band = parse_band(ctx.args.get("band", "any"))
        if isinstance(band, str):
            return ActionResult(
                "bad_band", {"band_problem": catalogue.text(band, ctx.contact.language)}
            )
        return ActionResult("ok")

    async def save_subscription(ctx: Ctx) -> ActionResult:
        assert ctx.contact.id is not None
        org = await org_of(ctx)
        if org is None or org.id is None:
            return ActionResult("no_org")
        band = parse_band(ctx.args.get("band", "any"))
        if isinstance(band, str):
            return ActionResult(
                "bad_band", {"band_problem": catalogue.text(band, ctx.contact.language)}
            )
        categories = [c for c in _list(ctx.args.get("categories")) if c in CATEGORY_IDS]
        regions = [r for r in _list(ctx.args.get("regions")) if r in REGION_IDS]
        if "all" in _list(ctx.args.get("regions")):
            regions = []
        keywords, prefixes = parse_keywords(ctx.args.get("keywords", ""))
        frequency = ctx.args.get("frequency", "instant")
        frequency = frequency if frequency in FREQUENCIES else "instant"
        subs = await store.subscriptions_of(ctx.session, org_id=org.id)
        editing = _ref(ctx.args.get("edit"))
        sub = next((s for s in subs if s.id == editing), None)
        if sub is None:
            if len(subs) >= MAX_SUBSCRIPTIONS:
                return ActionResult("too_many", {"most": MAX_SUBSCRIPTIONS})
            sub = TenderSubscription(
                org_id=org.id, contact_id=ctx.contact.id, created_at=ctx.now, updated_at=ctx.now
            )
            ctx.session.add(sub)
        sub.categories = categories
        sub.cpv = prefixes
        sub.regions = regions
        sub.min_value, sub.max_value = band
        sub.vcse_only = ctx.args.get("vcse") == "yes"
        sub.keywords = keywords
        sub.frequency = frequency
        sub.paused = False
        sub.next_digest_at = next_digest(frequency, ctx.now)
        sub.updated_at = ctx.now
        await ctx.session.flush()
        return ActionResult("ok", {"summary": summary(texts(ctx), sub)})

    async def list_subscriptions(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        if org is None or org.id is None:
            return ActionResult("none")
        subs = await store.subscriptions_of(ctx.session, org_id=org.id)
        if not subs:
            return ActionResult("none")
        t = texts(ctx)
        options = [
            {"id": str(s.id), "text": {ctx.contact.language: summary(t, s)[:200], "en":
                                       summary(AlertTexts(catalogue, "en"), s)[:200]}}
            for s in subs
        ]
        return ActionResult("ok", {"subscriptions": options})

    async def subscription_op(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        sub_id = _ref(ctx.args.get("sub"))
        if org is None or org.id is None or sub_id is None:
            return ActionResult("error")
        sub = await ctx.session.get(TenderSubscription, sub_id)
        if sub is None or sub.org_id != org.id:
            return ActionResult("error")
        op = ctx.args.get("op")
        language = ctx.contact.language
        if op == "delete":
            await ctx.session.execute(
                delete(TenderAlert).where(col(TenderAlert.subscription_id) == sub.id)
            )
            await ctx.session.delete(sub)
            result = catalogue.text("tender_sub_deleted", language)
        else:
            sub.paused = not sub.paused
            sub.updated_at = ctx.now
            result = catalogue.text(
                "tender_sub_paused" if sub.paused else "tender_sub_resumed", language
            )
        await ctx.session.flush()
        return ActionResult("ok", {"result": result})

    async def set_all_paused(ctx: Ctx, paused: bool) -> ActionResult:
        org = await org_of(ctx)
        if org is None:
            return ActionResult("none")
        await ctx.session.execute(
            update(TenderSubscription)
            .where(col(TenderSubscription.org_id) == org.id)
            .values(paused=paused, updated_at=ctx.now)
        )
        return ActionResult("ok")

    async def alerts_off(ctx: Ctx) -> ActionResult:
        return await set_all_paused(ctx, True)

    async def alerts_on(ctx: Ctx) -> ActionResult:
        return await set_all_paused(ctx, False)

    async def process_of(ctx: Ctx, text: str | None) -> TenderProcess | None:
        ref = _ref(text)
        return None if ref is None else await ctx.session.get(TenderProcess, ref)

    async def interested(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        if org is None or org.id is None:
            return ActionResult("no_org")
        if not _given(ctx.args.get("ref")):
            return ActionResult("no_ref")
        process = await process_of(ctx, ctx.args.get("ref"))
        if process is None or process.id is None:
            return ActionResult("unknown", {"ref": ctx.args.get("ref", "")[:12]})
        values = {"ref": process.id, "title": process.title[:120]}
        new = await store.add_interest(
            ctx.session, org_id=org.id, process_id=process.id, now=ctx.now
        )
        return ActionResult("ok" if new else "already", values)

    async def partners_of(
        ctx: Ctx, org: TenderOrg, process: TenderProcess
    ) -> list[TenderOrg]:
        assert process.id is not None
        return [
            o
            for o in await store.interested_orgs(ctx.session, process_id=process.id)
            if o.listed and o.id != org.id
        ]

    async def profile(session: AsyncSession, org: TenderOrg) -> tuple[set[str], set[str]]:
        """An organisation's categories and regions: those of its subscriptions."""
        assert org.id is not None
        subs = await store.subscriptions_of(session, org_id=org.id)
        categories = {c for s in subs for c in s.categories}
        regions = {r for s in subs for r in s.regions} if all(s.regions for s in subs) else set()
        return categories, regions

    async def partners(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        if org is None or org.id is None:
            return ActionResult("no_org")
        if not _given(ctx.args.get("ref")):
            return ActionResult("no_ref")
        process = await process_of(ctx, ctx.args.get("ref"))
        if process is None or process.id is None:
            return ActionResult("unknown", {"ref": ctx.args.get("ref", "")[:12]})
        values: dict[str, Any] = {"ref": process.id, "title": process.title[:120]}
        found = await partners_of(ctx, org, process)
        if not found:
            return ActionResult("none", values)
        t = texts(ctx)
        mine, _ = await profile(ctx.session, org)
        lines = []
        for k, other in enumerate(found, start=1):
            categories, regions = await profile(ctx.session, other)
            covers = [
                lot["id"]
                for lot in process.lots
                if set(lot.get("categories") or ()) & categories
                and not set(lot.get("categories") or ()) & mine
            ]
            line = catalogue.text(
                "tender_partner_line",
                ctx.contact.language,
                k=k,
                name=other.name,
                kind=catalogue.text(f"tender_kind_{other.kind}", ctx.contact.language),
                categories=t.categories(sorted(categories)) or "-",
                regions=t.regions(sorted(regions)),
            )
            if covers:
                line += catalogue.text(
                    "tender_partner_covers", ctx.contact.language, lots=", ".join(covers[:8])
                )
            lines.append(line)
        values["partners"] = "\n".join(lines)
        values["first"] = 1
        return ActionResult("ok", values)

    async def introduce_check(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        if org is None or org.id is None:
            return ActionResult("no_org")
        if not _given(ctx.args.get("pair")):
            return ActionResult("no_ref")
        words = (ctx.args.get("pair") or "").split()
        process = await process_of(ctx, words[0] if words else None)
        if process is None or process.id is None:
            return ActionResult("unknown", {"ref": (words[0] if words else "")[:12]})
        values: dict[str, Any] = {"ref": process.id, "title": process.title[:120]}
        k = _ref(words[1]) if len(words) > 1 else None
        found = await partners_of(ctx, org, process)
        if k is None or not 1 <= k <= len(found):
            return ActionResult("bad_partner", {**values, "count": len(found)})
        other = found[k - 1]
        values.update(partner_id=other.id, partner_name=other.name, org_name=org.name)
        existing = (
            await ctx.session.execute(
                select(TenderIntroduction).where(
                    col(TenderIntroduction.process_id) == process.id,
                    col(TenderIntroduction.from_org_id) == org.id,
                    col(TenderIntroduction.to_org_id) == other.id,
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            return ActionResult("already", values)
        if not org.contact_details:
            return ActionResult("no_details", values)
        return ActionResult("ok", values)

    async def introduce_ask(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        process = await process_of(ctx, ctx.args.get("ref"))
        other_id = _ref(ctx.args.get("partner"))
        if org is None or org.id is None or process is None or process.id is None:
            return ActionResult("error")
        other = await ctx.session.get(TenderOrg, other_id) if other_id else None
        if other is None or other.id is None or not other.listed or other.id == org.id:
            return ActionResult("error")
        await store.add_interest(ctx.session, org_id=org.id, process_id=process.id, now=ctx.now)
        ctx.session.add(
            TenderIntroduction(
                process_id=process.id, from_org_id=org.id, to_org_id=other.id, created_at=ctx.now
            )
        )
        await ctx.session.flush()
        return ActionResult("ok")

    async def pending_intro(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        if org is None:
            return ActionResult("none")
        intro = (
            await ctx.session.execute(
                select(TenderIntroduction)
                .where(
                    col(TenderIntroduction.to_org_id) == org.id,
                    col(TenderIntroduction.status) == IntroductionStatus.ASKED,
                )
                .order_by(col(TenderIntroduction.id))
                .limit(1)
            )
        ).scalar_one_or_none()
        if intro is None:
            return ActionResult("none")
        asker = await ctx.session.get(TenderOrg, intro.from_org_id)
        process = await ctx.session.get(TenderProcess, intro.process_id)
        assert asker is not None and process is not None
        return ActionResult(
            "ok",
            {
                "intro_id": intro.id,
                "asker_name": asker.name,
                "asker_kind": catalogue.text(f"tender_kind_{asker.kind}", ctx.contact.language),
                "ref": process.id,
                "title": process.title[:100],
            },
        )

    async def intro_answer(ctx: Ctx) -> ActionResult:
        org = await org_of(ctx)
        intro_id = _ref(ctx.args.get("intro"))
        intro = await ctx.session.get(TenderIntroduction, intro_id) if intro_id else None
        if org is None or intro is None or intro.to_org_id != org.id:
            return ActionResult("error")
        if intro.status != IntroductionStatus.ASKED:
            return ActionResult("error")
        intro.answered_at = ctx.now
        if ctx.args.get("answer") != "yes":
            intro.status = IntroductionStatus.DECLINED
            await ctx.session.flush()
            return ActionResult("no")
        if not org.contact_details:
            return ActionResult("no_details")
        intro.status = IntroductionStatus.ACCEPTED
        asker = await ctx.session.get(TenderOrg, intro.from_org_id)
        assert asker is not None
        await ctx.session.flush()
        return ActionResult(
            "yes", {"asker_name": asker.name, "asker_details": asker.contact_details}
        )

    return {
        "tender_org_status": org_status,
        "tender_save_org": save_org,
        "tender_subscription_options": subscription_options,
        "tender_check_band": check_band,
        "tender_save_subscription": save_subscription,
        "tender_list_subscriptions": list_subscriptions,
        "tender_subscription_op": subscription_op,
        "tender_alerts_off": alerts_off,
        "tender_alerts_on": alerts_on,
        "tender_interested": interested,
        "tender_partners": partners,
        "tender_introduce_check": introduce_check,
        "tender_introduce_ask": introduce_ask,
        "tender_pending_intro": pending_intro,
        "tender_intro_answer": intro_answer,
    }


def summary(t: AlertTexts, sub: TenderSubscription) -> str:
    """One subscription in a line: what, where, how much, how often."""
    what = t.categories(sub.categories) if sub.categories else ""
    if sub.cpv:
        what = ", ".join(filter(None, [what, "CPV " + " ".join(sub.cpv)]))
    if sub.min_value is None and sub.max_value is None:
        band = t.t("tender_band_any")
    elif sub.max_value is None:
        band = t.t("tender_band_over", low=t.money(sub.min_value or 0, "GBP"))
    else:
        band = t.t(
            "tender_band_between",
            low=t.money(sub.min_value or 0, "GBP"),
            high=t.money(sub.max_value, "GBP"),
        )
    parts = [what or t.t("tender_cat_any"), t.regions(sub.regions), band]
    if sub.vcse_only:
        parts.append(t.t("tender_vcse_only"))
    if sub.keywords:
        parts.append('"' + '", "'.join(sub.keywords) + '"')
    parts.append(t.t(f"tender_freq_{sub.frequency}"))
    line = "; ".join(parts)
    return line + (" " + t.t("tender_sub_is_paused") if sub.paused else "")
