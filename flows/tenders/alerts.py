"""The words of tender alerts, digests and partner lists, from the catalogue, in English or
Welsh. Pure: a notice (or process row) and a language in, text out.

An alert must fit 2 SMS segments (306 GSM-7 characters): title, buyer, value, deadline,
region, VCSE suitability, a link and "Reply INTERESTED 12 or PARTNERS 12". Notices carry
characters GSM-7 lacks (and one of them makes the whole SMS UCS-2, 134 characters in two
segments), so alert text is folded to GSM-7 (accents outside it dropped: "â" to "a") and the
title, then the buyer, are shortened until it fits. Deadlines are shown in Europe/London.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flows.catalogue import Catalogue

LONDON = ZoneInfo("Europe/London")
ALERT_LIMIT = 306  # two concatenated GSM-7 segments
# The GSM 03.38 basic character set (channels/sms_text.py keeps the channel's own copy;
# flows may not import channels).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€")
_FOLD = {"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "...", "•": "-"}


def gsm_fold(text: str) -> str:
    """Text in GSM-7 only: typographic marks replaced, accents outside GSM-7 dropped, other
    characters left out."""
    out = []
    for ch in text:
        ch = _FOLD.get(ch, ch)
        if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in ch):
            out.append(ch)
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)
        )
        out.append(base if base and all(c in _GSM_BASIC for c in base) else "")
    return "".join(out)


def gsm_units(text: str) -> int:
    return sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)


def _shorten(text: str, units: int) -> str:
    if gsm_units(text) <= units:
        return text
    if units <= 3:
        return ""
    cut = text
    while cut and gsm_units(cut) > units - 3:
        cut = cut[:-1]
    return cut.rstrip(" ,.;:-") + "..."


class AlertTexts:
    """Alert, digest and partner texts in one language."""

    def __init__(self, catalogue: Catalogue, language: str, now: datetime | None = None) -> None:
        self.catalogue = catalogue
        self.language = language
        self.now = now  # dates in another year than this show their year

    def t(self, key: str, **values: Any) -> str:
        return self.catalogue.text(key, self.language, **values)

    # ---- pieces ---------------------------------------------------------------------------

    def money(self, amount: float, currency: str) -> str:
        symbol = {"GBP": "£", "EUR": "€", "": "£"}.get(currency, "")
        figure = f"{amount:,.0f}"
        return f"{symbol}{figure}" if symbol else f"{figure} {currency}"

    def value(self, row: Any) -> str:
        currency = row.currency or "GBP"
        if row.value_min is not None and row.value_max is not None:
            return self.t(
                "tender_value_range",
                low=self.money(row.value_min, currency),
                high=self.money(row.value_max, currency),
            )
        if row.value_amount is not None:
            return self.money(row.value_amount, currency)
        return self.t("tender_value_unknown")

    def date(self, when: datetime | None, with_time: bool = True) -> str:
        if when is None:
            return self.t("tender_deadline_unknown")
        local = when.astimezone(LONDON)
        months = self.t("tender_months").split(",")
        day = f"{local.day} {months[local.month - 1].strip()}"
        if self.now is not None and self.now.astimezone(LONDON).year != local.year:
            day += f" {local.year}"
        return f"{day} {local:%H:%M}" if with_time else day

    def regions(self, codes: Sequence[str]) -> str:
        if not codes:
            return self.t("tender_regions_all")
        if len(codes) >= 9 and all(c in codes for c in ("TLC", "TLI", "TLK")):
            names = [self.t("tender_region_england")] + [
                self.t(f"tender_region_{c}") for c in codes if c in ("TLL", "TLM", "TLN")
            ]
            return ", ".join(names)
        return ", ".join(self.t(f"tender_region_{c}") for c in codes)

    def categories(self, ids: Sequence[str]) -> str:
        return ", ".join(self.t(f"tender_cat_{c}") for c in ids)

    def suitability(self, row: Any) -> str:
        if row.reserved:
            return self.t("tender_vcse_reserved")
        if row.vcse:
            return self.t("tender_vcse_yes")
        if row.sme:
            return self.t("tender_sme_only")
        return self.t("tender_vcse_no")

    def status(self, status: str) -> str:
        key = f"tender_status_{status}"
        return self.t(key) if key in self.catalogue else status

    def changes(self, row: Any, changed: Sequence[str]) -> str:
        parts = []
        if "deadline" in changed:
            parts.append(self.t("tender_change_deadline", deadline=self.date(row.deadline, False)))
        if "value" in changed:
            parts.append(self.t("tender_change_value", value=self.value(row)))
        if "status" in changed:
            parts.append(self.t("tender_change_status", status=self.status(row.status)))
        return "; ".join(parts)

    # ---- whole messages -------------------------------------------------------------------

    def alert(self, row: Any, changed: Sequence[str] = ()) -> str:
        """One notice, new or changed, in at most two SMS segments."""
        ref = row.id
        body = gsm_fold(
            self.t(
                "tender_alert_body",
                value=self.value(row),
                deadline=self.date(row.deadline),
                regions=self.regions(row.regions),
                suitability=self.suitability(row),
                url=row.url or "",
                ref=ref,
            )
        ).replace("\n\n", "\n")
        head_key = "tender_alert_changed" if changed else "tender_alert_new"
        what = gsm_fold(self.changes(row, changed)) if changed else ""
        title, buyer = gsm_fold(row.title), gsm_fold(row.buyer)

        def compose(t: str, b: str) -> str:
            head = gsm_fold(self.t(head_key, ref=ref, title=t, changes=what))
            buyer_line = gsm_fold(self.t("tender_alert_buyer", buyer=b))
            return f"{head}\n{buyer_line}\n{body}"

        spare = ALERT_LIMIT - gsm_units(compose("", buyer))
        if spare < 30:  # a long buyer name leaves no room for the title: shorten it too
            buyer = _shorten(buyer, max(20, gsm_units(buyer) - (30 - spare)))
            spare = ALERT_LIMIT - gsm_units(compose("", buyer))
        text = compose(_shorten(title, max(spare, 0)), buyer)
        if gsm_units(text) > ALERT_LIMIT:  # a very long link: the link gives way last
            text = _shorten(text, ALERT_LIMIT)
        return text

    def cancelled(self, row: Any) -> str:
        return gsm_fold(
            self.t("tender_cancelled", ref=row.id, title=_shorten(row.title, 80), buyer=row.buyer)
        )

    def digest(self, rows: Sequence[Any]) -> str:
        lines = [self.t("tender_digest_head", count=len(rows))]
        for row in rows:
            lines.append(
                self.t(
                    "tender_digest_line",
                    ref=row.id,
                    title=_shorten(gsm_fold(row.title), 70),
                    value=self.value(row),
                    deadline=self.date(row.deadline, False),
                )
            )
        first = rows[0].id if rows else 1
        lines.append(self.t("tender_digest_foot", ref=first))
        return "\n".join(lines)
