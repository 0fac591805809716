"""The admin pages against real data on SQLite and PostgreSQL: residents join through the
simulator, staff find them, read their threads, broadcast to them through the platform's
broadcast path and see it delivered; hostile input is shown as text or refused clearly."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.clock import FixedClock
from bot.services import Services
from storage import groups as group_store
from storage.broadcasts import Broadcast
from storage.models import AuditLog, ChannelIdentity, OutboundMessage, TelegramGroup
from tests.admin.conftest import ADMIN, FACILITATOR, VIEWER
from tests.admin_support import SIMULATOR, Admin, counts, join


def form_key(page: str) -> str:
    found = re.search(r'name="key" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def visible(page: str) -> str:
    """The page's text without tags, as a person reads it."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


async def contact_id(services: Services, channel: str, address: str) -> int:
    async with services.sessions() as session:
        identity = (
            await session.execute(
                select(ChannelIdentity).where(
                    ChannelIdentity.channel == channel, ChannelIdentity.address == address
                )
            )
        ).scalar_one()
    return identity.contact_id


async def test_dashboard_counts_residents_and_messages(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    await join(browser.client, "+447700900111")
    await join(browser.client, "+447700900112", language="2", postcode="CF24 2AA")
    await join(browser.client, "Sam", channel="telegram")
    await browser.client.post(
        SIMULATOR, json={"channel": "sms", "address": "+447700900111", "text": "STOP"}
    )
    await browser.login(VIEWER)
    page = await browser.client.get("/admin/")
    assert page.status_code == 200
    text = visible(page.text)
    assert "3 contacts" in text and "3 have given consent" in text
    assert "1 have opted out (STOP)" in text
    # Each chart has its figures as a table, and an SVG described for screen readers.
    assert page.text.count('role="img"') == 7 and page.text.count("<table") >= 7
    assert re.search(r"Simulator \(SMS\)</th><td[^>]*>2<", page.text)
    assert re.search(r"Cymraeg \(Welsh\)</th><td[^>]*>1<", page.text)
    assert re.search(r"Cathays</th><td[^>]*>2<", page.text)
    today = clock.now().strftime("%a %d %b %Y")
    assert re.search(rf"{today}</th><td[^>]*>3<", page.text)  # joined today
    received = re.search(r"Messages received per day.*?<tbody>(.*?)</tbody>", page.text, re.S)
    assert received and re.search(rf"{today}</th><td[^>]*>13<", received.group(1))


async def test_broadcast_from_compose_to_delivered(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    await join(browser.client, "+447700900121")
    await join(browser.client, "+447700900122", language="2")
    await join(browser.client, "+447700900123", postcode="CF24 2AA")  # another ward
    await browser.login(FACILITATOR)
    compose = await browser.client.get("/admin/broadcasts/new")
    key = form_key(compose.text)
    draft = [
        ("key", key),
        ("text_en", "Bins are collected on Tuesday this week."),
        ("text_cy", "Caiff biniau eu casglu ddydd Mawrth yr wythnos hon. Ŵy!"),
        ("ward", "DEMO-CATHAYS"),
        ("channel", "sms"),
        ("when", "now"),
    ]
    check = await browser.post("/admin/broadcasts/new", draft)
    assert check.status_code == 200, check.text
    text = visible(check.text)
    assert "Check your broadcast before sending it" in text
    assert "Residents 2" in text and "Cathays" in text
    assert "1 segment, GSM-7" in text  # the English
    assert "UCS-2" in text  # Welsh ŵ is outside GSM-7
    assert "Estimated SMS cost 0.00 GBP" in text  # simulated residents cost nothing
    async with accounts.sessions() as session:
        assert not (await session.execute(select(Broadcast))).scalars().all()  # not yet

    sent = await browser.post("/admin/broadcasts/send", draft)
    assert sent.status_code == 303
    location = sent.headers["location"]
    again = await browser.post("/admin/broadcasts/send", draft)  # a double click
    assert again.headers["location"] == location
    async with accounts.sessions() as session:
        [broadcast] = (await session.execute(select(Broadcast))).scalars().all()
        rows = (await session.execute(select(OutboundMessage))).scalars().all()
    assert broadcast.actor == f"admin:{FACILITATOR}" and broadcast.recipients == 2
    sent_to = {
        r.address: r.content["text"]
        for r in rows
        if r.content.get("text", "").startswith(("Bins", "Caiff"))
    }
    assert sent_to == {
        "+447700900121": "Bins are collected on Tuesday this week.",
        "+447700900122": "Caiff biniau eu casglu ddydd Mawrth yr wythnos hon. Ŵy!",
    }
    progress = visible((await browser.client.get(location)).text)
    assert "Broadcast sent to the outbox" in progress and "Queued 2" in progress
    await accounts.dispatcher.run_once()
    progress = visible((await browser.client.get(location.split("?")[0])).text)
    assert "Queued 0" in progress and "Sent 2" in progress and "Failed 0" in progress
    # The resident's thread in the simulator has it.
    thread = await browser.client.get(
        SIMULATOR, params={"channel": "sms", "address": "+447700900121"}
    )
    assert thread.json()["messages"][-1]["text"] == "Bins are collected on Tuesday this week."
    async with accounts.sessions() as session:
        audit = (
            await session.execute(select(AuditLog).where(AuditLog.action == "broadcast_sent"))
        ).scalar_one()
    assert audit.actor == f"admin:{FACILITATOR}"


async def test_a_broadcast_can_be_scheduled(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    await join(browser.client, "+447700900131")
    await browser.login(FACILITATOR)
    key = form_key((await browser.client.get("/admin/broadcasts/new")).text)
    tomorrow = (clock.now() + timedelta(days=1)).strftime("%Y-%m-%d")
    draft = {
        "key": key,
        "text_en": "Vote opens tomorrow",
        "when": "later",
        "send_date": tomorrow,
        "send_time": "18:30",
    }
    check = visible((await browser.post("/admin/broadcasts/new", draft)).text)
    assert f"{(clock.now() + timedelta(days=1)).strftime('%d %b %Y')} 18:30 (UK time)" in check
    assert "no Welsh message" in check
    response = await browser.post("/admin/broadcasts/send", draft)
    page = visible((await browser.client.get(response.headers["location"])).text)
    assert "Broadcast scheduled" in page and "scheduled" in page
    async with accounts.sessions() as session:
        [row] = (await session.execute(select(Broadcast))).scalars().all()
        assert row.status == "scheduled" and row.send_at is not None
        assert row.send_at.strftime("%H:%M") == "18:30"  # January: UK time is UTC
        assert not (
            await session.execute(
                select(OutboundMessage).where(
                    OutboundMessage.content["text"].as_string() == "Vote opens tomorrow"
                )
            )
        ).all()


@pytest.mark.parametrize(
    ("draft", "message"),
    [
        ({"text_en": ""}, "Enter the message in English"),
        ({"text_en": "x" * 1601}, "1600 characters or fewer"),
        ({"text_en": "Hi", "ward": "NOWHERE"}, "Choose wards from the list"),
        ({"text_en": "Hi", "channel": "carrier-pigeon"}, "Choose SMS, Telegram or both"),
        ({"text_en": "Hi", "language": "fr"}, "Choose English, Welsh or both"),
        (
            {"text_en": "Hi", "when": "later", "send_date": "2026-13-45", "send_time": "25:00"},
            "Enter the date as YYYY-MM-DD",
        ),
        (
            {"text_en": "Hi", "when": "later", "send_date": "2020-01-01", "send_time": "10:00"},
            "must be in the future",
        ),
        ({"text_en": "Hi", "ward": "DEMO-SPLOTT"}, "No resident would get this"),
        ({"text_en": "Hi", "language": "cy"}, "No resident would get this"),
    ],
)
async def test_bad_broadcasts_are_refused_clearly(
    accounts: Services, browser: Admin, draft: dict[str, str], message: str
) -> None:
    await join(browser.client, "+447700900141")
    await browser.login(FACILITATOR)
    before = await counts(accounts.sessions)
    for path in ("/admin/broadcasts/new", "/admin/broadcasts/send"):
        response = await browser.post(path, {"when": "now", **draft})
        assert response.status_code == 400, (path, response.status_code)
        assert "There is a problem" in response.text and message in html.unescape(response.text)
        assert 'aria-invalid="true"' in response.text
    assert await counts(accounts.sessions) == before


async def test_html_in_messages_and_broadcasts_is_shown_as_text(
    accounts: Services, browser: Admin
) -> None:
    await join(browser.client, "+447700900151")
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await browser.client.post(
        SIMULATOR, json={"channel": "sms", "address": "+447700900151", "text": attack}
    )
    await browser.login(FACILITATOR)
    cid = await contact_id(accounts, "sim-sms", "+447700900151")
    page = (await browser.client.get(f"/admin/contacts/{cid}")).text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    key = form_key((await browser.client.get("/admin/broadcasts/new")).text)
    draft = {"key": key, "text_en": attack, "when": "now"}
    check = (await browser.post("/admin/broadcasts/new", draft)).text
    assert "<script>alert" not in check and "&lt;script&gt;" in check
    response = await browser.post("/admin/broadcasts/send", draft)
    for path in (response.headers["location"], "/admin/broadcasts", "/admin/audit"):
        shown = (await browser.client.get(path)).text
        assert "<script>alert" not in shown and "<img src=x" not in shown, path


async def test_find_a_resident_by_phone_in_any_form(accounts: Services, browser: Admin) -> None:
    await join(browser.client, "+447700900161")
    await join(browser.client, "+447700900162")
    await browser.login(VIEWER)
    cid = await contact_id(accounts, "sim-sms", "+447700900161")
    for typed in (
        "07700 900161",
        "+44 7700 900161",
        "0044 7700-900161",
        "(07700) 900 161",
        "+447700900161",
    ):
        page = await browser.client.get("/admin/contacts", params={"q": typed})
        assert page.status_code == 200
        assert "1 contact found" in page.text, typed
        assert f'/admin/contacts/{cid}"' in page.text
    nothing = await browser.client.get("/admin/contacts", params={"q": "07700 900999"})
    assert "No contact matches" in nothing.text
    # A resident on Telegram (the simulator's names are their addresses).
    await join(browser.client, "Rhiannon Jones", channel="telegram")
    found = visible(
        (await browser.client.get("/admin/contacts", params={"q": "Rhiannon Jones"})).text
    )
    assert "1 contact found" in found and "sim-telegram: Rhiannon Jones" in found


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("x" * 101, 400),
        ("x" * 5000, 422),
        ("\x00\x01\x1b[31m", 200),
        ("%_%", 200),
        ("' OR 1=1 --", 200),
    ],
)
async def test_odd_searches_change_nothing(
    accounts: Services, browser: Admin, query: str, status: int
) -> None:
    await join(browser.client, "+447700900171")
    await browser.login(VIEWER)
    response = await browser.client.get("/admin/contacts", params={"q": query})
    assert response.status_code == status
    if status == 200 and query.strip("\x00\x01\x1b"):
        assert "No contact matches" in response.text or "Newest contacts" in response.text


async def test_a_contact_page_shows_the_thread_both_ways(
    accounts: Services, browser: Admin
) -> None:
    await join(browser.client, "+447700900181")
    cid = await contact_id(accounts, "sim-sms", "+447700900181")
    await browser.login(VIEWER)
    page = visible((await browser.client.get(f"/admin/contacts/{cid}")).text)
    assert "Status consented" in page and "Ward Cathays (CF10 1EP)" in page
    assert "sim-sms +447700900181" in page
    assert "Resident · sim-sms" in page and "civicbot · sim-sms" in page
    # Both ways, in order, each reply after what it answers, with its delivery status.
    assert re.search(
        r"Resident · sim-sms · [^·]+ HI civicbot · sim-sms · [^·]+ · queued Welcome to civicbot"
        r".* Resident · sim-sms · [^·]+ CF10 1EP civicbot · sim-sms · [^·]+ · queued Thanks\. "
        r"CF10 1EP is in Cathays ward",
        page,
    )
    await accounts.dispatcher.run_once()
    page = visible((await browser.client.get(f"/admin/contacts/{cid}")).text)
    assert "· queued" not in page and "· sent Thanks. CF10 1EP" in page
    await browser.client.post(
        SIMULATOR, json={"channel": "sms", "address": "+447700900181", "text": "STOP"}
    )
    page = visible((await browser.client.get(f"/admin/contacts/{cid}")).text)
    assert "Status opted out" in page and "sent nothing until START" in page


async def test_an_erased_contact_shows_nothing_personal(accounts: Services, browser: Admin) -> None:
    await join(browser.client, "+447700900191", postcode="CF24 2AA")
    cid = await contact_id(accounts, "sim-sms", "+447700900191")
    for text in ("FORGET", "YES"):
        await browser.client.post(
            SIMULATOR, json={"channel": "sms", "address": "+447700900191", "text": text}
        )
    await browser.login(ADMIN)
    page = (await browser.client.get(f"/admin/contacts/{cid}")).text
    assert "asked for their data to be erased" in page
    for personal in ("900191", "CF24", "Adamsdown", "Splott", "YES", "Welcome", "sim-sms"):
        assert personal not in page, personal
    listing = (await browser.client.get("/admin/contacts")).text
    assert "900191" not in listing and "erased" in listing
    search = (await browser.client.get("/admin/contacts", params={"q": "07700900191"})).text
    assert "No contact matches" in search


async def test_unknown_and_odd_ids_are_pages_not_errors(browser: Admin) -> None:
    await browser.login(ADMIN)
    for path, status in [
        ("/admin/contacts/999999", 404),
        ("/admin/contacts/0", 404),
        ("/admin/contacts/99999999999999999999999", 404),
        ("/admin/contacts/abc", 422),
        ("/admin/broadcasts/999999", 404),
        ("/admin/polls/999999", 404),
        ("/admin/contacts?before=-1", 422),
        ("/admin/nothing-here", 404),
    ]:
        response = await browser.client.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1" in response.text


async def test_a_facilitator_puts_a_group_in_a_ward(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    async with accounts.sessions() as session, session.begin():
        await group_store.record_group(
            session,
            chat_id="-100123",
            title="Cathays <b>neighbours</b>",
            kind="supergroup",
            active=True,
            now=clock.now(),
        )
    await browser.login(FACILITATOR)
    page = await browser.client.get("/admin/groups")
    assert "Cathays &lt;b&gt;neighbours&lt;/b&gt;" in page.text
    assert "Adamsdown" in page.text and "DEMO-CATHAYS" in page.text  # the wards
    response = await browser.post("/admin/groups/-100123/ward", {"ward_code": "DEMO-CATHAYS"})
    assert response.status_code == 303
    bad = await browser.post("/admin/groups/-100123/ward", {"ward_code": "NOWHERE"})
    assert bad.status_code == 400 and "Choose a ward from the list" in bad.text
    missing = await browser.post("/admin/groups/-999/ward", {"ward_code": "DEMO-CATHAYS"})
    assert missing.status_code == 404
    async with accounts.sessions() as session:
        group = await session.get(TelegramGroup, "-100123")
        entries = (
            (
                await session.execute(
                    select(AuditLog).where(AuditLog.action == "telegram_group_assigned")
                )
            )
            .scalars()
            .all()
        )
    assert group is not None and group.ward_code == "DEMO-CATHAYS"
    assert [(e.actor, e.detail) for e in entries] == [
        (f"admin:{FACILITATOR}", {"ward_code": "DEMO-CATHAYS"})
    ]


async def test_the_audit_log_filters(accounts: Services, browser: Admin) -> None:
    await browser.login(ADMIN)
    await browser.login(VIEWER)
    await browser.login(ADMIN, "wrong password")
    page = await browser.client.get("/admin/audit", params={"action": "admin_sign_in_failed"})
    rows = re.findall(r"<tr>\s*<td>", page.text)
    assert len(rows) == 1 and f"admin:{ADMIN}" in page.text
    page = (await browser.client.get("/admin/audit", params={"actor": "view@council.example"})).text
    entries = visible(page.split("<tbody>")[1])
    assert "admin_signed_in" in entries and "admin_sign_in_failed" not in entries
    bad = await browser.client.get("/admin/audit", params={"from": "yesterday"})
    assert bad.status_code == 400 and "Enter the date as YYYY-MM-DD" in bad.text
    none = await browser.client.get("/admin/audit", params={"from": "2099-01-01"})
    assert "No entries match" in none.text
    assert page.count('method="post"') == 1  # signing out: there is nothing to edit with


async def test_polls_without_telegram_say_so(browser: Admin) -> None:
    await browser.login(FACILITATOR)
    page = await browser.client.get("/admin/polls")
    assert "Telegram is not configured" in page.text
    response = await browser.post(
        "/admin/polls/new", {"chat_id": "-1", "question": "Q?", "options": "A\nB"}
    )
    assert response.status_code == 400 and "Telegram is not configured" in response.text


async def test_every_page_has_one_h1_labels_and_a_skip_link(
    accounts: Services, browser: Admin
) -> None:
    await join(browser.client, "+447700900201")
    cid = await contact_id(accounts, "sim-sms", "+447700900201")
    await browser.login(ADMIN)
    for path in (
        "/admin/",
        "/admin/contacts",
        f"/admin/contacts/{cid}",
        "/admin/broadcasts",
        "/admin/broadcasts/new",
        "/admin/groups",
        "/admin/polls",
        "/admin/polls/new",
        "/admin/audit",
        "/admin/users",
        "/admin/login",
    ):
        page = (await browser.client.get(path)).text
        assert page.count("<h1") == 1, path
        assert 'href="#main"' in page and '<html lang="en">' in page, path
        for field in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', page):
            assert f'for="{field}"' in page, (path, field)


async def test_a_big_broadcast_is_handed_to_the_scheduler(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    """Over INLINE_MAX recipients, Send stores the broadcast for the scheduler (so the page
    answers at once and a restart loses nothing); the scheduler's job then sends it."""
    await join(browser.client, "+447700900211")
    await browser.login(FACILITATOR)
    key = form_key((await browser.client.get("/admin/broadcasts/new")).text)
    draft = {"key": key, "text_en": "Big news", "when": "now", "recipients": "250000"}
    response = await browser.post("/admin/broadcasts/send", draft)
    assert response.status_code == 303
    async with accounts.sessions() as session:
        [row] = (await session.execute(select(Broadcast))).scalars().all()
    assert row.status == "scheduled" and row.send_at == clock.now() + timedelta(seconds=1)
    clock.advance(seconds=2)
    assert await accounts.broadcasts.send_due() == 1  # what `civicbot serve` runs
    page = visible((await browser.client.get(response.headers["location"])).text)
    assert "Queued 1" in page
