"""What a notice is about and where, in words a community organisation recognises.

- **Categories**: about 20 service categories, each a set of CPV (Common Procurement
  Vocabulary 2008) code prefixes. A CPV code belongs to the category of its longest matching
  prefix, so "85311300 Welfare services for children and young people" is youth work even
  though 853 (social work) is social care. Codes no category claims are ``other``.
- **Regions**: the 12 UK ITL1 regions. Contracts Finder names regions in words ("Yorkshire
  and the Humber"), Find a Tender and the devolved portals give NUTS codes (UKM71) or ITL
  codes (TLM); each is mapped to its ITL1 region. "England" is England's nine regions; a
  notice with no region, or one that says the whole UK, is in every region.

Labels shown to people are in the catalogue (``tender_cat_<id>``, ``tender_region_<id>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# id -> CPV prefixes (digits of the code, without the check digit)
CATEGORIES: dict[str, tuple[str, ...]] = {
    "social_care": ("853", "85311", "85311100", "85311200", "85312400", "85312500"),
    "youth": ("80310", "98133110", "85311300", "85312120"),
    "childcare": ("85312110", "80110"),
    "health": ("851", "8514", "85323", "33693300"),
    "housing": ("70333", "98341", "45211200", "85311000"),
    "employment": ("79600", "79611", "79634", "80530", "85312510"),
    "advice": ("853123", "79100", "79110", "79140"),
    "education": ("80",),
    "community": ("75200", "85322", "98", "98133100", "98130"),
    "culture": ("92", "925"),
    "environment": ("90", "77", "45262640", "71313"),
    "transport": ("60", "34114300", "34144760"),
    "food": ("15", "55300", "55320", "55321", "55500", "55520", "15894"),
    "facilities": ("909", "79993", "50700", "79710", "98341120"),
    "construction": ("45", "50", "44", "71"),
    "digital": ("72", "48", "30", "32"),
    "research": ("73", "79300", "79310", "79315", "79400", "79410", "79419"),
    "communications": ("79340", "79341", "79342", "79800", "79820", "79822", "92210"),
    "events": ("79950", "79951", "79952", "79953", "79954", "79955", "79956", "55110"),
}
OTHER = "other"
CATEGORY_IDS: tuple[str, ...] = (*CATEGORIES, OTHER)

_PREFIXES: list[tuple[str, str]] = sorted(
    ((prefix, category) for category, prefixes in CATEGORIES.items() for prefix in prefixes),
    key=lambda pc: -len(pc[0]),
)

# The 12 ITL1 regions, by ITL code; NUTS 2016 level-1 codes use the same letters after UK.
REGIONS: dict[str, tuple[str, ...]] = {
    "TLC": ("north east",),
    "TLD": ("north west",),
    "TLE": ("yorkshire and the humber", "yorkshire and humber", "yorkshire"),
    "TLF": ("east midlands",),
    "TLG": ("west midlands",),
    "TLH": ("east of england", "east", "eastern"),
    "TLI": ("london", "greater london"),
    "TLJ": ("south east",),
    "TLK": ("south west",),
    "TLL": ("wales", "cymru"),
    "TLM": ("scotland",),
    "TLN": ("northern ireland",),
}
REGION_IDS: tuple[str, ...] = tuple(REGIONS)
ENGLAND: tuple[str, ...] = REGION_IDS[:9]
_BY_NAME = {name: code for code, names in REGIONS.items() for name in names}
_WHOLE_UK = {"uk", "united kingdom", "great britain", "gb", "tl", "uk-wide", "national"}
_CODE = re.compile(r"^(?:UK|TL)([C-N])[0-9A-Z]{0,3}$")


def cpv_digits(code: object) -> str | None:
    """``"85311300-5"`` -> ``"85311300"``; None for anything that is not a CPV code."""
    match = re.match(r"^\s*([0-9]{8})(?:-[0-9])?\s*$", str(code))
    return match.group(1) if match else None


def category_of(cpv: str) -> str:
    """The category of one CPV code (8 digits): that of its longest matching prefix."""
    for prefix, category in _PREFIXES:
        if cpv.startswith(prefix):
            return category
    return OTHER


def categories_of(cpvs: Iterable[str]) -> list[str]:
    """The categories of several codes, in the order of :data:`CATEGORY_IDS`, no repeats."""
    found = {category_of(c) for c in cpvs}
    return [c for c in CATEGORY_IDS if c in found]


def region_of(text: object) -> tuple[str, ...] | None:
    """The ITL1 region(s) a region name or code stands for: () for the whole UK, None when
    it names nowhere in the UK (Europe, Channel Islands, Isle of Man) or nothing we know."""
    if not isinstance(text, str):
        return None
    value = text.strip()
    if not value:
        return None
    code = _CODE.match(value.upper().replace(" ", ""))
    if code:
        return (f"TL{code.group(1)}",)
    lowered = re.sub(r"\s+", " ", value.lower().replace("&", "and"))
    if lowered in _WHOLE_UK or value.upper() in ("UK", "TL"):
        return ()
    if lowered == "england":
        return ENGLAND
    found = _BY_NAME.get(lowered)
    return (found,) if found else None


def regions_of(texts: Iterable[object]) -> list[str]:
    """The regions a notice's delivery places cover; [] means every region (none given, or
    the whole UK given)."""
    found: set[str] = set()
    for text in texts:
        regions = region_of(text)
        if regions is None:
            continue
        if regions == ():
            return []
        found.update(regions)
    return [r for r in REGION_IDS if r in found]
