"""From a compiled OCDS release to the fields tender alerts match on and show.

Pure: a compiled release (a dict) in, a :class:`Notice` out. Publishers fill OCDS in
different ways, so each field is looked for where the UK portals put it:

- **CPV codes**: ``tender.classification``, ``tender.additionalClassifications`` and each
  item's ``classification`` / ``additionalClassifications`` (scheme CPV);
- **regions**: each item's ``deliveryAddresses[].region`` (Contracts Finder names, NUTS and
  ITL codes), mapped to ITL1 regions (:mod:`flows.tenders.taxonomy`);
- **value**: ``tender.value`` and ``tender.minValue`` (a range when both are given);
- **SME / VCSE suitability**: ``tender.suitability`` (Contracts Finder today), the 2014
  Contracts Finder ``tender.xClassifications.isSuitableForSme`` / ``isSuitableForVco``, and
  reserved participation (``otherRequirements.reservedParticipation``, Find a Tender:
  contracts reserved for sheltered workshops or public-service mutuals), which counts as
  VCSE-suitable;
- **framework / dynamic purchasing system**: ``tender.techniques`` or the procurement
  method's details;
- **social value**: the weight of award criteria that name social value (or community
  benefits), per lot, the highest.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flows.tenders.taxonomy import categories_of, cpv_digits, regions_of

MAX_AMOUNT = 1e13  # larger "values" are typing errors, not contracts: treated as unknown
_SPACES = re.compile(r"\s+")
_SOCIAL = re.compile(r"social[\s-]*value|community[\s-]*benefit|social", re.IGNORECASE)


@dataclass(frozen=True)
class Lot:
    id: str
    title: str
    status: str
    categories: tuple[str, ...]
    cpv: tuple[str, ...]
    amount: float | None = None


@dataclass(frozen=True)
class Notice:
    """A contracting process as tender alerts see it."""

    ocid: str
    title: str
    description: str
    buyer: str
    status: str
    deadline: datetime | None
    amount: float | None  # the value, when one figure is given
    min_value: float | None  # a range: minValue .. value
    max_value: float | None
    currency: str
    cpv: tuple[str, ...]
    categories: tuple[str, ...]
    regions: tuple[str, ...]  # ITL1 codes; empty: every region
    sme: bool | None
    vcse: bool | None
    reserved: bool
    framework: bool
    dps: bool
    social_value: float | None
    procurement_method: str
    url: str
    lots: tuple[Lot, ...] = field(default_factory=tuple)

    @property
    def vcse_suitable(self) -> bool:
        """Suitable for voluntary, community and social enterprises: said so, or reserved."""
        return bool(self.vcse) or self.reserved

    @property
    def low(self) -> float | None:
        return self.min_value if self.min_value is not None else self.amount

    @property
    def high(self) -> float | None:
        return self.max_value if self.max_value is not None else self.amount

    def is_open(self, now: datetime) -> bool:
        return self.status == "active" and self.deadline is not None and self.deadline > now

    def alert_fields(self) -> dict[str, Any]:
        """The fields whose change alerts subscribers again."""
        return {
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
            "value": [self.amount, self.min_value, self.max_value, self.currency],
            "status": self.status,
        }


def fix_text(value: Any, limit: int = 0) -> str:
    """Clean publisher text: UTF-8 that was read as Windows-1252 on the way (``â€¯``) put
    back, control characters dropped, whitespace collapsed."""
    if not isinstance(value, str):
        return ""
    text = value
    if "â€" in text or "Ã" in text:
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            text = text.encode("cp1252").decode("utf-8")
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zs", "Zl", "Zp") else ch
        for ch in text
        if unicodedata.category(ch) not in ("Cf", "Co", "Cs")
    )
    text = _SPACES.sub(" ", text).strip()
    return text[:limit] if limit else text


def parse_date(value: Any) -> datetime | None:
    """An ISO 8601 date-time, as UTC; None if there is none or it can't be read."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:  # a local time without a zone: UK notices, read as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _amount(value: Any) -> tuple[float | None, str]:
    if not isinstance(value, dict):
        return None, ""
    amount = value.get("amount")
    currency = value.get("currency")
    currency = currency.strip()[:8] if isinstance(currency, str) else ""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return None, currency
    if not 0 <= amount <= MAX_AMOUNT:
        return None, currency
    return float(amount), currency


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _cpvs(classifications: list[dict[str, Any]]) -> list[str]:
    codes = []
    for c in classifications:
        scheme = str(c.get("scheme") or "CPV").upper()
        code = cpv_digits(c.get("id"))
        if code and scheme.startswith("CPV"):
            codes.append(code)
    return codes


def _item_cpvs(item: dict[str, Any]) -> list[str]:
    found = []
    if isinstance(item.get("classification"), dict):
        found.append(item["classification"])
    found.extend(_dicts(item.get("additionalClassifications")))
    return _cpvs(found)


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _weight(criterion: dict[str, Any]) -> float | None:
    for number in _dicts(criterion.get("numbers")):
        value = number.get("number")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    for key in ("weight", "weighting", "description"):
        value = criterion.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and re.fullmatch(r"\s*\d{1,3}(\.\d+)?\s*%?\s*", value):
            return float(value.strip().rstrip("%"))
    return None


def _social_value(criteria_lists: list[Any]) -> float | None:
    best: float | None = None
    for criteria in criteria_lists:
        total = 0.0
        found = False
        for criterion in _dicts(criteria.get("criteria") if isinstance(criteria, dict) else None):
            words = f"{criterion.get('name') or ''} {criterion.get('description') or ''}"
            if not _SOCIAL.search(words):
                continue
            weight = _weight(criterion)
            if weight is not None and 0 <= weight <= 100:
                total += weight
                found = True
        if found and (best is None or total > best):
            best = total
    return best


def _url(release: dict[str, Any], tender: dict[str, Any]) -> str:
    """The notice's own page: a tender (or contract) notice document, else one from the
    planning or award stages, else any web page among the documents, else the release's
    canonical link."""
    planning = release.get("planning") if isinstance(release.get("planning"), dict) else {}
    assert isinstance(planning, dict)
    documents = (
        _dicts(tender.get("documents"))
        + _dicts(planning.get("documents"))
        + [d for award in _dicts(release.get("awards")) for d in _dicts(award.get("documents"))]
    )
    for wanted in ("tenderNotice", "contractNotice", "plannedProcurementNotice", "awardNotice"):
        for doc in documents:
            if doc.get("documentType") == wanted and isinstance(doc.get("url"), str):
                return str(doc["url"])[:500]
    for doc in documents:
        if doc.get("format") == "text/html" and isinstance(doc.get("url"), str):
            return str(doc["url"])[:500]
    for link in _dicts(release.get("links")):
        if link.get("rel") == "canonical" and isinstance(link.get("href"), str):
            return str(link["href"])[:500]
    return ""


def _flag(*values: Any) -> bool | None:
    for value in values:
        if isinstance(value, bool):
            return value
    return None


def normalise(compiled: dict[str, Any]) -> Notice:
    """The :class:`Notice` of one compiled release. Never raises on odd data: a field that
    can't be read is left empty (or unknown)."""
    tender = compiled.get("tender") if isinstance(compiled.get("tender"), dict) else {}
    assert isinstance(tender, dict)
    items = _dicts(tender.get("items"))
    classifications = []
    if isinstance(tender.get("classification"), dict):
        classifications.append(tender["classification"])
    classifications.extend(_dicts(tender.get("additionalClassifications")))
    cpv = _unique(_cpvs(classifications) + [c for item in items for c in _item_cpvs(item)])

    places: list[Any] = []
    for item in items:
        for address in _dicts(item.get("deliveryAddresses")):
            places.append(address.get("region"))
            if address.get("region") is None and address.get("countryName") == "United Kingdom":
                places.append("UK")
    regions = tuple(regions_of(places))

    amount, currency = _amount(tender.get("value"))
    low, low_currency = _amount(tender.get("minValue"))
    min_value = max_value = None
    if low is not None and amount is not None and low < amount:
        min_value, max_value, amount = low, amount, None
    elif low is not None and amount is None:
        amount = low
    currency = currency or low_currency

    buyer = compiled.get("buyer") if isinstance(compiled.get("buyer"), dict) else {}
    assert isinstance(buyer, dict)
    buyer_name = fix_text(buyer.get("name"), 300)
    if not buyer_name:
        for party in _dicts(compiled.get("parties")):
            if "buyer" in (party.get("roles") or []):
                buyer_name = fix_text(party.get("name"), 300)
                break

    suitability = tender.get("suitability") if isinstance(tender.get("suitability"), dict) else {}
    legacy = tender.get("xClassifications")
    legacy = legacy if isinstance(legacy, dict) else {}
    assert isinstance(suitability, dict)
    reserved = False
    requirement_holders = [tender, *_dicts(tender.get("lots"))]
    for holder in requirement_holders:
        other = holder.get("otherRequirements")
        if isinstance(other, dict) and other.get("reservedParticipation"):
            reserved = True

    method = fix_text(tender.get("procurementMethodDetails"), 200) or fix_text(
        tender.get("procurementMethod"), 200
    )
    techniques = tender.get("techniques") if isinstance(tender.get("techniques"), dict) else {}
    assert isinstance(techniques, dict)
    framework = techniques.get("hasFrameworkAgreement") is True or "framework" in method.lower()
    dps = (
        techniques.get("hasDynamicPurchasingSystem") is True
        or "dynamic purchasing" in method.lower()
    )

    lots = []
    for lot in _dicts(tender.get("lots")):
        lot_id = str(lot.get("id") or "")
        lot_cpv = _unique(
            [c for item in items if str(item.get("relatedLot")) == lot_id for c in _item_cpvs(item)]
        )
        lot_amount, _ = _amount(lot.get("value"))
        lots.append(
            Lot(
                id=lot_id[:40],
                title=fix_text(lot.get("title"), 200) or fix_text(lot.get("description"), 80),
                status=str(lot.get("status") or "")[:32],
                categories=tuple(categories_of(lot_cpv)),
                cpv=lot_cpv,
                amount=lot_amount,
            )
        )
    criteria = [tender.get("awardCriteria")] + [lot.get("awardCriteria") for lot in
                                                 _dicts(tender.get("lots"))]

    title = fix_text(tender.get("title"), 500) or fix_text(compiled.get("title"), 500)
    return Notice(
        ocid=str(compiled.get("ocid") or ""),
        title=title,
        description=fix_text(tender.get("description"), 20_000),
        buyer=buyer_name,
        status=str(tender.get("status") or "")[:32],
        deadline=parse_date((tender.get("tenderPeriod") or {}).get("endDate"))
        if isinstance(tender.get("tenderPeriod"), dict)
        else None,
        amount=amount,
        min_value=min_value,
        max_value=max_value,
        currency=currency,
        cpv=cpv,
        categories=tuple(categories_of(cpv)),
        regions=regions,
        sme=_flag(suitability.get("sme"), legacy.get("isSuitableForSme")),
        vcse=_flag(suitability.get("vcse"), legacy.get("isSuitableForVco")),
        reserved=reserved,
        framework=framework,
        dps=dps,
        social_value=_social_value(criteria),
        procurement_method=method,
        url=_url(compiled, tender),
        lots=tuple(lots),
    )
