"""The admin app's areas, listed by hand: each is one router and one template folder
(``admin/web/<name>/``). A domain adds its pages by writing its area and adding it here."""

from __future__ import annotations

from admin.web import audit, broadcasts, contacts, dashboard, groups, polls, users
from admin.web.shell import Area

AREAS: tuple[Area, ...] = (
    dashboard.AREA,
    contacts.AREA,
    broadcasts.AREA,
    groups.AREA,
    polls.AREA,
    audit.AREA,
    users.AREA,
)
