"""The admin app's guarantees, walked over its own route table: every route needs a session,
every state-changing one a CSRF token, viewers change nothing; sign-in is throttled and says
the same for an unknown account and a wrong password; an ended session comes back to the
page asked for."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select, text
from starlette.routing import Mount

from bot.app import build_app
from bot.clock import FixedClock
from bot.services import Services
from storage.admin import Role
from storage.models import AuditLog
from tests.admin.conftest import ADMIN, FACILITATOR, VIEWER
from tests.admin_support import PASSWORD, Admin, counts, make_user

SAFE = {"GET", "HEAD", "OPTIONS"}
PUBLIC = {("GET", "/login"), ("POST", "/login")}  # the sign-in form itself


def admin_routes(services: Services) -> list[tuple[str, str]]:
    """(method, path) of every route of the admin app, as mounted in the real app."""
    app = build_app(services)
    mounts = [r for r in app.routes if isinstance(r, Mount) and r.path == "/admin"]
    assert len(mounts) == 1
    admin_app = mounts[0].app
    assert isinstance(admin_app, FastAPI)
    found = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.extend((method, route.path) for method in sorted(route.methods))
            included = getattr(route, "original_router", None)  # FastAPI's include_router
            if included is not None:
                walk(included.routes)

    walk(list(admin_app.routes))
    schema = admin_app.openapi()["paths"]  # the same table, as FastAPI documents it
    assert {(m.upper(), p) for p, ops in schema.items() for m in ops} <= set(found)
    assert len(found) > 15  # the walk sees the whole app, not an empty list
    return found


def concrete(path: str) -> str:
    """A URL for a route: every path parameter filled in."""
    return "/admin" + re.sub(r"\{[^}]+\}", "1", path)


async def test_every_admin_route_needs_a_session(
    accounts: Services, http: httpx.AsyncClient
) -> None:
    before = await counts(accounts.sessions)
    for method, path in admin_routes(accounts):
        if (method, path) in PUBLIC:
            continue
        response = await http.request(method, concrete(path), data={"text_en": "x"})
        assert response.status_code == 303, (method, path, response.status_code)
        location = response.headers["location"]
        assert location.startswith("/admin/login?"), (method, path, location)
    assert await counts(accounts.sessions) == before


async def test_every_state_changing_route_needs_the_csrf_token(
    accounts: Services, browser: Admin
) -> None:
    assert (await browser.login(ADMIN)).status_code == 303
    before = await counts(accounts.sessions)
    unsafe = [(m, p) for m, p in admin_routes(accounts) if m not in SAFE]
    assert ("POST", "/broadcasts/send") in unsafe and ("POST", "/logout") in unsafe
    for method, path in unsafe:
        for token in (None, "forged-" + "x" * 40, ""):
            data = {"text_en": "Hello", "channel": "sms", "when": "now", "role": "viewer"}
            if token is not None:
                data["csrf_token"] = token
            response = await browser.client.request(method, concrete(path), data=data)
            assert response.status_code == 403, (method, path, token, response.status_code)
    assert await counts(accounts.sessions) == before
    # ...and the session is still good: a forged logout did not sign anyone out.
    assert (await browser.client.get("/admin/")).status_code == 200


async def test_a_token_from_another_session_is_refused(
    accounts: Services, http: httpx.AsyncClient
) -> None:
    mine = Admin(http)
    await mine.login(FACILITATOR)
    transport = httpx.ASGITransport(app=build_app(accounts))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        theirs = Admin(other)
        await theirs.login(ADMIN)
        their_token = await theirs.token()
    before = await counts(accounts.sessions)
    response = await mine.client.post(
        "/admin/broadcasts/send",
        data={"text_en": "Hello", "when": "now", "csrf_token": their_token},
    )
    assert response.status_code == 403
    assert await counts(accounts.sessions) == before


async def test_viewers_read_every_page_and_change_nothing(
    accounts: Services, browser: Admin
) -> None:
    await browser.login(VIEWER)
    before = await counts(accounts.sessions)
    for method, path in admin_routes(accounts):
        if (method, path) in PUBLIC or "{" in path:
            continue
        response = await browser.client.request(method, concrete(path))
        if method in SAFE:
            expected = 403 if path in ("/broadcasts/new", "/polls/new", "/users") else 200
            assert response.status_code == expected, (method, path, response.status_code)
    for method, path in admin_routes(accounts):
        if method in SAFE or (method, path) in PUBLIC or path == "/logout":
            continue
        response = await browser.post(concrete(path), {"text_en": "Hi", "when": "now"})
        assert response.status_code == 403, (method, path, response.status_code)
        assert "viewer account" in response.text
    after = await counts(accounts.sessions)
    assert after == before


async def test_facilitators_broadcast_but_do_not_manage_accounts(
    accounts: Services, browser: Admin
) -> None:
    await browser.login(FACILITATOR)
    assert (await browser.client.get("/admin/broadcasts/new")).status_code == 200
    assert (await browser.client.get("/admin/users")).status_code == 403
    before = await counts(accounts.sessions)
    for path in ("/admin/users/1/disable", "/admin/users/1/role", "/admin/users/1/enable"):
        assert (await browser.post(path, {"role": "admin"})).status_code == 403
    assert await counts(accounts.sessions) == before
    page = (await browser.client.get("/admin/")).text
    assert ">Accounts<" not in page and ">Broadcasts<" in page  # the menu shows what they may


async def test_an_admin_disables_an_account_and_it_is_signed_out(
    accounts: Services, http: httpx.AsyncClient
) -> None:
    transport = httpx.ASGITransport(app=build_app(accounts))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        viewer = Admin(other)
        await viewer.login(VIEWER)
        assert (await other.get("/admin/")).status_code == 200
        boss = Admin(http)
        await boss.login(ADMIN)
        page = (await http.get("/admin/users")).text
        user_id = re.search(
            r'/admin/users/(\d+)/disable"[^<]*>\s*<input[^>]*>\s*<button[^>]*>'
            r"Disable view@",
            page,
        )
        assert user_id, page
        response = await boss.post(f"/admin/users/{user_id.group(1)}/disable")
        assert response.status_code == 303
        assert (await other.get("/admin/")).status_code == 303  # signed out at once
        assert (await viewer.login(VIEWER)).status_code == 400  # and can't sign in
    async with accounts.sessions() as session:
        actions = (await session.execute(select(AuditLog.action))).scalars().all()
    assert "admin_user_disabled" in actions


async def test_the_same_message_for_an_unknown_account_and_a_wrong_password(
    browser: Admin,
) -> None:
    unknown = await browser.login("nobody@council.example", PASSWORD)
    wrong = await browser.login(ADMIN, "not the password at all")
    assert unknown.status_code == wrong.status_code == 400
    message = "The email address or password is not right"
    assert message in unknown.text and message in wrong.text

    def body(page: str) -> str:
        main = page.split('<main id="main"', 1)[1]
        return re.sub(r'value="[^"]*"', "", main)  # the email typed, and the form token

    assert body(unknown.text) == body(wrong.text)


async def test_a_brute_force_of_100_tries_is_throttled(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    statuses = [(await browser.login(ADMIN, f"guess number {i}")).status_code for i in range(100)]
    assert statuses[:5] == [400] * 5
    assert statuses[5:] == [429] * 95
    # Only the five tries before the wait were checked (and each is in the audit log).
    async with accounts.sessions() as session:
        checked = (
            (
                await session.execute(
                    select(AuditLog).where(AuditLog.action == "admin_sign_in_failed")
                )
            )
            .scalars()
            .all()
        )
    assert len(checked) == 5
    # While it waits, even the right password is refused, and says how long to wait.
    locked = await browser.login(ADMIN, PASSWORD)
    assert locked.status_code == 429 and "Wait 1 minute" in locked.text
    clock.advance(seconds=31)
    assert (await browser.login(ADMIN, "one more guess")).status_code == 400
    again = await browser.login(ADMIN, PASSWORD)  # the wait has doubled to a minute
    assert again.status_code == 429
    clock.advance(seconds=61)
    assert (await browser.login(ADMIN, PASSWORD)).status_code == 303


async def test_one_address_trying_many_accounts_is_throttled(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    statuses = [
        (await browser.login(f"person{i}@council.example", "guess")).status_code for i in range(8)
    ]
    assert statuses == [400] * 5 + [429] * 3
    assert (await browser.login(VIEWER, PASSWORD)).status_code == 429  # from this address
    clock.advance(minutes=2)
    assert (await browser.login(VIEWER, PASSWORD)).status_code == 303


async def test_an_ended_session_goes_to_sign_in_then_back(
    accounts: Services, browser: Admin, clock: FixedClock
) -> None:
    await browser.login(FACILITATOR)
    clock.advance(minutes=50)
    assert (await browser.client.get("/admin/broadcasts")).status_code == 200  # renews it
    clock.advance(minutes=50)
    assert (await browser.client.get("/admin/broadcasts")).status_code == 200
    clock.advance(minutes=61)
    response = await browser.client.get("/admin/broadcasts?before=5")
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/admin/login"
    query = parse_qs(location.query)
    assert query == {"next": ["/admin/broadcasts?before=5"], "ended": ["expired"]}
    page = await browser.client.get(response.headers["location"])
    assert "Your session ended" in page.text
    back = await browser.login(FACILITATOR, next_path="/admin/broadcasts?before=5")
    assert back.status_code == 303 and back.headers["location"] == "/admin/broadcasts?before=5"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/admin/",
        "/simulator",
        "/admin\\@evil",
        "javascript:x",
    ],
)
async def test_sign_in_never_sends_you_off_site(browser: Admin, target: str) -> None:
    response = await browser.login(ADMIN, next_path=target)
    assert response.status_code == 303 and response.headers["location"] == "/admin/"


async def test_the_cookie_is_opaque_http_only_and_lax(browser: Admin) -> None:
    response = await browser.login(ADMIN)
    cookie = [c for c in response.headers.get_list("set-cookie") if "civicbot_admin=" in c][0]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert len(value) >= 40 and ADMIN not in value


async def test_secure_cookies_when_the_public_url_is_https(
    sqlite_url: str, clock: FixedClock
) -> None:
    from tests.conftest import make_settings, start_services

    services = await start_services(
        make_settings(sqlite_url, public_url="https://a.example"), clock
    )
    try:
        await make_user(services.sessions, ADMIN, Role.ADMIN, clock.now())
        transport = httpx.ASGITransport(app=build_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="https://a.example") as c:
            response = await Admin(c).login(ADMIN)
            cookie = [h for h in response.headers.get_list("set-cookie") if "civicbot_admin=" in h]
            assert "Secure" in cookie[0]
            assert (await c.get("/admin/")).status_code == 200
    finally:
        await services.close()


async def test_sign_out_ends_the_session(accounts: Services, browser: Admin) -> None:
    await browser.login(VIEWER)
    cookie = browser.client.cookies.get("civicbot_admin")
    response = await browser.post("/admin/logout")
    assert response.status_code == 303 and "ended=out" in response.headers["location"]
    assert (await browser.client.get("/admin/")).status_code == 303
    browser.client.cookies.set("civicbot_admin", cookie or "", path="/admin/")  # a copy kept
    assert (await browser.client.get("/admin/")).status_code == 303


async def test_the_sign_in_form_needs_its_token(
    accounts: Services, http: httpx.AsyncClient
) -> None:
    before = await counts(accounts.sessions)
    response = await http.post(
        "/admin/login", data={"email": ADMIN, "password": PASSWORD, "csrf_token": "made-up"}
    )
    assert response.status_code == 403
    assert "civicbot_admin=" not in response.headers.get("set-cookie", "")
    assert await counts(accounts.sessions) == before


async def test_the_audit_log_is_append_only(accounts: Services) -> None:
    """No page edits the log, and the database refuses to."""
    async with accounts.sessions() as session, session.begin():
        session.add(AuditLog(at=accounts.clock.now(), actor="test", action="probe"))
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            async with accounts.sessions() as session, session.begin():
                await session.execute(text(statement))
    async with accounts.sessions() as session:
        actors = (await session.execute(select(AuditLog.actor))).scalars().all()
    assert "test" in actors and "someone else" not in actors


async def test_pages_say_what_they_may_load(browser: Admin) -> None:
    await browser.login(ADMIN)
    response = await browser.client.get("/admin/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in response.text
