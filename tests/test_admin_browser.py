"""The admin web app in a real browser: Debian's Chromium driven by Playwright against a real
`civicbot serve` on loopback, with accounts made by `civicbot admin create-user`.

Every page is opened in a browser context that blocks any request leaving 127.0.0.1 (and the
tests assert there were none), with script errors collected. Screenshots of each page are
saved in ``admin-screenshots/`` under ``$CIVICBOT_TEST_ARTIFACTS`` (``.ci/run`` sets it) or
the pytest run's temporary folder; never in the repository.

Skipped where Chromium is not installed; CI installs it and makes these tests required.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

CHROMIUM = os.environ.get("CIVICBOT_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]

if not Path(CHROMIUM).is_file():
    if os.environ.get("CI"):
        pytest.fail(f"Chromium not found at {CHROMIUM}; CI installs Debian's chromium package")
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )

from playwright.sync_api import Browser, Page, Route, expect, sync_playwright  # noqa: E402

from tests.test_browser import Server, _free_port  # noqa: E402

expect.set_options(timeout=15_000)
ARRIVES = 30_000  # ms: the dispatcher sends, the simulator page polls
PASSWORD = "correct horse battery staple"
FACILITATOR = "fac@council.example"
VIEWER = "viewer@council.example"
ADMIN = "boss@council.example"
PAGES = [
    ("Dashboard", "Dashboard"),
    ("Contacts", "Contacts"),
    ("Broadcasts", "Broadcasts"),
    ("Wards and groups", "Wards and groups"),
    ("Polls", "Telegram polls"),
    ("Audit log", "Audit log"),
    ("Accounts", "Accounts"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`civicbot serve` with a fresh database, the demo wards and three staff accounts."""
    tmp = tmp_path_factory.mktemp("admin-browser")
    port = _free_port()
    env = {
        **os.environ,
        "CIVICBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/admin.db",
        "CIVICBOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CIVICBOT_PORT": str(port),
        "CIVICBOT_HOST": "127.0.0.1",
        "CIVICBOT_DISPATCHER_POLL_SECONDS": "0.2",
    }
    civicbot = shutil.which("civicbot", path=str(Path(sys.executable).parent)) or "civicbot"
    url = f"http://127.0.0.1:{port}"
    ready = Server(url, env, civicbot)
    ready.run("db", "upgrade")
    ready.run("wards", "load", "admin/data/demo_wards.csv")
    for email, role in ((FACILITATOR, "facilitator"), (VIEWER, "viewer"), (ADMIN, "admin")):
        subprocess.run(
            [civicbot, "admin", "create-user", email, "--role", role, "--password-stdin"],
            input=PASSWORD + "\n",
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([civicbot, "serve"], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "serve.log").read_text())
            time.sleep(0.2)
        yield ready
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where screenshots go: ``$CIVICBOT_TEST_ARTIFACTS/admin-screenshots`` when that is set
    (CI keeps it), else the pytest run's temporary folder. ``index.txt`` lists them."""
    artifacts = os.environ.get("CIVICBOT_TEST_ARTIFACTS")
    if artifacts:
        folder = Path(artifacts) / "admin-screenshots"
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("admin-screenshots", numbered=False)
    yield folder
    saved = sorted(p.name for p in folder.glob("*.png"))
    (folder / "index.txt").write_text("\n".join(saved) + "\n")


@dataclass
class Session:
    """A browser context on the admin app: only loopback is reachable."""

    page: Page
    base: str
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.page.get_by_label("Email address").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()


Opener = Callable[..., Session]


@pytest.fixture
def open_admin(browser: Browser, server: Server) -> Iterator[Opener]:
    contexts = []
    sessions: list[Session] = []

    def opener(width: int = 1100, height: int = 800, path: str = "/admin/") -> Session:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        session = Session(page, server.url)
        sessions.append(session)

        def guard(route: Route) -> None:
            host = urlsplit(route.request.url).hostname
            if host == "127.0.0.1" or route.request.url.startswith(("data:", "about:")):
                route.continue_()
            else:
                session.outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        page.on("pageerror", lambda exc: session.errors.append(str(exc)))
        # A refused form answers 400 (Chromium logs that); a CSP violation must not happen.
        page.on(
            "console",
            lambda m: (
                session.errors.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text
                else None
            ),
        )
        session.go(path)
        return session

    yield opener
    for context in contexts:
        context.close()
    for session in sessions:
        assert session.outside == []  # nothing left the host
        assert session.errors == []  # no script or CSP errors


def shoot(folder: Path, page: Page, name: str) -> None:
    page.screenshot(path=folder / f"{name}.png", full_page=True)


def join(server: Server, address: str) -> None:
    """A simulated SMS resident joins (consent, English, a Cathays postcode)."""
    for text in ("HI", "1", "1", "CF10 1EP"):
        response = httpx.post(
            f"{server.url}/simulator/api/messages",
            json={"channel": "sms", "address": address, "text": text},
            timeout=30,
        )
        assert response.status_code == 200, response.text


def test_a_failed_sign_in_then_a_good_one(open_admin: Opener, screenshots: Path) -> None:
    s = open_admin(path="/admin/broadcasts")
    page = s.page
    expect(page.get_by_role("heading", name="Sign in to civicbot admin")).to_be_visible()
    shoot(screenshots, page, "01-sign-in")
    s.sign_in(FACILITATOR, "not my password")
    summary = page.get_by_role("alert")
    expect(summary).to_contain_text("The email address or password is not right")
    expect(summary).to_be_focused()  # as GOV.UK's error summary
    expect(page).to_have_title("Error: Sign in – civicbot")
    shoot(screenshots, page, "02-sign-in-failed")
    page.get_by_role("link", name="The email address or password is not right").click()
    expect(page.get_by_label("Password")).to_be_focused()
    s.sign_in(FACILITATOR)
    expect(page.get_by_role("heading", name="Broadcasts", exact=True)).to_be_visible()
    assert page.url.endswith("/admin/broadcasts")  # back to the page asked for


@pytest.mark.parametrize("width", [1100, 320])
def test_walk_every_page(open_admin: Opener, screenshots: Path, server: Server, width: int) -> None:
    join(server, "+447700900301")
    s = open_admin(width=width, height=800)
    s.sign_in(ADMIN)
    page = s.page
    expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
    for i, (link, heading) in enumerate(PAGES):
        page.get_by_role("navigation", name="Menu").get_by_role("link", name=link).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        expect(
            page.get_by_role("navigation", name="Menu").get_by_role("link", name=link)
        ).to_have_attribute("aria-current", "page")
        page.wait_for_load_state("load")  # styles applied (a busy machine is slow to them)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"{link} at {width}px: {widths[0]} wide in {widths[1]}"
        shoot(screenshots, page, f"1{i}-{heading.lower().replace(' ', '-')}-{width}px")
    # A contact's page, found by the number as a person would type it.
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Contacts").click()
    page.get_by_label("Find a resident").fill("07700 900301")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("main").get_by_role("link", name="Contact 1", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Contact 1")
    expect(page.locator(".thread li").first).to_contain_text("HI")
    shoot(screenshots, page, f"18-contact-{width}px")
    # The charts' figures open as tables.
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Dashboard").click()
    page.get_by_text("Show the figures as a table").first.click()
    expect(page.get_by_role("table").first).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()


def test_a_broadcast_reaches_simulated_residents(
    open_admin: Opener, browser: Browser, server: Server, screenshots: Path
) -> None:
    join(server, "+447700900311")
    resident = browser.new_context(viewport={"width": 900, "height": 800})
    try:
        phone = resident.new_page()
        phone.goto(f"{server.url}/simulator?channel=sms&address=%2B447700900311")
        expect(phone.locator(".bubble.in").last).to_contain_text("What would you like to do?")

        s = open_admin()
        s.sign_in(FACILITATOR)
        page = s.page
        page.get_by_role("navigation", name="Menu").get_by_role("link", name="Broadcasts").click()
        page.get_by_role("button", name="New broadcast").click()
        expect(page.get_by_role("heading", name="New broadcast")).to_be_visible()
        page.get_by_label("Message in English").fill("The library reopens on Monday.")
        page.get_by_label("Message in Welsh (optional)").fill(
            "Mae'r llyfrgell yn ailagor ddydd Llun."
        )
        page.get_by_label("Cathays").check()
        page.get_by_label("SMS").check()
        shoot(screenshots, page, "20-broadcast-compose")
        page.get_by_role("button", name="Continue").click()
        expect(
            page.get_by_role("heading", name="Check your broadcast before sending it")
        ).to_be_visible()
        expect(page.locator(".summary-list")).to_contain_text("Cathays")
        expect(page.get_by_text("1 segment, GSM-7").first).to_be_visible()
        shoot(screenshots, page, "21-broadcast-check")
        page.get_by_role("button", name="Send broadcast").click()
        expect(page.get_by_role("status")).to_contain_text("Broadcast sent to the outbox")
        # The page refreshes its progress by itself (admin.js) until everything has gone.
        expect(page.locator("#progress")).to_contain_text(
            re.compile(r"Queued\s*0\s*Sent\s*[1-9]"), timeout=ARRIVES
        )
        shoot(screenshots, page, "22-broadcast-progress")

        arrived = phone.locator(".bubble.in", has_text="The library reopens on Monday.")
        expect(arrived).to_have_count(1, timeout=ARRIVES)
        shoot(screenshots, phone, "23-broadcast-in-the-simulator")
    finally:
        resident.close()


def test_an_empty_segment_is_refused(open_admin: Opener, screenshots: Path) -> None:
    s = open_admin()
    s.sign_in(FACILITATOR)
    page = s.page
    s.go("/admin/broadcasts/new")
    page.get_by_label("Message in English").fill("Splott only")
    page.get_by_label("Splott").check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("No resident would get this")
    expect(page.get_by_role("alert")).to_be_focused()
    expect(page.get_by_label("Message in English")).to_have_value("Splott only")
    shoot(screenshots, page, "24-broadcast-empty-segment")


def test_the_broadcast_form_by_keyboard_alone(
    open_admin: Opener, server: Server, screenshots: Path
) -> None:
    join(server, "+447700900321")
    s = open_admin()
    page = s.page
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.locator(":focus")).to_have_text("Skip to main content")
    s.sign_in(FACILITATOR)
    s.go("/admin/broadcasts/new")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to main content")
    page.keyboard.press("Enter")

    def tab_to(name: str, limit: int = 40) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            focused = page.locator(":focus")
            if focused.count() == 0:
                continue
            label = focused.evaluate(
                "el => (el.labels && el.labels[0] ? el.labels[0].innerText : el.innerText)"
            )
            if label.strip().startswith(name):
                # Focus is visible: the GOV.UK yellow (an outline or a box shadow).
                style = focused.evaluate(
                    "el => { const s = getComputedStyle(el);"
                    " return s.outlineStyle + ' ' + s.boxShadow + ' ' + s.backgroundColor }"
                )
                assert "solid" in style or "255, 221, 0" in style, (name, style)
                return
        raise AssertionError(f"Tab never reached {name!r}")

    tab_to("Message in English")
    page.keyboard.type("Road closed on Friday.")
    tab_to("Cathays")
    page.keyboard.press("Space")
    tab_to("SMS")
    page.keyboard.press("Space")
    tab_to("Continue")
    shoot(screenshots, page, "30-keyboard-compose")
    page.keyboard.press("Enter")
    expect(
        page.get_by_role("heading", name="Check your broadcast before sending it")
    ).to_be_visible()
    tab_to("Send broadcast")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Broadcast sent to the outbox")
    shoot(screenshots, page, "31-keyboard-sent")


def test_a_viewer_cannot_broadcast(open_admin: Opener, screenshots: Path) -> None:
    s = open_admin(path="/admin/broadcasts")
    s.sign_in(VIEWER)
    page = s.page
    expect(page.get_by_role("heading", name="Broadcasts", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="New broadcast")).to_have_count(0)
    s.go("/admin/broadcasts/new")
    expect(page.get_by_role("heading", level=1)).to_have_text("You can't do this")
    shoot(screenshots, page, "40-viewer-refused")
